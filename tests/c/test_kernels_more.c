/*
 * test_kernels_more.c -- the pure-C kernels the other two programs do not
 * cover, each against a naive double-precision loop written here from the
 * formula in its header: softmax attention, the elementwise and random-feature
 * maps (rfa, performer), Performer attention in its four forms, LAVO (causal
 * recurrent and chunked, non-causal), RA and LARA.  float32 and float64, row
 * strides wider than the rows, scratch poisoned with NaN.  Run by ctest.
 */

#include "la_test.h"

#include "kernels/featmap.h"
#include "kernels/lara.h"
#include "kernels/lavo.h"
#include "kernels/linear.h"
#include "kernels/performer.h"
#include "kernels/softmax.h"
#include "la_vmath.h"

static double *
rnd(unsigned *s, size_t n, double amp)
{
    double *x = malloc(sizeof(double) * (n ? n : 1));
    size_t i;
    for (i = 0; i < n; i++) {
        x[i] = amp * urand(s);
    }
    return x;
}

/* rows x cols doubles -> a T buffer with row stride rs (>= cols); padding is NaN. */
static void *
tobuf(const double *x, la_index rows, la_index cols, la_index rs, int f64)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    char *b = poisoned(is * (size_t)(rows * rs + 1));
    la_index i, j;
    for (i = 0; i < rows; i++) {
        for (j = 0; j < cols; j++) {
            if (f64) {
                ((double *)b)[i * rs + j] = x[i * cols + j];
            }
            else {
                ((float *)b)[i * rs + j] = (float)x[i * cols + j];
            }
        }
    }
    return b;
}

/* x as the kernel sees it (rounded to float for float32). */
static void
round_as(double *x, size_t n, int f64)
{
    size_t i;
    for (i = 0; !f64 && i < n; i++) {
        x[i] = (double)(float)x[i];
    }
}

static double
get(const void *b, la_index idx, int f64)
{
    return f64 ? ((const double *)b)[idx] : (double)((const float *)b)[idx];
}

/* max |got - want| / max(1, max |want|) over rows x cols (got with row stride rs). */
static void
compare(const char *what, const void *got, la_index rs, const double *want, la_index rows,
        la_index cols, int f64, double tol32)
{
    double err = 0, mag = 1;
    la_index i, j;
    for (i = 0; i < rows; i++) {
        for (j = 0; j < cols; j++) {
            const double w = want[i * cols + j], g = get(got, i * rs + j, f64);
            const double d = fabs(g - w);
            err = (d > err || d != d) ? d : err;
            mag = fabs(w) > mag ? fabs(w) : mag;
        }
    }
    checks++;
    if (!(err / mag <= (f64 ? 1e-9 : tol32))) {
        failures++;
        fprintf(stderr, "FAIL %s (%s): relative error %.3e\n", what, f64 ? "f64" : "f32",
                err / mag);
    }
}

static void
compare_d(const char *what, const double *got, const double *want, la_index n, double tol)
{
    double err = 0, mag = 1;
    la_index i;
    for (i = 0; i < n; i++) {
        const double dd = fabs(got[i] - want[i]);
        err = (dd > err || dd != dd) ? dd : err;
        mag = fabs(want[i]) > mag ? fabs(want[i]) : mag;
    }
    checks++;
    if (!(err / mag <= tol)) {
        failures++;
        fprintf(stderr, "FAIL %s: relative error %.3e\n", what, err / mag);
    }
}

static void
expect_ok(const char *what, la_status st)
{
    checks++;
    if (st != LA_OK) {
        failures++;
        fprintf(stderr, "FAIL %s: status %d\n", what, (int)st);
    }
}

static double
dot(const double *a, const double *b, la_index n)
{
    double s = 0;
    la_index i;
    for (i = 0; i < n; i++) {
        s += a[i] * b[i];
    }
    return s;
}

/* ---------------------------------------------------------- softmax -- */
/* Against the formula, over query blocks x key blocks (tiles that cross the
 * diagonal, partial last tiles, one-key tiles), the query-block split
 * (part / nparts: every part run into the same output) and the saved lse. */
static void
test_softmax(unsigned *seed)
{
    int f64, causal, bi, ki, np;
    static const la_index blocks[] = {1, 3, 64}, kblocks[] = {1, 4, 0};
    for (f64 = 0; f64 < 2; f64++)
    for (causal = 0; causal < 2; causal++)
    for (bi = 0; bi < 3; bi++)
    for (ki = 0; ki < 3; ki++)
    for (np = 1; np <= 3; np += 2) {
        const la_index t = 23, s = causal ? 23 : 9, d = 5, e = 3;
        double *q = rnd(seed, t * d, 1.5), *k = rnd(seed, s * d, 1.5), *v = rnd(seed, s * e, 1);
        double *want = malloc(sizeof(double) * t * e), *l = malloc(sizeof(double) * s);
        double *wlse = malloc(sizeof(double) * t), *lse = malloc(sizeof(double) * t);
        la_softmax_args a;
        void *Q, *K, *V, *O, *W;
        la_index i, j, c, part;
        round_as(q, t * d, f64);
        round_as(k, s * d, f64);
        round_as(v, s * e, f64);
        for (i = 0; i < t; i++) {
            const la_index ns = causal ? i + 1 : s;
            double m = -INFINITY, z = 0;
            for (j = 0; j < ns; j++) {
                l[j] = 0.7 * dot(q + i * d, k + j * d, d);
                m = l[j] > m ? l[j] : m;
            }
            for (c = 0; c < e; c++) {
                want[i * e + c] = 0;
            }
            for (j = 0; j < ns; j++) {
                const double p = exp(l[j] - m);
                z += p;
                for (c = 0; c < e; c++) {
                    want[i * e + c] += p * v[j * e + c];
                }
            }
            for (c = 0; c < e; c++) {
                want[i * e + c] /= z;
            }
            wlse[i] = m + log(z);
            lse[i] = NAN;
        }
        memset(&a, 0, sizeof(a));
        a.t = t; a.s = s; a.d = d; a.e = e; a.block = blocks[bi]; a.kblock = kblocks[ki];
        a.q = Q = tobuf(q, t, d, d + 2, f64);
        a.k = K = tobuf(k, s, d, d, f64);
        a.v = V = tobuf(v, s, e, e + 1, f64);
        a.o = O = poisoned((f64 ? 8 : 4) * (size_t)(t * e));
        a.lse = lse;
        a.q_rs = d + 2; a.q_cs = 1; a.k_rs = d; a.k_cs = 1; a.v_rs = e + 1; a.v_cs = 1;
        a.o_rs = e; a.o_cs = 1; a.lse_s = 1;
        a.scale = 0.7;
        a.causal = causal;
        a.nparts = np;
        W = poisoned(la_softmax_work_size(&a, f64 ? 8 : 4));
        for (part = 0; part < np; part++) {
            a.part = part;
            expect_ok("softmax", f64 ? la_softmax_f64(&a, W) : la_softmax_f32(&a, W));
        }
        compare(causal ? "softmax causal" : "softmax", O, e, want, t, e, f64, 2e-5);
        compare_d("softmax lse", lse, wlse, t, f64 ? 1e-12 : 1e-5);
        free(q); free(k); free(v); free(want); free(l); free(wlse); free(lse);
        free(Q); free(K); free(V); free(O); free(W);
    }
}

/* ------------------------------------------------------ feature maps -- */
static double
phi_ref(int fmap, double x)
{
    switch (fmap) {
    case LA_FMAP_ELU1: return x > 0 ? x + 1 : exp(x);
    case LA_FMAP_RELU: return x > 0 ? x : 0;
    case LA_FMAP_ELU: return x > 0 ? x : exp(x) - 1;
    default: return x;
    }
}

/* Performer log-features of one row (scaled space), F entries; returns the
 * row's max of u (of [u ; -u] when hyperbolic): the published stabiliser. */
static double
perf_log_ref(int kind, double scale, const double *x, la_index d, const double *W,
             la_index r, double *l)
{
    const double sq = sqrt(scale);
    double h = 0, umax = -INFINITY;
    la_index i, c;
    for (c = 0; c < d; c++) {
        h += 0.5 * (sq * x[c]) * (sq * x[c]);
    }
    for (i = 0; i < r; i++) {
        double u = 0;
        for (c = 0; c < d; c++) {
            u += W[i * d + c] * sq * x[c];
        }
        umax = u > umax ? u : umax;
        umax = kind == LA_PERF_HYPERBOLIC && -u > umax ? -u : umax;
        if (kind == LA_PERF_HYPERBOLIC) {
            l[i] = u - h - log(sqrt(2.0 * r));
            l[r + i] = -u - h - log(sqrt(2.0 * r));
        }
        else if (kind == LA_PERF_RELU) {
            l[i] = (u > 0 ? u : 0) / sqrt((double)r) + LA_PERF_RELU_EPS;
        }
        else {
            l[i] = u - h - log(sqrt((double)r));
        }
    }
    return umax;
}

/* la_exp_nonpos_f32 on [LA_EXP_NONPOS_MIN_F32, 0] (every 997th float32 there and
 * the ends): within 2 ulp of exp in double, and la_exp_sm_f32's bits. */
static void
test_exp_nonpos(void)
{
    const float lo = LA_EXP_NONPOS_MIN_F32;
    double worst = 0;
    long same = 1, n = 0;
    uint32_t b, blo;
    memcpy(&blo, &lo, sizeof(blo));
    for (b = 0x80000000u;; b = b + 997u > blo ? blo : b + 997u) {
        float x, y;
        double want, ulp;
        memcpy(&x, &b, sizeof(x));
        y = la_exp_nonpos_f32(x);
        want = exp((double)x);
        ulp = (double)nextafterf((float)want, INFINITY) - (double)(float)want;
        worst = fmax(worst, fabs((double)y - want) / ulp);
        same = same && y == la_exp_sm_f32(x);
        n++;
        if (b == blo) {
            break;
        }
    }
    check("exp_nonpos ulps", worst, 2.0);
    check("exp_nonpos == exp_sm", same ? 0.0 : 1.0, 0.0);
    check("exp_nonpos points", n > 1000000 ? 0.0 : 1.0, 0.0);
}

static void
test_featmaps(unsigned *seed)
{
    int f64, fm, kind, shift, lg;
    for (f64 = 0; f64 < 2; f64++) {
        const size_t is = f64 ? 8 : 4;
        const la_index n = 9, t = 7, d = 5, r = 4;
        /* elementwise maps, input stride 3 */
        for (fm = 0; fm < LA_FMAP_COUNT; fm++) {
            double *x = rnd(seed, n, 3), want[9];
            void *X = tobuf(x, n, 1, 3, f64), *Y = poisoned(is * n);
            la_index j;
            round_as(x, n, f64);
            for (j = 0; j < n; j++) {
                want[j] = phi_ref(fm, 0.8 * x[j]);
            }
            if (f64) {
                la_featmap_row_f64(fm, 0.8, (const double *)X, 3, n, (double *)Y);
            }
            else {
                la_featmap_row_f32(fm, 0.8, (const float *)X, 3, n, (float *)Y);
            }
            compare("featmap", Y, 1, want, 1, n, f64, 1e-6);
            free(x); free(X); free(Y);
        }
        /* rfa features: y = sqrt(2/F) [sin u ; cos u], u = sqrt(scale) W x/(|x|+1e-3) */
        {
            double *x = rnd(seed, t * d, 2), *W = rnd(seed, r * d, 1.2);
            double *want = malloc(sizeof(double) * t * 2 * r);
            void *X, *Wb, *Y, *Wk;
            la_index i, j, c;
            round_as(x, t * d, f64);
            round_as(W, r * d, f64);
            for (i = 0; i < t; i++) {
                const double nx = sqrt(dot(x + i * d, x + i * d, d)) + LA_RFA_NORM_EPS;
                for (j = 0; j < r; j++) {
                    double u = 0;
                    for (c = 0; c < d; c++) {
                        u += W[j * d + c] * x[i * d + c] / nx;
                    }
                    u *= sqrt(1.3);
                    want[i * 2 * r + j] = sqrt(2.0 / (2 * r)) * sin(u);
                    want[i * 2 * r + r + j] = sqrt(2.0 / (2 * r)) * cos(u);
                }
            }
            X = tobuf(x, t, d, d + 1, f64);
            Wb = tobuf(W, r, d, d, f64);
            Y = poisoned(is * (size_t)(t * (2 * r + 3)));
            Wk = poisoned(la_rf_work_size(t, d, r, is));
            if (f64) {
                la_rfa_features_f64(t, 1.3, X, d + 1, 1, d, Wb, d, 1, r, Y, 2 * r + 3, 1, Wk);
            }
            else {
                la_rfa_features_f32(t, 1.3, X, d + 1, 1, d, Wb, d, 1, r, Y, 2 * r + 3, 1, Wk);
            }
            compare("rfa features", Y, 2 * r + 3, want, t, 2 * r, f64, 1e-5);
            free(x); free(W); free(want); free(X); free(Wb); free(Y); free(Wk);
        }
        /* performer features: exp(l - s) + eps / sqrt(r'), or l - s with log */
        for (kind = 0; kind < 3; kind++)
        for (shift = 0; shift < 3; shift++)
        for (lg = 0; lg < 2; lg++) {
            const la_index F = kind == LA_PERF_HYPERBOLIC ? 2 * r : r;
            const double eps = 1e-3, sc = 0.6;
            double *x = rnd(seed, t * d, 1.5), *W = rnd(seed, r * d, 1.0);
            double *l = malloc(sizeof(double) * t * F), *want = malloc(sizeof(double) * t * F);
            double smax = -INFINITY, *umax = malloc(sizeof(double) * t);
            void *X, *Wb, *Y, *Wk;
            la_index i, j;
            round_as(x, t * d, f64);
            round_as(W, r * d, f64);
            for (i = 0; i < t; i++) {
                umax[i] = perf_log_ref(kind, sc, x + i * d, d, W, r, l + i * F);
                smax = umax[i] > smax ? umax[i] : smax;
            }
            /* y = c (exp(u - h - s) + eps) = exp(l - s) + c eps, c = 1/sqrt(F): s = 0,
             * the row's max of u (queries) or the slice's (keys); log: l - s */
            for (i = 0; i < t; i++) {
                const double s = shift == 1 ? umax[i] : shift == 2 ? smax : 0.0;
                for (j = 0; j < F; j++) {
                    want[i * F + j] = kind == LA_PERF_RELU ? l[i * F + j]
                                      : lg ? l[i * F + j] - s
                                           : exp(l[i * F + j] - s) + eps / sqrt((double)F);
                }
            }
            free(umax);
            X = tobuf(x, t, d, d, f64);
            Wb = tobuf(W, r, d, d + 2, f64);
            Y = poisoned(is * (size_t)(t * F));
            Wk = poisoned(la_rf_work_size(t, d, r, is));
            if (f64) {
                la_performer_features_f64(t, kind, shift, lg, sc, eps, X, d, 1, d, Wb, d + 2,
                                          1, r, Y, F, 1, Wk);
            }
            else {
                la_performer_features_f32(t, kind, shift, lg, sc, eps, X, d, 1, d, Wb, d + 2,
                                          1, r, Y, F, 1, Wk);
            }
            {
                char what[128];
                snprintf(what, sizeof(what), "performer features kind %d shift %d log %d",
                         kind, shift, lg);
                compare(what, Y, F, want, t, F, f64, 2e-5);
            }
            free(x); free(W); free(l); free(want); free(X); free(Wb); free(Y); free(Wk);
        }
    }
}

/* -------------------------------------------------------- performer -- */
typedef la_status (*perf_fn)(const la_performer_args *, void *);

static void
test_performer(unsigned *seed)
{
    static const int forms[] = {LA_FORM_RECURRENT, LA_FORM_CHUNKED, LA_FORM_PARALLEL,
                                LA_FORM_NONCAUSAL};
    int f64, fi, kind, norm;
    for (f64 = 0; f64 < 2; f64++)
    for (fi = 0; fi < 4; fi++)
    for (kind = 0; kind < 2; kind++)
    for (norm = 0; norm < 2; norm++) {
        const int form = forms[fi], causal = form != LA_FORM_NONCAUSAL;
        const la_index t = 10, s = causal ? t : 7, d = 4, m = 3, e = 3;
        const la_index F = kind == LA_PERF_HYPERBOLIC ? 2 * m : m;
        const double sc = 0.5, eps = 1e-3;
        const size_t is = f64 ? 8 : 4;
        double *q = rnd(seed, t * d, 1.0), *k = rnd(seed, s * d, 1.0), *v = rnd(seed, s * e, 1);
        double *W = rnd(seed, m * d, 1.0), *lq = malloc(sizeof(double) * F);
        double *lk = malloc(sizeof(double) * s * F), *want = malloc(sizeof(double) * t * e);
        double *S = calloc((size_t)(F * e), sizeof(double)), *z = calloc((size_t)F, sizeof(double));
        double mu1 = 0;
        void *Q, *K, *V, *Wb, *O, *S0, *Z0, *S1, *Z1, *Wk;
        la_performer_args a;
        perf_fn fn;
        la_index i, j, c, f;
        round_as(q, t * d, f64);
        round_as(k, s * d, f64);
        round_as(v, s * e, f64);
        round_as(W, m * d, f64);
        for (j = 0; j < s; j++) {
            perf_log_ref(kind, sc, k + j * d, d, W, m, lk + j * F);
        }
        for (i = 0; i < t; i++) {
            const la_index ns = causal ? i + 1 : s;
            double den = 0;
            perf_log_ref(kind, sc, q + i * d, d, W, m, lq);
            for (c = 0; c < e; c++) {
                want[i * e + c] = 0;
            }
            for (j = 0; j < ns; j++) {
                double w = 0;
                for (f = 0; f < F; f++) {
                    w += exp(lq[f]) * exp(lk[j * F + f]);
                }
                den += w;
                for (c = 0; c < e; c++) {
                    want[i * e + c] += w * v[j * e + c];
                }
            }
            for (c = 0; norm == LA_NORM_DIV && c < e; c++) {
                want[i * e + c] /= den + eps;
            }
        }
        for (j = 0; j < s; j++) { /* the final state on the true scale */
            for (f = 0; f < F; f++) {
                z[f] += exp(lk[j * F + f]);
                for (c = 0; c < e; c++) {
                    S[f * e + c] += exp(lk[j * F + f]) * v[j * e + c];
                }
            }
        }
        memset(&a, 0, sizeof(a));
        a.t = t; a.s = s; a.d = d; a.m = m; a.f = F; a.e = e; a.chunk = 3 + (fi == 2);
        a.q = Q = tobuf(q, t, d, d + 1, f64);
        a.k = K = tobuf(k, s, d, d, f64);
        a.v = V = tobuf(v, s, e, e, f64);
        a.w = Wb = tobuf(W, m, d, d, f64);
        a.q_rs = d + 1; a.q_cs = 1; a.k_rs = d; a.k_cs = 1; a.v_rs = e; a.v_cs = 1;
        a.w_rs = d; a.w_cs = 1;
        a.o = O = poisoned(is * (size_t)(t * e));
        a.o_rs = e; a.o_cs = 1;
        a.s0 = S0 = calloc((size_t)(F * e), is);
        a.z0 = Z0 = calloc((size_t)F, is);
        a.s1 = S1 = poisoned(is * (size_t)(F * e));
        a.z1 = Z1 = poisoned(is * (size_t)F);
        a.s0_rs = e; a.s0_cs = 1; a.z0_s = 1; a.s1_rs = e; a.s1_cs = 1; a.z1_s = 1;
        a.mu0 = -INFINITY;
        a.mu1 = &mu1;
        a.scale = sc;
        a.eps = eps;
        a.feat = kind;
        a.norm = norm;
        Wk = poisoned(la_performer_work_size(form, &a, is));
        fn = form == LA_FORM_RECURRENT ? (f64 ? la_performer_recurrent_f64
                                              : la_performer_recurrent_f32)
           : form == LA_FORM_CHUNKED   ? (f64 ? la_performer_chunked_f64
                                              : la_performer_chunked_f32)
           : form == LA_FORM_PARALLEL  ? (f64 ? la_performer_parallel_f64
                                              : la_performer_parallel_f32)
                                       : (f64 ? la_performer_noncausal_f64
                                              : la_performer_noncausal_f32);
        expect_ok("performer", fn(&a, Wk));
        compare("performer output", O, e, want, t, e, f64, 5e-5);
        if (causal) {
            double *S1d = malloc(sizeof(double) * F * e), *z1d = malloc(sizeof(double) * F);
            for (f = 0; f < F; f++) {
                z1d[f] = exp(mu1) * get(Z1, f, f64);
                for (c = 0; c < e; c++) {
                    S1d[f * e + c] = exp(mu1) * get(S1, f * e + c, f64);
                }
            }
            compare_d("performer state S", S1d, S, F * e, f64 ? 1e-9 : 5e-5);
            if (norm != LA_NORM_NONE) { /* z is the denominator's state */
                compare_d("performer state z", z1d, z, F, f64 ? 1e-9 : 5e-5);
            }
            free(S1d); free(z1d);
        }
        free(q); free(k); free(v); free(W); free(lq); free(lk); free(want); free(S); free(z);
        free(Q); free(K); free(V); free(Wb); free(O); free(S0); free(Z0); free(S1); free(Z1);
        free(Wk);
    }
}

/* ------------------------------------------------------------- LAVO -- */

/* Output row o (d) of a joint softmax over memory slots and local keys. */
static void
lavo_row(const double *q, const double *B, const double *h, const double *hv, int mem,
         const double *mb, la_index r, const double *x, const double *vv, const la_index *js,
         const double *pbias, la_index nl, la_index d, double scale, double *o)
{
    double lg[64], M = -INFINITY, Z = 0;
    la_index i, c, n = 0;
    for (i = 0; mem && i < r; i++, n++) {
        lg[n] = scale * h[i] * dot(B + i * d, q, d) + mb[i];
    }
    for (i = 0; i < nl; i++, n++) {
        lg[n] = scale * dot(q, x + js[i] * d, d) + pbias[i];
    }
    for (i = 0; i < n; i++) {
        M = lg[i] > M ? lg[i] : M;
    }
    for (c = 0; c < d; c++) {
        o[c] = 0;
    }
    for (i = 0, n = 0; mem && i < r; i++, n++) {
        const double p = exp(lg[n] - M);
        Z += p;
        for (c = 0; c < d; c++) {
            o[c] += p * hv[i] * B[i * d + c];
        }
    }
    for (i = 0; i < nl; i++, n++) {
        const double p = exp(lg[n] - M);
        Z += p;
        for (c = 0; c < d; c++) {
            o[c] += p * vv[js[i] * d + c];
        }
    }
    for (c = 0; c < d; c++) {
        o[c] = Z > 0 ? o[c] / Z : 0;
    }
}

/* Means over the keys in `use` of B x_j and B v_j. */
static int
lavo_means(const double *B, const double *x, const double *vv, const char *use, la_index s,
           la_index r, la_index d, double *h, double *hv)
{
    la_index i, j, cnt = 0;
    for (i = 0; i < r; i++) {
        h[i] = hv[i] = 0;
    }
    for (j = 0; j < s; j++) {
        if (!use[j]) {
            continue;
        }
        cnt++;
        for (i = 0; i < r; i++) {
            h[i] += dot(B + i * d, x + j * d, d);
            hv[i] += dot(B + i * d, vv + j * d, d);
        }
    }
    for (i = 0; cnt && i < r; i++) {
        h[i] /= (double)cnt;
        hv[i] /= (double)cnt;
    }
    return cnt > 0;
}

static void
test_lavo(unsigned *seed)
{
    int f64, wi, fl, rec, ci;
    static const la_index ws[] = {0, 3};
    static const la_index chunks[] = {3, 16};
    for (f64 = 0; f64 < 2; f64++)
    for (wi = 0; wi < 2; wi++)
    for (fl = 0; fl < 8; fl++)
    for (rec = 0; rec < 2; rec++)
    for (ci = 0; ci < 2 - rec; ci++) {
        const la_index T = 10, d = 4, r = 3, w = ws[wi], e = d;
        const int flags = fl | (rec ? LA_LAVO_RECURRENT : 0), sep = fl & LA_LAVO_SEPARATE_V;
        const size_t is = f64 ? 8 : 4;
        const double sc = 0.6;
        double *q = rnd(seed, T * d, 1), *x = rnd(seed, T * d, 1), *v = rnd(seed, T * d, 1);
        double *B = rnd(seed, r * d, 1), *pb = rnd(seed, w + 1, 0.5), *mb = rnd(seed, r, 0.5);
        double *want = malloc(sizeof(double) * T * e), h[8], hv[8], pbias[8];
        double sums0[8] = {0}, vsums0[8] = {0}, sums1[8], vsums1[8];
        char use[16];
        la_index js[8], t, j, nl;
        void *Q, *K, *V, *Bb, *RK0, *RV0, *RK1, *RV1, *O, *Wk;
        la_lavo_args a;
        if (w == 0 && (fl & LA_LAVO_BLOCK)) {
            free(q); free(x); free(v); free(B); free(pb); free(mb); free(want);
            continue;
        }
        round_as(q, T * d, f64);
        round_as(x, T * d, f64);
        round_as(v, T * d, f64);
        round_as(B, r * d, f64);
        for (t = 1; t <= T; t++) { /* 1-based positions */
            const la_index lo = w == 0 ? t + 1
                                : (fl & LA_LAVO_BLOCK) ? ((t - 1) / w) * w + 1
                                : (t - w + 1 < 1 ? 1 : t - w + 1);
            const la_index mcount = (fl & LA_LAVO_BEFORE_LOCAL) ? lo - 1 : t;
            int mem;
            for (j = 0; j < T; j++) {
                use[j] = j + 1 <= mcount;
            }
            mem = lavo_means(B, x, sep ? v : x, use, T, r, d, h, hv);
            for (j = lo, nl = 0; j <= t; j++, nl++) {
                js[nl] = j - 1;
                pbias[nl] = pb[t - j];
            }
            lavo_row(q + (t - 1) * d, B, h, sep ? hv : h, mem, mb, r, x, sep ? v : x, js, pbias,
                     nl, d, sc, want + (t - 1) * e);
        }
        memset(&a, 0, sizeof(a));
        a.t = a.s = T; a.d = d; a.e = e; a.r = r; a.w = w; a.pos = 0; a.chunk = chunks[ci];
        a.q = Q = tobuf(q, T, d, d + 1, f64);
        a.k = K = tobuf(x, T, d, d, f64);
        a.v = V = tobuf(sep ? v : x, T, d, d, f64);
        a.bases = Bb = tobuf(B, r, d, d, f64);
        a.q_rs = d + 1; a.q_cs = 1; a.k_rs = d; a.k_cs = 1; a.v_rs = d; a.v_cs = 1;
        a.b_rs = d; a.b_cs = 1;
        a.pb = pb; a.pb_s = 1; a.mb = mb; a.mb_s = 1;
        a.sums0 = sums0; a.vsums0 = vsums0; a.s0_s = 1; a.vs0_s = 1;
        a.ring_k0 = RK0 = calloc((size_t)(w * d + 1), is);
        a.ring_v0 = RV0 = calloc((size_t)(w * e + 1), is);
        a.rk0_rs = d; a.rk0_cs = 1; a.rv0_rs = e; a.rv0_cs = 1;
        a.o = O = poisoned(is * (size_t)(T * e));
        a.o_rs = e; a.o_cs = 1;
        a.sums1 = sums1; a.vsums1 = vsums1; a.s1_s = 1; a.vs1_s = 1;
        a.ring_k1 = RK1 = poisoned(is * (size_t)(w * d + 1));
        a.ring_v1 = RV1 = poisoned(is * (size_t)(w * e + 1));
        a.rk1_rs = d; a.rk1_cs = 1; a.rv1_rs = e; a.rv1_cs = 1;
        a.scale = sc;
        a.flags = flags;
        Wk = poisoned(la_lavo_causal_work_size(&a, is));
        expect_ok("lavo causal", f64 ? la_lavo_causal_f64(&a, Wk) : la_lavo_causal_f32(&a, Wk));
        compare(rec ? "lavo recurrent" : "lavo chunked", O, e, want, T, e, f64, 5e-5);
        /* non-causal self-attention on the same rows: window |i - j| <= w */
        if (!(fl & LA_LAVO_BLOCK) && !rec && ci == 0) {
            double *pbn = rnd(seed, 2 * w + 1, 0.5);
            void *Wn;
            for (t = 0; t < T; t++) {
                int mem;
                for (j = 0, nl = 0; j < T; j++) {
                    const int local = w > 0 && (t - j <= w && j - t <= w);
                    use[j] = (fl & LA_LAVO_BEFORE_LOCAL) ? !local : 1;
                    if (local) {
                        js[nl] = j;
                        pbias[nl++] = pbn[t - j + w];
                    }
                }
                mem = lavo_means(B, x, sep ? v : x, use, T, r, d, h, hv);
                lavo_row(q + t * d, B, h, sep ? hv : h, mem, mb, r, x, sep ? v : x, js, pbias,
                         nl, d, sc, want + t * e);
            }
            a.pb = pbn;
            a.flags = fl;
            Wn = poisoned(la_lavo_noncausal_work_size(&a, is));
            expect_ok("lavo noncausal",
                      f64 ? la_lavo_noncausal_f64(&a, Wn) : la_lavo_noncausal_f32(&a, Wn));
            compare("lavo noncausal", O, e, want, T, e, f64, 5e-5);
            free(pbn);
            free(Wn);
        }
        free(q); free(x); free(v); free(B); free(pb); free(mb); free(want);
        free(Q); free(K); free(V); free(Bb); free(RK0); free(RV0); free(RK1); free(RV1);
        free(O); free(Wk);
    }
}

/* ------------------------------------------------------- RA and LARA -- */
static double
lse(const double *x, la_index n)
{
    double m = -INFINITY, z = 0;
    la_index i;
    for (i = 0; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    for (i = 0; i < n; i++) {
        z += exp(x[i] - m);
    }
    return m + log(z);
}

/* f(omega) = sum_j softmax_j(omega . k_j - |k_j|^2 / 2) v_j, added with weight wgt. */
static void
ra_feature(const double *om, const double *k, const double *v, la_index M, la_index d,
           la_index e, double wgt, double *acc)
{
    double l[64] = {0}, Z;
    la_index j, c;
    for (j = 0; j < M; j++) {
        l[j] = dot(om, k + j * d, d) - 0.5 * dot(k + j * d, k + j * d, d);
    }
    Z = lse(l, M);
    for (j = 0; j < M; j++) {
        for (c = 0; c < e; c++) {
            acc[c] += wgt * exp(l[j] - Z) * v[j * e + c];
        }
    }
}

static void
test_lara(unsigned *seed)
{
    int f64, comp, alpha;
    const la_index N = 6, M = 9, d = 4, e = 3, C = 3;
    const double sc = 0.5, sq = sqrt(0.5);
    for (f64 = 0; f64 < 2; f64++) {
        const size_t is = f64 ? 8 : 4;
        double *Q = rnd(seed, N * d, 1), *K = rnd(seed, M * d, 1), *V = rnd(seed, M * e, 1);
        double *q = malloc(sizeof(double) * N * d), *k = malloc(sizeof(double) * M * d);
        double *want = malloc(sizeof(double) * N * e);
        void *Qb, *Kb, *Vb, *O;
        la_lara_args a;
        la_index n, j, c, i;
        round_as(Q, N * d, f64);
        round_as(K, M * d, f64);
        round_as(V, M * e, f64);
        for (i = 0; i < N * d; i++) {
            q[i] = sq * Q[i];
        }
        for (i = 0; i < M * d; i++) {
            k[i] = sq * K[i];
        }
        memset(&a, 0, sizeof(a));
        a.n = N; a.m = M; a.d = d; a.e = e;
        a.q = Qb = tobuf(Q, N, d, d + 1, f64);
        a.k = Kb = tobuf(K, M, d, d, f64);
        a.v = Vb = tobuf(V, M, e, e, f64);
        a.q_rs = d + 1; a.q_cs = 1; a.k_rs = d; a.k_cs = 1; a.v_rs = e; a.v_cs = 1;
        a.o = O = poisoned(is * (size_t)(N * e));
        a.o_rs = e; a.o_cs = 1;
        a.scale = sc;
        /* RA: samples around the sampled key, the mixture mean, or the key mean */
        for (comp = 0; comp < 3; comp++) {
            const la_index Sm = 2;
            const double sigma = comp == 1 ? 0.0 : 0.3;
            double *nz = rnd(seed, N * Sm * d, 1), *un = malloc(sizeof(double) * N * Sm);
            void *NZ, *Wk;
            round_as(nz, N * Sm * d, f64);
            for (n = 0; n < N; n++) {
                double pi[64], l[64], Z, om[8], cen[8];
                for (j = 0; j < M; j++) {
                    l[j] = dot(q + n * d, k + j * d, d);
                }
                Z = lse(l, M);
                for (j = 0; j < M; j++) {
                    pi[j] = exp(l[j] - Z);
                }
                for (c = 0; c < e; c++) {
                    want[n * e + c] = 0;
                }
                for (i = 0; i < Sm; i++) {
                    la_index t;
                    /* a uniform half-way between two cumulative sums: no tie to round */
                    double cum = 0, u;
                    la_index pick = (la_index)((urand(seed) + 1) / 2 * (M - 1));
                    for (j = 0; j < pick; j++) {
                        cum += pi[j];
                    }
                    u = cum + 0.5 * pi[pick];
                    un[n * Sm + i] = u;
                    for (c = 0; c < d; c++) {
                        cen[c] = 0;
                        for (t = 0; t < M; t++) {
                            cen[c] += (comp == 1 ? pi[t] : 1.0 / (double)M) * k[t * d + c];
                        }
                        if (comp == 0) {
                            cen[c] = k[pick * d + c];
                        }
                        om[c] = q[n * d + c] + cen[c] + sigma * nz[(n * Sm + i) * d + c];
                    }
                    ra_feature(om, k, V, M, d, e, 1.0 / (double)Sm, want + n * e);
                }
            }
            a.c = Sm;
            a.noise = NZ = tobuf(nz, N * Sm, d, d, f64);
            a.nz_s0 = Sm * d; a.nz_s1 = d; a.nz_s2 = 1;
            a.unif = un; a.u_s0 = Sm; a.u_s1 = 1;
            a.sigma = sigma;
            a.flags = comp | (comp == 1 ? LA_RA_NO_NOISE : 0);
            Wk = poisoned(la_ra_work_size(&a, is));
            expect_ok("ra", f64 ? la_ra_f64(&a, Wk) : la_ra_f32(&a, Wk));
            compare("ra", O, e, want, N, e, f64, 5e-5);
            free(nz); free(un); free(NZ); free(Wk);
        }
        /* LARA: proposals omega_c with means mu_c and pooled queries qbar_c */
        for (alpha = 0; alpha < 3; alpha++) {
            double *om = rnd(seed, C * d, 0.8), *mu = rnd(seed, C * d, 0.8);
            double *qb = rnd(seed, C * d, 0.8), Zc[8], Pself[8], Pmix[8], Lc[8];
            double *f = calloc((size_t)(C * e), sizeof(double));
            void *OM, *MU, *QB, *Wk;
            round_as(om, C * d, f64);
            round_as(mu, C * d, f64);
            round_as(qb, C * d, f64);
            for (i = 0; i < C; i++) {
                double lk[64], P[8], lq[64];
                for (j = 0; j < M; j++) {
                    lk[j] = dot(om + i * d, k + j * d, d) - 0.5 * dot(k + j * d, k + j * d, d);
                }
                Zc[i] = lse(lk, M);
                ra_feature(om + i * d, k, V, M, d, e, 1.0, f + i * e);
                for (j = 0; j < C; j++) {
                    P[j] = dot(om + i * d, mu + j * d, d) - 0.5 * dot(mu + j * d, mu + j * d, d);
                }
                Pself[i] = P[i];
                Pmix[i] = lse(P, C);
                for (n = 0; n < N; n++) {
                    lq[n] = dot(qb + i * d, q + n * d, d);
                }
                Lc[i] = lse(lq, N);
            }
            for (n = 0; n < N; n++) {
                double lw[8], rr[8], rbar = 0, Z;
                for (i = 0; i < C; i++) {
                    rr[i] = exp(dot(qb + i * d, q + n * d, d) - Lc[i]);
                    rbar += rr[i] / (double)C;
                }
                for (i = 0; i < C; i++) {
                    const double base = dot(om + i * d, q + n * d, d) + Zc[i];
                    const double al = exp(Pself[i] - Pmix[i]) + 0.7 * (rr[i] - rbar);
                    lw[i] = alpha == 1 ? base - Pmix[i]
                          : alpha == 2 ? base - Pself[i]
                                       : log(al > 1e-8 ? al : 1e-8) + base - Pself[i];
                }
                Z = lse(lw, C);
                for (c = 0; c < e; c++) {
                    want[n * e + c] = 0;
                    for (i = 0; i < C; i++) {
                        want[n * e + c] += exp(lw[i] - Z) * f[i * e + c];
                    }
                }
            }
            a.c = C;
            a.omega = OM = tobuf(om, C, d, d, f64);
            a.mu = MU = tobuf(mu, C, d, d + 1, f64);
            a.qbar = QB = tobuf(qb, C, d, d, f64);
            a.om_rs = d; a.om_cs = 1; a.mu_rs = d + 1; a.mu_cs = 1; a.qb_rs = d; a.qb_cs = 1;
            a.alpha_coeff = 0.7;
            a.flags = alpha;
            Wk = poisoned(la_lara_work_size(&a, is));
            expect_ok("lara", f64 ? la_lara_f64(&a, Wk) : la_lara_f32(&a, Wk));
            compare("lara", O, e, want, N, e, f64, 5e-5);
            free(om); free(mu); free(qb); free(f); free(OM); free(MU); free(QB); free(Wk);
        }
        free(Q); free(K); free(V); free(q); free(k); free(want);
        free(Qb); free(Kb); free(Vb); free(O);
    }
}

int
main(void)
{
    unsigned seed = 12345u;
    test_softmax(&seed);
    test_exp_nonpos();
    test_featmaps(&seed);
    test_performer(&seed);
    test_lavo(&seed);
    test_lara(&seed);
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
