/*
 * recurrent_x86.c -- the recurrent token update by hand on x86 vector
 * registers, one function per path and dtype behind la_arch_rtoken_*:
 *
 *   S_i <- a S_i + kf_i v   (a = 1 without decay),   num = sum_i qf_i S_i
 *
 * Column blocks keep v and their num accumulators in registers while the
 * rows of S stream past: one load, two FMAs and one store per vector of S
 * (2.5x the auto-vectorised loop when that spilled its accumulators; the
 * portable loop now holds them in registers too, and these keep the token
 * pairs).  Columns below
 * the last multiple of 64 take the FMA form s = fma(k, v, s) (decayed:
 * s = fma(a, s, k v)); the remaining columns the tail form s = s + k v, in
 * every path, so AVX2 and AVX-512 give bit-identical states and outputs.
 * The pair loops (rtoken2_impl.h) take two consecutive tokens per pass over
 * S with the same operations per entry: the same bits, half the loads and
 * stores of S.  The portable loop in kernels/linear_impl.h is the generic
 * path.
 */
#include "arch/la_arch.h"

/* x86-64 only (a universal macOS build compiles this file for arm64 too, where
 * arch/generic/ supplies the entry points) */
#if defined(__x86_64__) || defined(_M_X64)
#include "arch/x86/la_x86.h"

/* ------------------------------------------------------------- AVX-512 -- */

/* The token update reading S0 and writing S1: a copying decoding step in one
 * pass over the old and the new state, and (S0 = S1) the in-place update
 * below, with the same operations per entry. Each row of S is loaded before
 * it is stored, so the two may be one array. */
LA_TARGET_AVX512 static void
tail512_oop_f32(la_index f, la_index e0, la_index nb, __m512 av, int decayed,
                const float *S0, la_index ld0, float *S1, la_index ld1, const float *qf,
                const float *kf, const float *vv, float *num)
{
    const __mmask16 m = (__mmask16)((1u << nb) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, vv + e0);
    __m512 acc = _mm512_setzero_ps();
    la_index i;
    for (i = 0; i < f; i++) {
        const __m512 kv = _mm512_mul_ps(_mm512_set1_ps(kf[i]), v);
        __m512 s = _mm512_maskz_loadu_ps(m, S0 + i * ld0 + e0);
        s = decayed ? _mm512_fmadd_ps(av, s, kv) : _mm512_add_ps(s, kv);
        _mm512_mask_storeu_ps(S1 + i * ld1 + e0, m, s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(qf[i]), s, acc);
    }
    _mm512_mask_storeu_ps(num + e0, m, acc);
}

LA_TARGET_AVX512 void
la_rtoken_oop_avx512_f32(la_index f, la_index e, float a, int decayed, const float *S0,
                         la_index ld0, float *S1, la_index ld1, const float *qf,
                         const float *kf, const float *vv, float *num)
{
    const __m512 av = _mm512_set1_ps(a);
    la_index j0 = 0, i;
    for (; j0 + 64 <= e; j0 += 64) {
        const __m512 v0 = _mm512_loadu_ps(vv + j0), v1 = _mm512_loadu_ps(vv + j0 + 16);
        const __m512 v2 = _mm512_loadu_ps(vv + j0 + 32), v3 = _mm512_loadu_ps(vv + j0 + 48);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (i = 0; i < f; i++) {
            const float *Si = S0 + i * ld0 + j0;
            float *Di = S1 + i * ld1 + j0;
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
            _mm512_storeu_ps(Di, s0);
            _mm512_storeu_ps(Di + 16, s1);
            _mm512_storeu_ps(Di + 32, s2);
            _mm512_storeu_ps(Di + 48, s3);
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
        tail512_oop_f32(f, j0, e - j0 < 16 ? e - j0 : 16, av, decayed, S0, ld0, S1, ld1, qf,
                        kf, vv, num);
    }
}

LA_TARGET_AVX512 static void
tail512_oop_f64(la_index f, la_index e0, la_index nb, __m512d av, int decayed,
                const double *S0, la_index ld0, double *S1, la_index ld1, const double *qf,
                const double *kf, const double *vv, double *num)
{
    const __mmask8 m = (__mmask8)((1u << nb) - 1u);
    const __m512d v = _mm512_maskz_loadu_pd(m, vv + e0);
    __m512d acc = _mm512_setzero_pd();
    la_index i;
    for (i = 0; i < f; i++) {
        const __m512d kv = _mm512_mul_pd(_mm512_set1_pd(kf[i]), v);
        __m512d s = _mm512_maskz_loadu_pd(m, S0 + i * ld0 + e0);
        s = decayed ? _mm512_fmadd_pd(av, s, kv) : _mm512_add_pd(s, kv);
        _mm512_mask_storeu_pd(S1 + i * ld1 + e0, m, s);
        acc = _mm512_fmadd_pd(_mm512_set1_pd(qf[i]), s, acc);
    }
    _mm512_mask_storeu_pd(num + e0, m, acc);
}

#define LA_F64_ROW8(OP)                                                     \
    do {                                                                        \
        int u;                                                                  \
        for (u = 0; u < 8; u++) {                                               \
            __m512d s = _mm512_loadu_pd(Si + 8 * u);                            \
            s = OP;                                                             \
            _mm512_storeu_pd(Di + 8 * u, s);                                    \
            acc[u] = _mm512_fmadd_pd(q, s, acc[u]);                             \
        }                                                                       \
    } while (0)

LA_TARGET_AVX512 void
la_rtoken_oop_avx512_f64(la_index f, la_index e, double a, int decayed,
                         const double *S0, la_index ld0, double *S1, la_index ld1,
                         const double *qf, const double *kf, const double *vv,
                         double *num)
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
            const double *Si = S0 + i * ld0 + j0;
            double *Di = S1 + i * ld1 + j0;
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
        tail512_oop_f64(f, j0, e - j0 < 8 ? e - j0 : 8, av, decayed, S0, ld0, S1, ld1, qf,
                        kf, vv, num);
    }
}
#undef LA_F64_ROW8

LA_TARGET_AVX512 void
la_rtoken_avx512_f32(la_index f, la_index e, float a, int decayed, float *S,
                              la_index ld, const float *qf, const float *kf,
                              const float *vv, float *num)
{
    la_rtoken_oop_avx512_f32(f, e, a, decayed, S, ld, S, ld, qf, kf, vv, num);
}

LA_TARGET_AVX512 void
la_rtoken_avx512_f64(la_index f, la_index e, double a, int decayed, double *S,
                              la_index ld, const double *qf, const double *kf,
                              const double *vv, double *num)
{
    la_rtoken_oop_avx512_f64(f, e, a, decayed, S, ld, S, ld, qf, kf, vv, num);
}

/* ----------------------------------------------- AVX-512, token pairs -- */

#define LA_TARGET_PATH LA_TARGET_AVX512
#define LA_MKMASK(nb) ((__mmask16)((1u << (nb)) - 1u))
#define LA_T float
#define LA_NAME la_rtoken2_avx512_f32
#define LA_TAIL2 tail2_512_f32
#define LA_V __m512
#define LA_M __mmask16
#define LA_W 16
#define LA_NV 4
#define LA_VSET1 _mm512_set1_ps
#define LA_VLOADU _mm512_loadu_ps
#define LA_VSTOREU _mm512_storeu_ps
#define LA_VFMA _mm512_fmadd_ps
#define LA_VMUL _mm512_mul_ps
#define LA_VADD _mm512_add_ps
#define LA_VZERO _mm512_setzero_ps
#define LA_VMLOAD _mm512_maskz_loadu_ps
#define LA_VMSTORE _mm512_mask_storeu_ps
#include "arch/x86/rtoken2_impl.h"
#undef LA_T
#undef LA_NAME
#undef LA_TAIL2
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_NV
#undef LA_VSET1
#undef LA_VLOADU
#undef LA_VSTOREU
#undef LA_VFMA
#undef LA_VMUL
#undef LA_VADD
#undef LA_VZERO
#undef LA_VMLOAD
#undef LA_VMSTORE
#undef LA_TARGET_PATH
#undef LA_MKMASK

/* float64: 64 columns as two sub-blocks of four vectors (8 x 4 vectors of v and
 * accumulators would take all 32 registers) */
#define LA_TARGET_PATH LA_TARGET_AVX512
#define LA_MKMASK(nb) ((__mmask8)((1u << (nb)) - 1u))
#define LA_T double
#define LA_NAME la_rtoken2_avx512_f64
#define LA_TAIL2 tail2_512_f64
#define LA_V __m512d
#define LA_M __mmask8
#define LA_W 8
#define LA_NV 4
#define LA_VSET1 _mm512_set1_pd
#define LA_VLOADU _mm512_loadu_pd
#define LA_VSTOREU _mm512_storeu_pd
#define LA_VFMA _mm512_fmadd_pd
#define LA_VMUL _mm512_mul_pd
#define LA_VADD _mm512_add_pd
#define LA_VZERO _mm512_setzero_pd
#define LA_VMLOAD _mm512_maskz_loadu_pd
#define LA_VMSTORE _mm512_mask_storeu_pd
#include "arch/x86/rtoken2_impl.h"
#undef LA_T
#undef LA_NAME
#undef LA_TAIL2
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_NV
#undef LA_VSET1
#undef LA_VLOADU
#undef LA_VSTOREU
#undef LA_VFMA
#undef LA_VMUL
#undef LA_VADD
#undef LA_VZERO
#undef LA_VMLOAD
#undef LA_VMSTORE
#undef LA_TARGET_PATH
#undef LA_MKMASK

/* ---------------------------------------------------------------- AVX2 -- */

/* Lanes [0, nb) of one 8 x float32 / 4 x float64 vector, as a maskload mask. */
LA_TARGET_AVX2 static __m256i
mask8(la_index nb)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nb),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

LA_TARGET_AVX2 static __m256i
mask4(la_index nb)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)nb),
                              _mm256_setr_epi64x(0, 1, 2, 3));
}

/* One block of up to 8 lanes with a mask (the columns past the last 64). */
LA_TARGET_AVX2 static void
tail256_f32(la_index f, la_index e0, la_index nb, __m256 av, int decayed, float *S,
            la_index ld, const float *qf, const float *kf, const float *vv, float *num)
{
    const __m256i m = mask8(nb);
    const __m256 v = _mm256_maskload_ps(vv + e0, m);
    __m256 acc = _mm256_setzero_ps();
    la_index i;
    for (i = 0; i < f; i++) {
        float *Si = S + i * ld + e0;
        const __m256 kv = _mm256_mul_ps(_mm256_set1_ps(kf[i]), v);
        __m256 s = _mm256_maskload_ps(Si, m);
        s = decayed ? _mm256_fmadd_ps(av, s, kv) : _mm256_add_ps(s, kv);
        _mm256_maskstore_ps(Si, m, s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(qf[i]), s, acc);
    }
    _mm256_maskstore_ps(num + e0, m, acc);
}

/* 64 columns as two passes of 32: four vectors of v and four accumulators
 * in registers (16 ymm registers leave no room for 64 at once). */
LA_TARGET_AVX2 void
la_rtoken_avx2_f32(la_index f, la_index e, float a, int decayed, float *S, la_index ld,
                   const float *qf, const float *kf, const float *vv, float *num)
{
    const __m256 av = _mm256_set1_ps(a);
    la_index j0 = 0, i, h;
    for (; j0 + 64 <= e; j0 += 64) {
        for (h = j0; h < j0 + 64; h += 32) {
            const __m256 v0 = _mm256_loadu_ps(vv + h), v1 = _mm256_loadu_ps(vv + h + 8);
            const __m256 v2 = _mm256_loadu_ps(vv + h + 16), v3 = _mm256_loadu_ps(vv + h + 24);
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (i = 0; i < f; i++) {
                float *Si = S + i * ld + h;
                const __m256 k = _mm256_set1_ps(kf[i]), q = _mm256_set1_ps(qf[i]);
                __m256 s0 = _mm256_loadu_ps(Si), s1 = _mm256_loadu_ps(Si + 8);
                __m256 s2 = _mm256_loadu_ps(Si + 16), s3 = _mm256_loadu_ps(Si + 24);
                if (decayed) {
                    s0 = _mm256_fmadd_ps(av, s0, _mm256_mul_ps(k, v0));
                    s1 = _mm256_fmadd_ps(av, s1, _mm256_mul_ps(k, v1));
                    s2 = _mm256_fmadd_ps(av, s2, _mm256_mul_ps(k, v2));
                    s3 = _mm256_fmadd_ps(av, s3, _mm256_mul_ps(k, v3));
                }
                else {
                    s0 = _mm256_fmadd_ps(k, v0, s0);
                    s1 = _mm256_fmadd_ps(k, v1, s1);
                    s2 = _mm256_fmadd_ps(k, v2, s2);
                    s3 = _mm256_fmadd_ps(k, v3, s3);
                }
                _mm256_storeu_ps(Si, s0);
                _mm256_storeu_ps(Si + 8, s1);
                _mm256_storeu_ps(Si + 16, s2);
                _mm256_storeu_ps(Si + 24, s3);
                a0 = _mm256_fmadd_ps(q, s0, a0);
                a1 = _mm256_fmadd_ps(q, s1, a1);
                a2 = _mm256_fmadd_ps(q, s2, a2);
                a3 = _mm256_fmadd_ps(q, s3, a3);
            }
            _mm256_storeu_ps(num + h, a0);
            _mm256_storeu_ps(num + h + 8, a1);
            _mm256_storeu_ps(num + h + 16, a2);
            _mm256_storeu_ps(num + h + 24, a3);
        }
    }
    for (; j0 < e; j0 += 8) {
        tail256_f32(f, j0, e - j0 < 8 ? e - j0 : 8, av, decayed, S, ld, qf, kf, vv, num);
    }
}

LA_TARGET_AVX2 static void
tail256_f64(la_index f, la_index e0, la_index nb, __m256d av, int decayed, double *S,
            la_index ld, const double *qf, const double *kf, const double *vv,
            double *num)
{
    const __m256i m = mask4(nb);
    const __m256d v = _mm256_maskload_pd(vv + e0, m);
    __m256d acc = _mm256_setzero_pd();
    la_index i;
    for (i = 0; i < f; i++) {
        double *Si = S + i * ld + e0;
        const __m256d kv = _mm256_mul_pd(_mm256_set1_pd(kf[i]), v);
        __m256d s = _mm256_maskload_pd(Si, m);
        s = decayed ? _mm256_fmadd_pd(av, s, kv) : _mm256_add_pd(s, kv);
        _mm256_maskstore_pd(Si, m, s);
        acc = _mm256_fmadd_pd(_mm256_set1_pd(qf[i]), s, acc);
    }
    _mm256_maskstore_pd(num + e0, m, acc);
}

/* 64 columns as four passes of 16 (four vectors of four doubles). */
LA_TARGET_AVX2 void
la_rtoken_avx2_f64(la_index f, la_index e, double a, int decayed, double *S, la_index ld,
                   const double *qf, const double *kf, const double *vv, double *num)
{
    const __m256d av = _mm256_set1_pd(a);
    la_index j0 = 0, i, h;
    for (; j0 + 64 <= e; j0 += 64) {
        for (h = j0; h < j0 + 64; h += 16) {
            const __m256d v0 = _mm256_loadu_pd(vv + h), v1 = _mm256_loadu_pd(vv + h + 4);
            const __m256d v2 = _mm256_loadu_pd(vv + h + 8), v3 = _mm256_loadu_pd(vv + h + 12);
            __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
            for (i = 0; i < f; i++) {
                double *Si = S + i * ld + h;
                const __m256d k = _mm256_set1_pd(kf[i]), q = _mm256_set1_pd(qf[i]);
                __m256d s0 = _mm256_loadu_pd(Si), s1 = _mm256_loadu_pd(Si + 4);
                __m256d s2 = _mm256_loadu_pd(Si + 8), s3 = _mm256_loadu_pd(Si + 12);
                if (decayed) {
                    s0 = _mm256_fmadd_pd(av, s0, _mm256_mul_pd(k, v0));
                    s1 = _mm256_fmadd_pd(av, s1, _mm256_mul_pd(k, v1));
                    s2 = _mm256_fmadd_pd(av, s2, _mm256_mul_pd(k, v2));
                    s3 = _mm256_fmadd_pd(av, s3, _mm256_mul_pd(k, v3));
                }
                else {
                    s0 = _mm256_fmadd_pd(k, v0, s0);
                    s1 = _mm256_fmadd_pd(k, v1, s1);
                    s2 = _mm256_fmadd_pd(k, v2, s2);
                    s3 = _mm256_fmadd_pd(k, v3, s3);
                }
                _mm256_storeu_pd(Si, s0);
                _mm256_storeu_pd(Si + 4, s1);
                _mm256_storeu_pd(Si + 8, s2);
                _mm256_storeu_pd(Si + 12, s3);
                a0 = _mm256_fmadd_pd(q, s0, a0);
                a1 = _mm256_fmadd_pd(q, s1, a1);
                a2 = _mm256_fmadd_pd(q, s2, a2);
                a3 = _mm256_fmadd_pd(q, s3, a3);
            }
            _mm256_storeu_pd(num + h, a0);
            _mm256_storeu_pd(num + h + 4, a1);
            _mm256_storeu_pd(num + h + 8, a2);
            _mm256_storeu_pd(num + h + 12, a3);
        }
    }
    for (; j0 < e; j0 += 4) {
        tail256_f64(f, j0, e - j0 < 4 ? e - j0 : 4, av, decayed, S, ld, qf, kf, vv, num);
    }
}


/* ------------------------------------------------- AVX2, token pairs -- */

#define LA_TARGET_PATH LA_TARGET_AVX2
#define LA_MKMASK(nb) mask8(nb)
#define LA_T float
#define LA_NAME la_rtoken2_avx2_f32
#define LA_TAIL2 tail2_256_f32
#define LA_V __m256
#define LA_M __m256i
#define LA_W 8
#define LA_NV 2
#define LA_VSET1 _mm256_set1_ps
#define LA_VLOADU _mm256_loadu_ps
#define LA_VSTOREU _mm256_storeu_ps
#define LA_VFMA _mm256_fmadd_ps
#define LA_VMUL _mm256_mul_ps
#define LA_VADD _mm256_add_ps
#define LA_VZERO _mm256_setzero_ps
#define LA_VMLOAD(m, p) _mm256_maskload_ps((p), (m))
#define LA_VMSTORE(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#include "arch/x86/rtoken2_impl.h"
#undef LA_T
#undef LA_NAME
#undef LA_TAIL2
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_NV
#undef LA_VSET1
#undef LA_VLOADU
#undef LA_VSTOREU
#undef LA_VFMA
#undef LA_VMUL
#undef LA_VADD
#undef LA_VZERO
#undef LA_VMLOAD
#undef LA_VMSTORE
#undef LA_MKMASK

#define LA_MKMASK(nb) mask4(nb)
#define LA_T double
#define LA_NAME la_rtoken2_avx2_f64
#define LA_TAIL2 tail2_256_f64
#define LA_V __m256d
#define LA_M __m256i
#define LA_W 4
#define LA_NV 2
#define LA_VSET1 _mm256_set1_pd
#define LA_VLOADU _mm256_loadu_pd
#define LA_VSTOREU _mm256_storeu_pd
#define LA_VFMA _mm256_fmadd_pd
#define LA_VMUL _mm256_mul_pd
#define LA_VADD _mm256_add_pd
#define LA_VZERO _mm256_setzero_pd
#define LA_VMLOAD(m, p) _mm256_maskload_pd((p), (m))
#define LA_VMSTORE(p, m, v) _mm256_maskstore_pd((p), (m), (v))
#include "arch/x86/rtoken2_impl.h"
#undef LA_T
#undef LA_NAME
#undef LA_TAIL2
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_NV
#undef LA_VSET1
#undef LA_VLOADU
#undef LA_VSTOREU
#undef LA_VFMA
#undef LA_VMUL
#undef LA_VADD
#undef LA_VZERO
#undef LA_VMLOAD
#undef LA_VMSTORE
#undef LA_MKMASK
#undef LA_TARGET_PATH

#endif /* x86-64 */
