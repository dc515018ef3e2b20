/*
 * test_diag_bwd.c -- the backward of TransNormer's DiagAttention
 * (kernels/diag_bwd.h) without Python, against central finite differences of
 * a naive double-precision forward written from the definition (blocks of w
 * absolute positions, the c cached rows first when causal): float32 and
 * float64, softmax (T2) and ReLU with and without the norm (T1), causal with
 * a block cache and non-causal with s < t and s > t, a strided q, scratch and
 * outputs poisoned with NaN.  Run by ctest.
 */

#include "la_test.h"

#include "kernels/diag.h"
#include "kernels/diag_bwd.h"
#include "kernels/linear.h"

enum { T = 13, D = 3, E = 4, W = 4, C = 2, QCS = 2, MAXS = 16 };

typedef struct {
    int causal, variant, norm, s, c;
    double scale, eps;
} cfg;

/* <do, o> of the naive forward; kc/vc rows come first (positions t0-c..) */
static double
loss(const cfg *g, const double *q, const double *k, const double *v,
     const double *kc, const double *vc, const double *dout)
{
    double total = 0;
    int t, s, j, i;
    for (t = 0; t < T; t++) {
        double z[MAXS + C], num[E], m = -HUGE_VAL, sum = 0;
        int nk = 0, pos_t = g->causal ? t + g->c : t;
        const double *ks[MAXS + C], *vs[MAXS + C];
        if (g->causal) {
            for (s = 0; s < g->c; s++) {
                if (s / W == pos_t / W) {
                    ks[nk] = kc + s * D;
                    vs[nk] = vc + s * E;
                    nk++;
                }
            }
        }
        for (s = 0; s < g->s; s++) {
            int pos_s = g->causal ? s + g->c : s;
            if (pos_s / W == pos_t / W && (!g->causal || s <= t)) {
                ks[nk] = k + s * D;
                vs[nk] = v + s * E;
                nk++;
            }
        }
        for (j = 0; j < nk; j++) {
            double dot = 0;
            for (i = 0; i < D; i++) {
                dot += q[t * D + i] * ks[j][i];
            }
            z[j] = g->scale * dot;
            m = z[j] > m ? z[j] : m;
        }
        for (j = 0; j < nk; j++) {
            z[j] = g->variant == LA_DIAG_SOFTMAX ? exp(z[j] - m) : (z[j] > 0 ? z[j] : 0);
            sum += z[j];
        }
        for (i = 0; i < E; i++) {
            num[i] = 0;
            for (j = 0; j < nk; j++) {
                num[i] += z[j] * vs[j][i];
            }
        }
        if (g->variant == LA_DIAG_SOFTMAX) {
            for (i = 0; i < E; i++) {
                num[i] = sum > 0 ? num[i] / sum : 0;
            }
        }
        else if (g->norm == LA_NORM_RMS) {
            double ss = 0;
            for (i = 0; i < E; i++) {
                ss += num[i] * num[i];
            }
            for (i = 0; i < E; i++) {
                num[i] /= sqrt(ss / E) + g->eps;
            }
        }
        for (i = 0; i < E; i++) {
            total += dout[t * E + i] * num[i];
        }
    }
    return total;
}

static double
fd(const cfg *g, double *x, int n, int at, const double *q, const double *k,
   const double *v, const double *kc, const double *vc, const double *dout)
{
    const double h = 1e-6, keep = x[at];
    double fp, fm;
    (void)n;
    x[at] = keep + h;
    fp = loss(g, q, k, v, kc, vc, dout);
    x[at] = keep - h;
    fm = loss(g, q, k, v, kc, vc, dout);
    x[at] = keep;
    return (fp - fm) / (2 * h);
}

static double
get(const void *p, int f64, size_t i)
{
    return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static void
put(void *p, int f64, size_t i, double x)
{
    if (f64) {
        ((double *)p)[i] = x;
    }
    else {
        ((float *)p)[i] = (float)x;
    }
}

static void
run(const cfg *g, int f64, unsigned *seed)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    const int S = g->s, c = g->c;
    double q[T * D], k[MAXS * D], v[MAXS * E], kc[C * D + 1], vc[C * E + 1], dout[T * E];
    void *qb = poisoned((size_t)T * D * QCS * is), *kb = poisoned((size_t)S * D * is);
    void *vb = poisoned((size_t)S * E * is), *kcb = poisoned((size_t)(c * D + 1) * is);
    void *vcb = poisoned((size_t)(c * E + 1) * is), *db = poisoned((size_t)T * E * is);
    void *dq = poisoned((size_t)T * D * is), *dk = poisoned((size_t)S * D * is);
    void *dv = poisoned((size_t)S * E * is), *dkc = poisoned((size_t)(c * D + 1) * is);
    void *dvc = poisoned((size_t)(c * E + 1) * is);
    la_diag_bwd_args a;
    void *work;
    double num, den, err;
    int i;
    char what[160];
    /* round the inputs to the kernel's dtype so both sides see the same numbers */
    for (i = 0; i < T * D; i++) {
        q[i] = urand(seed);
        put(qb, f64, (size_t)i * QCS, q[i]);
        q[i] = get(qb, f64, (size_t)i * QCS);
    }
#define FILL(x, xb, n)                          \
    for (i = 0; i < (n); i++) {                 \
        x[i] = urand(seed);                     \
        put(xb, f64, (size_t)i, x[i]);          \
        x[i] = get(xb, f64, (size_t)i);         \
    }
    FILL(k, kb, S * D)
    FILL(v, vb, S * E)
    FILL(kc, kcb, c * D)
    FILL(vc, vcb, c * E)
    FILL(dout, db, T * E)
#undef FILL
    memset(&a, 0, sizeof(a));
    a.t = T; a.s = S; a.d = D; a.e = E; a.c = c; a.w = W;
    a.q = qb; a.k = kb; a.v = vb; a.kc = kcb; a.vc = vcb; a.dout = db;
    a.dq = dq; a.dk = dk; a.dv = dv; a.dkc = dkc; a.dvc = dvc;
    a.q_rs = D * QCS; a.q_cs = QCS; a.k_rs = D; a.k_cs = 1; a.v_rs = E; a.v_cs = 1;
    a.kc_rs = D; a.kc_cs = 1; a.vc_rs = E; a.vc_cs = 1; a.do_rs = E; a.do_cs = 1;
    a.dq_rs = D; a.dq_cs = 1; a.dk_rs = D; a.dk_cs = 1; a.dv_rs = E; a.dv_cs = 1;
    a.dkc_rs = D; a.dkc_cs = 1; a.dvc_rs = E; a.dvc_cs = 1;
    a.scale = g->scale; a.eps = g->eps;
    a.causal = g->causal; a.variant = g->variant; a.norm = g->norm;
    work = poisoned(la_diag_bwd_work_size(&a, is));
    if ((f64 ? la_diag_bwd_f64 : la_diag_bwd_f32)(&a, work) != LA_OK) {
        failures++;
        fprintf(stderr, "FAIL la_diag_bwd returned an error\n");
    }
#define CMP(name, x, xb, n)                                                    \
    num = den = 0;                                                             \
    for (i = 0; i < (n); i++) {                                                \
        double r = fd(g, x, n, i, q, k, v, kc, vc, dout), e = get(xb, f64, i) - r; \
        num += e * e;                                                          \
        den += r * r;                                                          \
    }                                                                          \
    err = sqrt(num / (den > 1e-6 ? den : 1e-6));                               \
    snprintf(what, sizeof what, "%s %s causal=%d variant=%d norm=%d s=%d c=%d", \
             f64 ? "f64" : "f32", name, g->causal, g->variant, g->norm, S, c); \
    check(what, err, f64 ? 1e-6 : 1e-4);
    CMP("dq", q, dq, T * D)
    CMP("dk", k, dk, S * D)
    CMP("dv", v, dv, S * E)
    if (c > 0) {
        CMP("dkc", kc, dkc, c * D)
        CMP("dvc", vc, dvc, c * E)
    }
#undef CMP
    free(work);
    free(qb); free(kb); free(vb); free(kcb); free(vcb); free(db);
    free(dq); free(dk); free(dv); free(dkc); free(dvc);
}

int
main(void)
{
    unsigned seed = 4242u;
    const int variants[3][2] = {{LA_DIAG_SOFTMAX, LA_NORM_NONE},
                                {LA_DIAG_RELU, LA_NORM_RMS},
                                {LA_DIAG_RELU, LA_NORM_NONE}};
    int f64, vi;
    for (f64 = 0; f64 < 2; f64++) {
        for (vi = 0; vi < 3; vi++) {
            cfg causal0 = {1, variants[vi][0], variants[vi][1], T, 0, 0.6, 1e-8};
            cfg causal2 = {1, variants[vi][0], variants[vi][1], T, C, 0.6, 1e-8};
            cfg nc_short = {0, variants[vi][0], variants[vi][1], 7, 0, 0.6, 1e-8};
            cfg nc_long = {0, variants[vi][0], variants[vi][1], MAXS, 0, 0.6, 1e-8};
            run(&causal0, f64, &seed);
            run(&causal2, f64, &seed);
            run(&nc_short, f64, &seed);
            run(&nc_long, f64, &seed);
        }
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
