/*
 * linear_impl.h -- WARNING: included once per dtype by linear.c (no include
 * guard).  LA_T / LA_FN / LA_EXP / LA_GEMM come from dtype/la_f32.h|la_f64.h.
 */

/* dst[0..e) = v row; dst[e] = 1 when the denominator rides along. */
static void
LA_FN(load_v)(const LA_T *v, la_index cs, la_index e, int div, LA_T *dst)
{
    la_index j;
    if (cs == 1) {
        memcpy(dst, v, (size_t)e * sizeof(LA_T));
    }
    else {
        for (j = 0; j < e; j++) {
            dst[j] = v[j * cs];
        }
    }
    if (div) {
        dst[e] = (LA_T)1;
    }
}

/* dst <- src for a rows x cols block with any strides (memcpy rows when the
 * columns are contiguous in both). */
static void
LA_FN(copy_block)(LA_T *dst, la_index drs, la_index dcs, const LA_T *src,
                  la_index srs, la_index scs, la_index rows, la_index cols)
{
    la_index i, j;
    if (dst == src && drs == srs && dcs == scs) {
        return; /* updated in place */
    }
    if (dcs == 1 && scs == 1 && drs == cols && srs == cols) {
        /* both dense: one copy of the block (a new decoding state's 16 KiB
         * per head in one fast-string move instead of 64 row copies) */
        memcpy(dst, src, (size_t)(rows * cols) * sizeof(LA_T));
        return;
    }
    for (i = 0; i < rows; i++) {
        if (dcs == 1 && scs == 1) {
            memcpy(dst + i * drs, src + i * srs, (size_t)cols * sizeof(LA_T));
            continue;
        }
        for (j = 0; j < cols; j++) {
            dst[i * drs + j * dcs] = src[i * srs + j * scs];
        }
    }
}

/* Features of n rows (row stride rs, column stride cs) into dense n x f:
 * one map call over the whole block when the rows are dense already. */
static void
LA_FN(feature_rows)(int fmap, double scale, const LA_T *x, la_index rs, la_index cs,
                    la_index n, la_index f, LA_T *y)
{
    la_index r;
    if (cs == 1 && rs == f) {
        LA_FN(la_featmap_row)(fmap, scale, x, 1, n * f, y);
        return;
    }
    for (r = 0; r < n; r++) {
        LA_FN(la_featmap_row)(fmap, scale, x + r * rs, cs, f, y + r * f);
    }
}

/* out[j] = num[j] / d: a quotient has the same bits at any vector width, so
 * the ISA clones (AVX-512 divides 16 at once) change nothing but the time. */
LA_TARGET_CLONES static void
LA_FN(div_row)(la_index e, const LA_T *LA_RESTRICT num, LA_T d, LA_T *LA_RESTRICT out)
{
    la_index j;
    for (j = 0; j < e; j++) {
        out[j] = num[j] / d;
    }
}

/* The div-mode denominator after its eps guard (the eps modes of the registry). */
static LA_T
LA_FN(guard_den)(const la_linear_args *a, LA_T den)
{
    const LA_T eps = (LA_T)a->eps;
    switch (a->eps_mode) {
    case LA_EPS_CLAMP:
        return den < eps ? eps : den;
    case LA_EPS_ABS_CLAMP:
        den = LA_FABS(den);
        return den < eps ? eps : den;
    default:
        return den + eps;
    }
}

/* sum_j x[j]^2 in double over 8 partial sums added in a fixed tree: the same
 * bits at every vector width, and no e-long chain of dependent adds (an RMS
 * row of a decoding step). */
LA_TARGET_CLONES static double
LA_FN(sumsq_row)(la_index e, const LA_T *LA_RESTRICT x)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    la_index j = 0, u;
    for (; j + 8 <= e; j += 8) {
        for (u = 0; u < 8; u++) {
            acc[u] += (double)x[j + u] * (double)x[j + u];
        }
    }
    for (u = 0; j + u < e; u++) {
        acc[u] += (double)x[j + u] * (double)x[j + u];
    }
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* Finish one row: num[0..e) (and den = num[e] in div mode) -> out. */
static void
LA_FN(finish_row)(const la_linear_args *a, const LA_T *num, LA_T *out,
                  la_index ocs)
{
    const la_index e = a->e;
    la_index j;
    if (a->norm == LA_NORM_DIV) {
        const LA_T gd = LA_FN(guard_den)(a, num[e]);
        if (ocs == 1) {
            LA_FN(div_row)(e, num, gd, out);
        }
        else {
            for (j = 0; j < e; j++) {
                out[j * ocs] = num[j] / gd;
            }
        }
    }
    else if (a->norm == LA_NORM_RMS && e > 0) {
        const LA_T d = (LA_T)(sqrt(LA_FN(sumsq_row)(e, num) / (double)e) + a->eps);
        for (j = 0; j < e; j++) {
            out[j * ocs] = num[j] / d;
        }
    }
    else {
        for (j = 0; j < e; j++) {
            out[j * ocs] = num[j];
        }
    }
}

/* Sx (f x ec, rows ld apart) <- [s0 | z0]. */
static void
LA_FN(load_state)(const la_linear_args *a, la_index ec, la_index ld, LA_T *Sx)
{
    LA_FN(copy_block)(Sx, ld, 1, (const LA_T *)a->s0, a->s0_rs, a->s0_cs, a->f, a->e);
    if (ec > a->e) {
        LA_FN(copy_block)(Sx + a->e, ld, 1, (const LA_T *)a->z0, a->z0_s, 1, a->f, 1);
    }
}

/* [s1 | z1] <- Sx; z1 = 0 when no denominator is carried. */
static void
LA_FN(store_state)(const la_linear_args *a, la_index ec, la_index ld, const LA_T *Sx)
{
    LA_T *z1 = (LA_T *)a->z1;
    la_index i;
    LA_FN(copy_block)((LA_T *)a->s1, a->s1_rs, a->s1_cs, Sx, ld, 1, a->f, a->e);
    for (i = 0; i < a->f; i++) {
        z1[i * a->z1_s] = ec > a->e ? Sx[i * ld + a->e] : (LA_T)0;
    }
}

/* Multiply rows [0, n) of M (ld columns wide, first w used) by factors. */
static void
LA_FN(scale_rows)(LA_T *M, la_index n, la_index w, la_index ld,
                  const double *logf_, double shift)
{
    la_index r, j;
    for (r = 0; r < n; r++) {
        const LA_T c = (LA_T)exp(logf_[r] - shift);
        for (j = 0; j < w; j++) {
            M[r * ld + j] *= c;
        }
    }
}

/* ------------------------------------------------------------ recurrent -- */

/*
 * One token: S = a S + kf v^T, num = S^T qf, fused in one pass over S.  The
 * columns go in blocks of LA_RBLOCK whose num accumulators stay in registers
 * while the rows stream past: the FMA chain per accumulator is then one row
 * long instead of a store-to-load round trip (1.5x over rows-outer here).
 * A block is four arrays of LA_RLANES (v and num each), not one of 64: GCC
 * keeps arrays that small in vector registers (four zmm accumulators on
 * AVX-512, four chains to hide the FMA latency) and spilled the one of 64
 * to the stack, a store and a load per row and vector.  The entries' operations
 * (and bits) are those of the one-array loop.
 */
#define LA_RBLOCK 64
#define LA_RLANES 16
LA_TARGET_CLONES static void
LA_FN(recurrent_token)(la_index f, la_index e, LA_T a, int decayed,
                       LA_T *LA_RESTRICT S, la_index ld, const LA_T *LA_RESTRICT qf,
                       const LA_T *LA_RESTRICT kf, const LA_T *LA_RESTRICT vv,
                       LA_T *LA_RESTRICT num)
{
    enum { W = LA_RLANES };
    la_index i, j, j0;
    for (j0 = 0; j0 + LA_RBLOCK <= e; j0 += LA_RBLOCK) {
        LA_T a0[W], a1[W], a2[W], a3[W], v0[W], v1[W], v2[W], v3[W];
        for (j = 0; j < W; j++) {
            a0[j] = a1[j] = a2[j] = a3[j] = 0;
            v0[j] = vv[j0 + j];
            v1[j] = vv[j0 + W + j];
            v2[j] = vv[j0 + 2 * W + j];
            v3[j] = vv[j0 + 3 * W + j];
        }
        if (decayed) {
            for (i = 0; i < f; i++) {
                LA_T *LA_RESTRICT Si = S + i * ld + j0;
                const LA_T ki = kf[i], qi = qf[i];
                for (j = 0; j < W; j++) {
                    const LA_T s0 = a * Si[j] + ki * v0[j];
                    const LA_T s1 = a * Si[W + j] + ki * v1[j];
                    const LA_T s2 = a * Si[2 * W + j] + ki * v2[j];
                    const LA_T s3 = a * Si[3 * W + j] + ki * v3[j];
                    Si[j] = s0;
                    Si[W + j] = s1;
                    Si[2 * W + j] = s2;
                    Si[3 * W + j] = s3;
                    a0[j] += qi * s0;
                    a1[j] += qi * s1;
                    a2[j] += qi * s2;
                    a3[j] += qi * s3;
                }
            }
        }
        else {
            for (i = 0; i < f; i++) {
                LA_T *LA_RESTRICT Si = S + i * ld + j0;
                const LA_T ki = kf[i], qi = qf[i];
                for (j = 0; j < W; j++) {
                    const LA_T s0 = Si[j] + ki * v0[j];
                    const LA_T s1 = Si[W + j] + ki * v1[j];
                    const LA_T s2 = Si[2 * W + j] + ki * v2[j];
                    const LA_T s3 = Si[3 * W + j] + ki * v3[j];
                    Si[j] = s0;
                    Si[W + j] = s1;
                    Si[2 * W + j] = s2;
                    Si[3 * W + j] = s3;
                    a0[j] += qi * s0;
                    a1[j] += qi * s1;
                    a2[j] += qi * s2;
                    a3[j] += qi * s3;
                }
            }
        }
        for (j = 0; j < W; j++) {
            num[j0 + j] = a0[j];
            num[j0 + W + j] = a1[j];
            num[j0 + 2 * W + j] = a2[j];
            num[j0 + 3 * W + j] = a3[j];
        }
    }
    if (j0 < e) { /* the last e mod 64 columns */
        const la_index nb = e - j0;
        LA_T acc[LA_RBLOCK], vl[LA_RBLOCK];
        for (j = 0; j < nb; j++) {
            acc[j] = 0;
            vl[j] = vv[j0 + j];
        }
        for (i = 0; i < f; i++) {
            LA_T *LA_RESTRICT Si = S + i * ld + j0;
            const LA_T ki = kf[i], qi = qf[i];
            for (j = 0; j < nb; j++) {
                const LA_T s = (decayed ? a * Si[j] : Si[j]) + ki * vl[j];
                Si[j] = s;
                acc[j] += qi * s;
            }
        }
        for (j = 0; j < nb; j++) {
            num[j0 + j] = acc[j];
        }
    }
}

/*
 * The denominator of one token: z <- a z + kf (elementwise), returns z . qf.
 * The dot product runs in LA_DEN_LANES partial sums (lane l takes the
 * entries i = l mod LA_DEN_LANES), added by a fixed pairwise tree at the end:
 * no serial chain of f dependent FMAs (f times the FMA latency, longer than
 * the whole state pass on AVX-512), and the same bits at every vector width.
 */
#define LA_DEN_LANES 16

/* acc[0] + ... + acc[LA_DEN_LANES - 1] by the fixed pairwise tree. */
#if LA_DEN_LANES != 16
#error "den_tree is written out for 16 lanes"
#endif
static inline LA_T
LA_FN(den_tree)(LA_T *acc)
{
    /* the four levels written out (as a loop over the widths, GCC kept the
     * partial sums on the stack and added them one by one) */
    la_index l;
    for (l = 0; l < 8; l++) {
        acc[l] += acc[l + 8];
    }
    for (l = 0; l < 4; l++) {
        acc[l] += acc[l + 4];
    }
    acc[0] += acc[2];
    acc[1] += acc[3];
    return acc[0] + acc[1];
}

LA_TARGET_CLONES static LA_T
LA_FN(recurrent_den)(la_index f, LA_T a, LA_T *LA_RESTRICT z, const LA_T *LA_RESTRICT qf,
                     const LA_T *LA_RESTRICT kf)
{
    LA_T acc[LA_DEN_LANES];
    la_index i, i0, l;
    for (i = 0; i < f; i++) {
        z[i] = a * z[i] + kf[i];
    }
    for (l = 0; l < LA_DEN_LANES; l++) {
        acc[l] = 0;
    }
    for (i0 = 0; i0 + LA_DEN_LANES <= f; i0 += LA_DEN_LANES) {
        for (l = 0; l < LA_DEN_LANES; l++) {
            acc[l] += z[i0 + l] * qf[i0 + l];
        }
    }
    for (l = 0; i0 + l < f; l++) {
        acc[l] += z[i0 + l] * qf[i0 + l];
    }
    return LA_FN(den_tree)(acc);
}

/* recurrent_den for tokens t and t + 1 in one pass over z (the same bits). */
LA_TARGET_CLONES static void
LA_FN(recurrent_den2)(la_index f, LA_T a1, LA_T a2, LA_T *LA_RESTRICT z,
                      const LA_T *LA_RESTRICT q1, const LA_T *LA_RESTRICT k1,
                      const LA_T *LA_RESTRICT q2, const LA_T *LA_RESTRICT k2, LA_T *den1,
                      LA_T *den2)
{
    LA_T acc1[LA_DEN_LANES], acc2[LA_DEN_LANES];
    la_index i0, l;
    for (l = 0; l < LA_DEN_LANES; l++) {
        acc1[l] = 0;
        acc2[l] = 0;
    }
    /* the full blocks of lanes, then the last f mod LA_DEN_LANES entries: no
     * branch in the block loop, whose accumulators then stay in registers
     * (with the branch, GCC kept them on the stack: a store and a reload per
     * block and token) */
    for (i0 = 0; i0 + LA_DEN_LANES <= f; i0 += LA_DEN_LANES) {
        for (l = 0; l < LA_DEN_LANES; l++) {
            const LA_T z1 = a1 * z[i0 + l] + k1[i0 + l];
            const LA_T z2 = a2 * z1 + k2[i0 + l];
            acc1[l] += z1 * q1[i0 + l];
            acc2[l] += z2 * q2[i0 + l];
            z[i0 + l] = z2;
        }
    }
    for (l = 0; i0 + l < f; l++) {
        const LA_T z1 = a1 * z[i0 + l] + k1[i0 + l];
        const LA_T z2 = a2 * z1 + k2[i0 + l];
        acc1[l] += z1 * q1[i0 + l];
        acc2[l] += z2 * q2[i0 + l];
        z[i0 + l] = z2;
    }
    *den1 = LA_FN(den_tree)(acc1);
    *den2 = LA_FN(den_tree)(acc2);
}

/* out[j] = num[j] * r (e contiguous entries). */
LA_TARGET_CLONES static void
LA_FN(recurrent_mul_row)(la_index e, const LA_T *LA_RESTRICT num, LA_T r,
                         LA_T *LA_RESTRICT out)
{
    la_index j;
    for (j = 0; j < e; j++) {
        out[j] = num[j] * r;
    }
}

/*
 * Token t's output row from num[0..e] (div mode: num[e] is the denominator).
 * Div mode with a contiguous row multiplies by the guarded denominator's
 * reciprocal: one divide per row instead of e (a vector divide costs about
 * ten FMAs on AVX-512), within 1.5 ulp of the quotient.  Where the
 * reciprocal could over- or underflow (|gd| outside [2^-120, 2^120], or not
 * finite) and in every other case, finish_row as the other forms.  Both
 * guard the denominator with guard_den.
 */
static void
LA_FN(recurrent_out_row)(const la_linear_args *a, la_index t, LA_T *num)
{
    LA_T *out = (LA_T *)a->o + t * a->o_rs;
    if (a->norm == LA_NORM_DIV && a->o_cs == 1) {
        const LA_T gd = LA_FN(guard_den)(a, num[a->e]);
        const LA_T ad = LA_FABS(gd);
        if (ad >= (LA_T)7.52316384526264005e-37 && ad <= (LA_T)1.32922799578491587e36) {
            LA_FN(recurrent_mul_row)(a->e, num, (LA_T)1 / gd, out);
            return;
        }
    }
    LA_FN(finish_row)(a, num, out, a->o_cs);
}

/* After token t's update: the denominator (div mode, z <- a z + kf) and the
 * finished output row. */
static void
LA_FN(recurrent_finish)(const la_linear_args *a, la_index t, int div, LA_T decay,
                        LA_T *LA_RESTRICT z, const LA_T *qf, const LA_T *kf, LA_T *num)
{
    if (div) {
        num[a->e] = LA_FN(recurrent_den)(a->f, decay, z, qf, kf);
    }
    LA_FN(recurrent_out_row)(a, t, num);
}

/* recurrent_finish for tokens t and t + 1 (the same bits as two calls). */
static void
LA_FN(recurrent_finish2)(const la_linear_args *a, la_index t, int div, LA_T d1, LA_T d2,
                         LA_T *LA_RESTRICT z, const LA_T *q1, const LA_T *k1, const LA_T *q2,
                         const LA_T *k2, LA_T *num1, LA_T *num2)
{
    if (div) {
        LA_FN(recurrent_den2)(a->f, d1, d2, z, q1, k1, q2, k2, num1 + a->e, num2 + a->e);
    }
    LA_FN(recurrent_out_row)(a, t, num1);
    LA_FN(recurrent_out_row)(a, t + 1, num2);
}

#define LA_RALIGN_T 64

/*
 * Software prefetch (into L2) of one input row of n elements, element stride
 * cs: the recurrent loop asks for the rows LA_RPREFETCH_BLOCKS blocks of
 * LA_RFEAT_ROWS tokens ahead, so the features and value rows come from L2,
 * not memory (each block of a dense (T, 64) float32 input is one 4 KiB page,
 * where the hardware prefetchers stop).  One block ahead was too short: the
 * feature map reads a whole block at its start, and the requests for the
 * block's last rows went out only a token or two before (the map's loads of
 * q and k were its hottest instructions in a profile at T = 8192, B*H = 8);
 * with the rows four blocks (64 tokens, 48 KiB of q, k and v for D = E = 64)
 * ahead, the misses have the time of several blocks to return (elu, float32,
 * one thread: median 236 -> 218 ns a token over 16 alternating pairs of runs
 * on a loaded machine, 13 of them faster).  Rows with strided columns are left
 * to the hardware.
 */
#define LA_RPREFETCH_BLOCKS 4
#if defined(__GNUC__) || defined(__clang__)
#define LA_RPREFETCH(p) __builtin_prefetch((p), 0, 2)
#else
#define LA_RPREFETCH(p) ((void)(p))
#endif
static inline void
LA_FN(prefetch_row)(const LA_T *row, la_index cs, la_index n)
{
    const char *p = (const char *)row;
    const size_t bytes = (size_t)n * sizeof(LA_T);
    size_t off;
    if (cs != 1) {
        return;
    }
    for (off = 0; off < bytes; off += 64) {
        LA_RPREFETCH(p + off);
    }
}

la_status
LA_FN(la_linear_recurrent)(const la_linear_args *a, void *work)
{
    const la_index f = a->f, e = a->e;
    const int div = a->norm == LA_NORM_DIV;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    char *p = (char *)work;
    const la_index RB = la_block_rows(LA_RFEAT_ROWS, a->t);
    LA_T *qb = (LA_T *)la_carve(&p, (size_t)(RB * f) * sizeof(LA_T));
    LA_T *kb = (LA_T *)la_carve(&p, (size_t)(RB * f) * sizeof(LA_T));
    /* value rows of a token pair (copied only when their columns are strided)
     * and two num rows of e + 1 (the denominator) */
    LA_T *vbuf = (LA_T *)la_carve(&p, (size_t)(2 * e) * sizeof(LA_T));
    LA_T *num = (LA_T *)la_carve(&p, (size_t)(2 * (e + 1)) * sizeof(LA_T));
    /* update the output state in place when its rows are contiguous, and for
     * sequences of LA_RALIGN_T tokens or more only when they also start on
     * cache lines (64 bytes); else in aligned scratch, copied out at the end: a
     * misaligned row splits every vector load and store of the token loop
     * across two lines (NumPy's arrays are 16-byte aligned), while a short call
     * (a decoding step) would pay more for the two copies */
    const int direct = a->s1_cs == 1 &&
                       (a->t < LA_RALIGN_T ||
                        ((uintptr_t)a->s1 % 64 == 0 &&
                         ((size_t)a->s1_rs * sizeof(LA_T)) % 64 == 0));
    LA_T *S = direct ? (LA_T *)a->s1
                     : (LA_T *)la_carve(&p, (size_t)(f * e) * sizeof(LA_T));
    const la_index ld = direct ? a->s1_rs : e;
    LA_T *z = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    const la_index ns = e + 1;
    const int decayed = a->g != NULL;
    /* the active ISA path's hand-written loops (arch/): two tokens per pass over
     * S where it has one, else one; NULL: the C loop above */
    const LA_FN(la_rtoken) simd = LA_FN(la_arch_rtoken)(la_cpu_isa());
    const LA_FN(la_rtoken2) simd2 =
        la_tuning_active().token_pairs ? LA_FN(la_arch_rtoken2)(la_cpu_isa()) : NULL;
    la_index t, t0, i;
    int u;

    LA_FN(copy_block)(S, ld, 1, (const LA_T *)a->s0, a->s0_rs, a->s0_cs, f, e);
    LA_FN(copy_block)(z, 1, 1, (const LA_T *)a->z0, a->z0_s, 1, f, 1);
    for (t0 = 0; t0 < a->t; t0 += RB) {
        const la_index nb = a->t - t0 < RB ? a->t - t0 : RB;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        /* features of a block of tokens at once (one call when rows are dense) */
        LA_FN(feature_rows)(a->fmap_q, a->scale, q + t0 * a->q_rs, a->q_rs, a->q_cs, nb, f, qb);
        LA_FN(feature_rows)(a->fmap_k, 1.0, k + t0 * a->k_rs, a->k_rs, a->k_cs, nb, f, kb);
        for (t = t0; t < t0 + nb;) {
            const LA_T *qf = qb + (t - t0) * f, *kf = kb + (t - t0) * f;
            const int nt = simd2 != NULL && t + 1 < t0 + nb ? 2 : 1;
            LA_T decay[2] = {1, 1};
            const LA_T *vr = v + t * a->v_rs; /* the nt tokens' value rows */
            la_index vs = a->v_rs;
            for (u = 0; u < nt; u++) {
                /* a token LA_RPREFETCH_BLOCKS blocks ahead */
                const la_index ta = t + u + LA_RPREFETCH_BLOCKS * RB;
                if (ta < a->t) {
                    LA_FN(prefetch_row)(q + ta * a->q_rs, a->q_cs, f);
                    LA_FN(prefetch_row)(k + ta * a->k_rs, a->k_cs, f);
                    LA_FN(prefetch_row)(v + ta * a->v_rs, a->v_cs, e);
                }
                if (decayed) {
                    decay[u] = (LA_T)exp(la_clamp_decay(a->g[(t + u) * a->g_s]));
                }
                if (a->v_cs != 1) {
                    LA_FN(load_v)(v + (t + u) * a->v_rs, a->v_cs, e, 0, vbuf + u * e);
                }
            }
            if (a->v_cs != 1) {
                vr = vbuf;
                vs = e;
            }
            if (nt == 2) {
                simd2(f, e, decay[0], decay[1], decayed, S, ld, qf, kf, vr, qf + f, kf + f,
                      vr + vs, num, num + ns);
            }
            else if (simd != NULL) {
                simd(f, e, decay[0], decayed, S, ld, qf, kf, vr, num);
            }
            else {
                LA_FN(recurrent_token)(f, e, decay[0], decayed, S, ld, qf, kf, vr, num);
            }
            if (nt == 2) {
                LA_FN(recurrent_finish2)(a, t, div, decay[0], decay[1], z, qf, kf, qf + f,
                                         kf + f, num, num + ns);
            }
            else {
                LA_FN(recurrent_finish)(a, t, div, decay[0], z, qf, kf, num);
            }
            t += nt;
        }
    }
    if (!direct) {
        LA_FN(copy_block)((LA_T *)a->s1, a->s1_rs, a->s1_cs, S, e, 1, f, e);
    }
    for (i = 0; i < f; i++) {
        ((LA_T *)a->z1)[i * a->z1_s] = div ? z[i] : (LA_T)0;
    }
    return LA_OK;
}

/*
 * One decoding step (a->t == 1): the operations of la_linear_recurrent on one
 * token, so the same bits (the features of q and k, the decay factor, the
 * active path's one-token loop, recurrent_finish), without its block
 * machinery.  A copying step (s1 != s0) whose new state has contiguous rows
 * reads S0 and writes S1 in one pass where the path has an out-of-place loop
 * (la_arch_rtoken_oop), else copies S0 into S1 and updates that.  work:
 * la_linear_work_size(LA_FORM_RECURRENT) bytes.
 */
la_status
LA_FN(la_linear_step_token)(const la_linear_args *a, void *work)
{
    const la_index f = a->f, e = a->e;
    const int div = a->norm == LA_NORM_DIV;
    const int decayed = a->g != NULL;
    const int isa = la_cpu_isa();
    const LA_FN(la_rtoken) simd = LA_FN(la_arch_rtoken)(isa);
    char *p = (char *)work;
    LA_T *qf = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    LA_T *kf = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    LA_T *vbuf = (LA_T *)la_carve(&p, (size_t)e * sizeof(LA_T));
    LA_T *num = (LA_T *)la_carve(&p, (size_t)(e + 1) * sizeof(LA_T));
    /* the new state's rows directly where they are contiguous (as the
     * recurrent form does for a short call), else scratch copied out */
    const int direct = a->s1_cs == 1;
    LA_T *S = direct ? (LA_T *)a->s1 : (LA_T *)la_carve(&p, (size_t)(f * e) * sizeof(LA_T));
    const la_index ld = direct ? a->s1_rs : e;
    const int inplace = a->s1 == a->s0 && a->s1_rs == a->s0_rs && a->s1_cs == a->s0_cs;
    /* the denominator updated where the new one goes when that is contiguous
     * (the same operations on the same values as in scratch) */
    const int zdirect = a->z1_s == 1;
    LA_T *z = zdirect ? (LA_T *)a->z1 : (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    const LA_T *vr = (const LA_T *)a->v;
    LA_T decay = 1;
    la_index i;

    LA_TICK(a->progress, 1);
    LA_FN(la_featmap_row)(a->fmap_q, a->scale, (const LA_T *)a->q, a->q_cs, f, qf);
    LA_FN(la_featmap_row)(a->fmap_k, 1.0, (const LA_T *)a->k, a->k_cs, f, kf);
    if (decayed) {
        decay = (LA_T)exp(la_clamp_decay(a->g[0]));
    }
    if (a->v_cs != 1) {
        LA_FN(load_v)(vr, a->v_cs, e, 0, vbuf);
        vr = vbuf;
    }
    if (div) {
        LA_FN(copy_block)(z, 1, 1, (const LA_T *)a->z0, a->z0_s, 1, f, 1);
    }
    if (!inplace && direct && a->s0_cs == 1 && simd != NULL &&
        LA_FN(la_arch_rtoken_oop)(isa) != NULL) {
        LA_FN(la_arch_rtoken_oop)(isa)(f, e, decay, decayed, (const LA_T *)a->s0, a->s0_rs, S,
                                       ld, qf, kf, vr, num);
    }
    else {
        LA_FN(copy_block)(S, ld, 1, (const LA_T *)a->s0, a->s0_rs, a->s0_cs, f, e);
        if (simd != NULL) {
            simd(f, e, decay, decayed, S, ld, qf, kf, vr, num);
        }
        else {
            LA_FN(recurrent_token)(f, e, decay, decayed, S, ld, qf, kf, vr, num);
        }
    }
    LA_FN(recurrent_finish)(a, 0, div, decay, z, qf, kf, num);
    if (!direct) {
        LA_FN(copy_block)((LA_T *)a->s1, a->s1_rs, a->s1_cs, S, e, 1, f, e);
    }
    if (!zdirect || !div) {
        for (i = 0; i < f; i++) {
            ((LA_T *)a->z1)[i * a->z1_s] = div ? z[i] : (LA_T)0;
        }
    }
    return LA_OK;
}

/* -------------------------------------------------------------- chunked -- */

/* Chunks of at least 2 * LA_TRI_MIN rows skip their upper-right quarter. */
#define LA_TRI_MIN 16

/* Scratch of one chunk worker, carved from the caller's block. */
typedef struct {
    LA_T *Qc, *Kc, *Vc, *P, *Oc, *dS, *pw;
    double *b, *wrow;
    la_index C, ec, ld; /* ld: row stride of Vc, Oc, dS and the state */
    int decayed, const_decay;
} LA_FN(chunk_ws);

/* Returns the scratch past the worker's blocks, which start at the first
 * 64-byte boundary of work (the work size counts 64 bytes for it). */
static char *
LA_FN(chunk_ws_init)(const la_linear_args *a, void *work, LA_FN(chunk_ws) *w)
{
    const la_index f = a->f, C = la_block_rows(a->chunk, a->t);
    const la_index ec = a->e + (a->norm == LA_NORM_DIV);
    char *p = (char *)work + (64 - (size_t)((uintptr_t)work & 63u)) % 64;
    la_index r;
    w->C = C;
    w->ec = ec;
    w->ld = la_linear_chunk_ld(a, sizeof(LA_T));
    w->decayed = a->g != NULL;
    w->const_decay = w->decayed && a->g_s == 0;
    w->Qc = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    w->Kc = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    w->Vc = (LA_T *)la_carve(&p, (size_t)(C * w->ld) * sizeof(LA_T));
    w->P = (LA_T *)la_carve(&p, (size_t)(C * C) * sizeof(LA_T));
    w->Oc = (LA_T *)la_carve(&p, (size_t)(C * w->ld) * sizeof(LA_T));
    w->dS = (LA_T *)la_carve(&p, (size_t)(f * w->ld) * sizeof(LA_T));
    w->b = (double *)la_carve(&p, (size_t)C * sizeof(double));
    w->pw = (LA_T *)la_carve(&p, (size_t)C * sizeof(LA_T));
    w->wrow = (double *)la_carve(&p, (size_t)C * sizeof(double));
    if (w->const_decay) {
        /* Toeplitz mask: L[r][j] = lambda^(r-j), one table per call. */
        const double g0 = la_clamp_decay(a->g[0]);
        for (r = 0; r < C; r++) {
            w->pw[r] = (LA_T)exp((double)r * g0);
        }
    }
    return p;
}

/* b_r of tokens [t0, t0+n), the inclusive in-chunk cumulative log-decay (in
 * float64, docs/design/family.md §4.3 rule 4). */
static void
LA_FN(chunk_load_b)(const la_linear_args *a, LA_FN(chunk_ws) *w, la_index t0,
                    la_index n)
{
    la_index r;
    if (w->decayed) {
        double acc = 0;
        for (r = 0; r < n; r++) {
            acc = w->const_decay ? (double)(r + 1) * la_clamp_decay(a->g[0])
                                 : acc + la_clamp_decay(a->g[(t0 + r) * a->g_s]);
            w->b[r] = acc;
        }
    }
}

/* b, key features and [v | 1] of tokens [t0, t0+n): what the state increment
 * needs. */
static void
LA_FN(chunk_load_kv)(const la_linear_args *a, LA_FN(chunk_ws) *w, la_index t0,
                     la_index n)
{
    const la_index f = a->f, e = a->e, ec = w->ec;
    const LA_T *k = (const LA_T *)a->k, *v = (const LA_T *)a->v;
    la_index r;
    LA_FN(chunk_load_b)(a, w, t0, n);
    LA_FN(feature_rows)(a->fmap_k, 1.0, k + t0 * a->k_rs, a->k_rs, a->k_cs, n, f, w->Kc);
    for (r = 0; r < n; r++) {
        LA_FN(load_v)(v + (t0 + r) * a->v_rs, a->v_cs, e, ec > e, w->Vc + r * w->ld);
    }
}

/* All features of tokens [t0, t0+n): b, keys, [v | 1], queries. */
static void
LA_FN(chunk_load)(const la_linear_args *a, LA_FN(chunk_ws) *w, la_index t0,
                  la_index n)
{
    const LA_T *q = (const LA_T *)a->q;
    LA_FN(chunk_load_kv)(a, w, t0, n);
    LA_FN(feature_rows)(a->fmap_q, a->scale, q + t0 * a->q_rs, a->q_rs, a->q_cs, n, a->f,
                        w->Qc);
}

/* Intra-chunk part of the loaded chunk's outputs: Oc = ((Q K^T) o L) V. */
static void
LA_FN(chunk_intra)(const la_linear_args *a, LA_FN(chunk_ws) *w, la_index n,
                   LA_T *Oc)
{
    const la_index f = a->f, C = w->C, ec = w->ec, ld = w->ld;
    LA_T *P = w->P;
    /* triangle-aware: rows [0, h) only meet keys [0, h), so the upper-right
     * h x (n - h) block of Q K^T and its share of P V are never computed
     * (3/4 of the dense products for h = n / 2) */
    const la_index h = n >= 2 * LA_TRI_MIN ? n / 2 : n;
    la_index r, j;
    LA_GEMM(0, 1, h, h, f, 1, w->Qc, f, w->Kc, f, 0, P, C);
    LA_GEMM(0, 1, n - h, n, f, 1, w->Qc + h * f, f, w->Kc, f, 0, P + h * C, C);
    for (r = 0; r < n; r++) {
        LA_T *Pr = P + r * C;
        if (w->const_decay) {
            for (j = 0; j < r; j++) {
                Pr[j] *= w->pw[r - j];
            }
        }
        else if (w->decayed) {
            /* differences first (docs/design/family.md §4.3 rule 1), then one vector exp */
            for (j = 0; j < r; j++) {
                w->wrow[j] = w->b[r] - w->b[j];
            }
            la_vexp_f64(r, w->wrow, w->wrow);
            for (j = 0; j < r; j++) {
                Pr[j] *= (LA_T)w->wrow[j];
            }
        }
        for (j = r + 1; j < n; j++) {
            Pr[j] = 0;
        }
    }
    LA_GEMM(0, 0, h, ec, h, 1, P, C, w->Vc, ld, 0, Oc, ld);
    LA_GEMM(0, 0, n - h, ec, n, 1, P + h * C, C, w->Vc, ld, 0, Oc + h * ld, ld);
}

/* Inter-chunk part and the finish: Oc += diag(exp(b)) Q S_enter, then each
 * row is normalised into the output.  Scales Qc in place. */
static void
LA_FN(chunk_inter)(const la_linear_args *a, LA_FN(chunk_ws) *w, la_index t0,
                   la_index n, const LA_T *Sx, LA_T *Oc)
{
    const la_index f = a->f, ec = w->ec, ld = w->ld;
    LA_T *o = (LA_T *)a->o;
    la_index r;
    if (w->decayed) {
        LA_FN(scale_rows)(w->Qc, n, f, f, w->b, 0.0);
    }
    LA_GEMM(0, 0, n, ec, f, 1, w->Qc, f, Sx, ld, 1, Oc, ld);
    for (r = 0; r < n; r++) {
        LA_FN(finish_row)(a, Oc + r * ld, o + (t0 + r) * a->o_rs, a->o_cs);
    }
}

/* The loaded chunk's state increment on a zero state: dS = (diag(exp(beta - b))
 * K)^T [V | 1]; returns beta, the chunk's total log-decay.  Scales Kc. */
static double
LA_FN(chunk_delta)(const la_linear_args *a, LA_FN(chunk_ws) *w, la_index n,
                   LA_T *dS)
{
    const la_index f = a->f, ec = w->ec;
    double beta = 0;
    la_index r, j;
    if (w->decayed) {
        beta = w->b[n - 1];
        for (r = 0; r < n; r++) {
            const LA_T c = (LA_T)exp(beta - w->b[r]);
            for (j = 0; j < f; j++) {
                w->Kc[r * f + j] *= c;
            }
        }
    }
    LA_GEMM(1, 0, f, ec, n, 1, w->Kc, f, w->Vc, w->ld, 0, dS, w->ld);
    return beta;
}

/* Sm <- exp(beta) Sm + dS over f rows of ec (ld apart), in float64: the
 * master state.  Sx, the working copy that chunk_inter reads, receives Sm
 * rounded to LA_T (float32); in float64 Sx is Sm itself; NULL: none (the
 * sequence-parallel scan, whose pass 2 reads the states swapped into dS).  A float32 state
 * would lose the increments of a long undecayed stream: its normaliser z grows
 * like the token count, and once z's spacing passes a chunk's increment
 * (about 2^24 tokens) every addition rounds with the same bias
 * (docs/design/family.md §10).  With swap, dS receives the old state in LA_T
 * (the working copy entering that chunk, kept for pass 2 of the
 * sequence-parallel scan). */
LA_TARGET_CLONES static void
LA_FN(state_step)(la_index f, la_index ec, la_index ld, double *Sm, LA_T *Sx, double beta,
                  LA_T *LA_RESTRICT dS, int swap)
{
    const double eb = exp(beta);
    la_index i, j;
    if (Sx == NULL || (void *)Sx == (void *)Sm) {
        for (i = 0; i < f; i++) {
            double *LA_RESTRICT s = Sm + i * ld;
            LA_T *LA_RESTRICT d = dS + i * ld;
            for (j = 0; j < ec; j++) {
                const double old = s[j];
                s[j] = eb * old + (double)d[j];
                if (swap) {
                    d[j] = (LA_T)old;
                }
            }
        }
        return;
    }
    for (i = 0; i < f; i++) {
        double *LA_RESTRICT s = Sm + i * ld;
        LA_T *LA_RESTRICT x = Sx + i * ld;
        LA_T *LA_RESTRICT d = dS + i * ld;
        for (j = 0; j < ec; j++) {
            const double old = s[j];
            const double nw = eb * old + (double)d[j];
            s[j] = nw;
            x[j] = (LA_T)nw;
            if (swap) {
                d[j] = (LA_T)old;
            }
        }
    }
}

/* The float64 master state's scratch: Sx itself in float64, else its own
 * f x ld block (la_linear_work_size counts it). */
static double *
LA_FN(master_state)(char **p, la_index f, la_index ld, LA_T *Sx)
{
    if (sizeof(LA_T) == sizeof(double)) {
        return (double *)(void *)Sx;
    }
    return (double *)la_carve(p, (size_t)(f * ld) * sizeof(double));
}

/* Sm (f x ec, rows ld apart) <- the working copy Sx, widened. */
static void
LA_FN(master_load)(la_index f, la_index ec, la_index ld, const LA_T *Sx, double *Sm)
{
    la_index i, j;
    if ((const void *)Sx == (const void *)Sm) {
        return;
    }
    for (i = 0; i < f; i++) {
        for (j = 0; j < ec; j++) {
            Sm[i * ld + j] = (double)Sx[i * ld + j];
        }
    }
}

/* The serial chunked form: per chunk load, outputs from the entering state,
 * then the state step.  The sequence-parallel form (glue) runs the very same
 * operations, so both give bit-identical results. */
la_status
LA_FN(la_linear_chunked)(const la_linear_args *a, void *work)
{
    LA_FN(chunk_ws) w;
    LA_T *Sx;
    double *Sm;
    char *p;
    la_index t0;
    p = LA_FN(chunk_ws_init)(a, work, &w);
    Sx = (LA_T *)la_carve(&p, (size_t)(a->f * w.ld) * sizeof(LA_T));
    Sm = LA_FN(master_state)(&p, a->f, w.ld, Sx);
    LA_FN(load_state)(a, w.ec, w.ld, Sx);
    LA_FN(master_load)(a->f, w.ec, w.ld, Sx, Sm);
    for (t0 = 0; t0 < a->t; t0 += w.C) {
        const la_index n = a->t - t0 < w.C ? a->t - t0 : w.C;
        double beta;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, n);
        LA_FN(chunk_load)(a, &w, t0, n);
        LA_FN(chunk_intra)(a, &w, n, w.Oc);
        LA_FN(chunk_inter)(a, &w, t0, n, Sx, w.Oc);
        beta = LA_FN(chunk_delta)(a, &w, n, w.dS);
        LA_FN(state_step)(a->f, w.ec, w.ld, Sm, Sx, beta, w.dS, 0);
    }
    LA_FN(store_state)(a, w.ec, w.ld, Sx);
    return LA_OK;
}

/* The state after the block from a zero state, without outputs (pass 1 of the
 * block-state scan, docs/design/family.md §7): per chunk the key features, the
 * increment dS and the state step of the chunked form, the state carried in
 * float64; a->q, a->o, a->s0 and a->z0 are not read.  S1 = the block's S,
 * z1 = its z (div mode; zeros otherwise). */
la_status
LA_FN(la_linear_transition)(const la_linear_args *a, void *work)
{
    LA_FN(chunk_ws) w;
    LA_T *Sx;
    double *Sm;
    char *p;
    la_index t0, i;
    p = LA_FN(chunk_ws_init)(a, work, &w);
    Sx = (LA_T *)la_carve(&p, (size_t)(a->f * w.ld) * sizeof(LA_T));
    Sm = LA_FN(master_state)(&p, a->f, w.ld, Sx);
    for (i = 0; i < a->f * w.ld; i++) {
        Sm[i] = 0;
    }
    for (t0 = 0; t0 < a->t; t0 += w.C) {
        const la_index n = a->t - t0 < w.C ? a->t - t0 : w.C;
        double beta;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, n);
        LA_FN(chunk_load_kv)(a, &w, t0, n);
        beta = LA_FN(chunk_delta)(a, &w, n, w.dS);
        LA_FN(state_step)(a->f, w.ec, w.ld, Sm, NULL, beta, w.dS, 0);
    }
    LA_FN(la_linear_state_store)(a, Sm);
    return LA_OK;
}

/* Pieces of the chunked form for the sequence-parallel scan (docs/design/family.md §7). */
la_status
LA_FN(la_linear_chunk_pass1)(const la_linear_args *a, void *work, la_index t0,
                             LA_T *dS, double *beta)
{
    LA_FN(chunk_ws) w;
    const la_index C = la_block_rows(a->chunk, a->t);
    const la_index n = a->t - t0 < C ? a->t - t0 : C;
    LA_FN(chunk_ws_init)(a, work, &w);
    LA_FN(chunk_load_kv)(a, &w, t0, n);
    *beta = LA_FN(chunk_delta)(a, &w, n, dS);
    return LA_OK;
}

la_status
LA_FN(la_linear_chunk_pass2)(const la_linear_args *a, void *work, la_index t0,
                             const LA_T *S_enter)
{
    LA_FN(chunk_ws) w;
    const la_index C = la_block_rows(a->chunk, a->t);
    const la_index n = a->t - t0 < C ? a->t - t0 : C;
    LA_FN(chunk_ws_init)(a, work, &w);
    LA_FN(chunk_load)(a, &w, t0, n);
    LA_FN(chunk_intra)(a, &w, n, w.Oc);
    LA_FN(chunk_inter)(a, &w, t0, n, S_enter, w.Oc);
    LA_TICK(a->progress, n);
    return LA_OK;
}

/* Pass 1 that keeps what pass 2 needs again: the chunk's key features (Kk,
 * C x f, unscaled) and [V | 1] rows (Vk, C x ld), so pass 2 computes only
 * the query features.  Same operations on the same values as the serial
 * kernel (the decay scaling of chunk_delta runs on a copy of the keys). */
la_status
LA_FN(la_linear_chunk_pass1_keep)(const la_linear_args *a, void *work, la_index t0,
                                  LA_T *dS, double *beta, LA_T *Kk, LA_T *Vk)
{
    LA_FN(chunk_ws) w;
    const la_index C = la_block_rows(a->chunk, a->t);
    const la_index n = a->t - t0 < C ? a->t - t0 : C;
    LA_T *Ks;
    LA_FN(chunk_ws_init)(a, work, &w);
    Ks = w.Kc;
    w.Kc = Kk;
    w.Vc = Vk;
    LA_FN(chunk_load_kv)(a, &w, t0, n);
    if (w.decayed) {
        memcpy(Ks, Kk, (size_t)(n * a->f) * sizeof(LA_T));
        w.Kc = Ks;
    }
    *beta = LA_FN(chunk_delta)(a, &w, n, dS);
    return LA_OK;
}

/* Pass 2 from the entering state and pass 1's kept keys and values. */
la_status
LA_FN(la_linear_chunk_pass2_kept)(const la_linear_args *a, void *work, la_index t0,
                                  const LA_T *S_enter, const LA_T *Kk, const LA_T *Vk)
{
    LA_FN(chunk_ws) w;
    const la_index C = la_block_rows(a->chunk, a->t);
    const la_index n = a->t - t0 < C ? a->t - t0 : C;
    const LA_T *q = (const LA_T *)a->q;
    LA_FN(chunk_ws_init)(a, work, &w);
    w.Kc = (LA_T *)Kk; /* read only: chunk_intra and chunk_inter scale Qc alone */
    w.Vc = (LA_T *)Vk;
    LA_FN(chunk_load_b)(a, &w, t0, n);
    LA_FN(feature_rows)(a->fmap_q, a->scale, q + t0 * a->q_rs, a->q_rs, a->q_cs, n, a->f,
                        w.Qc);
    LA_FN(chunk_intra)(a, &w, n, w.Oc);
    LA_FN(chunk_inter)(a, &w, t0, n, S_enter, w.Oc);
    LA_TICK(a->progress, n);
    return LA_OK;
}

/* The sequence-parallel scan carries the float64 master state Sm (f x ld
 * doubles, ld = la_linear_chunk_ld(a, sizeof(LA_T))), as the serial form does. */
void
LA_FN(la_linear_state_load)(const la_linear_args *a, double *Sm)
{
    const la_index ec = a->e + (a->norm == LA_NORM_DIV), ld = la_linear_chunk_ld(a, sizeof(LA_T));
    la_index i, j;
    const LA_T *s0 = (const LA_T *)a->s0, *z0 = (const LA_T *)a->z0;
    for (i = 0; i < a->f; i++) {
        for (j = 0; j < a->e; j++) {
            Sm[i * ld + j] = (double)s0[i * a->s0_rs + j * a->s0_cs];
        }
        if (ec > a->e) {
            Sm[i * ld + a->e] = (double)z0[i * a->z0_s];
        }
    }
}

void
LA_FN(la_linear_state_store)(const la_linear_args *a, const double *Sm)
{
    const la_index ld = la_linear_chunk_ld(a, sizeof(LA_T));
    const int div = a->norm == LA_NORM_DIV;
    LA_T *s1 = (LA_T *)a->s1, *z1 = (LA_T *)a->z1;
    la_index i, j;
    for (i = 0; i < a->f; i++) {
        for (j = 0; j < a->e; j++) {
            s1[i * a->s1_rs + j * a->s1_cs] = (LA_T)Sm[i * ld + j];
        }
        z1[i * a->z1_s] = div ? (LA_T)Sm[i * ld + a->e] : (LA_T)0;
    }
}

void
LA_FN(la_linear_state_scan)(const la_linear_args *a, double *Sm, double beta, LA_T *dS)
{
    const la_index ld = la_linear_chunk_ld(a, sizeof(LA_T));
    LA_FN(state_step)(a->f, a->e + (a->norm == LA_NORM_DIV), ld, Sm, NULL, beta, dS, 1);
}

/* ------------------------------------------------------------- parallel -- */

la_status
LA_FN(la_linear_parallel)(const la_linear_args *a, void *work)
{
    const la_index f = a->f, e = a->e, T = a->t;
    const int div = a->norm == LA_NORM_DIV;
    const la_index ec = e + div;
    const la_index C = la_block_rows(a->chunk, T);
    const la_index ldp = T > 0 ? T : 1;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    const int decayed = a->g != NULL;
    char *p = (char *)work;
    LA_T *Ka = (LA_T *)la_carve(&p, (size_t)(T * f) * sizeof(LA_T));
    LA_T *Va = (LA_T *)la_carve(&p, (size_t)(T * ec) * sizeof(LA_T));
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(C * ldp) * sizeof(LA_T));
    LA_T *Ob = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    LA_T *Sx = (LA_T *)la_carve(&p, (size_t)(f * ec) * sizeof(LA_T));
    double *G = (double *)la_carve(&p, (size_t)ldp * sizeof(double));
    double *wrow = (double *)la_carve(&p, (size_t)ldp * sizeof(double));
    la_index r0, r, j;
    double acc = 0;

    LA_FN(load_state)(a, ec, ec, Sx);
    for (j = 0; j < T; j++) {
        LA_FN(la_featmap_row)(a->fmap_k, 1.0, k + j * a->k_rs, a->k_cs, f, Ka + j * f);
        LA_FN(load_v)(v + j * a->v_rs, a->v_cs, e, div, Va + j * ec);
        if (decayed) {
            acc += la_clamp_decay(a->g[j * a->g_s]);
            G[j] = acc;
        }
    }
    for (r0 = 0; r0 < T; r0 += C) {
        const la_index nb = T - r0 < C ? T - r0 : C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        const la_index r1 = r0 + nb;
        for (r = 0; r < nb; r++) {
            LA_FN(la_featmap_row)(a->fmap_q, a->scale, q + (r0 + r) * a->q_rs, a->q_cs, f, Qb + r * f);
        }
        /* A = M o (Q K^T) over keys 0..r1-1, M_ts = exp(G_t - G_s) for s <= t */
        LA_GEMM(0, 1, nb, r1, f, 1, Qb, f, Ka, f, 0, P, ldp);
        for (r = 0; r < nb; r++) {
            const la_index t = r0 + r;
            LA_T *Pr = P + r * ldp;
            if (decayed) {
                for (j = 0; j < t; j++) {
                    wrow[j] = G[t] - G[j];
                }
                la_vexp_f64(t, wrow, wrow);
                for (j = 0; j < t; j++) {
                    Pr[j] *= (LA_T)wrow[j];
                }
            }
            for (j = t + 1; j < r1; j++) {
                Pr[j] = 0;
            }
        }
        LA_GEMM(0, 0, nb, ec, r1, 1, P, ldp, Va, ec, 0, Ob, ec);
        if (decayed) {
            LA_FN(scale_rows)(Qb, nb, f, f, G + r0, 0.0);
        }
        LA_GEMM(0, 0, nb, ec, f, 1, Qb, f, Sx, ec, 1, Ob, ec);
        for (r = 0; r < nb; r++) {
            LA_FN(finish_row)(a, Ob + r * ec, o + (r0 + r) * a->o_rs, a->o_cs);
        }
    }
    /* final state: exp(G_last) S0 + sum_s exp(G_last - G_s) kf_s v_s^T */
    if (T > 0) {
        if (decayed) {
            const LA_T eg = (LA_T)exp(G[T - 1]);
            for (j = 0; j < f * ec; j++) {
                Sx[j] *= eg;
            }
            for (j = 0; j < T; j++) {
                const LA_T c = (LA_T)exp(G[T - 1] - G[j]);
                for (r = 0; r < f; r++) {
                    Ka[j * f + r] *= c;
                }
            }
        }
        LA_GEMM(1, 0, f, ec, T, 1, Ka, f, Va, ec, 1, Sx, ec);
    }
    LA_FN(store_state)(a, ec, ec, Sx);
    return LA_OK;
}

/* ------------------------------------------------------------ noncausal -- */

la_status
LA_FN(la_linear_noncausal)(const la_linear_args *a, void *work)
{
    const la_index f = a->f, e = a->e;
    const int div = a->norm == LA_NORM_DIV;
    const la_index ec = e + div;
    const la_index C = la_block_rows(a->chunk, a->t > a->s ? a->t : a->s);
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    char *p = (char *)work;
    LA_T *Xb = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    LA_T *Vb = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    LA_T *Sx = (LA_T *)la_carve(&p, (size_t)(f * ec) * sizeof(LA_T));
    la_index r0, r;

    /* S = Kf^T [V | 1], blocked over keys so Kf is never held whole */
    for (r = 0; r < f * ec; r++) {
        Sx[r] = 0;
    }
    for (r0 = 0; r0 < a->s; r0 += C) {
        const la_index nb = a->s - r0 < C ? a->s - r0 : C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        for (r = 0; r < nb; r++) {
            LA_FN(la_featmap_row)(a->fmap_k, 1.0, k + (r0 + r) * a->k_rs, a->k_cs, f, Xb + r * f);
            LA_FN(load_v)(v + (r0 + r) * a->v_rs, a->v_cs, e, div, Vb + r * ec);
        }
        LA_GEMM(1, 0, f, ec, nb, 1, Xb, f, Vb, ec, 1, Sx, ec);
    }
    for (r0 = 0; r0 < a->t; r0 += C) {
        const la_index nb = a->t - r0 < C ? a->t - r0 : C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        for (r = 0; r < nb; r++) {
            LA_FN(la_featmap_row)(a->fmap_q, a->scale, q + (r0 + r) * a->q_rs, a->q_cs, f, Xb + r * f);
        }
        LA_GEMM(0, 0, nb, ec, f, 1, Xb, f, Sx, ec, 0, Vb, ec);
        for (r = 0; r < nb; r++) {
            LA_FN(finish_row)(a, Vb + r * ec, o + (r0 + r) * a->o_rs, a->o_cs);
        }
    }
    return LA_OK;
}
