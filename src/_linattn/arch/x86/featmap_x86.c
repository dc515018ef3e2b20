/*
 * featmap_x86.c -- the float32 elu1 / elu feature maps by hand on AVX-512
 * (behind la_arch_elu_f32), for the recurrent form's per-block map and every
 * other dense row of la_featmap_row, in the builds where that loop has its
 * per-level target clones (kernels/featmap.c says why).
 *
 * The same operations, in the same order, as the compiler's AVX-512 clone of
 * the portable loop (featmap_impl.h with la_exp_nonpos_f32 of la_vmath.h:
 * u = scale x, j = fma(u, log2 e, 1.5 2^23 + 127), kf = j - that, r = u -
 * kf ln2_hi - kf ln2_lo by two FMAs, the degree-5 polynomial by Horner FMAs,
 * p r^2 + r, + 1, times 2^n from j's low bits), so the bits are the same on
 * every input (compared over all 2^32 float32 inputs with three scales when
 * it was written; tests/test_featmap.py compares the paths on a spread).
 * What it saves is the selects: one compare per bound and the results
 * written under masks (zeroing multiply, merging add), no blends, and for
 * elu1 no multiply when scale is 1: 3.1-3.5 ns instead of 4.3-4.8 per 16
 * entries in L1 (Xeon family 6 model 207, under load).
 */
#include "arch/la_arch.h"

#if defined(__x86_64__) || defined(_M_X64)
#include "arch/x86/la_x86.h"

#define LA_ELU_MIN_F32 -87.33654f /* LA_EXP_NONPOS_MIN_F32 of la_vmath.h */

LA_TARGET_AVX512 static inline __m512
elu16(int elu1, __m512 u)
{
    const __m512 sh = _mm512_set1_ps(12582912.0f + 127.0f);
    const __m512 j = _mm512_fmadd_ps(u, _mm512_set1_ps(1.44269504088896341f), sh);
    const __m512 kf = _mm512_sub_ps(j, sh);
    const __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(-2.12194440e-4f),
                                      _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693359375f), u));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(j), 23));
    /* u >= the bound (NaN: false), u > 0 or NaN: the linear branch */
    const __mmask16 in = _mm512_cmp_ps_mask(u, _mm512_set1_ps(LA_ELU_MIN_F32), _CMP_GE_OQ);
    const __mmask16 lin = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_NLE_UQ);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), one);
    if (elu1) {
        /* exp(u) on [bound, 0], 0 below, u + 1 above 0 and for NaN */
        return _mm512_mask_add_ps(_mm512_maskz_mul_ps(in, p, s), lin, u, one);
    }
    /* exp(u) - 1 on [bound, 0], -1 below, u above 0 and for NaN */
    return _mm512_mask_mov_ps(
        _mm512_mask_sub_ps(_mm512_set1_ps(-1.0f), in, _mm512_mul_ps(p, s), one), lin, u);
}

LA_TARGET_AVX512 void
la_elu_avx512_f32(int elu1, float scale, const float *x, la_index n, float *y)
{
    const __m512 sc = _mm512_set1_ps(scale);
    /* elu returns u itself above 0: the multiply by 1 must still quiet a
     * signaling NaN as the portable loop's does (elu1's u + 1 does it) */
    const int unit = scale == 1.0f && elu1;
    la_index j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 u = _mm512_loadu_ps(x + j);
        if (!unit) {
            u = _mm512_mul_ps(sc, u);
        }
        _mm512_storeu_ps(y + j, elu16(elu1, u));
    }
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1u);
        __m512 u = _mm512_maskz_loadu_ps(m, x + j);
        if (!unit) {
            u = _mm512_mul_ps(sc, u);
        }
        _mm512_mask_storeu_ps(y + j, m, elu16(elu1, u));
    }
}

#endif /* x86-64 */
