/*
 * test_kernels.c -- the pure-C kernels without Python: every causal form and
 * the non-causal form against a naive quadratic double-precision loop, over
 * dtypes, lengths, chunk sizes (incl. non-divisors and > T), decay, normalise
 * modes and non-unit strides.  Run by ctest, under ASan/UBSan and valgrind.
 */

#include "la_test.h"

#include "kernels/featmap.h"
#include "kernels/linear.h"
#include "kernels/softmax.h"

static double
phi(int fmap, double x)
{
    switch (fmap) {
    case LA_FMAP_ELU1: return x > 0 ? x + 1 : exp(x);
    case LA_FMAP_RELU: return x > 0 ? x : 0;
    case LA_FMAP_ELU: return x > 0 ? x : expm1(x);
    default: return x;
    }
}

/* Naive causal/non-causal reference in double, from the definition. */
static void
naive(int causal, int T, int S, int D, int E, const double *q, const double *k,
      const double *v, const double *g, const double *S0, const double *z0,
      double scale, double eps, int fmap, int norm, int eps_mode, double *o)
{
    int t, s, i, j;
    double *G = calloc((size_t)(T > 0 ? T : 1), sizeof(double));
    double acc = 0;
    for (t = 0; t < T; t++) {
        acc += g ? (g[t] < -1000 ? -1000 : g[t]) : 0;
        G[t] = acc;
    }
    for (t = 0; t < T; t++) {
        double den = 0, *num = calloc((size_t)E + 1, sizeof(double));
        int smax = causal ? t + 1 : S;
        for (s = 0; s < smax; s++) {
            double a = 0;
            for (i = 0; i < D; i++) {
                a += phi(fmap, scale * q[t * D + i]) * phi(fmap, k[s * D + i]);
            }
            if (causal) {
                a *= exp(G[t] - G[s]);
            }
            for (j = 0; j < E; j++) {
                num[j] += a * v[s * E + j];
            }
            den += a;
        }
        if (causal && S0) {
            for (i = 0; i < D; i++) {
                double qi = phi(fmap, scale * q[t * D + i]) * exp(G[t]);
                for (j = 0; j < E; j++) {
                    num[j] += qi * S0[i * E + j];
                }
                den += qi * z0[i];
            }
        }
        for (j = 0; j < E; j++) {
            double d = 1;
            if (norm == LA_NORM_DIV) {
                d = eps_mode == LA_EPS_ADD ? den + eps
                  : eps_mode == LA_EPS_CLAMP ? (den < eps ? eps : den)
                  : (fabs(den) < eps ? eps : fabs(den));
            }
            else if (norm == LA_NORM_RMS) {
                double ss = 0;
                int jj;
                for (jj = 0; jj < E; jj++) {
                    ss += num[jj] * num[jj];
                }
                d = sqrt(ss / E) + eps;
            }
            o[t * E + j] = num[j] / d;
        }
        free(num);
    }
    free(G);
}

/* Run one form on float or double copies with a column stride of `cs`. */
static double
run_form(int form, int f64, int T, int S, int D, int E, int chunk, int cs,
         const double *q, const double *k, const double *v, const double *g,
         const double *S0, const double *z0, double scale, double eps, int fmap,
         int norm, int eps_mode, const double *want)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    la_linear_args a;
    char *Q = malloc((size_t)(T * D * cs + 1) * is), *K = malloc((size_t)(S * D * cs + 1) * is);
    char *V = malloc((size_t)(S * E * cs + 1) * is), *O = malloc((size_t)(T * E * cs + 1) * is);
    char *s0 = malloc((size_t)(D * E + 1) * is), *z0b = malloc((size_t)(D + 1) * is);
    char *s1 = malloc((size_t)(D * E + 1) * is), *z1 = malloc((size_t)(D + 1) * is);
    void *work;
    double err = 0, ref = 0;
    int i;
    la_status st;
#define PUT(buf, idx, val)                                                     \
    do {                                                                       \
        if (f64) ((double *)(buf))[idx] = (val);                               \
        else ((float *)(buf))[idx] = (float)(val);                             \
    } while (0)
#define GET(buf, idx) (f64 ? ((double *)(buf))[idx] : (double)((float *)(buf))[idx])
    for (i = 0; i < T * D; i++) PUT(Q, i * cs, q[i]);
    for (i = 0; i < S * D; i++) PUT(K, i * cs, k[i]);
    for (i = 0; i < S * E; i++) PUT(V, i * cs, v[i]);
    for (i = 0; i < D * E; i++) PUT(s0, i, S0 ? S0[i] : 0);
    for (i = 0; i < D; i++) PUT(z0b, i, z0 ? z0[i] : 0);
    memset(&a, 0, sizeof(a));
    a.t = T; a.s = S; a.f = D; a.e = E; a.chunk = chunk;
    a.q = Q; a.k = K; a.v = V; a.o = O; a.g = g;
    a.s0 = s0; a.z0 = z0b; a.s1 = s1; a.z1 = z1;
    a.q_rs = D * cs; a.q_cs = cs; a.k_rs = D * cs; a.k_cs = cs;
    a.v_rs = E * cs; a.v_cs = cs; a.o_rs = E * cs; a.o_cs = cs;
    a.g_s = 1; a.s0_rs = E; a.s0_cs = 1; a.z0_s = 1; a.s1_rs = E; a.s1_cs = 1; a.z1_s = 1;
    a.scale = scale; a.eps = eps; a.fmap_q = a.fmap_k = fmap; a.norm = norm;
    a.eps_mode = eps_mode;
    work = malloc(la_linear_work_size(form, &a, is));
    /* poison the scratch: every value a kernel reads must have been written */
    memset(work, 0xff, la_linear_work_size(form, &a, is));
    switch (form) {
    case LA_FORM_RECURRENT:
        st = f64 ? la_linear_recurrent_f64(&a, work) : la_linear_recurrent_f32(&a, work);
        break;
    case LA_FORM_CHUNKED:
        st = f64 ? la_linear_chunked_f64(&a, work) : la_linear_chunked_f32(&a, work);
        break;
    case LA_FORM_PARALLEL:
        st = f64 ? la_linear_parallel_f64(&a, work) : la_linear_parallel_f32(&a, work);
        break;
    default:
        st = f64 ? la_linear_noncausal_f64(&a, work) : la_linear_noncausal_f32(&a, work);
        break;
    }
    if (st != LA_OK) {
        err = INFINITY;
    }
    for (i = 0; i < T * E; i++) {
        double d = GET(O, i * cs) - want[i];
        err += d * d;
        ref += want[i] * want[i];
    }
    free(work); free(Q); free(K); free(V); free(O); free(s0); free(z0b); free(s1); free(z1);
#undef PUT
#undef GET
    return ref > 0 ? sqrt(err / ref) : sqrt(err);
}

int
main(void)
{
    static const int Ts[] = {0, 1, 15, 16, 17, 100};
    static const int chunks[] = {1, 7, 16, 64, 200};
    unsigned seed = 12345u;
    int ti, ci, dec, norm, f64, form, cs, fmap, state;
    const int D = 5, E = 3;
    for (ti = 0; ti < (int)(sizeof(Ts) / sizeof(Ts[0])); ti++) {
        const int T = Ts[ti];
        double *q = malloc(sizeof(double) * (size_t)(T * D + 1));
        double *k = malloc(sizeof(double) * (size_t)(T * D + 1));
        double *v = malloc(sizeof(double) * (size_t)(T * E + 1));
        double *g = malloc(sizeof(double) * (size_t)(T + 1));
        double *want = malloc(sizeof(double) * (size_t)(T * E + 1));
        double S0[5 * 3], z0[5];
        int i;
        for (i = 0; i < T * D; i++) { q[i] = urand(&seed); k[i] = urand(&seed); }
        for (i = 0; i < T * E; i++) { v[i] = urand(&seed); }
        for (i = 0; i < T; i++) { g[i] = -0.5 * (urand(&seed) + 1); }
        if (T > 3) { g[3] = -INFINITY; } /* hard reset, clamped to -1000 */
        for (i = 0; i < D * E; i++) { S0[i] = urand(&seed); }
        for (i = 0; i < D; i++) { z0[i] = 1 + urand(&seed) * 0.5; }
        for (fmap = 0; fmap < LA_FMAP_COUNT; fmap += 1)
        for (dec = 0; dec < 2; dec++)
        for (state = 0; state < 2; state++)
        for (norm = 0; norm < 3; norm++) {
            const int eps_mode = fmap == LA_FMAP_ELU1 ? LA_EPS_ADD : LA_EPS_ABS_CLAMP;
            if (norm == LA_NORM_DIV && fmap != LA_FMAP_ELU1) {
                continue; /* signed features: den near 0 is ill-conditioned */
            }
            naive(1, T, T, D, E, q, k, v, dec ? g : NULL, state ? S0 : NULL,
                  state ? z0 : NULL, 0.7, 1e-6, fmap, norm, eps_mode, want);
            for (f64 = 0; f64 < 2; f64++)
            for (cs = 1; cs <= 2; cs++)
            for (form = 0; form < 3; form++)
            for (ci = 0; ci < (int)(sizeof(chunks) / sizeof(chunks[0])); ci++) {
                char what[160];
                if (form == LA_FORM_RECURRENT && ci > 0) {
                    continue;
                }
                snprintf(what, sizeof(what),
                         "form=%d f64=%d T=%d chunk=%d decay=%d state=%d norm=%d fmap=%d cs=%d",
                         form, f64, T, chunks[ci], dec, state, norm, fmap, cs);
                check(what,
                      run_form(form, f64, T, T, D, E, chunks[ci], cs, q, k, v,
                               dec ? g : NULL, state ? S0 : NULL, state ? z0 : NULL,
                               0.7, 1e-6, fmap, norm, eps_mode, want),
                      f64 ? 1e-12 : 2e-5);
            }
        }
        /* non-causal, cross-attention with S = T + 3 keys */
        {
            const int S = T + 3;
            double *k2 = malloc(sizeof(double) * (size_t)(S * D));
            double *v2 = malloc(sizeof(double) * (size_t)(S * E));
            for (i = 0; i < S * D; i++) { k2[i] = urand(&seed); }
            for (i = 0; i < S * E; i++) { v2[i] = urand(&seed); }
            naive(0, T, S, D, E, q, k2, v2, NULL, NULL, NULL, 1.0, 1e-6, LA_FMAP_ELU1,
                  LA_NORM_DIV, LA_EPS_ADD, want);
            for (f64 = 0; f64 < 2; f64++)
            for (ci = 0; ci < (int)(sizeof(chunks) / sizeof(chunks[0])); ci++) {
                char what[96];
                snprintf(what, sizeof(what), "noncausal f64=%d T=%d S=%d chunk=%d", f64, T, S,
                         chunks[ci]);
                check(what,
                      run_form(LA_FORM_NONCAUSAL, f64, T, S, D, E, chunks[ci], 2, q, k2, v2,
                               NULL, NULL, NULL, 1.0, 1e-6, LA_FMAP_ELU1, LA_NORM_DIV,
                               LA_EPS_ADD, want),
                      f64 ? 1e-12 : 2e-5);
            }
            free(k2); free(v2);
        }
        free(q); free(k); free(v); free(g); free(want);
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
