/*
 * gemm_tiles_x86.c -- the chunk-sized products of the chunked kernels
 * (64 x 65 x 64 and alike) on x86 register tiles: AVX-512 (8 x 2 zmm) and
 * AVX2+FMA (6 x 2 ymm), float32 and float64 from one source per path.
 * OpenBLAS spends much of such a call packing, and with its Haswell core type
 * runs AVX2 kernels: the float32 AVX-512 tile runs 64 x 65 x 64 at ~190
 * GFLOP/s on a Zen 5 core against OpenBLAS's ~100 (docs/design/performance.md
 * §1).  Whether tiles or BLAS win on a given CPU is measured by la.tune().
 *
 * Row-major C = op(A) op(B) (+ C): alpha = 1, beta in {0, 1}.
 * op(A) = A^T needs no copy (the broadcasts read it with a stride); op(B) = B^T
 * is transposed into a stack buffer first.  No cache blocking: products with
 * a dimension above max_dim (the tuning table's tiles_max_dim) go to BLAS.
 */
#include "arch/la_arch.h"

/* x86-64 only (a universal macOS build compiles this file for arm64 too, where
 * arch/generic/ supplies the entry points) */
#if defined(__x86_64__) || defined(_M_X64)
#include <math.h>

#include "arch/x86/la_x86.h"

/* Values of a transposed B held on the stack (72 KiB / 36 KiB). */
#define LA_BT_MAX_F32 (256 * 72)
#define LA_BT_MAX_F64 (64 * 72)
/* Inner dimension of the one-column product (tiles_col1): the tiles' limit. */
#define LA_COL_KMAX 256

/*
 * bt[p n + j] = B[j ldb + p] (j < n, p < k): the copy of a transposed B.  By
 * 8 x 8 (float32) / 4 x 4 (float64) register blocks, since a scalar copy of
 * 64 x 64 values costs a third of the product it feeds.  Both x86 paths have
 * AVX2.  An exact copy: the results do not depend on how it is done.
 */
LA_TARGET_AVX2 static void
transpose_f32(la_index n, la_index k, const float *B, la_index ldb, float *bt)
{
    la_index j0 = 0, p0, j, p;
    for (; j0 + 8 <= n; j0 += 8) {
        const float *b = B + j0 * ldb;
        for (p0 = 0; p0 + 8 <= k; p0 += 8) {
            __m256 r0 = _mm256_loadu_ps(b + 0 * ldb + p0), r1 = _mm256_loadu_ps(b + 1 * ldb + p0);
            __m256 r2 = _mm256_loadu_ps(b + 2 * ldb + p0), r3 = _mm256_loadu_ps(b + 3 * ldb + p0);
            __m256 r4 = _mm256_loadu_ps(b + 4 * ldb + p0), r5 = _mm256_loadu_ps(b + 5 * ldb + p0);
            __m256 r6 = _mm256_loadu_ps(b + 6 * ldb + p0), r7 = _mm256_loadu_ps(b + 7 * ldb + p0);
            const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            float *o = bt + p0 * n + j0;
            _mm256_storeu_ps(o + 0 * n, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(o + 1 * n, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(o + 2 * n, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(o + 3 * n, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(o + 4 * n, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(o + 5 * n, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(o + 6 * n, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(o + 7 * n, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
        for (p = p0; p < k; p++) {
            for (j = j0; j < j0 + 8; j++) {
                bt[p * n + j] = B[j * ldb + p];
            }
        }
    }
    for (p = 0; p < k; p++) {
        for (j = j0; j < n; j++) {
            bt[p * n + j] = B[j * ldb + p];
        }
    }
}

LA_TARGET_AVX2 static void
transpose_f64(la_index n, la_index k, const double *B, la_index ldb, double *bt)
{
    la_index j0 = 0, p0, j, p;
    for (; j0 + 4 <= n; j0 += 4) {
        const double *b = B + j0 * ldb;
        for (p0 = 0; p0 + 4 <= k; p0 += 4) {
            const __m256d r0 = _mm256_loadu_pd(b + 0 * ldb + p0);
            const __m256d r1 = _mm256_loadu_pd(b + 1 * ldb + p0);
            const __m256d r2 = _mm256_loadu_pd(b + 2 * ldb + p0);
            const __m256d r3 = _mm256_loadu_pd(b + 3 * ldb + p0);
            const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            double *o = bt + p0 * n + j0;
            _mm256_storeu_pd(o + 0 * n, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(o + 1 * n, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(o + 2 * n, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(o + 3 * n, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
        for (p = p0; p < k; p++) {
            for (j = j0; j < j0 + 4; j++) {
                bt[p * n + j] = B[j * ldb + p];
            }
        }
    }
    for (p = 0; p < k; p++) {
        for (j = j0; j < n; j++) {
            bt[p * n + j] = B[j * ldb + p];
        }
    }
}

/* ------------------------------------------------------------- float32 -- */
#include "dtype/la_f32.h"

#define LA_V __m512
#define LA_M __mmask16
#define LA_W 16
#define LA_VSET1 _mm512_set1_ps
#define LA_VFMA _mm512_fmadd_ps
#define LA_VADD _mm512_add_ps
#define LA_VZERO _mm512_setzero_ps
#define LA_VLOAD _mm512_maskz_loadu_ps
#define LA_VSTORE _mm512_mask_storeu_ps
#define LA_VLOADU _mm512_loadu_ps
#define LA_VSTOREU _mm512_storeu_ps
#include "arch/x86/gemm_tiles_avx512_impl.h"

#define LA_V __m256
#define LA_W 8
#define LA_VSET1 _mm256_set1_ps
#define LA_VFMA _mm256_fmadd_ps
#define LA_VADD _mm256_add_ps
#define LA_VZERO _mm256_setzero_ps
#define LA_VLOADU(p) _mm256_loadu_ps(p)
#define LA_VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define LA_VLOADM(p, m) _mm256_maskload_ps((p), (m))
#define LA_VSTOREM(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define LA_VMASK(cols)                                                         \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)((cols) < 0 ? 0 : (cols) > 8 ? 8 : (cols))), \
                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#include "arch/x86/gemm_tiles_avx2_impl.h"

#define LA_BT_MAX LA_BT_MAX_F32
#define LA_CV __m256
#define LA_CW 8
#define LA_CZERO _mm256_setzero_ps
#define LA_CSET1 _mm256_set1_ps
#define LA_CLOADU _mm256_loadu_ps
#define LA_CSTOREU _mm256_storeu_ps
#define LA_CFMA _mm256_fmadd_ps
#define LA_SFMA fmaf
#include "arch/x86/gemm_tiles_dispatch.h"
#include "dtype/la_undef.h"

/* ------------------------------------------------------------- float64 -- */
#include "dtype/la_f64.h"

#define LA_V __m512d
#define LA_M __mmask8
#define LA_W 8
#define LA_VSET1 _mm512_set1_pd
#define LA_VFMA _mm512_fmadd_pd
#define LA_VADD _mm512_add_pd
#define LA_VZERO _mm512_setzero_pd
#define LA_VLOAD _mm512_maskz_loadu_pd
#define LA_VSTORE _mm512_mask_storeu_pd
#define LA_VLOADU _mm512_loadu_pd
#define LA_VSTOREU _mm512_storeu_pd
#include "arch/x86/gemm_tiles_avx512_impl.h"

#define LA_V __m256d
#define LA_W 4
#define LA_VSET1 _mm256_set1_pd
#define LA_VFMA _mm256_fmadd_pd
#define LA_VADD _mm256_add_pd
#define LA_VZERO _mm256_setzero_pd
#define LA_VLOADU(p) _mm256_loadu_pd(p)
#define LA_VSTOREU(p, v) _mm256_storeu_pd((p), (v))
#define LA_VLOADM(p, m) _mm256_maskload_pd((p), (m))
#define LA_VSTOREM(p, m, v) _mm256_maskstore_pd((p), (m), (v))
#define LA_VMASK(cols)                                                         \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)((cols) < 0 ? 0 : (cols) > 4 ? 4 : (cols))), \
                       _mm256_setr_epi64x(0, 1, 2, 3))
#include "arch/x86/gemm_tiles_avx2_impl.h"

#define LA_BT_MAX LA_BT_MAX_F64
#define LA_CV __m256d
#define LA_CW 4
#define LA_CZERO _mm256_setzero_pd
#define LA_CSET1 _mm256_set1_pd
#define LA_CLOADU _mm256_loadu_pd
#define LA_CSTOREU _mm256_storeu_pd
#define LA_CFMA _mm256_fmadd_pd
#define LA_SFMA fma
#include "arch/x86/gemm_tiles_dispatch.h"
#include "dtype/la_undef.h"

#endif /* x86-64 */
