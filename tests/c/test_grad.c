/*
 * test_grad.c -- the backward kernels of the generic operator (kernels/
 * linear_bwd.h) without Python, against central finite differences of a naive
 * double-precision forward loop (the recurrence of docs/design/family.md §3.1
 * written out token by token): float32 and float64, chunked (chunk edges
 * inside the sequence), recurrent and non-causal (s != t), every elementwise
 * map, normaliser and decay (per token with a -inf reset, per head), strided
 * inputs, scratch poisoned with NaN (dk too: the chunked form parks the key
 * features there before it writes the gradient; strided).  Run by ctest.
 */

#include "la_test.h"

#include "kernels/featmap.h"
#include "kernels/linear.h"
#include "kernels/linear_bwd.h"

enum { T = 13, S = 11, D = 3, E = 4, QCS = 2 };

typedef struct {
    int fmap, norm, eps_mode, decay; /* decay: 0 none, 1 per token, 2 per head */
    double scale, eps;
} cfg;

static double
phi(int fmap, double u)
{
    switch (fmap) {
    case LA_FMAP_ELU1:
        return u > 0 ? u + 1 : exp(u);
    case LA_FMAP_RELU:
        return u > 0 ? u : 0;
    default:
        return u;
    }
}

static void
finish(const cfg *c, const double *num, double den, double *o)
{
    int j;
    double d = 1;
    if (c->norm == LA_NORM_DIV) {
        d = c->eps_mode == LA_EPS_CLAMP ? (den < c->eps ? c->eps : den) : den + c->eps;
    }
    else if (c->norm == LA_NORM_RMS) {
        double ss = 0;
        for (j = 0; j < E; j++) {
            ss += num[j] * num[j];
        }
        d = sqrt(ss / E) + c->eps;
    }
    for (j = 0; j < E; j++) {
        o[j] = num[j] / d;
    }
}

/* The naive causal loss <do, o> + <dS, S_T> + <dz, z_T>; x holds q, k, v, g,
 * S0, z0 back to back (T D, T D, T E, T, D E, D). */
#define NQ (T * D)
#define NV (T * E)
#define NX (2 * NQ + NV + T + D * E + D)
static double
naive_causal(const cfg *c, const double *x, const double *dO, const double *dS,
             const double *dz)
{
    const double *q = x, *k = q + NQ, *v = k + NQ, *g = v + NV, *S0 = g + T, *z0 = S0 + D * E;
    double St[D * E], z[D], num[E], o[E], L = 0;
    int t, i, j;
    memcpy(St, S0, sizeof(St));
    memcpy(z, z0, sizeof(z));
    for (t = 0; t < T; t++) {
        double a = 1, qf[D], kf[D], den = 0;
        if (c->decay) {
            const double gt = c->decay == 2 ? g[0] : g[t];
            a = exp(gt < -1000 ? -1000 : gt);
        }
        for (i = 0; i < D; i++) {
            qf[i] = phi(c->fmap, c->scale * q[t * D + i]);
            kf[i] = phi(c->fmap, k[t * D + i]);
            z[i] = a * z[i] + kf[i];
            den += z[i] * qf[i];
        }
        for (j = 0; j < E; j++) {
            num[j] = 0;
            for (i = 0; i < D; i++) {
                St[i * E + j] = a * St[i * E + j] + kf[i] * v[t * E + j];
                num[j] += St[i * E + j] * qf[i];
            }
        }
        finish(c, num, den, o);
        for (j = 0; j < E; j++) {
            L += dO[t * E + j] * o[j];
        }
    }
    for (i = 0; i < D * E; i++) {
        L += dS[i] * St[i];
    }
    if (c->norm == LA_NORM_DIV) {
        for (i = 0; i < D; i++) {
            L += dz[i] * z[i];
        }
    }
    return L;
}

/* x: q (T D), k (S D), v (S E). */
static double
naive_noncausal(const cfg *c, const double *x, const double *dO)
{
    const double *q = x, *k = q + T * D, *v = k + S * D;
    double Sm[D * E] = {0}, z[D] = {0}, num[E], o[E], L = 0;
    int t, s, i, j;
    for (s = 0; s < S; s++) {
        for (i = 0; i < D; i++) {
            const double kf = phi(c->fmap, k[s * D + i]);
            z[i] += kf;
            for (j = 0; j < E; j++) {
                Sm[i * E + j] += kf * v[s * E + j];
            }
        }
    }
    for (t = 0; t < T; t++) {
        double qf[D], den = 0;
        for (i = 0; i < D; i++) {
            qf[i] = phi(c->fmap, c->scale * q[t * D + i]);
            den += z[i] * qf[i];
        }
        for (j = 0; j < E; j++) {
            num[j] = 0;
            for (i = 0; i < D; i++) {
                num[j] += Sm[i * E + j] * qf[i];
            }
        }
        finish(c, num, den, o);
        for (j = 0; j < E; j++) {
            L += dO[t * E + j] * o[j];
        }
    }
    return L;
}

static double
rel_err(const double *a, const double *b, int n)
{
    double num = 0, den = 0;
    int i;
    for (i = 0; i < n; i++) {
        if (!isfinite(a[i])) {
            return INFINITY;
        }
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

#define PUT(buf, idx, val)                                                     \
    do {                                                                       \
        if (f64) ((double *)(buf))[idx] = (val);                               \
        else ((float *)(buf))[idx] = (float)(val);                             \
    } while (0)
#define GET(buf, idx) (f64 ? ((double *)(buf))[idx] : (double)((float *)(buf))[idx])

static void
run_causal(const cfg *c, int form, la_index chunk, int f64, unsigned *seed)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    double x[NX], dO[T * E], dS[D * E], dz[D], fd[NX], got[NX];
    double g64[T], dg[T];
    void *q = malloc(T * D * QCS * is), *k = malloc(NQ * is), *v = malloc(NV * is);
    void *s0 = malloc(D * E * is), *z0 = malloc(D * is), *dob = malloc(NV * is);
    void *dsb = malloc(D * E * is), *dzb = malloc(D * is);
    void *dq = malloc(T * D * QCS * is), *dk = poisoned(T * D * QCS * is);
    void *dv = malloc(NV * is);
    void *ds0 = malloc(D * E * is), *dz0 = malloc(D * is);
    la_linear_bwd_args a;
    void *work;
    char what[160];
    int i, j, t;
    const int positive = c->fmap == LA_FMAP_RELU || c->norm == LA_NORM_DIV;
    for (i = 0; i < NX; i++) {
        x[i] = urand(seed);
    }
    for (i = 0; i < 2 * NQ; i++) {
        x[i] = positive ? fabs(x[i]) + 0.2 : x[i];
    }
    for (t = 0; t < T; t++) {
        x[2 * NQ + NV + t] = -0.05 - 0.5 * fabs(x[2 * NQ + NV + t]);
    }
    if (c->decay == 1) {
        x[2 * NQ + NV + 7] = -INFINITY;
    }
    for (i = 0; i < D; i++) {
        x[NX - D + i] = fabs(x[NX - D + i]) + 0.5;
    }
    for (i = 0; i < T * E; i++) {
        dO[i] = urand(seed);
    }
    for (i = 0; i < D * E; i++) {
        dS[i] = urand(seed);
    }
    for (i = 0; i < D; i++) {
        dz[i] = urand(seed);
    }
    /* finite differences of the naive loop (not through the reset) */
    for (i = 0; i < NX; i++) {
        double xp[NX], xm[NX];
        const double h = 1e-6;
        fd[i] = 0;
        if (!isfinite(x[i]) || (c->decay == 2 && i > 2 * NQ + NV && i < 2 * NQ + NV + T)) {
            continue;
        }
        memcpy(xp, x, sizeof(x));
        memcpy(xm, x, sizeof(x));
        xp[i] += h;
        xm[i] -= h;
        fd[i] = (naive_causal(c, xp, dO, dS, dz) - naive_causal(c, xm, dO, dS, dz)) / (2 * h);
    }
    for (t = 0; t < T; t++) {
        for (i = 0; i < D; i++) {
            PUT(q, t * D * QCS + i * QCS, x[t * D + i]);
            PUT(k, t * D + i, x[NQ + t * D + i]);
        }
        for (j = 0; j < E; j++) {
            PUT(v, t * E + j, x[2 * NQ + t * E + j]);
            PUT(dob, t * E + j, dO[t * E + j]);
        }
        g64[t] = x[2 * NQ + NV + (c->decay == 2 ? 0 : t)];
    }
    for (i = 0; i < D * E; i++) {
        PUT(s0, i, x[2 * NQ + NV + T + i]);
        PUT(dsb, i, dS[i]);
    }
    for (i = 0; i < D; i++) {
        PUT(z0, i, x[NX - D + i]);
        PUT(dzb, i, dz[i]);
    }
    memset(&a, 0, sizeof(a));
    a.t = a.s = T;
    a.f = D;
    a.e = E;
    a.chunk = chunk;
    a.q = q; a.k = k; a.v = v;
    a.g = c->decay ? g64 : NULL;
    a.g_s = c->decay == 2 ? 0 : 1;
    a.dg = dg;
    a.dg_s = 1;
    a.s0 = s0; a.z0 = z0; a.dout = dob; a.ds = dsb; a.dz = dzb;
    a.dq = dq; a.dk = dk; a.dv = dv; a.ds0 = ds0; a.dz0 = dz0;
    a.q_rs = D * QCS; a.q_cs = QCS; a.k_rs = D; a.k_cs = 1; a.v_rs = E; a.v_cs = 1;
    a.do_rs = E; a.do_cs = 1;
    a.s0_rs = E; a.s0_cs = 1; a.z0_s = 1; a.ds_rs = E; a.ds_cs = 1; a.dz_s = 1;
    a.dq_rs = D * QCS; a.dq_cs = QCS; a.dk_rs = D * QCS; a.dk_cs = QCS;
    a.dv_rs = E; a.dv_cs = 1;
    a.ds0_rs = E; a.ds0_cs = 1; a.dz0_s = 1;
    a.scale = c->scale;
    a.eps = c->eps;
    a.fmap_q = a.fmap_k = c->fmap;
    a.norm = c->norm;
    a.eps_mode = c->eps_mode;
    work = poisoned(la_linear_bwd_work_size(form, &a, is));
    if (form == LA_FORM_CHUNKED) {
        if (f64) {
            la_linear_bwd_chunked_f64(&a, work);
        }
        else {
            la_linear_bwd_chunked_f32(&a, work);
        }
    }
    else if (f64) {
        la_linear_bwd_recurrent_f64(&a, work);
    }
    else {
        la_linear_bwd_recurrent_f32(&a, work);
    }
    for (t = 0; t < T; t++) {
        for (i = 0; i < D; i++) {
            got[t * D + i] = GET(dq, t * D * QCS + i * QCS);
            got[NQ + t * D + i] = GET(dk, t * D * QCS + i * QCS);
        }
        for (j = 0; j < E; j++) {
            got[2 * NQ + t * E + j] = GET(dv, t * E + j);
        }
        got[2 * NQ + NV + t] = c->decay == 1 ? dg[t] : 0;
    }
    if (c->decay == 2) {
        double sum = 0;
        for (t = 0; t < T; t++) {
            sum += dg[t];
        }
        got[2 * NQ + NV] = sum;
        fd[2 * NQ + NV] = 0;
        {
            double xp[NX], xm[NX];
            memcpy(xp, x, sizeof(x));
            memcpy(xm, x, sizeof(x));
            xp[2 * NQ + NV] += 1e-6;
            xm[2 * NQ + NV] -= 1e-6;
            fd[2 * NQ + NV] = (naive_causal(c, xp, dO, dS, dz) -
                               naive_causal(c, xm, dO, dS, dz)) / 2e-6;
        }
    }
    for (i = 0; i < D * E; i++) {
        got[2 * NQ + NV + T + i] = GET(ds0, i);
    }
    for (i = 0; i < D; i++) {
        got[NX - D + i] = c->norm == LA_NORM_DIV ? GET(dz0, i) : 0;
    }
    if (c->decay == 1) {
        check("dg is exactly 0 at a -inf reset", fabs(dg[7]), 0.0);
    }
    snprintf(what, sizeof(what), "%s %s fmap %d norm %d eps_mode %d decay %d chunk %d",
             f64 ? "f64" : "f32", form == LA_FORM_CHUNKED ? "chunked" : "recurrent", c->fmap,
             c->norm, c->eps_mode, c->decay, (int)chunk);
    check(what, rel_err(got, fd, NX), f64 ? 1e-6 : 2e-4);
    free(work);
    free(q); free(k); free(v); free(s0); free(z0); free(dob); free(dsb); free(dzb);
    free(dq); free(dk); free(dv); free(ds0); free(dz0);
}

static void
run_noncausal(const cfg *c, int f64, unsigned *seed)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    enum { NN = T * D + S * D + S * E };
    double x[NN], dO[T * E], fd[NN], got[NN];
    void *q = malloc(T * D * is), *k = malloc(S * D * is), *v = malloc(S * E * is);
    void *dob = malloc(T * E * is);
    void *dq = malloc(T * D * is), *dk = malloc(S * D * is), *dv = malloc(S * E * is);
    la_linear_bwd_args a;
    void *work;
    char what[120];
    int i;
    for (i = 0; i < NN; i++) {
        x[i] = urand(seed);
        if (i < T * D + S * D) {
            x[i] = fabs(x[i]) + 0.2;
        }
    }
    for (i = 0; i < T * E; i++) {
        dO[i] = urand(seed);
        PUT(dob, i, dO[i]);
    }
    for (i = 0; i < NN; i++) {
        double xp[NN], xm[NN];
        memcpy(xp, x, sizeof(x));
        memcpy(xm, x, sizeof(x));
        xp[i] += 1e-6;
        xm[i] -= 1e-6;
        fd[i] = (naive_noncausal(c, xp, dO) - naive_noncausal(c, xm, dO)) / 2e-6;
    }
    for (i = 0; i < T * D; i++) {
        PUT(q, i, x[i]);
    }
    for (i = 0; i < S * D; i++) {
        PUT(k, i, x[T * D + i]);
    }
    for (i = 0; i < S * E; i++) {
        PUT(v, i, x[T * D + S * D + i]);
    }
    memset(&a, 0, sizeof(a));
    a.t = T; a.s = S; a.f = D; a.e = E; a.chunk = 4;
    a.q = q; a.k = k; a.v = v; a.dout = dob; a.dq = dq; a.dk = dk; a.dv = dv;
    a.q_rs = D; a.q_cs = 1; a.k_rs = D; a.k_cs = 1; a.v_rs = E; a.v_cs = 1;
    a.do_rs = E; a.do_cs = 1;
    a.dq_rs = D; a.dq_cs = 1; a.dk_rs = D; a.dk_cs = 1; a.dv_rs = E; a.dv_cs = 1;
    a.scale = c->scale; a.eps = c->eps;
    a.fmap_q = a.fmap_k = c->fmap;
    a.norm = c->norm; a.eps_mode = c->eps_mode;
    work = poisoned(la_linear_bwd_work_size(LA_FORM_NONCAUSAL, &a, is));
    if (f64) {
        la_linear_bwd_noncausal_f64(&a, work);
    }
    else {
        la_linear_bwd_noncausal_f32(&a, work);
    }
    for (i = 0; i < T * D; i++) {
        got[i] = GET(dq, i);
    }
    for (i = 0; i < S * D; i++) {
        got[T * D + i] = GET(dk, i);
    }
    for (i = 0; i < S * E; i++) {
        got[T * D + S * D + i] = GET(dv, i);
    }
    snprintf(what, sizeof(what), "%s noncausal fmap %d norm %d", f64 ? "f64" : "f32",
             c->fmap, c->norm);
    check(what, rel_err(got, fd, NN), f64 ? 1e-6 : 2e-4);
    free(work);
    free(q); free(k); free(v); free(dob); free(dq); free(dk); free(dv);
}

int
main(void)
{
    unsigned seed = 777u;
    const int fmaps[3] = {LA_FMAP_IDENTITY, LA_FMAP_ELU1, LA_FMAP_RELU};
    const int norms[3] = {LA_NORM_NONE, LA_NORM_DIV, LA_NORM_RMS};
    int fi, ni, d, f64, em;
    for (f64 = 0; f64 < 2; f64++) {
        for (fi = 0; fi < 3; fi++) {
            for (ni = 0; ni < 3; ni++) {
                for (d = 0; d < 3; d++) {
                    for (em = 0; em < (norms[ni] == LA_NORM_DIV ? 2 : 1); em++) {
                        cfg c = {fmaps[fi], norms[ni], em ? LA_EPS_CLAMP : LA_EPS_ADD, d,
                                 0.7, norms[ni] == LA_NORM_RMS ? 1e-8 : 1e-6};
                        run_causal(&c, LA_FORM_CHUNKED, 4, f64, &seed);
                        run_causal(&c, LA_FORM_CHUNKED, 64, f64, &seed);
                        run_causal(&c, LA_FORM_RECURRENT, 5, f64, &seed);
                    }
                }
                {
                    cfg c = {fmaps[fi], norms[ni], LA_EPS_ADD, 0, 0.7,
                             norms[ni] == LA_NORM_RMS ? 1e-8 : 1e-6};
                    run_noncausal(&c, f64, &seed);
                }
            }
        }
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
