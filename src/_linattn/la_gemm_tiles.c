/*
 * la_gemm_tiles.c -- la_gemm_f32 / _f64's first choice for chunk-sized
 * products: the register tiles of the active ISA path (arch/x86/
 * gemm_tiles_x86.c) when the tuning table's tiles_max_dim admits the shape,
 * else 0 and BLAS runs.  Portable: the generic path has no tiles.
 */
#include "la_util.h"

#include "arch/la_arch.h"
#include "arch/la_tuning.h"
#include "la_cpu.h"

int
la_gemm_small_f32(int ta, int tb, la_index m, la_index n, la_index k, float alpha,
                  const float *A, la_index lda, const float *B, la_index ldb, float beta,
                  float *C, la_index ldc)
{
    if (alpha != 1.0f) {
        return 0;
    }
    return la_arch_gemm_tiles_f32(la_cpu_isa(), ta, tb, m, n, k, A, lda, B, ldb, beta, C,
                                  ldc, la_tuning_tiles_max_dim());
}

int
la_gemm_small_f64(int ta, int tb, la_index m, la_index n, la_index k, double alpha,
                  const double *A, la_index lda, const double *B, la_index ldb,
                  double beta, double *C, la_index ldc)
{
    if (alpha != 1.0) {
        return 0;
    }
    return la_arch_gemm_tiles_f64(la_cpu_isa(), ta, tb, m, n, k, A, lda, B, ldb, beta, C,
                                  ldc, la_tuning_tiles_max_dim());
}
