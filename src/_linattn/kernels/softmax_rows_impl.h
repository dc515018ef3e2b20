/*
 * softmax_rows_impl.h -- WARNING: included once per dtype by softmax.c and
 * softmax_bwd.c (no include guard): the row passes over one block of scores
 * shared by the blocked forward and backward.
 *
 * The reductions (row maximum, row sum) keep 64 bytes of partial results
 * (GCC / Clang vector extensions, so every ISA clone vectorises them without
 * -ffast-math's reassociation) and fold them in a fixed order: the result is
 * the same whichever clone runs.  Other compilers get the scalar loops.
 * The including file defines SM_IT, the signed integer as wide as LA_T, and
 * SM_EXP, the exp of the shifted scores (la_vmath.h: la_exp_sm_f32 for
 * float32, la_exp_f64 for float64).  The forward and the backward use
 * different subsets (LA_UNUSED).
 */

/* x[j] = exp(x[j] - m) for j < n. */
LA_TARGET_CLONES LA_UNUSED static void
LA_FN(sm_exp_shift)(la_index n, LA_T *LA_RESTRICT x, LA_T m)
{
    la_index j;
    for (j = 0; j < n; j++) {
        x[j] = SM_EXP(x[j] - m);
    }
}

#if defined(__GNUC__)
/* GCC / Clang vector extensions: 64-byte vectors (one zmm, two ymm or four
 * xmm, whichever the clone has); SM_IT is the integer of LA_T's width. */
typedef LA_T LA_FN(sm_vec) __attribute__((vector_size(64)));
typedef SM_IT LA_FN(sm_ivec) __attribute__((vector_size(64)));
#define SM_VN ((la_index)(64 / sizeof(LA_T)))
#endif

/* max_j x[j] over n >= 0 values, at least `floor` (a NaN never wins, as in
 * the scalar compare `x > m ? x : m`). */
LA_TARGET_CLONES LA_UNUSED static LA_T
LA_FN(sm_rowmax)(la_index n, const LA_T *LA_RESTRICT x, LA_T floor)
{
    la_index i = 0;
    LA_T m = floor;
#if defined(__GNUC__)
    if (n >= SM_VN) {
        LA_FN(sm_vec) acc = floor - (LA_FN(sm_vec)){0}, y;
        LA_FN(sm_ivec) gt;
        LA_T lane[SM_VN];
        la_index l;
        for (; i + SM_VN <= n; i += SM_VN) {
            memcpy(&y, x + i, sizeof(y));
            gt = y > acc;
            acc = (LA_FN(sm_vec))((gt & (LA_FN(sm_ivec))y) | (~gt & (LA_FN(sm_ivec))acc));
        }
        memcpy(lane, &acc, sizeof(lane));
        for (l = 0; l < SM_VN; l++) {
            m = lane[l] > m ? lane[l] : m;
        }
    }
#endif
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

/* sum_j x[j] over n >= 0 values (vector lanes in LA_T, folded in double). */
LA_TARGET_CLONES LA_UNUSED static double
LA_FN(sm_rowsum)(la_index n, const LA_T *LA_RESTRICT x)
{
    la_index i = 0;
    double s = 0;
#if defined(__GNUC__)
    if (n >= SM_VN) {
        LA_FN(sm_vec) acc = {0}, y;
        LA_T lane[SM_VN];
        la_index l;
        for (; i + SM_VN <= n; i += SM_VN) {
            memcpy(&y, x + i, sizeof(y));
            acc += y;
        }
        memcpy(lane, &acc, sizeof(lane));
        for (l = 0; l < SM_VN; l++) {
            s += (double)lane[l];
        }
    }
#endif
    for (; i < n; i++) {
        s += (double)x[i];
    }
    return s;
}

/* x[j] = exp(x[j] - m) for j < n; returns sum_j x[j]. */
LA_UNUSED static double
LA_FN(sm_exp_sum)(la_index n, LA_T *LA_RESTRICT x, LA_T m)
{
    LA_FN(sm_exp_shift)(n, x, m);
    return LA_FN(sm_rowsum)(n, x);
}

/* x[j] *= f for j < n. */
LA_TARGET_CLONES LA_UNUSED static void
LA_FN(sm_scale_row)(la_index n, LA_T *LA_RESTRICT x, LA_T f)
{
    la_index j;
    for (j = 0; j < n; j++) {
        x[j] *= f;
    }
}

/* dp[j] = p[j] (dp[j] - D) for j < n: dZ of one row, in place. */
LA_TARGET_CLONES LA_UNUSED static void
LA_FN(sm_dz_row)(la_index n, const LA_T *LA_RESTRICT p, LA_T *LA_RESTRICT dp, LA_T D)
{
    la_index j;
    for (j = 0; j < n; j++) {
        dp[j] = p[j] * (dp[j] - D);
    }
}

/* x[j] = 0 for j < n. */
LA_UNUSED static void
LA_FN(sm_zero)(la_index n, LA_T *x)
{
    la_index j;
    for (j = 0; j < n; j++) {
        x[j] = 0;
    }
}

/*
 * Pack a (rows x cols, strides rs, cs) into dst row-major (ld cols) and, with
 * dst_t non-NULL, its transpose (cols x rows, ld rows).  `mul` scales.
 */
LA_UNUSED static void
LA_FN(sm_pack)(la_index rows, la_index cols, const LA_T *a, la_index rs, la_index cs,
               LA_T mul, LA_T *dst, LA_T *dst_t)
{
    la_index i, j;
    if (dst != NULL) {
        for (i = 0; i < rows; i++) {
            for (j = 0; j < cols; j++) {
                dst[i * cols + j] = mul * a[i * rs + j * cs];
            }
        }
    }
    if (dst_t != NULL) {
        for (j = 0; j < cols; j++) {
            for (i = 0; i < rows; i++) {
                dst_t[j * rows + i] = mul * a[i * rs + j * cs];
            }
        }
    }
}

/* dst[j * ld + i] = a[i rs + j cs] (i < rows, j < cols): the transpose of a,
 * ld >= rows; by 16 x 16 tiles, so that neither side walks a long stride. */
LA_UNUSED static void
LA_FN(sm_pack_t)(la_index rows, la_index cols, const LA_T *a, la_index rs, la_index cs,
                 la_index ld, LA_T *dst)
{
    la_index i0, j0, i, j;
    for (i0 = 0; i0 < rows; i0 += 16) {
        const la_index i1 = rows - i0 < 16 ? rows : i0 + 16;
        for (j0 = 0; j0 < cols; j0 += 16) {
            const la_index j1 = cols - j0 < 16 ? cols : j0 + 16;
            for (j = j0; j < j1; j++) {
                for (i = i0; i < i1; i++) {
                    dst[j * ld + i] = a[i * rs + j * cs];
                }
            }
        }
    }
}
