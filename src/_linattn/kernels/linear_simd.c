#include "linear_simd.h"

#include "la_cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LA_HAVE_AVX512_PATH 1
#include <immintrin.h>
#endif

#ifdef LA_HAVE_AVX512_PATH

int
la_recurrent_simd_available(void)
{
    return la_cpu_avx512();
}

/* One block of up to 16 lanes with a mask (the column tail). */
__attribute__((target("avx512f"))) static void
tail_f32(la_index f, la_index e0, la_index nb, __m512 av, int decayed, float *S,
         la_index ld, const float *qf, const float *kf, const float *vv, float *num)
{
    const __mmask16 m = (__mmask16)((1u << nb) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, vv + e0);
    __m512 acc = _mm512_setzero_ps();
    la_index i;
    for (i = 0; i < f; i++) {
        float *Si = S + i * ld + e0;
        const __m512 kv = _mm512_mul_ps(_mm512_set1_ps(kf[i]), v);
        __m512 s = _mm512_maskz_loadu_ps(m, Si);
        s = decayed ? _mm512_fmadd_ps(av, s, kv) : _mm512_add_ps(s, kv);
        _mm512_mask_storeu_ps(Si, m, s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(qf[i]), s, acc);
    }
    _mm512_mask_storeu_ps(num + e0, m, acc);
}

__attribute__((target("avx512f"))) void
la_recurrent_token_avx512_f32(la_index f, la_index e, float a, int decayed, float *S,
                              la_index ld, const float *qf, const float *kf,
                              const float *vv, float *num)
{
    const __m512 av = _mm512_set1_ps(a);
    la_index j0 = 0, i;
    for (; j0 + 64 <= e; j0 += 64) {
        const __m512 v0 = _mm512_loadu_ps(vv + j0), v1 = _mm512_loadu_ps(vv + j0 + 16);
        const __m512 v2 = _mm512_loadu_ps(vv + j0 + 32), v3 = _mm512_loadu_ps(vv + j0 + 48);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (i = 0; i < f; i++) {
            float *Si = S + i * ld + j0;
            const __m512 k = _mm512_set1_ps(kf[i]), q = _mm512_set1_ps(qf[i]);
            __m512 s0 = _mm512_loadu_ps(Si), s1 = _mm512_loadu_ps(Si + 16);
            __m512 s2 = _mm512_loadu_ps(Si + 32), s3 = _mm512_loadu_ps(Si + 48);
            if (decayed) {
                s0 = _mm512_fmadd_ps(av, s0, _mm512_mul_ps(k, v0));
                s1 = _mm512_fmadd_ps(av, s1, _mm512_mul_ps(k, v1));
                s2 = _mm512_fmadd_ps(av, s2, _mm512_mul_ps(k, v2));
                s3 = _mm512_fmadd_ps(av, s3, _mm512_mul_ps(k, v3));
            }
            else {
                s0 = _mm512_fmadd_ps(k, v0, s0);
                s1 = _mm512_fmadd_ps(k, v1, s1);
                s2 = _mm512_fmadd_ps(k, v2, s2);
                s3 = _mm512_fmadd_ps(k, v3, s3);
            }
            _mm512_storeu_ps(Si, s0);
            _mm512_storeu_ps(Si + 16, s1);
            _mm512_storeu_ps(Si + 32, s2);
            _mm512_storeu_ps(Si + 48, s3);
            a0 = _mm512_fmadd_ps(q, s0, a0);
            a1 = _mm512_fmadd_ps(q, s1, a1);
            a2 = _mm512_fmadd_ps(q, s2, a2);
            a3 = _mm512_fmadd_ps(q, s3, a3);
        }
        _mm512_storeu_ps(num + j0, a0);
        _mm512_storeu_ps(num + j0 + 16, a1);
        _mm512_storeu_ps(num + j0 + 32, a2);
        _mm512_storeu_ps(num + j0 + 48, a3);
    }
    for (; j0 < e; j0 += 16) {
        tail_f32(f, j0, e - j0 < 16 ? e - j0 : 16, av, decayed, S, ld, qf, kf, vv, num);
    }
}

__attribute__((target("avx512f"))) static void
tail_f64(la_index f, la_index e0, la_index nb, __m512d av, int decayed, double *S,
         la_index ld, const double *qf, const double *kf, const double *vv, double *num)
{
    const __mmask8 m = (__mmask8)((1u << nb) - 1u);
    const __m512d v = _mm512_maskz_loadu_pd(m, vv + e0);
    __m512d acc = _mm512_setzero_pd();
    la_index i;
    for (i = 0; i < f; i++) {
        double *Si = S + i * ld + e0;
        const __m512d kv = _mm512_mul_pd(_mm512_set1_pd(kf[i]), v);
        __m512d s = _mm512_maskz_loadu_pd(m, Si);
        s = decayed ? _mm512_fmadd_pd(av, s, kv) : _mm512_add_pd(s, kv);
        _mm512_mask_storeu_pd(Si, m, s);
        acc = _mm512_fmadd_pd(_mm512_set1_pd(qf[i]), s, acc);
    }
    _mm512_mask_storeu_pd(num + e0, m, acc);
}

/* One step of 8 column vectors (64 doubles): v and the accumulators stay in
 * 16 registers while the rows stream past. */
#define LA_F64_ROW8(OP)                                                         \
    do {                                                                        \
        int u;                                                                  \
        for (u = 0; u < 8; u++) {                                               \
            __m512d s = _mm512_loadu_pd(Si + 8 * u);                            \
            s = OP;                                                             \
            _mm512_storeu_pd(Si + 8 * u, s);                                    \
            acc[u] = _mm512_fmadd_pd(q, s, acc[u]);                             \
        }                                                                       \
    } while (0)

__attribute__((target("avx512f"))) void
la_recurrent_token_avx512_f64(la_index f, la_index e, double a, int decayed, double *S,
                              la_index ld, const double *qf, const double *kf,
                              const double *vv, double *num)
{
    const __m512d av = _mm512_set1_pd(a);
    la_index j0 = 0, i;
    int u;
    for (; j0 + 64 <= e; j0 += 64) {
        __m512d vr[8], acc[8];
        for (u = 0; u < 8; u++) {
            vr[u] = _mm512_loadu_pd(vv + j0 + 8 * u);
            acc[u] = _mm512_setzero_pd();
        }
        for (i = 0; i < f; i++) {
            double *Si = S + i * ld + j0;
            const __m512d k = _mm512_set1_pd(kf[i]), q = _mm512_set1_pd(qf[i]);
            if (decayed) {
                LA_F64_ROW8(_mm512_fmadd_pd(av, s, _mm512_mul_pd(k, vr[u])));
            }
            else {
                LA_F64_ROW8(_mm512_fmadd_pd(k, vr[u], s));
            }
        }
        for (u = 0; u < 8; u++) {
            _mm512_storeu_pd(num + j0 + 8 * u, acc[u]);
        }
    }
    for (; j0 < e; j0 += 8) {
        tail_f64(f, j0, e - j0 < 8 ? e - j0 : 8, av, decayed, S, ld, qf, kf, vv, num);
    }
}

#else /* no x86-64 AVX-512 path in this build */

int
la_recurrent_simd_available(void)
{
    return 0;
}

void
la_recurrent_token_avx512_f32(la_index f, la_index e, float a, int decayed, float *S,
                              la_index ld, const float *qf, const float *kf,
                              const float *vv, float *num)
{
    (void)f; (void)e; (void)a; (void)decayed; (void)S; (void)ld;
    (void)qf; (void)kf; (void)vv; (void)num;
}

void
la_recurrent_token_avx512_f64(la_index f, la_index e, double a, int decayed, double *S,
                              la_index ld, const double *qf, const double *kf,
                              const double *vv, double *num)
{
    (void)f; (void)e; (void)a; (void)decayed; (void)S; (void)ld;
    (void)qf; (void)kf; (void)vv; (void)num;
}

#endif
