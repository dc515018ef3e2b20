#include "la_util.h"

#include "la_cblas.h"

#define LA_GEMM_BODY(T, GEMM)                                                  \
    la_index i, j;                                                             \
    if (m <= 0 || n <= 0) {                                                    \
        return;                                                                \
    }                                                                          \
    if (k <= 0) {                                                              \
        for (i = 0; i < m; i++) {                                              \
            for (j = 0; j < n; j++) {                                          \
                C[i * ldc + j] = beta == 0 ? (T)0 : beta * C[i * ldc + j];     \
            }                                                                  \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    GEMM(LaCblasRowMajor, ta ? LaCblasTrans : LaCblasNoTrans,                  \
         tb ? LaCblasTrans : LaCblasNoTrans, (la_blasint)m, (la_blasint)n,     \
         (la_blasint)k, alpha, A, (la_blasint)(lda > 0 ? lda : 1), B,          \
         (la_blasint)(ldb > 0 ? ldb : 1), beta, C,                             \
         (la_blasint)(ldc > 0 ? ldc : 1));

void
la_gemm_f32(int ta, int tb, la_index m, la_index n, la_index k, float alpha,
            const float *A, la_index lda, const float *B, la_index ldb,
            float beta, float *C, la_index ldc)
{
    if (la_gemm_small_f32(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)) {
        return;
    }
    {
        LA_GEMM_BODY(float, LA_CBLAS(sgemm))
    }
}

void
la_gemm_f64(int ta, int tb, la_index m, la_index n, la_index k, double alpha,
            const double *A, la_index lda, const double *B, la_index ldb,
            double beta, double *C, la_index ldc)
{
    if (la_gemm_small_f64(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)) {
        return;
    }
    {
        LA_GEMM_BODY(double, LA_CBLAS(dgemm))
    }
}
