/*
 * gemm_tiles_dispatch.h -- WARNING: included once per dtype by
 * gemm_tiles_x86.c (no include guard): la_arch_gemm_tiles_f32 / _f64, the
 * range checks and the transposition of B shared by both paths.
 */
/*
 * One column of C: C[i, 0] (+)= sum_p op(A)[i, p] B[p, 0] (B's and C's column
 * strides ldb, ldc), for the last column of a product whose width is one more
 * than a multiple of the tiles' block (the [V | 1] and [S | z] products of the
 * chunked form: 65 columns).  A tile spends a whole block on it (a quarter of
 * the work of 64 x 65 x 64); here it is vectorised over rows instead, one
 * AVX2 vector of rows at a time (the rows of op(A) are columns of A^T, or
 * come from an in-register transposition of LA_CW rows of A).  Each entry
 * takes the tiles' operations in their order (p = 0 .. k-1, one FMA each,
 * then + C), on both paths, so the bits are the tiles'.
 */
LA_TARGET_AVX2 static void
LA_FN(tiles_col1)(la_index m, la_index k, const LA_T *A, la_index ar, la_index ac,
                  const LA_T *B, la_index ldb, int beta1, LA_T *C, la_index ldc)
{
    /* four vectors of rows at once: four FMA chains side by side */
    LA_T at[4 * LA_CW * LA_COL_KMAX], lane[LA_CW];
    la_index i, p, r;
    int g, ng;
    for (i = 0; i + LA_CW <= m; i += ng * LA_CW) {
        const LA_T *a[4];
        la_index as = ac; /* from one p to the next, LA_CW rows side by side */
        LA_CV acc[4];
        ng = (m - i) / LA_CW < 4 ? (int)((m - i) / LA_CW) : 4;
        for (g = 0; g < 4; g++) {
            acc[g] = LA_CZERO();
            a[g] = A + (i + (g < ng ? g : 0) * LA_CW) * ar;
        }
        if (ar != 1) { /* then ac == 1: rows of A, transposed into at */
            for (g = 0; g < ng; g++) {
                LA_FN(transpose)(LA_CW, k, a[g], ar, at + g * LA_CW * k);
                a[g] = at + g * LA_CW * k;
            }
            for (; g < 4; g++) {
                a[g] = a[0];
            }
            as = LA_CW;
        }
        if (ng == 4) {
            for (p = 0; p < k; p++) {
                const LA_CV bp = LA_CSET1(B[p * ldb]);
                acc[0] = LA_CFMA(LA_CLOADU(a[0] + p * as), bp, acc[0]);
                acc[1] = LA_CFMA(LA_CLOADU(a[1] + p * as), bp, acc[1]);
                acc[2] = LA_CFMA(LA_CLOADU(a[2] + p * as), bp, acc[2]);
                acc[3] = LA_CFMA(LA_CLOADU(a[3] + p * as), bp, acc[3]);
            }
        }
        else {
            for (p = 0; p < k; p++) {
                const LA_CV bp = LA_CSET1(B[p * ldb]);
                for (g = 0; g < ng; g++) {
                    acc[g] = LA_CFMA(LA_CLOADU(a[g] + p * as), bp, acc[g]);
                }
            }
        }
        for (g = 0; g < ng; g++) {
            LA_T *c = C + (i + g * LA_CW) * ldc;
            LA_CSTOREU(lane, acc[g]);
            for (r = 0; r < LA_CW; r++) {
                c[r * ldc] = beta1 ? lane[r] + c[r * ldc] : lane[r];
            }
        }
    }
    for (; i < m; i++) {
        LA_T s = 0;
        for (p = 0; p < k; p++) {
            s = LA_SFMA(A[i * ar + p * ac], B[p * ldb], s);
        }
        C[i * ldc] = beta1 ? s + C[i * ldc] : s;
    }
}

int
LA_FN(la_arch_gemm_tiles)(int isa, int ta, int tb, la_index m, la_index n, la_index k,
                          const LA_T *A, la_index lda, const LA_T *B, la_index ldb,
                          LA_T beta, LA_T *C, la_index ldc, la_index max_dim)
{
    LA_T bt[LA_BT_MAX];
    const la_index ar = ta ? 1 : lda, ac = ta ? lda : 1;
    la_index blk;
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
    /* a last column alone in its block of the tiles: on its own */
    blk = 2 * (la_index)((isa == LA_ISA_AVX512 ? 64 : 32) / sizeof(LA_T));
    if (n % blk == 1 && k <= LA_COL_KMAX) {
        n--;
        LA_FN(tiles_col1)(m, k, A, ar, ac, B + n, ldb, beta == (LA_T)1, C + n, ldc);
        if (n == 0) {
            return 1;
        }
    }
    if (isa == LA_ISA_AVX512) {
        LA_FN(tiles_avx512)(m, n, k, A, ar, ac, B, ldb, beta == (LA_T)1, C, ldc);
    }
    else {
        LA_FN(tiles_avx2)(m, n, k, A, ar, ac, B, ldb, beta == (LA_T)1, C, ldc);
    }
    return 1;
}

/* this file's parameters, so that the next dtype can define them again */
#undef LA_CV
#undef LA_CW
#undef LA_CZERO
#undef LA_CSET1
#undef LA_CLOADU
#undef LA_CSTOREU
#undef LA_CFMA
#undef LA_SFMA
#undef LA_BT_MAX
