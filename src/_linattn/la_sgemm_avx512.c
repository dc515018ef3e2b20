/*
 * la_sgemm_avx512.c -- the chunk-sized float32 products of the chunked kernels
 * (64 x 65 x 64 and alike) with AVX-512 register tiles.  OpenBLAS spends
 * much of such a call packing, and under OPENBLAS_CORETYPE=Haswell runs AVX2
 * kernels: this tile runs 64^3 at ~250 GFLOP/s here against OpenBLAS's ~100.
 *
 * Row-major C = op(A) op(B) (+ C): alpha = 1, beta in {0, 1}.  Tile: 8 rows x
 * 32 columns of C (16 for float64) in 16 named zmm accumulators; per step of the inner
 * dimension, two vector loads of B and eight broadcasts of A feed 16 FMAs.
 * Column tails use masks; leftover rows a 1-row tile.  op(A) = A^T needs no
 * copy (the broadcasts read it with a stride); op(B) = B^T is transposed into
 * a stack buffer first.  Larger problems go to BLAS (no cache blocking here).
 */
#include "la_util.h"

#include "la_cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LA_SGEMM_SIMD 1
#endif

#define LA_SGEMM_MAX_DIM 256
#define LA_SGEMM_MAX_BT (LA_SGEMM_MAX_DIM * 72) /* k x n values of a transposed B */
#define LA_DGEMM_MAX_BT (64 * 72)                /* the same for float64 (stack bytes) */

#ifdef LA_SGEMM_SIMD

#define LA_ROW(r)                                                              \
    x = _mm512_set1_ps(a[(r) * ar + p * ac]);                                  \
    c##r##0 = _mm512_fmadd_ps(x, b0, c##r##0);                                 \
    c##r##1 = _mm512_fmadd_ps(x, b1, c##r##1);

#define LA_STORE(r)                                                            \
    if (beta1) {                                                               \
        c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, c + (r) * ldc)); \
        c##r##1 = _mm512_add_ps(c##r##1,                                       \
                                _mm512_maskz_loadu_ps(m1, c + (r) * ldc + 16)); \
    }                                                                          \
    _mm512_mask_storeu_ps(c + (r) * ldc, m0, c##r##0);                         \
    _mm512_mask_storeu_ps(c + (r) * ldc + 16, m1, c##r##1);

/* C[0:8, 0:32] (masked columns) = sum_p A[r, p] B[p, 0:32]. */
__attribute__((target("avx512f"))) static void
tile8x32(la_index k, const float *a, la_index ar, la_index ac, const float *b,
         la_index ldb, float *c, la_index ldc, int beta1, __mmask16 m0, __mmask16 m1)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
           c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00,
           c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + p * ldb + 16);
        __m512 x;
        LA_ROW(0) LA_ROW(1) LA_ROW(2) LA_ROW(3) LA_ROW(4) LA_ROW(5) LA_ROW(6) LA_ROW(7)
    }
    LA_STORE(0) LA_STORE(1) LA_STORE(2) LA_STORE(3)
    LA_STORE(4) LA_STORE(5) LA_STORE(6) LA_STORE(7)
}

#define LA_ROW16(r)                                                            \
    x = _mm512_set1_ps(a[(r) * ar + p * ac]);                                  \
    c##r##0 = _mm512_fmadd_ps(x, b0, c##r##0);

#define LA_STORE16(r)                                                          \
    if (beta1) {                                                               \
        c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, c + (r) * ldc)); \
    }                                                                          \
    _mm512_mask_storeu_ps(c + (r) * ldc, m0, c##r##0);

/* The column tail of at most 16: C[0:8, 0:16] (masked). */
__attribute__((target("avx512f"))) static void
tile8x16(la_index k, const float *a, la_index ar, la_index ac, const float *b,
         la_index ldb, float *c, la_index ldc, int beta1, __mmask16 m0)
{
    __m512 c00 = _mm512_setzero_ps(), c10 = c00, c20 = c00, c30 = c00, c40 = c00,
           c50 = c00, c60 = c00, c70 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb);
        __m512 x;
        LA_ROW16(0) LA_ROW16(1) LA_ROW16(2) LA_ROW16(3)
        LA_ROW16(4) LA_ROW16(5) LA_ROW16(6) LA_ROW16(7)
    }
    LA_STORE16(0) LA_STORE16(1) LA_STORE16(2) LA_STORE16(3)
    LA_STORE16(4) LA_STORE16(5) LA_STORE16(6) LA_STORE16(7)
}

/* One leftover row. */
__attribute__((target("avx512f"))) static void
tile1x32(la_index k, const float *a, la_index ac, const float *b, la_index ldb,
         float *c, int beta1, __mmask16 m0, __mmask16 m1)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const __m512 x = _mm512_set1_ps(a[p * ac]);
        c00 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m0, b + p * ldb), c00);
        c01 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m1, b + p * ldb + 16), c01);
    }
    if (beta1) {
        c00 = _mm512_add_ps(c00, _mm512_maskz_loadu_ps(m0, c));
        c01 = _mm512_add_ps(c01, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, c00);
    _mm512_mask_storeu_ps(c + 16, m1, c01);
}

static __mmask16
mask_of(la_index cols)
{
    return cols >= 16 ? (__mmask16)0xffff
                      : (cols <= 0 ? (__mmask16)0 : (__mmask16)((1u << cols) - 1u));
}

#define LA_DROW(r)                                                              \
    x = _mm512_set1_pd(a[(r) * ar + p * ac]);                                  \
    c##r##0 = _mm512_fmadd_pd(x, b0, c##r##0);                                 \
    c##r##1 = _mm512_fmadd_pd(x, b1, c##r##1);

#define LA_DSTORE(r)                                                            \
    if (beta1) {                                                               \
        c##r##0 = _mm512_add_pd(c##r##0, _mm512_maskz_loadu_pd(m0, c + (r) * ldc)); \
        c##r##1 = _mm512_add_pd(c##r##1,                                       \
                                _mm512_maskz_loadu_pd(m1, c + (r) * ldc + 8)); \
    }                                                                          \
    _mm512_mask_storeu_pd(c + (r) * ldc, m0, c##r##0);                         \
    _mm512_mask_storeu_pd(c + (r) * ldc + 8, m1, c##r##1);

/* float64: C[0:8, 0:16] (masked columns) = sum_p A[r, p] B[p, 0:16]. */
__attribute__((target("avx512f"))) static void
dtile8x16(la_index k, const double *a, la_index ar, la_index ac, const double *b,
          la_index ldb, double *c, la_index ldc, int beta1, __mmask8 m0, __mmask8 m1)
{
    __m512d c00 = _mm512_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
           c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00,
           c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const __m512d b0 = _mm512_maskz_loadu_pd(m0, b + p * ldb);
        const __m512d b1 = _mm512_maskz_loadu_pd(m1, b + p * ldb + 8);
        __m512d x;
        LA_DROW(0) LA_DROW(1) LA_DROW(2) LA_DROW(3) LA_DROW(4) LA_DROW(5) LA_DROW(6) LA_DROW(7)
    }
    LA_DSTORE(0) LA_DSTORE(1) LA_DSTORE(2) LA_DSTORE(3)
    LA_DSTORE(4) LA_DSTORE(5) LA_DSTORE(6) LA_DSTORE(7)
}

#define LA_DROW8(r)                                                            \
    x = _mm512_set1_pd(a[(r) * ar + p * ac]);                                  \
    c##r##0 = _mm512_fmadd_pd(x, b0, c##r##0);

#define LA_DSTORE8(r)                                                          \
    if (beta1) {                                                               \
        c##r##0 = _mm512_add_pd(c##r##0, _mm512_maskz_loadu_pd(m0, c + (r) * ldc)); \
    }                                                                          \
    _mm512_mask_storeu_pd(c + (r) * ldc, m0, c##r##0);

/* float64 column tail of at most 8: C[0:8, 0:8] (masked). */
__attribute__((target("avx512f"))) static void
dtile8x8(la_index k, const double *a, la_index ar, la_index ac, const double *b,
         la_index ldb, double *c, la_index ldc, int beta1, __mmask8 m0)
{
    __m512d c00 = _mm512_setzero_pd(), c10 = c00, c20 = c00, c30 = c00, c40 = c00,
           c50 = c00, c60 = c00, c70 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const __m512d b0 = _mm512_maskz_loadu_pd(m0, b + p * ldb);
        __m512d x;
        LA_DROW8(0) LA_DROW8(1) LA_DROW8(2) LA_DROW8(3)
        LA_DROW8(4) LA_DROW8(5) LA_DROW8(6) LA_DROW8(7)
    }
    LA_DSTORE8(0) LA_DSTORE8(1) LA_DSTORE8(2) LA_DSTORE8(3)
    LA_DSTORE8(4) LA_DSTORE8(5) LA_DSTORE8(6) LA_DSTORE8(7)
}

/* float64: one leftover row. */
__attribute__((target("avx512f"))) static void
dtile1x16(la_index k, const double *a, la_index ac, const double *b, la_index ldb,
         double *c, int beta1, __mmask8 m0, __mmask8 m1)
{
    __m512d c00 = _mm512_setzero_pd(), c01 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const __m512d x = _mm512_set1_pd(a[p * ac]);
        c00 = _mm512_fmadd_pd(x, _mm512_maskz_loadu_pd(m0, b + p * ldb), c00);
        c01 = _mm512_fmadd_pd(x, _mm512_maskz_loadu_pd(m1, b + p * ldb + 8), c01);
    }
    if (beta1) {
        c00 = _mm512_add_pd(c00, _mm512_maskz_loadu_pd(m0, c));
        c01 = _mm512_add_pd(c01, _mm512_maskz_loadu_pd(m1, c + 8));
    }
    _mm512_mask_storeu_pd(c, m0, c00);
    _mm512_mask_storeu_pd(c + 8, m1, c01);
}

static __mmask8
mask8_of(la_index cols)
{
    return cols >= 8 ? (__mmask8)0xff
                     : (cols <= 0 ? (__mmask8)0 : (__mmask8)((1u << cols) - 1u));
}

int
la_sgemm_small(int ta, int tb, la_index m, la_index n, la_index k, float alpha,
               const float *A, la_index lda, const float *B, la_index ldb, float beta,
               float *C, la_index ldc)
{
    float bt[LA_SGEMM_MAX_BT];
    const la_index ar = ta ? 1 : lda, ac = ta ? lda : 1;
    la_index i, j, p;
    if (!la_cpu_avx512() || alpha != 1.0f || !(beta == 0.0f || beta == 1.0f) || m <= 0 ||
        n <= 0 || k <= 0 || m > LA_SGEMM_MAX_DIM || n > LA_SGEMM_MAX_DIM ||
        k > LA_SGEMM_MAX_DIM) {
        return 0;
    }
    if (tb) {
        if (n * k > LA_SGEMM_MAX_BT) {
            return 0;
        }
        for (p = 0; p < k; p++) {
            for (j = 0; j < n; j++) {
                bt[p * n + j] = B[j * ldb + p];
            }
        }
        B = bt;
        ldb = n;
    }
    for (j = 0; j < n; j += 32) {
        const __mmask16 m0 = mask_of(n - j), m1 = mask_of(n - j - 16);
        for (i = 0; i + 8 <= m; i += 8) {
            if (n - j <= 16) {
                tile8x16(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                         beta == 1.0f, m0);
            }
            else {
                tile8x32(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                         beta == 1.0f, m0, m1);
            }
        }
        for (; i < m; i++) {
            tile1x32(k, A + i * ar, ac, B + j, ldb, C + i * ldc + j, beta == 1.0f, m0, m1);
        }
    }
    return 1;
}

int
la_dgemm_small(int ta, int tb, la_index m, la_index n, la_index k, double alpha,
               const double *A, la_index lda, const double *B, la_index ldb, double beta,
               double *C, la_index ldc)
{
    double bt[LA_DGEMM_MAX_BT];
    const la_index ar = ta ? 1 : lda, ac = ta ? lda : 1;
    la_index i, j, p;
    if (!la_cpu_avx512() || alpha != 1.0 || !(beta == 0.0 || beta == 1.0) || m <= 0 ||
        n <= 0 || k <= 0 || m > LA_SGEMM_MAX_DIM || n > LA_SGEMM_MAX_DIM ||
        k > LA_SGEMM_MAX_DIM) {
        return 0;
    }
    if (tb) {
        if (n * k > LA_DGEMM_MAX_BT) {
            return 0;
        }
        for (p = 0; p < k; p++) {
            for (j = 0; j < n; j++) {
                bt[p * n + j] = B[j * ldb + p];
            }
        }
        B = bt;
        ldb = n;
    }
    for (j = 0; j < n; j += 16) {
        const __mmask8 m0 = mask8_of(n - j), m1 = mask8_of(n - j - 8);
        for (i = 0; i + 8 <= m; i += 8) {
            if (n - j <= 8) {
                dtile8x8(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                         beta == 1.0, m0);
            }
            else {
                dtile8x16(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                          beta == 1.0, m0, m1);
            }
        }
        for (; i < m; i++) {
            dtile1x16(k, A + i * ar, ac, B + j, ldb, C + i * ldc + j, beta == 1.0, m0, m1);
        }
    }
    return 1;
}

#else

int
la_dgemm_small(int ta, int tb, la_index m, la_index n, la_index k, double alpha,
               const double *A, la_index lda, const double *B, la_index ldb, double beta,
               double *C, la_index ldc)
{
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    return 0;
}

int
la_sgemm_small(int ta, int tb, la_index m, la_index n, la_index k, float alpha,
               const float *A, la_index lda, const float *B, la_index ldb, float beta,
               float *C, la_index ldc)
{
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    return 0;
}

#endif
