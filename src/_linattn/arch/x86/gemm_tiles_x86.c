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
#include "arch/x86/la_x86.h"

/* Values of a transposed B held on the stack (72 KiB / 36 KiB). */
#define LA_BT_MAX_F32 (256 * 72)
#define LA_BT_MAX_F64 (64 * 72)

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
#include "arch/x86/gemm_tiles_avx512_impl.h"
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOAD
#undef LA_VSTORE

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
#undef LA_V
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOADU
#undef LA_VSTOREU
#undef LA_VLOADM
#undef LA_VSTOREM
#undef LA_VMASK

#define LA_BT_MAX LA_BT_MAX_F32
#include "arch/x86/gemm_tiles_dispatch.h"
#undef LA_BT_MAX
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
#include "arch/x86/gemm_tiles_avx512_impl.h"
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOAD
#undef LA_VSTORE

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
#undef LA_V
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOADU
#undef LA_VSTOREU
#undef LA_VLOADM
#undef LA_VSTOREM
#undef LA_VMASK

#define LA_BT_MAX LA_BT_MAX_F64
#include "arch/x86/gemm_tiles_dispatch.h"
#undef LA_BT_MAX
#include "dtype/la_undef.h"
