/*
 * gemm_tiles_avx512_impl.h -- WARNING: included once per dtype by
 * gemm_tiles_x86.c (no include guard).  LA_T / LA_FN from
 * dtype/la_f32.h|la_f64.h; the vector macros LA_V (type), LA_M (mask type),
 * LA_W (lanes), LA_VSET1, LA_VFMA, LA_VADD, LA_VZERO, LA_VLOAD (masked,
 * zeroing), LA_VSTORE (masked), LA_VLOADU / LA_VSTOREU (whole vectors) from
 * gemm_tiles_x86.c.
 *
 * Tile: 8 rows x two vectors of C (32 float32 / 16 float64 columns) in 16
 * named zmm accumulators; per step of the inner dimension two vector loads of
 * B and eight broadcasts of A feed 16 FMAs.  Column tails use masks (a
 * one-vector tile when at most one vector is left); leftover rows a 1-row
 * tile.
 */

#define LA_TROW2(r)                                                            \
    x = LA_VSET1(a[(r) * ar + p * ac]);                                        \
    c##r##0 = LA_VFMA(x, b0, c##r##0);                                         \
    c##r##1 = LA_VFMA(x, b1, c##r##1);

#define LA_TSTORE2(r)                                                          \
    if (beta1) {                                                               \
        c##r##0 = LA_VADD(c##r##0, LA_VLOAD(m0, c + (r) * ldc));               \
        c##r##1 = LA_VADD(c##r##1, LA_VLOAD(m1, c + (r) * ldc + LA_W));        \
    }                                                                          \
    LA_VSTORE(c + (r) * ldc, m0, c##r##0);                                     \
    LA_VSTORE(c + (r) * ldc + LA_W, m1, c##r##1);

#define LA_TSTORE2F(r)                                                         \
    if (beta1) {                                                               \
        c##r##0 = LA_VADD(c##r##0, LA_VLOADU(c + (r) * ldc));                  \
        c##r##1 = LA_VADD(c##r##1, LA_VLOADU(c + (r) * ldc + LA_W));           \
    }                                                                          \
    LA_VSTOREU(c + (r) * ldc, c##r##0);                                        \
    LA_VSTOREU(c + (r) * ldc + LA_W, c##r##1);

#define LA_TROW1(r)                                                            \
    x = LA_VSET1(a[(r) * ar + p * ac]);                                        \
    c##r##0 = LA_VFMA(x, b0, c##r##0);

#define LA_TSTORE1(r)                                                          \
    if (beta1) {                                                               \
        c##r##0 = LA_VADD(c##r##0, LA_VLOAD(m0, c + (r) * ldc));               \
    }                                                                          \
    LA_VSTORE(c + (r) * ldc, m0, c##r##0);

/* C[0:8, 0:2W] (masked columns) (+)= sum_p A[r, p] B[p, 0:2W]: 16 named
 * accumulators, two loads of B and eight broadcasts of A per step. */
LA_TARGET_AVX512 static void
LA_FN(tile8x2)(la_index k, const LA_T *a, la_index ar, la_index ac, const LA_T *b,
               la_index ldb, LA_T *c, la_index ldc, int beta1, LA_M m0, LA_M m1)
{
    LA_V c00 = LA_VZERO(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00,
         c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const LA_V b0 = LA_VLOAD(m0, b + p * ldb);
        const LA_V b1 = LA_VLOAD(m1, b + p * ldb + LA_W);
        LA_V x;
        LA_TROW2(0) LA_TROW2(1) LA_TROW2(2) LA_TROW2(3)
        LA_TROW2(4) LA_TROW2(5) LA_TROW2(6) LA_TROW2(7)
    }
    LA_TSTORE2(0) LA_TSTORE2(1) LA_TSTORE2(2) LA_TSTORE2(3)
    LA_TSTORE2(4) LA_TSTORE2(5) LA_TSTORE2(6) LA_TSTORE2(7)
}

/* tile8x2 for two whole vectors of columns: plain loads and stores (the
 * masked ones keep their masks in memory across the loop, an extra load per
 * vector) */
LA_TARGET_AVX512 static void
LA_FN(tile8x2f)(la_index k, const LA_T *a, la_index ar, la_index ac, const LA_T *b,
                la_index ldb, LA_T *c, la_index ldc, int beta1)
{
    LA_V c00 = LA_VZERO(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00,
         c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const LA_V b0 = LA_VLOADU(b + p * ldb);
        const LA_V b1 = LA_VLOADU(b + p * ldb + LA_W);
        LA_V x;
        LA_TROW2(0) LA_TROW2(1) LA_TROW2(2) LA_TROW2(3)
        LA_TROW2(4) LA_TROW2(5) LA_TROW2(6) LA_TROW2(7)
    }
    LA_TSTORE2F(0) LA_TSTORE2F(1) LA_TSTORE2F(2) LA_TSTORE2F(3)
    LA_TSTORE2F(4) LA_TSTORE2F(5) LA_TSTORE2F(6) LA_TSTORE2F(7)
}

/* The column tail of at most W: C[0:8, 0:W] (masked). */
LA_TARGET_AVX512 static void
LA_FN(tile8x1)(la_index k, const LA_T *a, la_index ar, la_index ac, const LA_T *b,
               la_index ldb, LA_T *c, la_index ldc, int beta1, LA_M m0)
{
    LA_V c00 = LA_VZERO(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00,
         c60 = c00, c70 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const LA_V b0 = LA_VLOAD(m0, b + p * ldb);
        LA_V x;
        LA_TROW1(0) LA_TROW1(1) LA_TROW1(2) LA_TROW1(3)
        LA_TROW1(4) LA_TROW1(5) LA_TROW1(6) LA_TROW1(7)
    }
    LA_TSTORE1(0) LA_TSTORE1(1) LA_TSTORE1(2) LA_TSTORE1(3)
    LA_TSTORE1(4) LA_TSTORE1(5) LA_TSTORE1(6) LA_TSTORE1(7)
}

/* One leftover row: C[0, 0:2W]. */
LA_TARGET_AVX512 static void
LA_FN(tile1x2)(la_index k, const LA_T *a, la_index ac, const LA_T *b, la_index ldb,
               LA_T *c, int beta1, LA_M m0, LA_M m1)
{
    LA_V c00 = LA_VZERO(), c01 = c00;
    la_index p;
    for (p = 0; p < k; p++) {
        const LA_V x = LA_VSET1(a[p * ac]);
        c00 = LA_VFMA(x, LA_VLOAD(m0, b + p * ldb), c00);
        c01 = LA_VFMA(x, LA_VLOAD(m1, b + p * ldb + LA_W), c01);
    }
    if (beta1) {
        c00 = LA_VADD(c00, LA_VLOAD(m0, c));
        c01 = LA_VADD(c01, LA_VLOAD(m1, c + LA_W));
    }
    LA_VSTORE(c, m0, c00);
    LA_VSTORE(c + LA_W, m1, c01);
}

/* Lanes [0, cols) of one vector. */
static LA_M
LA_FN(tile_mask)(la_index cols)
{
    return cols >= LA_W ? (LA_M)~(LA_M)0
                        : (cols <= 0 ? (LA_M)0 : (LA_M)((1u << cols) - 1u));
}

/* C (+)= A B over the whole m x n x k product; B already untransposed. */
LA_TARGET_AVX512 static void
LA_FN(tiles_avx512)(la_index m, la_index n, la_index k, const LA_T *A, la_index ar,
                    la_index ac, const LA_T *B, la_index ldb, int beta1, LA_T *C,
                    la_index ldc)
{
    la_index i, j;
    for (j = 0; j < n; j += 2 * LA_W) {
        const LA_M m0 = LA_FN(tile_mask)(n - j), m1 = LA_FN(tile_mask)(n - j - LA_W);
        for (i = 0; i + 8 <= m; i += 8) {
            if (n - j >= 2 * LA_W) {
                LA_FN(tile8x2f)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                                beta1);
            }
            else if (n - j <= LA_W) {
                LA_FN(tile8x1)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                               beta1, m0);
            }
            else {
                LA_FN(tile8x2)(k, A + i * ar, ar, ac, B + j, ldb, C + i * ldc + j, ldc,
                               beta1, m0, m1);
            }
        }
        for (; i < m; i++) {
            LA_FN(tile1x2)(k, A + i * ar, ac, B + j, ldb, C + i * ldc + j, beta1, m0, m1);
        }
    }
}

#undef LA_TROW2
#undef LA_TSTORE2
#undef LA_TSTORE2F
#undef LA_TROW1
#undef LA_TSTORE1

/* this file's parameters, so that the next dtype can define them again */
#undef LA_V
#undef LA_M
#undef LA_W
#undef LA_VSET1
#undef LA_VFMA
#undef LA_VADD
#undef LA_VZERO
#undef LA_VLOAD
#undef LA_VSTORE
#undef LA_VLOADU
#undef LA_VSTOREU
