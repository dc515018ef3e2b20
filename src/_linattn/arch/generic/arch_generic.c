/*
 * arch_generic.c -- la_arch.h for builds without CPU-specific code
 * (-DLINATTN_ARCH=generic, and every target without an arch/ directory of
 * its own, e.g. aarch64): only the generic path, the portable loops of
 * kernels/ everywhere and BLAS for every product.
 */
#include "arch/la_arch.h"

/* compiled in every build; empty where the x86 files supply the entry points */
#if !(defined(LA_ARCH_X86) && (defined(__x86_64__) || defined(_M_X64)))

int
la_arch_cpu_isa(void)
{
    return LA_ISA_GENERIC;
}

unsigned
la_arch_compiled_isas(void)
{
    return 1u << LA_ISA_GENERIC;
}

la_elu_f32
la_arch_elu_f32(int isa)
{
    (void)isa;
    return NULL;
}

la_rtoken_f32
la_arch_rtoken_f32(int isa)
{
    (void)isa;
    return NULL;
}

la_rtoken_f64
la_arch_rtoken_f64(int isa)
{
    (void)isa;
    return NULL;
}

la_rtoken_oop_f32
la_arch_rtoken_oop_f32(int isa)
{
    (void)isa;
    return NULL;
}

la_rtoken_oop_f64
la_arch_rtoken_oop_f64(int isa)
{
    (void)isa;
    return NULL;
}

la_rtoken2_f32
la_arch_rtoken2_f32(int isa)
{
    (void)isa;
    return NULL;
}

la_rtoken2_f64
la_arch_rtoken2_f64(int isa)
{
    (void)isa;
    return NULL;
}

int
la_arch_gemm_tiles_f32(int isa, int ta, int tb, la_index m, la_index n, la_index k,
                       const float *A, la_index lda, const float *B, la_index ldb,
                       float beta, float *C, la_index ldc, la_index max_dim)
{
    (void)isa; (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc; (void)max_dim;
    return 0;
}

int
la_arch_gemm_tiles_f64(int isa, int ta, int tb, la_index m, la_index n, la_index k,
                       const double *A, la_index lda, const double *B, la_index ldb,
                       double beta, double *C, la_index ldc, la_index max_dim)
{
    (void)isa; (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc; (void)max_dim;
    return 0;
}

double
la_arch_fma_loop_f32(int isa, int64_t iters)
{
    return isa == LA_ISA_GENERIC ? la_fma_loop_generic_f32(iters) : 0;
}

double
la_arch_fma_loop_f64(int isa, int64_t iters)
{
    return isa == LA_ISA_GENERIC ? la_fma_loop_generic_f64(iters) : 0;
}

#endif
