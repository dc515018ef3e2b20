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

/* The recurrent form's arithmetic (docs/design/lavo.md §9.1, §11): products and
 * weighted sums in the kernel's dtype on contiguous rows, vectorised, each in
 * an order fixed by the sizes alone (so every path that reaches the same rows
 * gives the same bits); the memory sums, the logits and the exponentials stay
 * float64. */

/* ox[i] = sum_c x[c] Bt[c * r + i] and, when y is not NULL, oy[i] = the same
 * with y, for i < r (Bt: the bases transposed, d x r, dense; x, y contiguous):
 * the products B x and B y in one pass over Bt, vectorised over i; even and
 * odd c in two chains added at the end; blocks of 32 outputs whose sums stay
 * in registers.  Each output's bits do not depend on whether y is given. */
LA_TARGET_CLONES static void
LA_FN(lavo_bmv2)(const LA_T *LA_RESTRICT Bt, const LA_T *LA_RESTRICT x,
                 const LA_T *LA_RESTRICT y, la_index d, la_index r, LA_T *LA_RESTRICT ox,
                 LA_T *LA_RESTRICT oy)
{
    la_index i0 = 0, i, c;
    for (; i0 + 32 <= r; i0 += 32) {
        LA_T s0[32], s1[32], u0[32], u1[32];
        for (i = 0; i < 32; i++) {
            s0[i] = 0;
            s1[i] = 0;
            u0[i] = 0;
            u1[i] = 0;
        }
        if (y != NULL) {
            for (c = 0; c + 1 < d; c += 2) {
                const LA_T x0 = x[c], x1 = x[c + 1], y0 = y[c], y1 = y[c + 1];
                const LA_T *b0 = Bt + c * r + i0;
                const LA_T *b1 = b0 + r;
                for (i = 0; i < 32; i++) {
                    s0[i] += x0 * b0[i];
                    s1[i] += x1 * b1[i];
                    u0[i] += y0 * b0[i];
                    u1[i] += y1 * b1[i];
                }
            }
        }
        else {
            for (c = 0; c + 1 < d; c += 2) {
                const LA_T x0 = x[c], x1 = x[c + 1];
                const LA_T *b0 = Bt + c * r + i0;
                const LA_T *b1 = b0 + r;
                for (i = 0; i < 32; i++) {
                    s0[i] += x0 * b0[i];
                    s1[i] += x1 * b1[i];
                }
            }
        }
        if (c < d) {
            const LA_T *b0 = Bt + c * r + i0;
            for (i = 0; i < 32; i++) {
                s0[i] += x[c] * b0[i];
                u0[i] += (y != NULL ? y[c] : 0) * b0[i];
            }
        }
        for (i = 0; i < 32; i++) {
            ox[i0 + i] = s0[i] + s1[i];
        }
        for (i = 0; i < 32 && y != NULL; i++) {
            oy[i0 + i] = u0[i] + u1[i];
        }
    }
    for (; i0 < r; i0++) {
        LA_T t0 = 0, t1 = 0, v0 = 0, v1 = 0;
        for (c = 0; c + 1 < d; c += 2) {
            t0 += x[c] * Bt[c * r + i0];
            t1 += x[c + 1] * Bt[(c + 1) * r + i0];
        }
        if (c < d) {
            t0 += x[c] * Bt[c * r + i0];
        }
        ox[i0] = t0 + t1;
        if (y != NULL) {
            for (c = 0; c + 1 < d; c += 2) {
                v0 += y[c] * Bt[c * r + i0];
                v1 += y[c + 1] * Bt[(c + 1) * r + i0];
            }
            if (c < d) {
                v0 += y[c] * Bt[c * r + i0];
            }
            oy[i0] = v0 + v1;
        }
    }
}

/* out[j] = sum_c M[j * ld + c] x[c] for j < m (rows and x contiguous): each row
 * in LAVO_VL lanes (lane u takes c = u mod LAVO_VL; the last partial block
 * zero-filled), the lanes added pairwise at the end.  With GCC and Clang the
 * lanes are one 64-byte vector (their auto-vectoriser would interchange the
 * loops); elsewhere the same order in plain C. */
#define LAVO_VL ((la_index)(64 / sizeof(LA_T)))
LA_TARGET_CLONES static void
LA_FN(lavo_rowdots)(const LA_T *LA_RESTRICT M, la_index ld, const LA_T *LA_RESTRICT x,
                    la_index n, la_index m, LA_T *LA_RESTRICT out)
{
    la_index j, c;
#if !(defined(__GNUC__) || defined(__clang__))
    la_index u, h;
#endif
    for (j = 0; j < m; j++) {
        const LA_T *row = M + j * ld;
        LA_T lane[64 / sizeof(LA_T)];
#if defined(__GNUC__) || defined(__clang__)
        /* the 64 bytes of lanes as two 32-byte vectors (one register each
         * with AVX, two with SSE) */
        typedef LA_T vec32 __attribute__((vector_size(32)));
        typedef LA_T vec16 __attribute__((vector_size(16)));
        vec32 a0, a1, x0, x1, r0, r1;
        vec16 g0, g1;
        memset(&a0, 0, sizeof(a0));
        memset(&a1, 0, sizeof(a1));
        for (c = 0; c + LAVO_VL <= n; c += LAVO_VL) {
            memcpy(&x0, x + c, sizeof(x0));
            memcpy(&x1, x + c + LAVO_VL / 2, sizeof(x1));
            memcpy(&r0, row + c, sizeof(r0));
            memcpy(&r1, row + c + LAVO_VL / 2, sizeof(r1));
            a0 += r0 * x0;
            a1 += r1 * x1;
        }
        if (c < n) {
            LA_T tx[64 / sizeof(LA_T)];
            memset(lane, 0, sizeof(lane));
            memset(tx, 0, sizeof(tx));
            memcpy(lane, row + c, (size_t)(n - c) * sizeof(LA_T));
            memcpy(tx, x + c, (size_t)(n - c) * sizeof(LA_T));
            memcpy(&r0, lane, sizeof(r0));
            memcpy(&r1, lane + LAVO_VL / 2, sizeof(r1));
            memcpy(&x0, tx, sizeof(x0));
            memcpy(&x1, tx + LAVO_VL / 2, sizeof(x1));
            a0 += r0 * x0;
            a1 += r1 * x1;
        }
        /* the halves added as vectors: 64 -> 32 -> 16 bytes, then the last
         * 4 (2) lanes pairwise */
        a0 += a1;
        memcpy(&g0, &a0, sizeof(g0));
        memcpy(&g1, (const char *)&a0 + 16, sizeof(g1));
        g0 += g1;
        memcpy(lane, &g0, sizeof(g0));
#else
        for (u = 0; u < LAVO_VL; u++) {
            lane[u] = 0;
        }
        for (c = 0; c + LAVO_VL <= n; c += LAVO_VL) {
            for (u = 0; u < LAVO_VL; u++) {
                lane[u] += row[c + u] * x[c + u];
            }
        }
        for (u = 0; c + u < n; u++) {
            lane[u] += row[c + u] * x[c + u];
        }
        for (h = LAVO_VL / 2; h > 16 / (la_index)sizeof(LA_T) / 2; h /= 2) {
            for (u = 0; u < h; u++) {
                lane[u] += lane[u + h];
            }
        }
#endif
        if (sizeof(LA_T) == 4) {
            lane[0] += lane[2];
            lane[1] += lane[3];
        }
        out[j] = lane[0] + lane[1];
    }
}

/* Columns [c0, c0 + w) of lavo_wsum, w <= 64 a constant where it is inlined (64
 * or 16): their sums stay in registers. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void
LA_FN(lavo_wsum_block)(LA_T *LA_RESTRICT acc, const LA_T *LA_RESTRICT wt,
                       const LA_T *LA_RESTRICT M, la_index ld, la_index m, la_index c0,
                       la_index w)
{
    LA_T s0[64], s1[64];
    la_index c, i;
    for (c = 0; c < w; c++) {
        s0[c] = acc[c0 + c];
        s1[c] = 0;
    }
    for (i = 0; i + 1 < m; i += 2) {
        const LA_T w0 = wt[i], w1 = wt[i + 1];
        const LA_T *r0 = M + i * ld + c0;
        const LA_T *r1 = r0 + ld;
        for (c = 0; c < w; c++) {
            s0[c] += w0 * r0[c];
            s1[c] += w1 * r1[c];
        }
    }
    if (i < m) {
        const LA_T w0 = wt[i];
        const LA_T *r0 = M + i * ld + c0;
        for (c = 0; c < w; c++) {
            s0[c] += w0 * r0[c];
        }
    }
    for (c = 0; c < w; c++) {
        acc[c0 + c] = s0[c] + s1[c];
    }
}

/* acc[c] += sum_i wt[i] M[i * ld + c] for c < n (rows contiguous): even and odd
 * rows in two chains added at the end, vectorised over c in blocks of 64 and
 * 16 columns whose sums stay in registers. */
LA_TARGET_CLONES static void
LA_FN(lavo_wsum)(LA_T *LA_RESTRICT acc, const LA_T *LA_RESTRICT wt, const LA_T *LA_RESTRICT M,
                 la_index ld, la_index n, la_index m)
{
    la_index c0 = 0, i;
    for (; c0 + 64 <= n; c0 += 64) {
        LA_FN(lavo_wsum_block)(acc, wt, M, ld, m, c0, 64);
    }
    for (; c0 + 16 <= n; c0 += 16) {
        LA_FN(lavo_wsum_block)(acc, wt, M, ld, m, c0, 16);
    }
    for (; c0 < n; c0++) {
        LA_T t0 = acc[c0], t1 = 0;
        for (i = 0; i + 1 < m; i += 2) {
            t0 += wt[i] * M[i * ld + c0];
            t1 += wt[i + 1] * M[(i + 1) * ld + c0];
        }
        if (i < m) {
            t0 += wt[i] * M[i * ld + c0];
        }
        acc[c0] = t0 + t1;
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

/* lavo_softmax for the recurrent form (one row per token): the maximum of the
 * float64 logits in 8 lanes (exact), the weights wt[i] = exp(lg[i] - M) in the
 * kernel's dtype (float32: la_exp_sm_f32, the softmax exp of shifted scores),
 * vectorised; returns Z, their sum in float64 in 8 lanes added pairwise (an
 * order fixed by n).  Every logit -inf: all weights 0 and Z = 0. */
LA_TARGET_CLONES static double
LA_FN(lavo_softmax_row)(const double *lg, la_index n, LA_T *LA_RESTRICT wt)
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
            wt[i] = 0;
        }
        return 0;
    }
    for (i = 0; i < n; i++) {
        wt[i] = sizeof(LA_T) == 4 ? (LA_T)la_exp_sm_f32((float)(lg[i] - m))
                                  : (LA_T)la_exp_f64(lg[i] - m);
    }
    for (u = 0; u < 8; u++) {
        lane[u] = 0;
    }
    for (i = 0; i + 8 <= n; i += 8) {
        for (u = 0; u < 8; u++) {
            lane[u] += (double)wt[i + u];
        }
    }
    for (u = 0; i + u < n; u++) {
        lane[u] += (double)wt[i + u];
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

/* The state after the call: the sums, and the rings' last w rows read from the
 * rings Rk, Rv (rows rkw, rvw elements apart: the copies or the old state itself,
 * which may be the new one: row i is read from row i + t, not yet written) and
 * the tokens.  Without separate values vsums1 and ring_v1 are neither read nor
 * written (they may be empty). */
static void
LA_FN(lavo_state_out)(const la_lavo_args *a, const LA_T *Rk, la_index rkw, const LA_T *Rv,
                      la_index rvw, const double *S, const double *SV)
{
    const la_index w = a->w, d = a->d, e = a->e, P = a->pos + a->t;
    const int sep = (a->flags & LA_LAVO_SEPARATE_V) != 0;
    la_index i, c, st;
    for (i = 0; i < a->r; i++) {
        a->sums1[i * a->s1_s] = S[i];
    }
    for (i = 0; i < a->r && sep; i++) {
        a->vsums1[i * a->vs1_s] = SV[i];
    }
    for (i = 0; i < w; i++) {
        const la_index j = P - (w - 1 - i);
        LA_T *ok = (LA_T *)a->ring_k1 + i * a->rk1_rs;
        LA_T *ov = (LA_T *)a->ring_v1 + i * a->rv1_rs;
        if (j >= 1) {
            const LA_T *src = LA_FN(lavo_rowp)(a, Rk, (const LA_T *)a->k, a->k_rs, a->k_cs,
                                               rkw, j, &st);
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
                                               rvw, j, &st);
            if (st == 1 && a->rv1_cs == 1) {
                memcpy(ov, src, (size_t)e * sizeof(LA_T));
            }
            for (c = 0; c < e && !(st == 1 && a->rv1_cs == 1); c++) {
                ov[c * a->rv1_cs] = src[c * st];
            }
        }
        else if (sep) {
            for (c = 0; c < e; c++) {
                ov[c * a->rv1_cs] = 0;
            }
        }
    }
}

/* The row at absolute position j, contiguous: in place when its columns are
 * (stride 1), else copied into tmp. */
static inline const LA_T *
LA_FN(lavo_crow)(const LA_T *src, la_index st, la_index n, LA_T *tmp)
{
    la_index c;
    if (st == 1) {
        return src;
    }
    for (c = 0; c < n; c++) {
        tmp[c] = src[c * st];
    }
    return tmp;
}

/* Token by token (docs/design/lavo.md §9.1), reading the rings in place (rows
 * rkw and rvw elements apart) and the bases as rows (Bc, bld apart) and
 * transposed (Bt, d x r dense).  Scratch: qrow, xrow, vrow (d), g, cx, cv (r),
 * wt (r + w + 1), acc (e) in the kernel's dtype, lg (r + w + 1) float64. */
static void
LA_FN(lavo_recurrent)(const la_lavo_args *a, const LA_T *Bc, la_index bld, const LA_T *Bt,
                      const LA_T *Rk, la_index rkw, const LA_T *Rv, la_index rvw, double *S,
                      double *SV, LA_T *qrow, LA_T *xrow, LA_T *vrow, LA_T *g, LA_T *cx,
                      LA_T *cv, LA_T *wt, LA_T *acc, double *lg)
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
        const LA_T *qr = LA_FN(lavo_crow)(q + i * a->q_rs, a->q_cs, d, qrow);
        /* the rows entering memory (one with "all"), B q with the first of them */
        for (j = m0 + 1; j <= m1; j++) {
            const LA_T *xj = LA_FN(lavo_rowp)(a, Rk, k, a->k_rs, a->k_cs, rkw, j, &st);
            xj = LA_FN(lavo_crow)(xj, st, d, xrow);
            if (sep) {
                const LA_T *vj = LA_FN(lavo_rowp)(a, Rv, v, a->v_rs, a->v_cs, rvw, j, &sv);
                vj = LA_FN(lavo_crow)(vj, sv, e, vrow);
                LA_FN(lavo_bmv2)(Bt, xj, vj, d, r, cx, cv);
                for (ii = 0; ii < r; ii++) {
                    SV[ii] += (double)cv[ii];
                }
            }
            else {
                LA_FN(lavo_bmv2)(Bt, xj, j == m1 ? qr : NULL, d, r, cx, g);
            }
            for (ii = 0; ii < r; ii++) {
                S[ii] += (double)cx[ii];
            }
        }
        if (m1 > 0) {
            const double invm = 1.0 / (double)m1;
            if (sep || m1 == m0) {
                LA_FN(lavo_bmv2)(Bt, qr, NULL, d, r, g, NULL);
            }
            for (ii = 0; ii < r; ii++) {
                lg[ii] = tau * (S[ii] * invm) * (double)g[ii] + a->mb[ii * a->mb_s];
            }
            nl = r;
        }
        /* local logits: the ring's rows up to p at once, the tokens' one by one */
        for (j = lo; j <= t;) {
            const LA_T *xj = LA_FN(lavo_rowp)(a, Rk, k, a->k_rs, a->k_cs, rkw, j, &st);
            const la_index nr = j <= p ? (t < p ? t : p) - j + 1 : 1;
            la_index u;
            if (j > p) {
                xj = LA_FN(lavo_crow)(xj, st, d, xrow);
            }
            LA_FN(lavo_rowdots)(xj, rkw, qr, d, nr, wt + nl);
            for (u = 0; u < nr; u++, j++) {
                lg[nl] = tau * (double)wt[nl] + a->pb[(t - j) * a->pb_s];
                nl++;
            }
        }
        z = LA_FN(lavo_softmax_row)(lg, nl, wt);
        for (c = 0; c < e; c++) {
            acc[c] = 0;
        }
        nl = 0;
        if (m1 > 0) {
            const double invm = 1.0 / (double)m1;
            const double *hv = sep ? SV : S;
            for (ii = 0; ii < r; ii++) {
                wt[ii] = (LA_T)((double)wt[ii] * (hv[ii] * invm));
            }
            LA_FN(lavo_wsum)(acc, wt, Bc, bld, d, r);
            nl = r;
        }
        for (j = lo; j <= t;) {
            const LA_T *vj = sep ? LA_FN(lavo_rowp)(a, Rv, v, a->v_rs, a->v_cs, rvw, j, &sv)
                                 : LA_FN(lavo_rowp)(a, Rk, k, a->k_rs, a->k_cs, rkw, j, &sv);
            const la_index nr = j <= p ? (t < p ? t : p) - j + 1 : 1;
            if (j > p) {
                vj = LA_FN(lavo_crow)(vj, sv, e, vrow);
            }
            LA_FN(lavo_wsum)(acc, wt + nl, vj, sep ? rvw : rkw, e, nr);
            nl += nr;
            j += nr;
        }
        inv = z > 0 ? 1.0 / z : 0.0;
        for (c = 0; c < e; c++) {
            o[i * a->o_rs + c * a->o_cs] = (LA_T)((double)acc[c] * inv);
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
    LA_T *BT = (LA_T *)la_carve(&pw, (size_t)(r * d) * sizeof(LA_T));
    LA_T *Wt = (LA_T *)la_carve(&pw, (size_t)(r + w + 1) * sizeof(LA_T));
    LA_T *Acc = (LA_T *)la_carve(&pw, (size_t)(e + 1) * sizeof(LA_T));
    la_index i, j, c, i0;

    if (sep && e != d) {
        return LA_ERR_SHAPE;
    }
    if (a->flags & LA_LAVO_RECURRENT) {
        /* the recurrent form reads the bases' rows where they are when their
         * columns are contiguous (else a copy) and takes them transposed from
         * the caller (once per call) or transposes them here; it reads the
         * rings where they are when their columns are contiguous (else a
         * copy), and writes the new state out of place, or shifts the rings in
         * place when a one-token step updates its state there */
        const LA_T *bases = (const LA_T *)a->bases;
        const int bases_in_place = a->b_cs == 1;
        const int rk_in_place = a->rk0_cs == 1, rv_in_place = sep && a->rv0_cs == 1;
        const LA_T *Bt = (const LA_T *)a->bases_t;
        const LA_T *Rkp = rk_in_place ? (const LA_T *)a->ring_k0 : Rk;
        const LA_T *Rvp = rv_in_place ? (const LA_T *)a->ring_v0 : sep ? Rv : Rkp;
        const la_index rkw = rk_in_place ? a->rk0_rs : d;
        const la_index rvw = rv_in_place ? a->rv0_rs : sep ? e : rkw;
        const int shift = T == 1 && rk_in_place && a->ring_k1 == a->ring_k0 &&
                          a->rk1_cs == 1 && a->rk1_rs == a->rk0_rs &&
                          (!sep || (rv_in_place && a->ring_v1 == a->ring_v0 &&
                                    a->rv1_cs == 1 && a->rv1_rs == a->rv0_rs));
        for (i = 0; i < r; i++) {
            for (c = 0; c < d && !bases_in_place; c++) {
                Bc[i * d + c] = bases[i * a->b_rs + c * a->b_cs];
            }
            for (c = 0; c < d && a->bases_t == NULL; c++) {
                BT[c * r + i] = bases[i * a->b_rs + c * a->b_cs];
            }
            S[i] = a->sums0[i * a->s0_s];
            SV[i] = sep ? a->vsums0[i * a->vs0_s] : 0.0;
        }
        if (Bt == NULL) {
            Bt = BT;
        }
        for (i = 0; i < w && !rk_in_place; i++) {
            for (c = 0; c < d; c++) {
                Rk[i * d + c] = ((const LA_T *)a->ring_k0)[i * a->rk0_rs + c * a->rk0_cs];
            }
        }
        for (i = 0; i < w && sep && !rv_in_place; i++) {
            for (c = 0; c < e; c++) {
                Rv[i * e + c] = ((const LA_T *)a->ring_v0)[i * a->rv0_rs + c * a->rv0_cs];
            }
        }
        LA_FN(lavo_recurrent)(a, bases_in_place ? bases : Bc, bases_in_place ? a->b_rs : d,
                              Bt, Rkp, rkw, Rvp, rvw, S, SV, Qc, Xe, Ve, G, Ce, Cve, Wt, Acc,
                              lg);
        if (!shift) {
            LA_FN(lavo_state_out)(a, Rkp, rkw, Rvp, rvw, S, SV);
            return LA_OK;
        }
        for (i = 0; i < r; i++) {
            a->sums1[i * a->s1_s] = S[i];
        }
        for (i = 0; i < r && sep; i++) {
            a->vsums1[i * a->vs1_s] = SV[i];
        }
        LA_FN(lavo_ring_shift)(a, (LA_T *)a->ring_k1, a->rk1_rs, k, a->k_cs, d);
        if (sep) {
            LA_FN(lavo_ring_shift)(a, (LA_T *)a->ring_v1, a->rv1_rs, v, a->v_cs, e);
        }
        return LA_OK;
    }
    for (i = 0; i < r; i++) {
        for (c = 0; c < d; c++) {
            Bc[i * d + c] = ((const LA_T *)a->bases)[i * a->b_rs + c * a->b_cs];
        }
        S[i] = a->sums0[i * a->s0_s];
        SV[i] = sep ? a->vsums0[i * a->vs0_s] : 0.0;
    }
    for (i = 0; i < w; i++) {
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
            /* the weights in the kernel's dtype, vectorised (as the recurrent form) */
            z = LA_FN(lavo_softmax_row)(lg, nl, Wt);
            inv = z > 0 ? 1.0 / z : 0.0;
            nl = 0;
            for (c = 0; c < r; c++) {
                PA[i * r + c] = m1 > 0 ? (LA_T)((double)Wt[nl++] * inv * HV[i * r + c]) : 0;
            }
            for (j = w_lo; j < lo; j++) {
                Pr[j - w_lo] = 0;
            }
            for (j = lo; j <= t; j++) {
                Pr[j - w_lo] = (LA_T)((double)Wt[nl++] * inv);
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
    LA_FN(lavo_state_out)(a, Rk, d, Rv, e, S, SV);
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
