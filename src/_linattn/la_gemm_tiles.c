/*
 * la_gemm_tiles.c -- the chunk-sized products of the chunked kernels
 * (64 x 65 x 64 and alike) on AVX-512 register tiles, for float32 and float64
 * from one source (la_gemm_tiles_impl.h).  OpenBLAS spends much of such a
 * call packing, and under OPENBLAS_CORETYPE=Haswell runs AVX2 kernels: the
 * float32 tile runs 64 x 65 x 64 at ~190 GFLOP/s here against OpenBLAS's ~100.
 *
 * Row-major C = op(A) op(B) (+ C): alpha = 1, beta in {0, 1}.  Tile: 8 rows x
 * two vectors of C (32 float32 / 16 float64 columns) in 16 named zmm
 * accumulators; per step of the inner dimension two vector loads of B and
 * eight broadcasts of A feed 16 FMAs.  Column tails use masks (a one-vector
 * tile when at most one vector is left); leftover rows a 1-row tile.
 * op(A) = A^T needs no copy (the broadcasts read it with a stride); op(B) = B^T
 * is transposed into a stack buffer first.  Larger problems go to BLAS (no
 * cache blocking here); la_gemm_small_* returns 0 for them.
 */
#include "la_util.h"

#include "la_cpu.h"

#define LA_GEMM_TILES_MAX_DIM 256

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

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
#define LA_BT_MAX (LA_GEMM_TILES_MAX_DIM * 72)
#include "la_gemm_tiles_impl.h"
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOAD
#undef LA_VSTORE
#undef LA_BT_MAX
#include "dtype/la_undef.h"

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
#define LA_BT_MAX (64 * 72) /* 36 KiB of stack */
#include "la_gemm_tiles_impl.h"
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOAD
#undef LA_VSTORE
#undef LA_BT_MAX
#include "dtype/la_undef.h"

#else /* no x86-64 AVX-512 path in this build: BLAS does every product */

int
la_gemm_small_f32(int ta, int tb, la_index m, la_index n, la_index k, float alpha,
                  const float *A, la_index lda, const float *B, la_index ldb, float beta,
                  float *C, la_index ldc)
{
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    return 0;
}

int
la_gemm_small_f64(int ta, int tb, la_index m, la_index n, la_index k, double alpha,
                  const double *A, la_index lda, const double *B, la_index ldb,
                  double beta, double *C, la_index ldc)
{
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    return 0;
}

#endif
