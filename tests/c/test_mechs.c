/*
 * test_mechs.c -- the other pure-C kernels without Python: the selective scan
 * and cosFormer's feature map against naive double-precision loops (f32 and
 * f64, strided and time-invariant B / C), and DiagAttention smoke runs: all
 * with scratch poisoned with NaN, so a read of unwritten scratch shows up as a
 * NaN in the output.  Run by ctest, under ASan/UBSan and valgrind (.ci/run).
 */

#include "la_test.h"

#include "kernels/cosformer.h"
#include "kernels/diag.h"
#include "kernels/linear.h"
#include "kernels/sscan.h"

#define PUT(buf, idx, val)                                                     \
    do {                                                                       \
        if (f64) ((double *)(buf))[idx] = (val);                               \
        else ((float *)(buf))[idx] = (float)(val);                             \
    } while (0)
#define GET(buf, idx) (f64 ? ((double *)(buf))[idx] : (double)((float *)(buf))[idx])

/* ------------------------------------------------------------ sscan -- */
static void
test_sscan(unsigned *seed)
{
    static const int Ls[] = {0, 1, 7, 33};
    int li, f64, inv, sp, hz;
    const int N = 5;
    for (li = 0; li < 4; li++)
    for (f64 = 0; f64 < 2; f64++)
    for (inv = 0; inv < 2; inv++)
    for (sp = 0; sp < 2; sp++)
    for (hz = 0; hz < 2; hz++) {
        const int L = Ls[li];
        const size_t is = f64 ? sizeof(double) : sizeof(float);
        double *u = malloc(sizeof(double) * (L + 1)), *dl = malloc(sizeof(double) * (L + 1));
        double *z = malloc(sizeof(double) * (L + 1)), *Bv = malloc(sizeof(double) * N * (L + 1));
        double *Cv = malloc(sizeof(double) * N * (L + 1)), A[5], h0[5], h[5];
        char *U = malloc(is * 2 * (L + 1)), *DL = malloc(is * (L + 1)), *Z = malloc(is * (L + 1));
        char *Bb = malloc(is * N * (L + 1)), *Cb = malloc(is * N * (L + 1));
        char *Ab = malloc(is * N), *H0 = malloc(is * N), *H1 = malloc(is * N);
        char *O = malloc(is * (L + 1));
        la_sscan_args a;
        void *work;
        double err = 0, ref = 0, Dskip = 0.3, bias = 0.1;
        int t, n;
        char what[128];
        for (t = 0; t < L; t++) {
            u[t] = urand(seed); dl[t] = urand(seed); z[t] = urand(seed);
            for (n = 0; n < N; n++) {
                Bv[n * (L + 1) + t] = urand(seed);
                Cv[n * (L + 1) + t] = urand(seed);
            }
        }
        for (n = 0; n < N; n++) {
            A[n] = -fabs(urand(seed)) * 2; h0[n] = urand(seed); h[n] = h0[n];
            PUT(Ab, n, A[n]); PUT(H0, n, h0[n]);
        }
        for (t = 0; t < L; t++) {
            PUT(U, 2 * t, u[t]); PUT(DL, t, dl[t]); PUT(Z, t, z[t]);
            for (n = 0; n < N; n++) {
                PUT(Bb, n * (L + 1) + t, Bv[n * (L + 1) + (inv ? 0 : t)]);
                PUT(Cb, n * (L + 1) + t, Cv[n * (L + 1) + (inv ? 0 : t)]);
            }
        }
        if (inv) { /* time-invariant: column 0 */
            for (n = 0; n < N; n++) {
                PUT(Bb, n * (L + 1), Bv[n * (L + 1)]);
                PUT(Cb, n * (L + 1), Cv[n * (L + 1)]);
            }
        }
        memset(&a, 0, sizeof(a));
        a.l = L; a.n = N; a.u = U; a.delta = DL; a.A = Ab; a.B = Bb; a.C = Cb;
        a.z = Z; a.h0 = H0; a.out = O; a.h1 = H1;
        a.u_s = 2; a.dl_s = 1; a.A_s = 1; a.B_ns = L + 1; a.B_ls = inv ? 0 : 1;
        a.C_ns = L + 1; a.C_ls = inv ? 0 : 1; a.z_s = 1; a.h0_s = 1; a.out_s = 1; a.h1_s = 1;
        a.D = Dskip; a.delta_bias = bias; a.softplus = sp; a.has_z = hz;
        work = poisoned(la_sscan_work_size(&a, is));
        if (f64 ? la_sscan_f64(&a, work) : la_sscan_f32(&a, work)) {
            err = INFINITY;
        }
        for (t = 0; t < L; t++) {
            double dt = dl[t] + bias, y = 0;
            if (sp) dt = log1p(exp(dt));
            for (n = 0; n < N; n++) {
                const double b = Bv[n * (L + 1) + (inv ? 0 : t)];
                const double c = Cv[n * (L + 1) + (inv ? 0 : t)];
                h[n] = exp(dt * A[n]) * h[n] + dt * b * u[t];
                y += c * h[n];
            }
            y += Dskip * u[t];
            if (hz) y *= z[t] / (1 + exp(-z[t]));
            err += (GET(O, t) - y) * (GET(O, t) - y);
            ref += y * y;
        }
        for (n = 0; n < N; n++) {
            err += (GET(H1, n) - h[n]) * (GET(H1, n) - h[n]);
            ref += h[n] * h[n];
        }
        snprintf(what, sizeof(what), "sscan L=%d f64=%d invariant=%d softplus=%d z=%d",
                 L, f64, inv, sp, hz);
        check(what, sqrt(err / (ref > 0 ? ref : 1)), f64 ? 1e-12 : 1e-5);
        free(work); free(u); free(dl); free(z); free(Bv); free(Cv); free(U); free(DL);
        free(Z); free(Bb); free(Cb); free(Ab); free(H0); free(H1); free(O);
    }
}

/* -------------------------------------------------------- cosformer -- */
static void
test_cosformer(unsigned *seed)
{
    static const int Ts[] = {0, 1, 9};
    int ti, f64, t0;
    const int D = 3;
    const double M = 17, scale = 0.8;
    for (ti = 0; ti < 3; ti++)
    for (f64 = 0; f64 < 2; f64++)
    for (t0 = 0; t0 < 8; t0 += 7) {
        const int T = Ts[ti];
        const size_t is = f64 ? sizeof(double) : sizeof(float);
        double *x = malloc(sizeof(double) * (T * D + 1));
        double *sn = malloc(sizeof(double) * (T + 1)), *cs = malloc(sizeof(double) * (T + 1));
        char *X = malloc(is * (2 * T * D + 1));
        char *Y = poisoned(is * (2 * T * D + 1));
        la_cosformer_args a;
        double err = 0;
        int r, i;
        char what[96];
        for (i = 0; i < T * D; i++) { x[i] = urand(seed); PUT(X, 2 * i, x[i]); }
        la_cosformer_angles(t0, T, M, sn, cs);
        memset(&a, 0, sizeof(a));
        a.t = T; a.d = D; a.x = X; a.y = Y; a.x_rs = 2 * D; a.x_cs = 2;
        a.y_rs = 2 * D; a.y_ps = D; a.y_cs = 1; a.sn = sn; a.cs = cs; a.scale = scale;
        if (f64 ? la_cosformer_features_f64(&a) : la_cosformer_features_f32(&a)) {
            err = INFINITY;
        }
        for (r = 0; r < T; r++) {
            const double th = M_PI * (t0 + r + 1) / (2 * M);
            for (i = 0; i < D; i++) {
                const double rl = scale * x[r * D + i] > 0 ? scale * x[r * D + i] : 0;
                err = fmax(err, fabs(GET(Y, r * 2 * D + i) - rl * sin(th)));
                err = fmax(err, fabs(GET(Y, r * 2 * D + D + i) - rl * cos(th)));
            }
        }
        snprintf(what, sizeof(what), "cosformer features T=%d f64=%d t0=%d", T, f64, t0);
        check(what, err, f64 ? 1e-14 : 1e-6);
        free(x); free(sn); free(cs); free(X); free(Y);
    }
}

/* ------------------------------------------------------------- diag -- */
static void
test_diag(unsigned *seed)
{
    static const int Ts[] = {0, 1, 5, 12};
    int ti, f64, w, var, causal;
    const int D = 4, E = 3;
    for (ti = 0; ti < 4; ti++)
    for (f64 = 0; f64 < 2; f64++)
    for (w = 1; w <= 5; w += 2)
    for (var = 0; var < 2; var++)
    for (causal = 0; causal < 2; causal++) {
        const int T = Ts[ti];
        const size_t is = f64 ? sizeof(double) : sizeof(float);
        char *Q = malloc(is * (T * D + 1)), *K = malloc(is * (T * D + 1));
        char *V = malloc(is * (T * E + 1)), *O = poisoned(is * (T * E + 1));
        la_diag_args a;
        void *work;
        int i, bad = 0;
        char what[96];
        for (i = 0; i < T * D; i++) { PUT(Q, i, urand(seed)); PUT(K, i, urand(seed)); }
        for (i = 0; i < T * E; i++) { PUT(V, i, urand(seed)); }
        memset(&a, 0, sizeof(a));
        a.t = T; a.s = T; a.d = D; a.e = E; a.c = 0; a.w = w; a.t0 = 0;
        a.q = Q; a.k = K; a.v = V; a.kc = K; a.vc = V; a.o = O;
        a.q_rs = D; a.q_cs = 1; a.k_rs = D; a.k_cs = 1; a.v_rs = E; a.v_cs = 1;
        a.kc_rs = D; a.kc_cs = 1; a.vc_rs = E; a.vc_cs = 1; a.o_rs = E; a.o_cs = 1;
        a.scale = 0.5; a.eps = 1e-8; a.causal = causal; a.variant = var;
        a.norm = var ? LA_NORM_RMS : LA_NORM_NONE;
        work = poisoned(la_diag_work_size(&a, is));
        if (f64 ? la_diag_f64(&a, work) : la_diag_f32(&a, work)) {
            bad = 1;
        }
        for (i = 0; i < T * E; i++) {
            bad |= !isfinite(GET(O, i));
        }
        /* w = 1, softmax, causal or not: each token attends to itself, o = v */
        if (w == 1 && var == 0) {
            for (i = 0; i < T * E; i++) {
                bad |= fabs(GET(O, i) - GET(V, i)) > 1e-6;
            }
        }
        snprintf(what, sizeof(what), "diag T=%d f64=%d w=%d variant=%d causal=%d", T, f64,
                 w, var, causal);
        check(what, bad ? INFINITY : 0, 0);
        free(work); free(Q); free(K); free(V); free(O);
    }
}

int
main(void)
{
    unsigned seed = 4242u;
    test_sscan(&seed);
    test_cosformer(&seed);
    test_diag(&seed);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
