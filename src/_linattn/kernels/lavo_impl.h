/*
 * lavo_impl.h -- WARNING: included once per dtype by lavo.c (no include guard).
 * The maths is in lavo.h.
 */

/* sum_c a[c] * b[c * bs] in 16 lanes (lane u takes c = u mod 16), added
 * pairwise at the end: an order fixed by n alone, whatever the stride.  The
 * body of lavo_dot and lavo_dots (inlined into each ISA clone). */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline double
LA_FN(lavo_dot_body)(const LA_T *LA_RESTRICT a, const LA_T *LA_RESTRICT b, la_index bs,
                     la_index n)
{
    /* every lane index a constant after unrolling: the lanes stay in a register */
    LA_T lane[16], tl[16];
    la_index c, u;
    for (u = 0; u < 16; u++) {
        lane[u] = 0;
    }
    if (bs == 1) {
        for (c = 0; c + 16 <= n; c += 16) {
            for (u = 0; u < 16; u++) {
                lane[u] += a[c + u] * b[c + u];
            }
        }
    }
    else {
        for (c = 0; c + 16 <= n; c += 16) {
            for (u = 0; u < 16; u++) {
                lane[u] += a[c + u] * b[(c + u) * bs];
            }
        }
    }
    if (c < n) {
        for (u = 0; u < 16; u++) {
            tl[u] = 0;
        }
        for (u = 0; c + u < n; u++) {
            tl[u] = a[c + u] * b[(c + u) * bs];
        }
        for (u = 0; u < 16; u++) {
            lane[u] += tl[u];
        }
    }
    for (u = 0; u < 8; u++) {
        lane[u] += lane[u + 8];
    }
    for (u = 0; u < 4; u++) {
        lane[u] += lane[u + 4];
    }
    for (u = 0; u < 2; u++) {
        lane[u] += lane[u + 2];
    }
    return (double)(lane[0] + lane[1]);
}

LA_TARGET_CLONES static double
LA_FN(lavo_dot)(const LA_T *LA_RESTRICT a, const LA_T *LA_RESTRICT b, la_index bs,
                la_index n)
{
    return LA_FN(lavo_dot_body)(a, b, bs, n);
}

/* out[i] = lavo_dot(M + i * ld, x, xs, n) for i < m: the same bits, one call. */
LA_TARGET_CLONES static void
LA_FN(lavo_dots)(const LA_T *M, la_index ld, const LA_T *x, la_index xs, la_index n,
                 la_index m, double *out)
{
    la_index i;
    for (i = 0; i < m; i++) {
        out[i] = LA_FN(lavo_dot_body)(M + i * ld, x, xs, n);
    }
}

/* out[i] = sum_c x[c * xs] Bt[c * r + i] for i < r (Bt: the bases transposed,
 * d x r): the r products B x vectorised over i, even and odd c in two chains
 * added at the end; blocks of 32 outputs whose sums stay in registers. */
LA_TARGET_CLONES static void
LA_FN(lavo_bmv)(const LA_T *Bt, const LA_T *x, la_index xs, la_index d, la_index r,
                double *out)
{
    la_index i0 = 0, i, c;
    for (; i0 + 32 <= r; i0 += 32) {
        LA_T s0[32], s1[32];
        for (i = 0; i < 32; i++) {
            s0[i] = 0;
            s1[i] = 0;
        }
        for (c = 0; c + 1 < d; c += 2) {
            const LA_T x0 = x[c * xs], x1 = x[(c + 1) * xs];
            const LA_T *LA_RESTRICT b0 = Bt + c * r + i0;
            const LA_T *LA_RESTRICT b1 = b0 + r;
            for (i = 0; i < 32; i++) {
                s0[i] += x0 * b0[i];
                s1[i] += x1 * b1[i];
            }
        }
        if (c < d) {
            const LA_T x0 = x[c * xs];
            const LA_T *LA_RESTRICT b0 = Bt + c * r + i0;
            for (i = 0; i < 32; i++) {
                s0[i] += x0 * b0[i];
            }
        }
        for (i = 0; i < 32; i++) {
            out[i0 + i] = (double)(s0[i] + s1[i]);
        }
    }
    for (; i0 < r; i0++) {
        LA_T t0 = 0, t1 = 0;
        for (c = 0; c + 1 < d; c += 2) {
            t0 += x[c * xs] * Bt[c * r + i0];
            t1 += x[(c + 1) * xs] * Bt[(c + 1) * r + i0];
        }
        if (c < d) {
            t0 += x[c * xs] * Bt[c * r + i0];
        }
        out[i0] = (double)(t0 + t1);
    }
}

/* acc[c] += sum_i alpha[i] * M[i * ld + c * xs] for c < n, rows i in order (the
 * bits of one lavo_axpy per row); rows whose alpha is 0 are skipped when
 * skip0.  Columns in blocks of 32 whose sums stay in registers. */
LA_TARGET_CLONES static void
LA_FN(lavo_axpys)(double *LA_RESTRICT acc, const double *alpha, const LA_T *M, la_index ld,
                  la_index xs, la_index n, la_index m, int skip0)
{
    la_index c0 = 0, c, i;
    for (; xs == 1 && c0 + 32 <= n; c0 += 32) {
        double blk[32];
        for (c = 0; c < 32; c++) {
            blk[c] = acc[c0 + c];
        }
        for (i = 0; i < m; i++) {
            const double al = alpha[i];
            const LA_T *LA_RESTRICT row = M + i * ld + c0;
            if (skip0 && al == 0) {
                continue;
            }
            for (c = 0; c < 32; c++) {
                blk[c] += al * (double)row[c];
            }
        }
        for (c = 0; c < 32; c++) {
            acc[c0 + c] = blk[c];
        }
    }
    for (; c0 < n; c0++) {
        double s = acc[c0];
        for (i = 0; i < m; i++) {
            if (!(skip0 && alpha[i] == 0)) {
                s += alpha[i] * (double)M[i * ld + c0 * xs];
            }
        }
        acc[c0] = s;
    }
}

/* acc[c] += alpha * x[c * xs] */
LA_TARGET_CLONES static void
LA_FN(lavo_axpy)(double *LA_RESTRICT acc, double alpha, const LA_T *LA_RESTRICT x,
                 la_index xs, la_index n)
{
    la_index c;
    if (xs == 1) {
        for (c = 0; c < n; c++) {
            acc[c] += alpha * (double)x[c];
        }
        return;
    }
    for (c = 0; c < n; c++) {
        acc[c] += alpha * (double)x[c * xs];
    }
}

/* Pointer and column stride of the row at absolute position j (ring if j <= pos). */
static inline const LA_T *
LA_FN(lavo_rowp)(const la_lavo_args *a, const LA_T *ring, const LA_T *x, la_index rs,
                 la_index cs, la_index width, la_index j, la_index *stride)
{
    if (j <= a->pos) {
        *stride = 1;
        return ring + (a->w - 1 - (a->pos - j)) * width;
    }
    *stride = cs;
    return x + (j - a->pos - 1) * rs;
}

static void
LA_FN(lavo_gather)(const la_lavo_args *a, const LA_T *ring, const LA_T *x, la_index rs,
                   la_index cs, la_index width, la_index j0, la_index n, LA_T *dst)
{
    la_index i, c, st;
    for (i = 0; i < n; i++) {
        const LA_T *src = LA_FN(lavo_rowp)(a, ring, x, rs, cs, width, j0 + i, &st);
        LA_T *dr = dst + i * width;
        if (st == 1) {
            memcpy(dr, src, (size_t)width * sizeof(LA_T));
        }
        else {
            for (c = 0; c < width; c++) {
                dr[c] = src[c * st];
            }
        }
    }
}

/* Joint softmax over n logits (entries may be -inf); returns Z and rewrites lg to
 * la_exp_f64(lg - M).  Returns 0 when every logit is -inf (then all weights are 0). */
static double
LA_FN(lavo_softmax)(double *lg, la_index n)
{
    double m = -INFINITY, z = 0;
    la_index i;
    for (i = 0; i < n; i++) {
        m = lg[i] > m ? lg[i] : m;
    }
    if (m == -INFINITY) {
        for (i = 0; i < n; i++) {
            lg[i] = 0;
        }
        return 0;
    }
    for (i = 0; i < n; i++) {
        lg[i] = la_exp_f64(lg[i] - m);
        z += lg[i];
    }
    return z;
}

/* lavo_softmax for the recurrent form (one row per token): the maximum in 8
 * lanes (exact), the exponentials vectorised, the sum in 8 lanes added
 * pairwise (an order fixed by n). */
LA_TARGET_CLONES static double
LA_FN(lavo_softmax_row)(double *lg, la_index n)
{
    double m = -INFINITY, lane[8];
    la_index i, u, h;
    for (u = 0; u < 8; u++) {
        lane[u] = -INFINITY;
    }
    for (i = 0; i + 8 <= n; i += 8) {
        for (u = 0; u < 8; u++) {
            lane[u] = lg[i + u] > lane[u] ? lg[i + u] : lane[u];
        }
    }
    for (; i < n; i++) {
        m = lg[i] > m ? lg[i] : m;
    }
    for (u = 0; u < 8; u++) {
        m = lane[u] > m ? lane[u] : m;
    }
    if (m == -INFINITY) {
        for (i = 0; i < n; i++) {
            lg[i] = 0;
        }
        return 0;
    }
    for (i = 0; i < n; i++) {
        lg[i] = la_exp_f64(lg[i] - m);
    }
    for (u = 0; u < 8; u++) {
        lane[u] = 0;
    }
    for (i = 0; i + 8 <= n; i += 8) {
        for (u = 0; u < 8; u++) {
            lane[u] += lg[i + u];
        }
    }
    for (u = 0; i + u < n; u++) {
        lane[u] += lg[i + u];
    }
    for (h = 4; h > 0; h >>= 1) {
        for (u = 0; u < h; u++) {
            lane[u] += lane[u + h];
        }
    }
    return lane[0];
}

/* The rings after one token updated where they are (s1 == s0, rows of ld
 * elements): rows move up by one, the token's row enters last; rows before
 * the stream's start (j < 1) are zero, as lavo_state_out writes them. */
static void
LA_FN(lavo_ring_shift)(const la_lavo_args *a, LA_T *ring, la_index ld, const LA_T *x,
                       la_index xcs, la_index width)
{
    const la_index w = a->w, P = a->pos + 1;
    la_index i, c;
    if (w == 0) {
        return;
    }
    if (ld == width) {
        memmove(ring, ring + width, (size_t)((w - 1) * width) * sizeof(LA_T));
    }
    else {
        for (i = 0; i + 1 < w; i++) {
            memmove(ring + i * ld, ring + (i + 1) * ld, (size_t)width * sizeof(LA_T));
        }
    }
    for (c = 0; c < width; c++) {
        ring[(w - 1) * ld + c] = x[c * xcs];
    }
    for (i = 0; i < w && P - (w - 1 - i) < 1; i++) {
        for (c = 0; c < width; c++) {
            ring[i * ld + c] = 0;
        }
    }
}

static void
LA_FN(lavo_state_out)(const la_lavo_args *a, const LA_T *Rk, const LA_T *Rv,
                      const double *S, const double *SV)
{
    const la_index w = a->w, d = a->d, e = a->e, P = a->pos + a->t;
    const int sep = (a->flags & LA_LAVO_SEPARATE_V) != 0;
    la_index i, c, st;
    for (i = 0; i < a->r; i++) {
        a->sums1[i * a->s1_s] = S[i];
        a->vsums1[i * a->vs1_s] = sep ? SV[i] : 0.0;
    }
    for (i = 0; i < w; i++) {
        const la_index j = P - (w - 1 - i);
        LA_T *ok = (LA_T *)a->ring_k1 + i * a->rk1_rs;
        LA_T *ov = (LA_T *)a->ring_v1 + i * a->rv1_rs;
        if (j >= 1) {
            const LA_T *src = LA_FN(lavo_rowp)(a, Rk, (const LA_T *)a->k, a->k_rs, a->k_cs,
                                               d, j, &st);
            if (st == 1 && a->rk1_cs == 1) {
                memcpy(ok, src, (size_t)d * sizeof(LA_T));
            }
            for (c = 0; c < d && !(st == 1 && a->rk1_cs == 1); c++) {
                ok[c * a->rk1_cs] = src[c * st];
            }
        }
        else {
            for (c = 0; c < d; c++) {
                ok[c * a->rk1_cs] = 0;
            }
        }
        if (sep && j >= 1) {
            const LA_T *src = LA_FN(lavo_rowp)(a, Rv, (const LA_T *)a->v, a->v_rs, a->v_cs,
                                               e, j, &st);
            if (st == 1 && a->rv1_cs == 1) {
                memcpy(ov, src, (size_t)e * sizeof(LA_T));
            }
            for (c = 0; c < e && !(st == 1 && a->rv1_cs == 1); c++) {
                ov[c * a->rv1_cs] = src[c * st];
            }
        }
        else {
            for (c = 0; c < e; c++) {
                ov[c * a->rv1_cs] = 0;
            }
        }
    }
}

/* Token by token (docs/design/lavo.md §9.1), reading rows in place. */
static void
LA_FN(lavo_recurrent)(const la_lavo_args *a, const LA_T *Bc, la_index bld, const LA_T *Bt,
                      const LA_T *Rk,
                      la_index rkw, const LA_T *Rv, la_index rvw, double *S, double *SV,
                      LA_T *qrow, double *lg, double *acc)
{
    const la_index T = a->t, d = a->d, e = a->e, r = a->r, w = a->w, p = a->pos;
    const int sep = (a->flags & LA_LAVO_SEPARATE_V) != 0;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    const double tau = a->scale;
    la_index i, ii, j, c, st, sv;

    for (i = 0; i < T; i++) {
        const la_index t = p + 1 + i;
        const la_index m0 = la_lavo_mem(t - 1, w, a->flags), m1 = la_lavo_mem(t, w, a->flags);
        const la_index lo = la_lavo_lo(t, w, a->flags);
        la_index nl = 0;
        double z, inv;
        for (j = m0 + 1; j <= m1; j++) {
            const LA_T *xj = LA_FN(lavo_rowp)(a, Rk, k, a->k_rs, a->k_cs, rkw, j, &st);
            if (Bt != NULL) {
                LA_FN(lavo_bmv)(Bt, xj, st, d, r, lg);
            }
            else {
                LA_FN(lavo_dots)(Bc, bld, xj, st, d, r, lg);
            }
            for (ii = 0; ii < r; ii++) {
                S[ii] += lg[ii];
            }
            if (sep) {
                const LA_T *vj = LA_FN(lavo_rowp)(a, Rv, v, a->v_rs, a->v_cs, rvw, j, &sv);
                if (Bt != NULL) {
                    LA_FN(lavo_bmv)(Bt, vj, sv, d, r, lg);
                }
                else {
                    LA_FN(lavo_dots)(Bc, bld, vj, sv, d, r, lg);
                }
                for (ii = 0; ii < r; ii++) {
                    SV[ii] += lg[ii];
                }
            }
        }
        for (c = 0; c < d; c++) {
            qrow[c] = q[i * a->q_rs + c * a->q_cs];
        }
        if (m1 > 0) {
            const double invm = 1.0 / (double)m1;
            if (Bt != NULL) {
                LA_FN(lavo_bmv)(Bt, qrow, 1, d, r, lg);
            }
            else {
                LA_FN(lavo_dots)(Bc, bld, qrow, 1, d, r, lg);
            }
            for (ii = 0; ii < r; ii++) {
                lg[nl] = tau * (S[ii] * invm) * lg[nl] + a->mb[ii * a->mb_s];
                nl++;
            }
        }
        for (j = lo; j <= t;) {
            const LA_T *xj = LA_FN(lavo_rowp)(a, Rk, k, a->k_rs, a->k_cs, rkw, j, &st);
            /* the ring's rows up to p at once (rkw apart), the tokens' one by one */
            const la_index nr = j <= p ? (t < p ? t : p) - j + 1 : 1;
            la_index u;
            if (nr > 1) {
                LA_FN(lavo_dots)(xj, rkw, qrow, 1, d, nr, lg + nl);
            }
            else {
                lg[nl] = LA_FN(lavo_dot)(qrow, xj, st, d);
            }
            for (u = 0; u < nr; u++, j++) {
                lg[nl] = tau * lg[nl] + a->pb[(t - j) * a->pb_s];
                nl++;
            }
        }
        z = LA_FN(lavo_softmax_row)(lg, nl);
        for (c = 0; c < e; c++) {
            acc[c] = 0;
        }
        nl = 0;
        if (m1 > 0) {
            const double invm = 1.0 / (double)m1;
            const double *hv = sep ? SV : S;
            for (ii = 0; ii < r; ii++) {
                /* lg[ii] = 0 (an underflowed weight) stays 0: that row is skipped */
                lg[ii] = lg[ii] * hv[ii] * invm;
            }
            LA_FN(lavo_axpys)(acc, lg, Bc, bld, 1, d, r, 1);
            nl = r;
        }
        for (j = lo; j <= t;) {
            const LA_T *vj = sep ? LA_FN(lavo_rowp)(a, Rv, v, a->v_rs, a->v_cs, rvw, j, &sv)
                                 : LA_FN(lavo_rowp)(a, Rk, k, a->k_rs, a->k_cs, rkw, j, &sv);
            const la_index nr = j <= p ? (t < p ? t : p) - j + 1 : 1;
            LA_FN(lavo_axpys)(acc, lg + nl, vj, sep ? rvw : rkw, sv, e, nr, 0);
            nl += nr;
            j += nr;
        }
        inv = z > 0 ? 1.0 / z : 0.0;
        for (c = 0; c < e; c++) {
            o[i * a->o_rs + c * a->o_cs] = (LA_T)(acc[c] * inv);
        }
    }
}

la_status
LA_FN(la_lavo_causal)(const la_lavo_args *a, void *work)
{
    const la_index T = a->t, d = a->d, e = a->e, r = a->r, w = a->w, p = a->pos;
    const int sep = (a->flags & LA_LAVO_SEPARATE_V) != 0;
    const la_index C = (a->flags & LA_LAVO_RECURRENT) ? 1 : la_block_rows(a->chunk, T);
    const la_index lr = r ? r : 1;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    const double tau = a->scale;
    char *pw = (char *)work;
    LA_T *Bc = (LA_T *)la_carve(&pw, (size_t)(r * d) * sizeof(LA_T));
    LA_T *Rk = (LA_T *)la_carve(&pw, (size_t)(w * d) * sizeof(LA_T));
    LA_T *Rv = (LA_T *)la_carve(&pw, (size_t)(w * e) * sizeof(LA_T));
    double *S = (double *)la_carve(&pw, (size_t)r * sizeof(double));
    double *SV = (double *)la_carve(&pw, (size_t)r * sizeof(double));
    LA_T *Qc = (LA_T *)la_carve(&pw, (size_t)(C * d) * sizeof(LA_T));
    LA_T *G = (LA_T *)la_carve(&pw, (size_t)(C * lr) * sizeof(LA_T));
    LA_T *Xe = (LA_T *)la_carve(&pw, (size_t)((C + w) * d) * sizeof(LA_T));
    LA_T *Ve = (LA_T *)la_carve(&pw, (size_t)((C + w) * d) * sizeof(LA_T));
    LA_T *Ce = (LA_T *)la_carve(&pw, (size_t)((C + w) * lr) * sizeof(LA_T));
    LA_T *Cve = (LA_T *)la_carve(&pw, (size_t)((C + w) * lr) * sizeof(LA_T));
    double *H = (double *)la_carve(&pw, (size_t)(C * r) * sizeof(double));
    double *HV = (double *)la_carve(&pw, (size_t)(C * r) * sizeof(double));
    LA_T *Xw = (LA_T *)la_carve(&pw, (size_t)((C + w) * (d > e ? d : e)) * sizeof(LA_T));
    LA_T *Vw = (LA_T *)la_carve(&pw, (size_t)((C + w) * (d > e ? d : e)) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&pw, (size_t)(C * (C + w)) * sizeof(LA_T));
    LA_T *PA = (LA_T *)la_carve(&pw, (size_t)(C * lr) * sizeof(LA_T));
    LA_T *Ob = (LA_T *)la_carve(&pw, (size_t)(C * e) * sizeof(LA_T));
    double *lg = (double *)la_carve(&pw, (size_t)(r + w + 1) * sizeof(double));
    double *acc = (double *)la_carve(&pw, (size_t)(e + 1) * sizeof(double));
    la_index i, j, c, i0;

    if (sep && e != d) {
        return LA_ERR_SHAPE;
    }
    /* the recurrent form reads bases with contiguous rows where they are, and a
     * one-token step updating its state in place reads and shifts its rings
     * there (no copies in and out) */
    const int bases_in_place = (a->flags & LA_LAVO_RECURRENT) && a->b_cs == 1;
    const int rings_in_place =
        (a->flags & LA_LAVO_RECURRENT) && T == 1 && a->ring_k1 == a->ring_k0 &&
        a->rk0_cs == 1 && a->rk1_cs == 1 && a->rk1_rs == a->rk0_rs &&
        (!sep || (a->ring_v1 == a->ring_v0 && a->rv0_cs == 1 && a->rv1_cs == 1 &&
                  a->rv1_rs == a->rv0_rs));
    for (i = 0; i < r; i++) {
        for (c = 0; c < d && !bases_in_place; c++) {
            Bc[i * d + c] = ((const LA_T *)a->bases)[i * a->b_rs + c * a->b_cs];
        }
        /* the recurrent form's products B x on the bases transposed (in Bc,
         * unless the caller has them) */
        for (c = 0; c < d && bases_in_place && a->bases_t == NULL; c++) {
            Bc[c * r + i] = ((const LA_T *)a->bases)[i * a->b_rs + c];
        }
        S[i] = a->sums0[i * a->s0_s];
        SV[i] = sep ? a->vsums0[i * a->vs0_s] : 0.0;
    }
    for (i = 0; i < w && !rings_in_place; i++) {
        const LA_T *rk = (const LA_T *)a->ring_k0 + i * a->rk0_rs;
        const LA_T *rv = (const LA_T *)a->ring_v0 + i * a->rv0_rs;
        if (a->rk0_cs == 1) {
            memcpy(Rk + i * d, rk, (size_t)d * sizeof(LA_T));
        }
        for (c = 0; c < d && a->rk0_cs != 1; c++) {
            Rk[i * d + c] = rk[c * a->rk0_cs];
        }
        if (sep && a->rv0_cs == 1) {
            memcpy(Rv + i * e, rv, (size_t)e * sizeof(LA_T));
        }
        for (c = 0; sep && c < e && a->rv0_cs != 1; c++) {
            Rv[i * e + c] = rv[c * a->rv0_cs];
        }
    }
    if (rings_in_place) {
        LA_FN(lavo_recurrent)(a, bases_in_place ? (const LA_T *)a->bases : Bc,
                              bases_in_place ? a->b_rs : d, !bases_in_place ? NULL
                              : a->bases_t != NULL ? (const LA_T *)a->bases_t : Bc,
                              (const LA_T *)a->ring_k0,
                              a->rk0_rs, (const LA_T *)a->ring_v0, a->rv0_rs, S, SV, Qc, lg,
                              acc);
        for (i = 0; i < r; i++) {
            a->sums1[i * a->s1_s] = S[i];
            a->vsums1[i * a->vs1_s] = sep ? SV[i] : 0.0;
        }
        LA_FN(lavo_ring_shift)(a, (LA_T *)a->ring_k1, a->rk1_rs, k, a->k_cs, d);
        if (sep) {
            LA_FN(lavo_ring_shift)(a, (LA_T *)a->ring_v1, a->rv1_rs, v, a->v_cs, e);
        }
        else if (a->ring_v1 != a->ring_v0) {
            for (i = 0; i < w; i++) {
                for (c = 0; c < e; c++) {
                    ((LA_T *)a->ring_v1)[i * a->rv1_rs + c * a->rv1_cs] = 0;
                }
            }
        }
        return LA_OK;
    }
    if (a->flags & LA_LAVO_RECURRENT) {
        LA_FN(lavo_recurrent)(a, bases_in_place ? (const LA_T *)a->bases : Bc,
                              bases_in_place ? a->b_rs : d, !bases_in_place ? NULL
                              : a->bases_t != NULL ? (const LA_T *)a->bases_t : Bc, Rk,
                              d, Rv, e, S, SV, Qc, lg,
                              acc);
        LA_FN(lavo_state_out)(a, Rk, Rv, S, SV);
        return LA_OK;
    }
    for (i0 = 0; i0 < T; i0 += C) {
        const la_index nb = T - i0 < C ? T - i0 : C;
        const la_index t0 = p + 1 + i0, t1 = t0 + nb - 1;
        const la_index e_lo = la_lavo_mem(t0 - 1, w, a->flags) + 1;
        const la_index ne = la_lavo_mem(t1, w, a->flags) - e_lo + 1;
        const la_index w_lo = w > 0 ? la_lavo_lo(t0, w, a->flags) : t1 + 1;
        const la_index nw = t1 - w_lo + 1;
        for (i = 0; i < nb; i++) {
            for (c = 0; c < d; c++) {
                Qc[i * d + c] = q[(i0 + i) * a->q_rs + c * a->q_cs];
            }
        }
        /* 1-2: coefficients of the rows entering memory, prefix sums in order */
        if (r > 0) {
            LA_GEMM(0, 1, nb, r, d, 1, Qc, d, Bc, d, 0, G, r);
            if (ne > 0) {
                LA_FN(lavo_gather)(a, Rk, k, a->k_rs, a->k_cs, d, e_lo, ne, Xe);
                LA_GEMM(0, 1, ne, r, d, 1, Xe, d, Bc, d, 0, Ce, r);
                if (sep) {
                    LA_FN(lavo_gather)(a, Rv, v, a->v_rs, a->v_cs, e, e_lo, ne, Ve);
                    LA_GEMM(0, 1, ne, r, d, 1, Ve, d, Bc, d, 0, Cve, r);
                }
            }
            for (i = 0; i < nb; i++) {
                const la_index t = t0 + i;
                const la_index m0 = la_lavo_mem(t - 1, w, a->flags);
                const la_index m1 = la_lavo_mem(t, w, a->flags);
                const double invm = m1 > 0 ? 1.0 / (double)m1 : 0.0;
                for (j = m0 + 1; j <= m1; j++) {
                    const LA_T *cr = Ce + (j - e_lo) * r;
                    const LA_T *cv = Cve + (j - e_lo) * r;
                    for (c = 0; c < r; c++) {
                        S[c] += (double)cr[c];
                    }
                    for (c = 0; sep && c < r; c++) {
                        SV[c] += (double)cv[c];
                    }
                }
                for (c = 0; c < r; c++) {
                    H[i * r + c] = S[c] * invm;
                    HV[i * r + c] = (sep ? SV[c] : S[c]) * invm;
                }
            }
        }
        /* 4: banded local logits */
        if (nw > 0) {
            LA_FN(lavo_gather)(a, Rk, k, a->k_rs, a->k_cs, d, w_lo, nw, Xw);
            if (sep) {
                LA_FN(lavo_gather)(a, Rv, v, a->v_rs, a->v_cs, e, w_lo, nw, Vw);
            }
            LA_GEMM(0, 1, nb, nw, d, 1, Qc, d, Xw, d, 0, P, nw);
        }
        /* 5: row-wise joint softmax */
        for (i = 0; i < nb; i++) {
            const la_index t = t0 + i;
            const la_index m1 = la_lavo_mem(t, w, a->flags);
            const la_index lo = w > 0 ? la_lavo_lo(t, w, a->flags) : t + 1;
            LA_T *Pr = P + i * nw;
            la_index nl = 0;
            double z, inv;
            if (m1 > 0) {
                for (c = 0; c < r; c++) {
                    lg[nl++] = tau * H[i * r + c] * (double)G[i * r + c] + a->mb[c * a->mb_s];
                }
            }
            for (j = lo; j <= t; j++) {
                lg[nl++] = tau * (double)Pr[j - w_lo] + a->pb[(t - j) * a->pb_s];
            }
            z = LA_FN(lavo_softmax)(lg, nl);
            inv = z > 0 ? 1.0 / z : 0.0;
            nl = 0;
            for (c = 0; c < r; c++) {
                PA[i * r + c] = m1 > 0 ? (LA_T)(lg[nl++] * inv * HV[i * r + c]) : 0;
            }
            for (j = w_lo; j < lo; j++) {
                Pr[j - w_lo] = 0;
            }
            for (j = lo; j <= t; j++) {
                Pr[j - w_lo] = (LA_T)(lg[nl++] * inv);
            }
            for (j = t + 1; j <= t1; j++) {
                Pr[j - w_lo] = 0;
            }
        }
        /* 6: O = (P_A . H) B + P_L Xw */
        LA_GEMM(0, 0, nb, e, r, 1, PA, lr, Bc, d, 0, Ob, e);
        if (nw > 0) {
            LA_GEMM(0, 0, nb, e, nw, 1, P, nw, sep ? Vw : Xw, sep ? e : d, 1, Ob, e);
        }
        for (i = 0; i < nb; i++) {
            for (c = 0; c < e; c++) {
                o[(i0 + i) * a->o_rs + c * a->o_cs] = Ob[i * e + c];
            }
        }
    }
    LA_FN(lavo_state_out)(a, Rk, Rv, S, SV);
    return LA_OK;
}

la_status
LA_FN(la_lavo_noncausal)(const la_lavo_args *a, void *work)
{
    const la_index T = a->t, Sn = a->s, d = a->d, e = a->e, r = a->r, w = a->w;
    const int sep = (a->flags & LA_LAVO_SEPARATE_V) != 0;
    const int bl = (a->flags & LA_LAVO_BEFORE_LOCAL) != 0;
    const la_index lr = r ? r : 1;
    const LA_T *q = (const LA_T *)a->q;
    LA_T *o = (LA_T *)a->o;
    const double tau = a->scale;
    char *pw = (char *)work;
    LA_T *Bc = (LA_T *)la_carve(&pw, (size_t)(r * d) * sizeof(LA_T));
    LA_T *K = (LA_T *)la_carve(&pw, (size_t)(Sn * d) * sizeof(LA_T));
    LA_T *V = (LA_T *)la_carve(&pw, (size_t)(Sn * e) * sizeof(LA_T));
    LA_T *Ck = (LA_T *)la_carve(&pw, (size_t)(Sn * lr) * sizeof(LA_T));
    LA_T *Cv = (LA_T *)la_carve(&pw, (size_t)(Sn * lr) * sizeof(LA_T));
    double *PS = (double *)la_carve(&pw, (size_t)((Sn + 1) * r) * sizeof(double));
    double *PV = (double *)la_carve(&pw, (size_t)((Sn + 1) * r) * sizeof(double));
    LA_T *qrow = (LA_T *)la_carve(&pw, (size_t)d * sizeof(LA_T));
    LA_T *g = (LA_T *)la_carve(&pw, (size_t)lr * sizeof(LA_T));
    double *lg = (double *)la_carve(&pw, (size_t)(r + 2 * w + 2) * sizeof(double));
    double *h = (double *)la_carve(&pw, (size_t)(r + e + 1) * sizeof(double));
    double *acc = (double *)la_carve(&pw, (size_t)(r + e + 1) * sizeof(double));
    double *hv = h + r;
    la_index i, j, c;

    if ((w > 0 && T != Sn) || (sep && e != d)) {
        return LA_ERR_SHAPE;
    }
    for (i = 0; i < r; i++) {
        for (c = 0; c < d; c++) {
            Bc[i * d + c] = ((const LA_T *)a->bases)[i * a->b_rs + c * a->b_cs];
        }
    }
    for (j = 0; j < Sn; j++) {
        for (c = 0; c < d; c++) {
            K[j * d + c] = ((const LA_T *)a->k)[j * a->k_rs + c * a->k_cs];
        }
        for (c = 0; c < e; c++) {
            V[j * e + c] = ((const LA_T *)a->v)[j * a->v_rs + c * a->v_cs];
        }
    }
    if (r > 0) {
        LA_GEMM(0, 1, Sn, r, d, 1, K, d, Bc, d, 0, Ck, r);
        if (sep) {
            LA_GEMM(0, 1, Sn, r, d, 1, V, e, Bc, d, 0, Cv, r);
        }
        for (c = 0; c < r; c++) {
            PS[c] = 0;
            PV[c] = 0;
        }
        for (j = 0; j < Sn; j++) {
            for (c = 0; c < r; c++) {
                PS[(j + 1) * r + c] = PS[j * r + c] + (double)Ck[j * r + c];
                PV[(j + 1) * r + c] = PV[j * r + c] + (sep ? (double)Cv[j * r + c]
                                                           : (double)Ck[j * r + c]);
            }
        }
    }
    for (i = 0; i < T; i++) {
        const la_index lo = w > 0 ? (i - w < 0 ? 0 : i - w) : 0;
        const la_index hi = w > 0 ? (i + w > Sn - 1 ? Sn - 1 : i + w) : -1;
        const la_index cnt = (bl && w > 0) ? Sn - (hi - lo + 1) : Sn;
        la_index nl = 0;
        double z, inv;
        for (c = 0; c < d; c++) {
            qrow[c] = q[i * a->q_rs + c * a->q_cs];
        }
        if (r > 0 && cnt > 0) {
            const double invm = 1.0 / (double)cnt;
            LA_GEMM(0, 1, 1, r, d, 1, qrow, d, Bc, d, 0, g, r);
            for (c = 0; c < r; c++) {
                double s = PS[Sn * r + c], sv = PV[Sn * r + c];
                if (bl && w > 0) {
                    s -= PS[(hi + 1) * r + c] - PS[lo * r + c];
                    sv -= PV[(hi + 1) * r + c] - PV[lo * r + c];
                }
                h[c] = s * invm;
                hv[c] = sv * invm;
                lg[nl++] = tau * h[c] * (double)g[c] + a->mb[c * a->mb_s];
            }
        }
        for (j = lo; j <= hi; j++) {
            lg[nl++] = tau * LA_FN(lavo_dot)(qrow, K + j * d, 1, d) +
                       a->pb[(i - j + w) * a->pb_s];
        }
        z = LA_FN(lavo_softmax)(lg, nl);
        inv = z > 0 ? 1.0 / z : 0.0;
        for (c = 0; c < e; c++) {
            acc[c] = 0;
        }
        nl = 0;
        if (r > 0 && cnt > 0) {
            for (c = 0; c < r; c++, nl++) {
                LA_FN(lavo_axpy)(acc, lg[nl] * hv[c], Bc + c * d, 1, d);
            }
        }
        for (j = lo; j <= hi; j++, nl++) {
            LA_FN(lavo_axpy)(acc, lg[nl], V + j * e, 1, e);
        }
        for (c = 0; c < e; c++) {
            o[i * a->o_rs + c * a->o_cs] = (LA_T)(acc[c] * inv);
        }
    }
    return LA_OK;
}
