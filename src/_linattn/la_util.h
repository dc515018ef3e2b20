/*
 * la_util.h -- small helpers shared by the kernels: scratch carving and a
 * row-major GEMM that tolerates zero sizes.
 */
#ifndef LA_UTIL_H
#define LA_UTIL_H

#include "la_common.h"

/* Hand out the next cache-line-aligned piece of a caller-owned scratch block. */
static inline void *
la_carve(char **p, size_t bytes)
{
    void *r = *p;
    *p += LA_ALIGN_BYTES(bytes);
    return r;
}

/* Rows per block: the chunk size, but never more than `t` (when t >= 1). */
static inline la_index
la_block_rows(la_index chunk, la_index t)
{
    la_index c = chunk < 1 ? 1 : chunk;
    if (t >= 1 && c > t) {
        c = t;
    }
    return c;
}

/* Log-decays are clamped at LA_DECAY_FLOOR (-inf included). */
static inline double
la_clamp_decay(double g)
{
    return g < LA_DECAY_FLOOR ? LA_DECAY_FLOOR : g;
}

/*
 * C = alpha op(A) op(B) + beta C (row-major).  Zero m or n is a no-op, zero k
 * gives beta C, and BLAS never sees a leading dimension below 1.
 */
/*
 * The AVX-512 register-tile path of la_gemm_f32 / la_gemm_f64 for chunk-sized
 * products (la_gemm_tiles.c): returns 1 when it computed C, 0 when the shape,
 * the CPU or alpha / beta are outside its range and BLAS must run instead.
 */
int la_gemm_small_f32(int ta, int tb, la_index m, la_index n, la_index k, float alpha,
                      const float *A, la_index lda, const float *B, la_index ldb,
                      float beta, float *C, la_index ldc);
int la_gemm_small_f64(int ta, int tb, la_index m, la_index n, la_index k, double alpha,
                      const double *A, la_index lda, const double *B, la_index ldb,
                      double beta, double *C, la_index ldc);

void la_gemm_f32(int ta, int tb, la_index m, la_index n, la_index k,
                 float alpha, const float *A, la_index lda, const float *B,
                 la_index ldb, float beta, float *C, la_index ldc);
void la_gemm_f64(int ta, int tb, la_index m, la_index n, la_index k,
                 double alpha, const double *A, la_index lda, const double *B,
                 la_index ldb, double beta, double *C, la_index ldc);

#endif
