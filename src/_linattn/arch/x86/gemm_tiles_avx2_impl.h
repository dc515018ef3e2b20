/*
 * gemm_tiles_avx2_impl.h -- WARNING: included once per dtype by
 * gemm_tiles_x86.c (no include guard).  LA_T / LA_FN from
 * dtype/la_f32.h|la_f64.h; from gemm_tiles_x86.c the vector macros LA_V
 * (type), LA_W (lanes), LA_VSET1, LA_VFMA, LA_VADD, LA_VZERO, LA_VLOADU /
 * LA_VSTOREU (full vectors), LA_VLOADM / LA_VSTOREM (masked by an __m256i)
 * and LA_VMASK(cols) (lanes [0, cols)).
 *
 * Tile: 6 rows x two vectors of C (16 float32 / 8 float64 columns) in 12
 * accumulators, the classic AVX2 shape (16 ymm registers: 12 + two of B + one
 * broadcast of A).  Full tiles load and store whole vectors; only the column
 * tail uses masked moves (slow on some AMD cores).  Each entry of C is
 * accumulated exactly as in the AVX-512 tiles.
 */

#define LA_A2ROW(r)                                                            \
    x = LA_VSET1(a[(r) * ar + p * ac]);                                        \
    c##r##0 = LA_VFMA(x, b0, c##r##0);                                         \
    c##r##1 = LA_VFMA(x, b1, c##r##1);

#define LA_A2LOOP(LOAD0, LOAD1)                                                \
    for (p = 0; p < k; p++) {                                                  \
        const LA_V b0 = LOAD0;                                                 \
        const LA_V b1 = LOAD1;                                                 \
        LA_V x;                                                                \
        LA_A2ROW(0) LA_A2ROW(1) LA_A2ROW(2) LA_A2ROW(3) LA_A2ROW(4) LA_A2ROW(5) \
    }

#define LA_A2LOOP4(LOAD0, LOAD1)                                               \
    for (p = 0; p < k; p++) {                                                  \
        const LA_V b0 = LOAD0;                                                 \
        const LA_V b1 = LOAD1;                                                 \
        LA_V x;                                                                \
        LA_A2ROW(0) LA_A2ROW(1) LA_A2ROW(2) LA_A2ROW(3)                        \
    }

#define LA_A2STORE_FULL(r)                                                     \
    if (beta1) {                                                               \
        c##r##0 = LA_VADD(c##r##0, LA_VLOADU(c + (r) * ldc));                  \
        c##r##1 = LA_VADD(c##r##1, LA_VLOADU(c + (r) * ldc + LA_W));           \
    }                                                                          \
    LA_VSTOREU(c + (r) * ldc, c##r##0);                                        \
    LA_VSTOREU(c + (r) * ldc + LA_W, c##r##1);

#define LA_A2STORE_MASK(r)                                                     \
    if (beta1) {                                                               \
        c##r##0 = LA_VADD(c##r##0, LA_VLOADM(c + (r) * ldc, m0));              \
        c##r##1 = LA_VADD(c##r##1, LA_VLOADM(c + (r) * ldc + LA_W, m1));       \
    }                                                                          \
    LA_VSTOREM(c + (r) * ldc, m0, c##r##0);                                    \
    LA_VSTOREM(c + (r) * ldc + LA_W, m1, c##r##1);

/* C[0:6, 0:2W] (+)= sum_p A[r, p] B[p, 0:2W]; masked: the columns of m0, m1 only
 * (lanes outside them are neither read from B nor written to C). */
LA_TARGET_AVX2 static void
LA_FN(avx2_tile6x2)(la_index k, const LA_T *a, la_index ar, la_index ac, const LA_T *b,
                    la_index ldb, LA_T *c, la_index ldc, int beta1, int masked,
                    __m256i m0, __m256i m1)
{
    LA_V c00 = LA_VZERO(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    la_index p;
    if (masked) {
        LA_A2LOOP(LA_VLOADM(b + p * ldb, m0), LA_VLOADM(b + p * ldb + LA_W, m1))
        LA_A2STORE_MASK(0) LA_A2STORE_MASK(1) LA_A2STORE_MASK(2)
        LA_A2STORE_MASK(3) LA_A2STORE_MASK(4) LA_A2STORE_MASK(5)
    }
    else {
        LA_A2LOOP(LA_VLOADU(b + p * ldb), LA_VLOADU(b + p * ldb + LA_W))
        LA_A2STORE_FULL(0) LA_A2STORE_FULL(1) LA_A2STORE_FULL(2)
        LA_A2STORE_FULL(3) LA_A2STORE_FULL(4) LA_A2STORE_FULL(5)
    }
}

/* Four rows: the leftovers of the six-row tiles (64 = 10 x 6 + 4 rows), at two
 * loads of B and four broadcasts per eight FMAs instead of the 1-row tile's
 * three loads per two. */
LA_TARGET_AVX2 static void
LA_FN(avx2_tile4x2)(la_index k, const LA_T *a, la_index ar, la_index ac, const LA_T *b,
                    la_index ldb, LA_T *c, la_index ldc, int beta1, int masked,
                    __m256i m0, __m256i m1)
{
    LA_V c00 = LA_VZERO(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00;
    la_index p;
    if (masked) {
        LA_A2LOOP4(LA_VLOADM(b + p * ldb, m0), LA_VLOADM(b + p * ldb + LA_W, m1))
        LA_A2STORE_MASK(0) LA_A2STORE_MASK(1) LA_A2STORE_MASK(2) LA_A2STORE_MASK(3)
    }
    else {
        LA_A2LOOP4(LA_VLOADU(b + p * ldb), LA_VLOADU(b + p * ldb + LA_W))
        LA_A2STORE_FULL(0) LA_A2STORE_FULL(1) LA_A2STORE_FULL(2) LA_A2STORE_FULL(3)
    }
}

/* The column tail of at most W: C[0:6, 0:W] (masked). */
LA_TARGET_AVX2 static void
LA_FN(avx2_tile6x1)(la_index k, const LA_T *a, la_index ar, la_index ac, const LA_T *b,
                    la_index ldb, LA_T *c, la_index ldc, int beta1, __m256i m0)
{
    LA_V c00 = LA_VZERO(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00;
    la_index p;
    int r;
    for (p = 0; p < k; p++) {
        const LA_V b0 = LA_VLOADM(b + p * ldb, m0);
        c00 = LA_VFMA(LA_VSET1(a[0 * ar + p * ac]), b0, c00);
        c10 = LA_VFMA(LA_VSET1(a[1 * ar + p * ac]), b0, c10);
        c20 = LA_VFMA(LA_VSET1(a[2 * ar + p * ac]), b0, c20);
        c30 = LA_VFMA(LA_VSET1(a[3 * ar + p * ac]), b0, c30);
        c40 = LA_VFMA(LA_VSET1(a[4 * ar + p * ac]), b0, c40);
        c50 = LA_VFMA(LA_VSET1(a[5 * ar + p * ac]), b0, c50);
    }
    for (r = 0; r < 6; r++) {
        LA_V s = r == 0 ? c00 : r == 1 ? c10 : r == 2 ? c20 : r == 3 ? c30 : r == 4 ? c40 : c50;
        if (beta1) {
            s = LA_VADD(s, LA_VLOADM(c + r * ldc, m0));
        }
        LA_VSTOREM(c + r * ldc, m0, s);
    }
}

/* One leftover row: C[0, 0:2W]. */
LA_TARGET_AVX2 static void
LA_FN(avx2_tile1x2)(la_index k, const LA_T *a, la_index ac, const LA_T *b, la_index ldb,
                    LA_T *c, int beta1, int masked, __m256i m0, __m256i m1)
{
    LA_V c00 = LA_VZERO(), c01 = c00;
    la_index p;
    if (masked) {
        for (p = 0; p < k; p++) {
            const LA_V x = LA_VSET1(a[p * ac]);
            c00 = LA_VFMA(x, LA_VLOADM(b + p * ldb, m0), c00);
            c01 = LA_VFMA(x, LA_VLOADM(b + p * ldb + LA_W, m1), c01);
        }
        if (beta1) {
            c00 = LA_VADD(c00, LA_VLOADM(c, m0));
            c01 = LA_VADD(c01, LA_VLOADM(c + LA_W, m1));
        }
        LA_VSTOREM(c, m0, c00);
        LA_VSTOREM(c + LA_W, m1, c01);
    }
    else {
        for (p = 0; p < k; p++) {
            const LA_V x = LA_VSET1(a[p * ac]);
            c00 = LA_VFMA(x, LA_VLOADU(b + p * ldb), c00);
            c01 = LA_VFMA(x, LA_VLOADU(b + p * ldb + LA_W), c01);
        }
        if (beta1) {
            c00 = LA_VADD(c00, LA_VLOADU(c));
            c01 = LA_VADD(c01, LA_VLOADU(c + LA_W));
        }
        LA_VSTOREU(c, c00);
        LA_VSTOREU(c + LA_W, c01);
    }
}

/* C (+)= A B over the whole m x n x k product; B already untransposed. */
LA_TARGET_AVX2 static void
LA_FN(tiles_avx2)(la_index m, la_index n, la_index k, const LA_T *A, la_index ar,
                  la_index ac, const LA_T *B, la_index ldb, int beta1, LA_T *C,
                  la_index ldc)
{
    la_index i, j;
    for (j = 0; j < n; j += 2 * LA_W) {
        const __m256i m0 = LA_VMASK(n - j), m1 = LA_VMASK(n - j - LA_W);
        const int masked = n - j < 2 * LA_W;
        /* six-row tiles, but 8 rows left go as two four-row tiles */
        for (i = 0; i + 6 <= m && m - i != 8; i += 6) {
            if (n - j <= LA_W) {
                LA_FN(avx2_tile6x1)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                                    beta1, m0);
            }
            else {
                LA_FN(avx2_tile6x2)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                                    beta1, masked, m0, m1);
            }
        }
        for (; i + 4 <= m && n - j > LA_W; i += 4) {
            LA_FN(avx2_tile4x2)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc, beta1,
                                masked, m0, m1);
        }
        for (; i + 6 <= m; i += 6) { /* the column tail, 8 rows left */
            LA_FN(avx2_tile6x1)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                                beta1, m0);
        }
        for (; i < m; i++) {
            LA_FN(avx2_tile1x2)(k, A + i * ar, ac, B + j, ldb, C + i * ldc + j, beta1,
                                masked, m0, m1);
        }
    }
}

#undef LA_A2ROW
#undef LA_A2LOOP
#undef LA_A2LOOP4
#undef LA_A2STORE_FULL
#undef LA_A2STORE_MASK

/* this file's parameters, so that the next dtype can define them again */
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
