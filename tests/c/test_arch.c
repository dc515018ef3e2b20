/*
 * test_arch.c -- the CPU-specific layer (src/_linattn/arch/) without Python:
 * for every ISA path this CPU runs, the GEMM register tiles and the
 * recurrent token loop against plain double-precision loops over edge shapes
 * (tails of every vector width, transposes, beta 0 / 1, padded leading
 * dimensions); the AVX2 and AVX-512 paths against each other bit for bit;
 * the tuning table and the FMA-peak timer.
 */

#include "la_test.h"

#include "arch/la_arch.h"
#include "arch/la_tuning.h"
#include "la_cpu.h"

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

static const int dims[] = {1, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 48, 64, 65, 70};
#define NDIMS ((int)(sizeof(dims) / sizeof(dims[0])))

/* tiles of one path, one dtype, one shape vs a double loop; returns 1 when the
 * path computed it.  out receives C. */
static int
gemm_case(int isa, int f64, int ta, int tb, int m, int n, int k, int beta1, unsigned seed,
          double *out_d, float *out_f, int check)
{
    const int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
    double *A = malloc(sizeof(double) * (size_t)((ta ? k : m) * lda));
    double *B = malloc(sizeof(double) * (size_t)((tb ? n : k) * ldb));
    double *C = malloc(sizeof(double) * (size_t)(m * ldc));
    double *R = malloc(sizeof(double) * (size_t)(m * ldc));
    float *Af = malloc(sizeof(float) * (size_t)((ta ? k : m) * lda));
    float *Bf = malloc(sizeof(float) * (size_t)((tb ? n : k) * ldb));
    float *Cf = malloc(sizeof(float) * (size_t)(m * ldc));
    int i, j, p, done;
    for (i = 0; i < (ta ? k : m) * lda; i++) {
        A[i] = urand(&seed);
        Af[i] = (float)A[i];
    }
    for (i = 0; i < (tb ? n : k) * ldb; i++) {
        B[i] = urand(&seed);
        Bf[i] = (float)B[i];
    }
    for (i = 0; i < m * ldc; i++) {
        C[i] = urand(&seed);
        Cf[i] = (float)C[i];
        R[i] = f64 ? C[i] : (double)Cf[i];
    }
    for (i = 0; i < m; i++) {
        for (j = 0; j < n; j++) {
            double s = 0;
            for (p = 0; p < k; p++) {
                const double a = f64 ? (ta ? A[p * lda + i] : A[i * lda + p])
                                     : (double)(ta ? Af[p * lda + i] : Af[i * lda + p]);
                const double b = f64 ? (tb ? B[j * ldb + p] : B[p * ldb + j])
                                     : (double)(tb ? Bf[j * ldb + p] : Bf[p * ldb + j]);
                s += a * b;
            }
            R[i * ldc + j] = s + (beta1 ? R[i * ldc + j] : 0);
        }
    }
    done = f64 ? la_arch_gemm_tiles_f64(isa, ta, tb, m, n, k, A, lda, B, ldb, beta1, C, ldc,
                                        256)
               : la_arch_gemm_tiles_f32(isa, ta, tb, m, n, k, Af, lda, Bf, ldb,
                                        (float)beta1, Cf, ldc, 256);
    if (done && check) {
        double worst = 0;
        for (i = 0; i < m; i++) {
            for (j = 0; j < ldc; j++) {
                const double got = f64 ? C[i * ldc + j] : (double)Cf[i * ldc + j];
                const double err = fabs(got - R[i * ldc + j]) / (1.0 + fabs(R[i * ldc + j]));
                if (j >= n) { /* padding columns untouched */
                    const double before = f64 ? R[i * ldc + j] : R[i * ldc + j];
                    CHECK(got == before, "tiles wrote past column n: isa %d m %d n %d", isa,
                          m, n);
                }
                worst = err > worst ? err : worst;
            }
        }
        CHECK(worst < (f64 ? 1e-13 : 1e-5) * (1 + k / 16),
              "tiles isa %d f64 %d ta %d tb %d m %d n %d k %d beta %d: err %g", isa, f64, ta,
              tb, m, n, k, beta1, worst);
    }
    if (out_d != NULL) {
        memcpy(out_d, C, sizeof(double) * (size_t)(m * ldc));
    }
    if (out_f != NULL) {
        memcpy(out_f, Cf, sizeof(float) * (size_t)(m * ldc));
    }
    free(A); free(B); free(C); free(R); free(Af); free(Bf); free(Cf);
    return done;
}

static void
test_tiles(void)
{
    const int cpu = la_arch_cpu_isa();
    int a, b, c, ta, tb, beta1, f64;
    unsigned seed = 7;
    /* the generic path never takes a product */
    CHECK(!gemm_case(LA_ISA_GENERIC, 0, 0, 0, 8, 8, 8, 0, 1, NULL, NULL, 0),
          "generic path computed a tile");
    for (f64 = 0; f64 < 2; f64++) {
        for (a = 0; a < NDIMS; a += 2) {
            for (b = 0; b < NDIMS; b++) {
                for (c = 0; c < NDIMS; c += 3) {
                    for (ta = 0; ta < 2; ta++) {
                        for (tb = 0; tb < 2; tb++) {
                            for (beta1 = 0; beta1 < 2; beta1++) {
                                const int m = dims[a], n = dims[b], k = dims[c];
                                const size_t sz = (size_t)(m * (n + 5));
                                double *d1 = malloc(sizeof(double) * sz);
                                double *d2 = malloc(sizeof(double) * sz);
                                float *f1 = malloc(sizeof(float) * sz);
                                float *f2 = malloc(sizeof(float) * sz);
                                /* a transposed B must fit the stack copy (f64: 64 x 72) */
                                const int fits = !(f64 && tb && n * k > 64 * 72);
                                int r1 = 0, r2 = 0;
                                seed += 17;
                                if (cpu >= LA_ISA_AVX2) {
                                    r1 = gemm_case(LA_ISA_AVX2, f64, ta, tb, m, n, k, beta1,
                                                   seed, d1, f1, 1);
                                    CHECK(r1 == fits, "avx2 tiles declined/took m %d n %d k %d", m, n, k);
                                }
                                if (cpu >= LA_ISA_AVX512) {
                                    r2 = gemm_case(LA_ISA_AVX512, f64, ta, tb, m, n, k, beta1,
                                                   seed, d2, f2, 1);
                                    CHECK(r2 == fits, "avx512 tiles declined/took m %d n %d k %d", m, n, k);
                                }
                                if (r1 && r2) {
                                    CHECK(f64 ? memcmp(d1, d2, sizeof(double) * sz) == 0
                                              : memcmp(f1, f2, sizeof(float) * sz) == 0,
                                          "avx2 != avx512 tiles f64 %d ta %d tb %d m %d n %d "
                                          "k %d",
                                          f64, ta, tb, m, n, k);
                                }
                                free(d1); free(d2); free(f1); free(f2);
                            }
                        }
                    }
                }
            }
        }
    }
    /* out of range: above max_dim, or beta not in {0, 1} */
    if (cpu >= LA_ISA_AVX2) {
        float x[4] = {1, 2, 3, 4}, y[4] = {0};
        CHECK(!la_arch_gemm_tiles_f32(cpu, 0, 0, 2, 2, 1, x, 1, x, 2, 0.5f, y, 2, 256),
              "tiles took beta = 0.5");
        CHECK(!la_arch_gemm_tiles_f32(cpu, 0, 0, 2, 2, 1, x, 1, x, 2, 0.0f, y, 2, 1),
              "tiles ignored max_dim");
        CHECK(!la_arch_gemm_tiles_f32(cpu, 0, 0, 2, 2, 0, x, 1, x, 2, 0.0f, y, 2, 256),
              "tiles took k = 0");
    }
}

/* the token loop of one path vs a double loop; S is f x ld, num e */
static void
test_rtoken(void)
{
    static const int fs[] = {1, 3, 16, 33};
    static const int es[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70, 100,
                             128, 129};
    const int cpu = la_arch_cpu_isa();
    unsigned seed = 3;
    int fi, ei, decayed, f64, isa;
    CHECK(la_arch_rtoken_f32(LA_ISA_GENERIC) == NULL && la_arch_rtoken_f64(LA_ISA_GENERIC) ==
          NULL, "generic path has a hand-written token loop");
    for (f64 = 0; f64 < 2; f64++) {
        for (fi = 0; fi < 4; fi++) {
            for (ei = 0; ei < (int)(sizeof(es) / sizeof(es[0])); ei++) {
                for (decayed = 0; decayed < 2; decayed++) {
                    const int f = fs[fi], e = es[ei], ld = e + 3;
                    const double a = decayed ? 0.9 : 1.0;
                    double *S = malloc(sizeof(double) * (size_t)(f * ld));
                    double *R = malloc(sizeof(double) * (size_t)(f * ld));
                    double *q = malloc(sizeof(double) * (size_t)f);
                    double *k = malloc(sizeof(double) * (size_t)f);
                    double *v = malloc(sizeof(double) * (size_t)e);
                    double *num = malloc(sizeof(double) * (size_t)e);
                    double *keep_S[LA_ISA_COUNT] = {NULL}, *keep_n[LA_ISA_COUNT] = {NULL};
                    float *keep_Sf[LA_ISA_COUNT] = {NULL}, *keep_nf[LA_ISA_COUNT] = {NULL};
                    int i, j;
                    for (i = 0; i < f * ld; i++) {
                        S[i] = urand(&seed);
                    }
                    for (i = 0; i < f; i++) {
                        q[i] = urand(&seed);
                        k[i] = urand(&seed);
                    }
                    for (j = 0; j < e; j++) {
                        v[j] = urand(&seed);
                    }
                    for (isa = LA_ISA_AVX2; isa <= cpu; isa++) {
                        double worst = 0;
                        float *Sf = malloc(sizeof(float) * (size_t)(f * ld));
                        float *qf = malloc(sizeof(float) * (size_t)f);
                        float *kf = malloc(sizeof(float) * (size_t)f);
                        float *vf = malloc(sizeof(float) * (size_t)e);
                        float *nf = malloc(sizeof(float) * (size_t)e);
                        double *Sd = malloc(sizeof(double) * (size_t)(f * ld));
                        for (i = 0; i < f * ld; i++) {
                            Sf[i] = (float)S[i];
                            Sd[i] = f64 ? S[i] : (double)Sf[i];
                            R[i] = Sd[i];
                        }
                        for (i = 0; i < f; i++) {
                            qf[i] = (float)q[i];
                            kf[i] = (float)k[i];
                        }
                        for (j = 0; j < e; j++) {
                            vf[j] = (float)v[j];
                        }
                        /* reference */
                        for (i = 0; i < f; i++) {
                            for (j = 0; j < e; j++) {
                                R[i * ld + j] = a * R[i * ld + j] +
                                                (f64 ? k[i] * v[j] : (double)kf[i] * vf[j]);
                            }
                        }
                        if (f64) {
                            la_arch_rtoken_f64(isa)(f, e, a, decayed, Sd, ld, q, k, v, num);
                        }
                        else {
                            la_arch_rtoken_f32(isa)(f, e, (float)a, decayed, Sf, ld, qf, kf,
                                                    vf, nf);
                        }
                        for (j = 0; j < e; j++) {
                            double want = 0;
                            for (i = 0; i < f; i++) {
                                want += (f64 ? q[i] : (double)qf[i]) * R[i * ld + j];
                            }
                            worst = fmax(worst, fabs((f64 ? num[j] : nf[j]) - want) /
                                                    (1 + fabs(want)));
                        }
                        for (i = 0; i < f; i++) {
                            for (j = 0; j < ld; j++) {
                                const double got = f64 ? Sd[i * ld + j] : Sf[i * ld + j];
                                if (j >= e) {
                                    CHECK(got == (f64 ? S[i * ld + j] : (double)(float)S[i * ld + j]),
                                          "token loop wrote past column e");
                                }
                                else {
                                    worst = fmax(worst, fabs(got - R[i * ld + j]) /
                                                            (1 + fabs(R[i * ld + j])));
                                }
                            }
                        }
                        CHECK(worst < (f64 ? 1e-13 : 1e-5),
                              "token isa %d f64 %d f %d e %d decayed %d: err %g", isa, f64, f,
                              e, decayed, worst);
                        keep_S[isa] = Sd;
                        keep_Sf[isa] = Sf;
                        keep_n[isa] = f64 ? memcpy(malloc(sizeof(double) * (size_t)e), num,
                                                   sizeof(double) * (size_t)e)
                                          : NULL;
                        keep_nf[isa] = nf;
                        free(qf); free(kf); free(vf);
                    }
                    if (cpu >= LA_ISA_AVX512) {
                        const int same =
                            f64 ? memcmp(keep_S[1], keep_S[2], sizeof(double) * (size_t)(f * ld)) == 0 &&
                                      memcmp(keep_n[1], keep_n[2], sizeof(double) * (size_t)e) == 0
                                : memcmp(keep_Sf[1], keep_Sf[2], sizeof(float) * (size_t)(f * ld)) == 0 &&
                                      memcmp(keep_nf[1], keep_nf[2], sizeof(float) * (size_t)e) == 0;
                        CHECK(same, "avx2 != avx512 token loop f64 %d f %d e %d decayed %d", f64,
                              f, e, decayed);
                    }
                    for (isa = 0; isa < LA_ISA_COUNT; isa++) {
                        free(keep_S[isa]); free(keep_Sf[isa]); free(keep_n[isa]); free(keep_nf[isa]);
                    }
                    free(S); free(R); free(q); free(k); free(v); free(num);
                }
            }
        }
    }
}

/* the pair loop against two calls of the one-token loop: bit for bit */
static void
test_rtoken2(void)
{
    static const int fs[] = {1, 5, 16};
    static const int es[] = {1, 7, 8, 9, 16, 17, 33, 63, 64, 65, 100, 128, 130};
    const int cpu = la_arch_cpu_isa();
    unsigned seed = 11;
    int isa, fi, ei, decayed, f64, pairs = 0;
    for (isa = 0; isa <= cpu; isa++) {
        if (la_arch_rtoken2_f32(isa) == NULL) {
            CHECK(la_arch_rtoken2_f64(isa) == NULL, "pair loop for one dtype only");
            continue;
        }
        for (f64 = 0; f64 < 2; f64++) {
            for (fi = 0; fi < 3; fi++) {
                for (ei = 0; ei < (int)(sizeof(es) / sizeof(es[0])); ei++) {
                    for (decayed = 0; decayed < 2; decayed++) {
                        const int f = fs[fi], e = es[ei], ld = e + 1, n = f * ld;
                        double *buf = malloc(sizeof(double) * (size_t)(2 * n + 8 * f + 8 * e));
                        double *S1 = buf, *S2 = buf + n, *x = buf + 2 * n;
                        float *sf1 = malloc(sizeof(float) * (size_t)(2 * n + 8 * f + 8 * e));
                        float *sf2 = sf1 + n, *xf = sf1 + 2 * n;
                        double *q1 = x, *k1 = x + f, *q2 = x + 2 * f, *k2 = x + 3 * f;
                        double *v1 = x + 4 * f, *v2 = v1 + e, *na = v2 + e, *nb = na + e;
                        double *nc = nb + e, *nd = nc + e;
                        float *qf1 = xf, *kf1 = xf + f, *qf2 = xf + 2 * f, *kf2 = xf + 3 * f;
                        float *vf1 = xf + 4 * f, *vf2 = vf1 + e, *fa = vf2 + e, *fb = fa + e;
                        float *fc = fb + e, *fd = fc + e;
                        int i;
                        for (i = 0; i < 2 * n + 8 * f + 8 * e; i++) {
                            buf[i] = urand(&seed);
                            sf1[i] = (float)buf[i];
                        }
                        memcpy(S2, S1, sizeof(double) * (size_t)n);
                        memcpy(sf2, sf1, sizeof(float) * (size_t)n);
                        if (f64) {
                            la_arch_rtoken2_f64(isa)(f, e, 0.9, 0.8, decayed, S1, ld, q1, k1, v1,
                                                     q2, k2, v2, na, nb);
                            la_arch_rtoken_f64(isa)(f, e, 0.9, decayed, S2, ld, q1, k1, v1, nc);
                            la_arch_rtoken_f64(isa)(f, e, 0.8, decayed, S2, ld, q2, k2, v2, nd);
                            CHECK(memcmp(S1, S2, sizeof(double) * (size_t)n) == 0 &&
                                      memcmp(na, nc, sizeof(double) * (size_t)e) == 0 &&
                                      memcmp(nb, nd, sizeof(double) * (size_t)e) == 0,
                                  "pair != two tokens isa %d f64 f %d e %d decayed %d", isa, f, e,
                                  decayed);
                        }
                        else {
                            la_arch_rtoken2_f32(isa)(f, e, 0.9f, 0.8f, decayed, sf1, ld, qf1, kf1,
                                                     vf1, qf2, kf2, vf2, fa, fb);
                            la_arch_rtoken_f32(isa)(f, e, 0.9f, decayed, sf2, ld, qf1, kf1, vf1, fc);
                            la_arch_rtoken_f32(isa)(f, e, 0.8f, decayed, sf2, ld, qf2, kf2, vf2, fd);
                            CHECK(memcmp(sf1, sf2, sizeof(float) * (size_t)n) == 0 &&
                                      memcmp(fa, fc, sizeof(float) * (size_t)e) == 0 &&
                                      memcmp(fb, fd, sizeof(float) * (size_t)e) == 0,
                                  "pair != two tokens isa %d f32 f %d e %d decayed %d", isa, f, e,
                                  decayed);
                        }
                        pairs++;
                        free(buf);
                        free(sf1);
                    }
                }
            }
        }
    }
    CHECK(cpu < LA_ISA_AVX512 || pairs > 0, "no pair loop on an AVX-512 CPU");
}

static void
test_dispatch_and_table(void)
{
    const int cpu = la_arch_cpu_isa(), before = la_cpu_isa();
    const la_tuning *g = la_tuning_defaults(LA_ISA_GENERIC);
    la_tuning t;
    CHECK(la_arch_compiled_isas() & 1u, "generic path not compiled");
    CHECK(before <= cpu, "active path %d above the CPU's %d", before, cpu);
    CHECK(la_cpu_set_isa(LA_ISA_AVX512) == (cpu < LA_ISA_AVX512 ? cpu : LA_ISA_AVX512),
          "set_isa not lowered to the CPU");
    CHECK(la_cpu_set_isa(LA_ISA_GENERIC) == LA_ISA_GENERIC, "set_isa(generic) refused");
    CHECK(la_arch_rtoken_f32(la_cpu_isa()) == NULL, "generic active but a hand loop returned");
    la_cpu_set_isa(before);
    CHECK(strcmp(la_isa_name(LA_ISA_AVX2), "avx2") == 0 &&
          la_isa_from_name("avx512") == LA_ISA_AVX512 && la_isa_from_name("sse") == -1,
          "ISA names");
    CHECK(g->tiles_max_dim == 0 && g->chunk >= 1 && g->chunk_narrow >= 1, "generic row");
    CHECK(la_tuning_set("tiles_max_dim", 7) && la_tuning_tiles_max_dim() == 7 &&
          la_tuning_active().tiles_max_dim == 7, "override");
    CHECK(la_tuning_set("tiles_max_dim", -1) &&
          la_tuning_tiles_max_dim() == la_tuning_defaults(la_cpu_isa())->tiles_max_dim,
          "override removed");
    CHECK(!la_tuning_set("no_such_knob", 1), "unknown knob accepted");
    t = la_tuning_active();
    CHECK(t.chunk == la_tuning_defaults(la_cpu_isa())->chunk, "active row");
    CHECK(la_fma_peak(LA_ISA_GENERIC, 0, 0.001, 1, 0) > 0 &&
              la_fma_peak(LA_ISA_GENERIC, 0, 0.001, 1, 1) > 0,
          "generic FMA peak");
    CHECK(la_fma_peak(cpu, 1, 0.001, 1, 0) > 0, "FMA peak of the CPU's path");
    CHECK(la_fma_peak(LA_ISA_COUNT, 0, 0.001, 1, 0) == 0, "FMA peak of no path");
    if (cpu < LA_ISA_AVX512) {
        CHECK(la_fma_peak(LA_ISA_AVX512, 0, 0.001, 1, 0) == 0, "FMA peak above the CPU");
    }
}

int
main(void)
{
    printf("test_arch: CPU path %s, active %s (%s)\n", la_isa_name(la_arch_cpu_isa()),
           la_isa_name(la_cpu_isa()), la_cpu_isa_source());
    test_dispatch_and_table();
    test_tiles();
    test_rtoken();
    test_rtoken2();
    printf("test_arch: %d checks, %d failures\n", checks, failures);
    return failures != 0;
}
