/*
 * gemm_tiles_dispatch.h -- WARNING: included once per dtype by
 * gemm_tiles_x86.c (no include guard): la_arch_gemm_tiles_f32 / _f64, the
 * range checks and the transposition of B shared by both paths.
 */
int
LA_FN(la_arch_gemm_tiles)(int isa, int ta, int tb, la_index m, la_index n, la_index k,
                          const LA_T *A, la_index lda, const LA_T *B, la_index ldb,
                          LA_T beta, LA_T *C, la_index ldc, la_index max_dim)
{
    LA_T bt[LA_BT_MAX];
    const la_index ar = ta ? 1 : lda, ac = ta ? lda : 1;
    if ((isa != LA_ISA_AVX512 && isa != LA_ISA_AVX2) ||
        !(beta == (LA_T)0 || beta == (LA_T)1) || m <= 0 || n <= 0 || k <= 0 ||
        m > max_dim || n > max_dim || k > max_dim) {
        return 0;
    }
    if (tb) {
        if (n * k > LA_BT_MAX) {
            return 0;
        }
        LA_FN(transpose)(n, k, B, ldb, bt);
        B = bt;
        ldb = n;
    }
    if (isa == LA_ISA_AVX512) {
        LA_FN(tiles_avx512)(m, n, k, A, ar, ac, B, ldb, beta == (LA_T)1, C, ldc);
    }
    else {
        LA_FN(tiles_avx2)(m, n, k, A, ar, ac, B, ldb, beta == (LA_T)1, C, ldc);
    }
    return 1;
}
