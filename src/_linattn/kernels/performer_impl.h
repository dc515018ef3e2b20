/*
 * performer_impl.h -- WARNING: included once per dtype by performer.c (no
 * include guard).  LA_T / LA_FN / LA_EXP / LA_GEMM from dtype/la_f32.h|la_f64.h;
 * LA_PERF_SPLIT (the underflow-split threshold) from performer.c.
 */

/* Scratch shared by every form, carved in la_performer_work_size's order. */
typedef struct {
    LA_T *Wc, *Xs, *U;
    double *h;
    LA_T *Lq;
    double *nu;
    LA_T *Ob, *Sx, *Lk, *Vb;
    double *M;
    la_index C, ec;
    int rowproj; /* one token (a decoding step): its row projected in place */
    int wmode;   /* la_rf_w_inplace of W: 1 W^T as it is, 2 W as it is, 0 Wc */
    double logc; /* log c = -log(f) / 2 */
} LA_FN(perf_ws);

static void
LA_FN(perf_carve)(const la_performer_args *a, void *work, LA_FN(perf_ws) *w,
                  char **rest)
{
    const la_index t = a->t > a->s ? a->t : a->s;
    const la_index C = la_block_rows(a->chunk, t);
    const la_index f = a->f, ec = a->e + 1;
    char *p = (char *)work;
    la_index i, j;
    w->C = C;
    w->ec = a->e + (a->norm == LA_NORM_DIV);
    w->Wc = (LA_T *)la_carve(&p, (size_t)(a->m * a->d) * sizeof(LA_T));
    w->Xs = (LA_T *)la_carve(&p, (size_t)(C * a->d) * sizeof(LA_T));
    w->U = (LA_T *)la_carve(&p, (size_t)(C * a->m) * sizeof(LA_T));
    w->h = (double *)la_carve(&p, (size_t)C * sizeof(double));
    w->Lq = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    w->nu = (double *)la_carve(&p, (size_t)C * sizeof(double));
    w->Ob = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    w->Sx = (LA_T *)la_carve(&p, (size_t)(f * ec) * sizeof(LA_T));
    w->Lk = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    w->Vb = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    w->M = (double *)la_carve(&p, (size_t)C * sizeof(double));
    *rest = p;
    /* a one-token recurrent call projects by la_rf_project_row, which reads W
     * where it is (Wc is then its scratch); the block products read W in place
     * when one of its axes is contiguous (la_rf_w_inplace), else its copy Wc */
    w->logc = -0.5 * log((double)f);
    w->rowproj = a->t == 1 && a->s == 1;
    w->wmode = la_rf_w_inplace(a->d, a->m, a->w_rs, a->w_cs);
    for (i = 0; i < a->m && !w->rowproj && w->wmode == 0; i++) {
        const LA_T *Wi = (const LA_T *)a->w + i * a->w_rs;
        for (j = 0; j < a->d; j++) {
            w->Wc[i * a->d + j] = Wi[j * a->w_cs];
        }
    }
}

/* sum_i x[i]^2 in double, 8 lanes added pairwise (the one-token path's order). */
LA_TARGET_CLONES static double
LA_FN(perf_sumsq)(const LA_T *x, la_index n)
{
    double lane[8], tl[8];
    la_index i, u;
    for (u = 0; u < 8; u++) {
        lane[u] = 0;
        tl[u] = 0;
    }
    for (i = 0; i + 8 <= n; i += 8) {
        for (u = 0; u < 8; u++) {
            lane[u] += (double)x[i + u] * (double)x[i + u];
        }
    }
    for (u = 0; i + u < n; u++) {
        tl[u] = (double)x[i + u] * (double)x[i + u];
    }
    for (u = 0; u < 8; u++) {
        lane[u] += tl[u];
    }
    for (u = 0; u < 4; u++) {
        lane[u] += lane[u + 4];
    }
    return (lane[0] + lane[2]) + (lane[1] + lane[3]);
}

/*
 * L (n rows, leading dimension f) <- log-features of rows x_0..x_{n-1}:
 * one GEMM U = X' W^T, then l = u - h + log c (and -u - h + log c).
 */
LA_TARGET_CLONES static void
LA_FN(perf_logblock)(const la_performer_args *a, LA_FN(perf_ws) *w,
                     const LA_T *x, la_index rs, la_index cs, la_index n,
                     LA_T *L)
{
    const la_index d = a->d, m = a->m, f = a->f;
    const LA_T sq = (LA_T)sqrt(a->scale);
    const double logc = w->logc;
    la_index r, i;
    for (r = 0; r < n; r++) {
        const LA_T *xr = x + r * rs;
        LA_T *Xr = w->Xs + r * d;
        double ss = 0;
        for (i = 0; i < d; i++) {
            const LA_T xv = sq * xr[i * cs];
            Xr[i] = xv;
            if (!w->rowproj) {
                ss += (double)xv * (double)xv;
            }
        }
        if (w->rowproj) {
            ss = LA_FN(perf_sumsq)(Xr, d);
        }
        w->h[r] = 0.5 * ss - logc; /* l = u - (h - log c) */
    }
    if (w->rowproj && n == 1) {
        LA_FN(la_rf_project_row)(w->Xs, d, (const LA_T *)a->w, a->w_rs, a->w_cs, m, w->Wc,
                                 w->U);
    }
    else if (w->wmode == 1) {
        LA_GEMM(0, 0, n, m, d, 1, w->Xs, d, (const LA_T *)a->w, a->w_cs, 0, w->U, m);
    }
    else if (w->wmode == 2) {
        LA_GEMM(0, 1, n, m, d, 1, w->Xs, d, (const LA_T *)a->w, a->w_rs, 0, w->U, m);
    }
    else {
        LA_GEMM(0, 1, n, m, d, 1, w->Xs, d, w->Wc, d, 0, w->U, m);
    }
    for (r = 0; r < n; r++) {
        const LA_T hh = (LA_T)w->h[r];
        const LA_T *Ur = w->U + r * m;
        LA_T *Lr = L + r * f;
        if (a->feat == LA_PERF_HYPERBOLIC) {
            for (i = 0; i < m; i++) {
                Lr[i] = Ur[i] - hh;
                Lr[m + i] = -Ur[i] - hh;
            }
        }
        else {
            for (i = 0; i < m; i++) {
                Lr[i] = Ur[i] - hh;
            }
        }
    }
}

/* max_i l[i] (exact in any order: 16 lanes, the tail into the first lanes,
 * then the lanes; a NaN is kept only from l[0], as a serial loop from l[0]
 * keeps it). */
LA_TARGET_CLONES static double
LA_FN(perf_rowmax)(const LA_T *l, la_index n)
{
    LA_T mx, lane[16];
    la_index i, u;
    if (n <= 0) {
        return -HUGE_VAL;
    }
    for (u = 0; u < 16; u++) {
        lane[u] = (LA_T)(-HUGE_VAL);
    }
    for (i = 0; i + 16 <= n; i += 16) {
        for (u = 0; u < 16; u++) {
            lane[u] = l[i + u] > lane[u] ? l[i + u] : lane[u];
        }
    }
    for (u = 0; i + u < n; u++) {
        lane[u] = l[i + u] > lane[u] ? l[i + u] : lane[u];
    }
    for (u = 0; u < 8; u++) {
        lane[u] = lane[u + 8] > lane[u] ? lane[u + 8] : lane[u];
    }
    mx = l[0] != l[0] ? l[0] : lane[0];
    for (u = 1; u < 8; u++) {
        mx = lane[u] > mx ? lane[u] : mx;
    }
    return (double)mx;
}

/* y = exp(l - s), elementwise, for l <= s (y may alias l). */
LA_TARGET_CLONES static void
LA_FN(perf_expshift)(const LA_T *l, double s, la_index n, LA_T *y)
{
    const LA_T ss = (LA_T)s;
    la_index i;
    for (i = 0; i < n; i++) {
        const LA_T x = l[i] - ss;
        y[i] = LA_EXP_NEG(x < 0 ? x : (LA_T)0);
    }
}

/* exp(old - new) for a scale that moves from old to new >= old (0 when empty). */
static double
LA_FN(perf_rescale)(double old, double nw)
{
    if (old == nw) {
        return 1.0;
    }
    return old == -HUGE_VAL ? 0.0 : exp(old - nw);
}

/* o = num on the scale exp(L), L = nu + mu; the guard on the true scale. */
LA_TARGET_CLONES static void
LA_FN(perf_finish)(const la_performer_args *a, const LA_T *num, double L,
                   LA_T *out, la_index ocs)
{
    const la_index e = a->e;
    la_index j;
    if (a->norm == LA_NORM_NONE) {
        const double c = exp(L);
        for (j = 0; j < e; j++) {
            out[j * ocs] = (LA_T)(c * (double)num[j]);
        }
        return;
    }
    {
        double g;
        if (a->norm == LA_NORM_DIV) {
            g = (double)num[e];
        }
        else {
            double ss = 0;
            for (j = 0; j < e; j++) {
                ss += (double)num[j] * (double)num[j];
            }
            g = e > 0 ? sqrt(ss / (double)e) : 0.0;
        }
        if (a->eps > 0) {
            const double lg = -L;
            if (lg > (double)LA_LOG_TMAX) {
                /* the guard is beyond the dtype's range: o = num / inf = 0 */
                for (j = 0; j < e; j++) {
                    out[j * ocs] = 0;
                }
                return;
            }
            g += a->eps * exp(lg);
        }
        for (j = 0; j < e; j++) {
            out[j * ocs] = (LA_T)((double)num[j] / g);
        }
    }
}

static void
LA_FN(perf_load_v)(const la_performer_args *a, la_index t0, la_index n,
                   la_index ec, LA_T *Vb)
{
    const LA_T *v = (const LA_T *)a->v;
    la_index r, j;
    for (r = 0; r < n; r++) {
        const LA_T *vr = v + (t0 + r) * a->v_rs;
        for (j = 0; j < a->e; j++) {
            Vb[r * ec + j] = vr[j * a->v_cs];
        }
        if (ec > a->e) {
            Vb[r * ec + a->e] = 1;
        }
    }
}

static void
LA_FN(perf_load_state)(const la_performer_args *a, la_index ec, LA_T *Sx)
{
    const LA_T *s0 = (const LA_T *)a->s0, *z0 = (const LA_T *)a->z0;
    la_index i, j;
    for (i = 0; i < a->f; i++) {
        if (a->s0_cs == 1) {
            memcpy(Sx + i * ec, s0 + i * a->s0_rs, (size_t)a->e * sizeof(LA_T));
        }
        for (j = 0; j < a->e && a->s0_cs != 1; j++) {
            Sx[i * ec + j] = s0[i * a->s0_rs + j * a->s0_cs];
        }
        if (ec > a->e) {
            Sx[i * ec + a->e] = z0[i * a->z0_s];
        }
    }
}

static void
LA_FN(perf_store_state)(const la_performer_args *a, la_index ec, const LA_T *Sx,
                        double mu)
{
    LA_T *s1 = (LA_T *)a->s1, *z1 = (LA_T *)a->z1;
    la_index i, j;
    for (i = 0; i < a->f; i++) {
        if (a->s1_cs == 1) {
            memcpy(s1 + i * a->s1_rs, Sx + i * ec, (size_t)a->e * sizeof(LA_T));
        }
        for (j = 0; j < a->e && a->s1_cs != 1; j++) {
            s1[i * a->s1_rs + j * a->s1_cs] = Sx[i * ec + j];
        }
        z1[i * a->z1_s] = ec > a->e ? Sx[i * ec + a->e] : (LA_T)0;
    }
    *a->mu1 = mu;
}

/* Query rows [t0, t0+n): Lq <- exp(l - nu_r), nu_r = max_i l_{r,i}. */
static void
LA_FN(perf_queries)(const la_performer_args *a, LA_FN(perf_ws) *w, la_index t0,
                    la_index n)
{
    const la_index f = a->f;
    la_index r;
    LA_FN(perf_logblock)(a, w, (const LA_T *)a->q + t0 * a->q_rs, a->q_rs, a->q_cs,
                         n, w->Lq);
    for (r = 0; r < n; r++) {
        w->nu[r] = LA_FN(perf_rowmax)(w->Lq + r * f, f);
        LA_FN(perf_expshift)(w->Lq + r * f, w->nu[r], f, w->Lq + r * f);
    }
}

/* End of the piece starting at `start` (< n): the running max stays within
 * LA_PERF_SPLIT of its value at the first key. */
static la_index
LA_FN(perf_piece_end)(const double *M, la_index start, la_index n)
{
    la_index end = start + 1;
    while (end < n && M[end] - M[start] <= LA_PERF_SPLIT) {
        end++;
    }
    return end;
}

/* ------------------------------------------------------------ recurrent -- */

/* S = rho S + kf vv^T, num = S^T qf; S is f x ec (z rides in column e). */
LA_TARGET_CLONES static void
LA_FN(perf_token)(la_index f, la_index ec, LA_T rho, LA_T *LA_RESTRICT S,
                  const LA_T *LA_RESTRICT qf, const LA_T *LA_RESTRICT kf,
                  const LA_T *LA_RESTRICT vv, LA_T *LA_RESTRICT num)
{
    la_index i, j;
    for (j = 0; j < ec; j++) {
        num[j] = 0;
    }
    if (rho == (LA_T)1) {
        for (i = 0; i < f; i++) {
            LA_T *LA_RESTRICT Si = S + i * ec;
            const LA_T ki = kf[i], qi = qf[i];
            for (j = 0; j < ec; j++) {
                const LA_T s = Si[j] + ki * vv[j];
                Si[j] = s;
                num[j] += qi * s;
            }
        }
    }
    else {
        for (i = 0; i < f; i++) {
            LA_T *LA_RESTRICT Si = S + i * ec;
            const LA_T ki = kf[i], qi = qf[i];
            for (j = 0; j < ec; j++) {
                const LA_T s = rho * Si[j] + ki * vv[j];
                Si[j] = s;
                num[j] += qi * s;
            }
        }
    }
}

/*
 * One token on a state stored with contiguous rows (the decoding step): S =
 * rho S + kf vv^T and num = S^T qf in one pass with the column block's
 * accumulators in registers; with z (div mode) also z = rho z + kf and
 * num[e] = z . qf, on the side of the first block's rows.
 */
#define LA_PERF_STEP_BLOCK 64
LA_TARGET_CLONES static void
LA_FN(perf_token_direct)(la_index f, la_index e, LA_T rho, LA_T *LA_RESTRICT S, la_index ld,
                         LA_T *LA_RESTRICT z, la_index zs, const LA_T *LA_RESTRICT qf,
                         const LA_T *LA_RESTRICT kf, const LA_T *LA_RESTRICT vv,
                         LA_T *LA_RESTRICT num)
{
    LA_T den = 0;
    la_index i, j, j0;
    for (j0 = 0; j0 < e; j0 += LA_PERF_STEP_BLOCK) {
        const la_index nb = e - j0 < LA_PERF_STEP_BLOCK ? e - j0 : LA_PERF_STEP_BLOCK;
        const int withz = z != NULL && j0 == 0;
        if (nb == LA_PERF_STEP_BLOCK) {
            /* a full block: every index a constant, the sums stay in registers */
            LA_T acc[LA_PERF_STEP_BLOCK], vl[LA_PERF_STEP_BLOCK];
            for (j = 0; j < LA_PERF_STEP_BLOCK; j++) {
                acc[j] = 0;
                vl[j] = vv[j0 + j];
            }
            for (i = 0; i < f; i++) {
                LA_T *LA_RESTRICT Si = S + i * ld + j0;
                const LA_T ki = kf[i], qi = qf[i];
                for (j = 0; j < LA_PERF_STEP_BLOCK; j++) {
                    const LA_T s = rho * Si[j] + ki * vl[j];
                    Si[j] = s;
                    acc[j] += qi * s;
                }
                if (withz) {
                    const LA_T zi = rho * z[i * zs] + ki;
                    z[i * zs] = zi;
                    den += qi * zi;
                }
            }
            for (j = 0; j < LA_PERF_STEP_BLOCK; j++) {
                num[j0 + j] = acc[j];
            }
            continue;
        }
        {
            LA_T acc[LA_PERF_STEP_BLOCK];
            for (j = 0; j < nb; j++) {
                acc[j] = 0;
            }
            for (i = 0; i < f; i++) {
                LA_T *LA_RESTRICT Si = S + i * ld + j0;
                const LA_T ki = kf[i], qi = qf[i];
                for (j = 0; j < nb; j++) {
                    const LA_T s = rho * Si[j] + ki * vv[j0 + j];
                    Si[j] = s;
                    acc[j] += qi * s;
                }
                if (withz) {
                    const LA_T zi = rho * z[i * zs] + ki;
                    z[i * zs] = zi;
                    den += qi * zi;
                }
            }
            for (j = 0; j < nb; j++) {
                num[j0 + j] = acc[j];
            }
        }
    }
    if (z != NULL && e == 0) {
        for (i = 0; i < f; i++) {
            const LA_T zi = rho * z[i * zs] + kf[i];
            z[i * zs] = zi;
            den += qf[i] * zi;
        }
    }
    if (z != NULL) {
        num[e] = den;
    }
}

/* den = sum_i qf_i z_i over 16 partial sums (whole groups of 16, added by a
 * fixed tree) plus the rest in order, after z_i = rho z0_i + kf_i: no f-long
 * chain of dependent adds, the same bits at any vector width.  Z0 == Z (in
 * place) is its own instance, so that the loop needs no overlap check. */
#define LA_PERF_ZPASS(Z0, Z)                                                       \
    do {                                                                           \
        LA_T part[16];                                                             \
        for (u = 0; u < 16; u++) {                                                 \
            part[u] = 0;                                                           \
        }                                                                          \
        for (i = 0; i + 16 <= f; i += 16) {                                        \
            for (u = 0; u < 16; u++) {                                             \
                const LA_T zi = rho * (Z0)[i + u] + kf[i + u];                     \
                (Z)[i + u] = zi;                                                   \
                part[u] += qf[i + u] * zi;                                         \
            }                                                                      \
        }                                                                          \
        for (; i < f; i++) {                                                       \
            const LA_T zi = rho * (Z0)[i] + kf[i];                                 \
            (Z)[i] = zi;                                                           \
            den += qf[i] * zi;                                                     \
        }                                                                          \
        for (u = 0; u < 8; u++) {                                                  \
            part[u] += part[u + 8];                                                \
        }                                                                          \
        for (u = 0; u < 4; u++) {                                                  \
            part[u] += part[u + 4];                                                \
        }                                                                          \
        return ((part[0] + part[2]) + (part[1] + part[3])) + den;                  \
    } while (0)

/* z = rho z0 + kf and den = z . qf (div mode), after the token's pass over S
 * (z0 == z: in place); contiguous z by LA_PERF_ZPASS. */
LA_TARGET_CLONES static LA_T
LA_FN(perf_zpass)(la_index f, LA_T rho, const LA_T *z0, la_index z0s, LA_T *z, la_index zs,
                  const LA_T *LA_RESTRICT qf, const LA_T *LA_RESTRICT kf)
{
    LA_T den = 0;
    la_index i, u;
    if (z0s == 1 && zs == 1 && z0 == z) {
        LA_T *LA_RESTRICT zz = z;
        LA_PERF_ZPASS(zz, zz);
    }
    if (z0s == 1 && zs == 1 && (z0 + f <= z || z + f <= z0)) {
        const LA_T *LA_RESTRICT za = z0;
        LA_T *LA_RESTRICT zb = z;
        LA_PERF_ZPASS(za, zb);
    }
    for (i = 0; i < f; i++) {
        const LA_T zi = rho * z0[i * z0s] + kf[i];
        z[i * zs] = zi;
        den += qf[i] * zi;
    }
    return den;
}
#undef LA_PERF_ZPASS

/*
 * One token out of place for e a multiple of 64: S1 = rho S0 + kf vv^T and
 * num = S1^T qf with the operations of the ISA paths' one-token pass in its
 * FMA form (s = fma(k, v, s); decayed: s = fma(rho, s, k v); num = fma(q, s,
 * num) row after row), so the new state and num have its bits: a copying step
 * reads the old state once instead of copying it and then updating the copy.
 */
LA_TARGET_CLONES static void
LA_FN(perf_token_oop)(la_index f, la_index e, LA_T rho, int decayed,
                      const LA_T *LA_RESTRICT S0, la_index ld0, LA_T *LA_RESTRICT S1,
                      la_index ld1, const LA_T *LA_RESTRICT qf, const LA_T *LA_RESTRICT kf,
                      const LA_T *LA_RESTRICT vv, LA_T *LA_RESTRICT num)
{
    la_index i, j, j0;
    for (j0 = 0; j0 + 64 <= e; j0 += 64) {
        LA_T acc[64], vl[64];
        for (j = 0; j < 64; j++) {
            acc[j] = 0;
            vl[j] = vv[j0 + j];
        }
        for (i = 0; i < f; i++) {
            const LA_T *LA_RESTRICT a = S0 + i * ld0 + j0;
            LA_T *LA_RESTRICT b = S1 + i * ld1 + j0;
            const LA_T ki = kf[i], qi = qf[i];
            if (decayed) {
                for (j = 0; j < 64; j++) {
                    const LA_T s = LA_PERF_FMA(rho, a[j], ki * vl[j]);
                    b[j] = s;
                    acc[j] = LA_PERF_FMA(qi, s, acc[j]);
                }
            }
            else {
                for (j = 0; j < 64; j++) {
                    const LA_T s = LA_PERF_FMA(ki, vl[j], a[j]);
                    b[j] = s;
                    acc[j] = LA_PERF_FMA(qi, s, acc[j]);
                }
            }
        }
        for (j = 0; j < 64; j++) {
            num[j0 + j] = acc[j];
        }
    }
}

/* The running maximum after key row lk (log-features) and its rescale rho. */
static double
LA_FN(perf_key_max)(la_index f, const LA_T *lk, double mu, LA_T *rho)
{
    const double mk = LA_FN(perf_rowmax)(lk, f);
    const double mu_new = mk > mu ? mk : mu;
    *rho = (LA_T)LA_FN(perf_rescale)(mu, mu_new);
    return mu_new;
}

/*
 * The recurrent form on a state with contiguous rows (la.step and every call
 * whose new state has them): the state is updated where it lies in s1, z1
 * (s0, z0 copied there first unless they are the same arrays), no [S | z]
 * buffer.  Per token the state pass of the linear operator's active ISA path
 * (two tokens per pass where the path has a pair loop and both tokens take
 * the same form: the bits of two one-token passes), then z; so a call of T
 * tokens does what T one-token calls do but for the projections (one product
 * per block of rows; one token: la_rf_project_row).
 */
static la_status
LA_FN(perf_steps)(const la_performer_args *a, LA_FN(perf_ws) *w)
{
    const la_index f = a->f, e = a->e, T = a->t, ec = w->ec;
    const int div = a->norm == LA_NORM_DIV;
    const LA_T *s0 = (const LA_T *)a->s0, *z0 = (const LA_T *)a->z0;
    LA_T *S = (LA_T *)a->s1, *z = (LA_T *)a->z1;
    LA_T *o = (LA_T *)a->o;
    /* NULL on the generic path: perf_token_direct (and no pairs) */
    const int isa = la_cpu_isa();
    const LA_FN(la_rtoken) simd = LA_FN(la_arch_rtoken)(isa);
    const LA_FN(la_rtoken2) simd2 = simd != NULL ? LA_FN(la_arch_rtoken2)(isa) : NULL;
    double mu = a->mu0;
    la_index i, j, t0, r;
    /* a new state (copying step): the first token reads the old one where it
     * lies (perf_token_oop, the bits of the in-place pass), the others run in
     * place on the new one */
    int oop = simd != NULL && T > 0 && e % 64 == 0 && a->s0_cs == 1 &&
              (s0 != S || a->s0_rs != a->s1_rs);
    if (!oop && (s0 != S || a->s0_rs != a->s1_rs || a->s0_cs != 1)) {
        for (i = 0; i < f; i++) {
            if (a->s0_cs == 1) {
                memcpy(S + i * a->s1_rs, s0 + i * a->s0_rs, (size_t)e * sizeof(LA_T));
                continue;
            }
            for (j = 0; j < e; j++) {
                S[i * a->s1_rs + j] = s0[i * a->s0_rs + j * a->s0_cs];
            }
        }
    }
    if (!oop && (z0 != z || a->z0_s != a->z1_s)) {
        for (i = 0; i < f; i++) {
            z[i * a->z1_s] = z0[i * a->z0_s];
        }
    }
    if (!div) {
        for (i = 0; i < f; i++) {
            z[i * a->z1_s] = 0;
        }
    }
    for (t0 = 0; t0 < T; t0 += w->C) {
        const la_index n = T - t0 < w->C ? T - t0 : w->C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, n);
        LA_FN(perf_logblock)(a, w, (const LA_T *)a->k + t0 * a->k_rs, a->k_rs, a->k_cs, n,
                             w->Lk);
        LA_FN(perf_queries)(a, w, t0, n);
        LA_FN(perf_load_v)(a, t0, n, ec, w->Vb);
        for (r = 0; r < n;) {
            LA_T *lk1 = w->Lk + r * f, *qf1 = w->Lq + r * f, *vv1 = w->Vb + r * ec;
            LA_T *num1 = w->Ob + r * ec;
            LA_T rho1, rho2;
            const double mu1 = LA_FN(perf_key_max)(f, lk1, mu, &rho1);
            if (oop) {
                LA_FN(perf_expshift)(lk1, mu1, f, lk1);
                LA_FN(perf_token_oop)(f, e, rho1, rho1 != (LA_T)1, s0, a->s0_rs, S, a->s1_rs,
                                      qf1, lk1, vv1, num1);
                if (div) {
                    num1[e] = LA_FN(perf_zpass)(f, rho1, z0, a->z0_s, z, a->z1_s, qf1, lk1);
                }
                LA_FN(perf_finish)(a, num1, w->nu[r] + mu1, o + (t0 + r) * a->o_rs,
                                   a->o_cs);
                mu = mu1;
                oop = 0;
                r++;
                continue;
            }
            if (simd2 != NULL && r + 1 < n) {
                LA_T *lk2 = lk1 + f, *qf2 = qf1 + f, *vv2 = vv1 + ec, *num2 = num1 + ec;
                const double mu2 = LA_FN(perf_key_max)(f, lk2, mu1, &rho2);
                /* a token pair whose running maximum rises takes the rescaling
                 * form for both tokens (rho = 1 then multiplies exactly) */
                {
                    LA_FN(perf_expshift)(lk1, mu1, f, lk1);
                    LA_FN(perf_expshift)(lk2, mu2, f, lk2);
                    simd2(f, e, rho1, rho2, rho1 != (LA_T)1 || rho2 != (LA_T)1, S, a->s1_rs,
                          qf1, lk1, vv1, qf2, lk2, vv2, num1, num2);
                    if (div) {
                        num1[e] = LA_FN(perf_zpass)(f, rho1, z, a->z1_s, z, a->z1_s, qf1, lk1);
                        num2[e] = LA_FN(perf_zpass)(f, rho2, z, a->z1_s, z, a->z1_s, qf2, lk2);
                    }
                    LA_FN(perf_finish)(a, num1, w->nu[r] + mu1, o + (t0 + r) * a->o_rs,
                                       a->o_cs);
                    LA_FN(perf_finish)(a, num2, w->nu[r + 1] + mu2,
                                       o + (t0 + r + 1) * a->o_rs, a->o_cs);
                    mu = mu2;
                    r += 2;
                    continue;
                }
            }
            LA_FN(perf_expshift)(lk1, mu1, f, lk1);
            if (simd != NULL) {
                simd(f, e, rho1, rho1 != (LA_T)1, S, a->s1_rs, qf1, lk1, vv1, num1);
                if (div) {
                    num1[e] = LA_FN(perf_zpass)(f, rho1, z, a->z1_s, z, a->z1_s, qf1, lk1);
                }
            }
            else {
                LA_FN(perf_token_direct)(f, e, rho1, S, a->s1_rs, div ? z : NULL, a->z1_s,
                                         qf1, lk1, vv1, num1);
            }
            LA_FN(perf_finish)(a, num1, w->nu[r] + mu1, o + (t0 + r) * a->o_rs, a->o_cs);
            mu = mu1;
            r++;
        }
    }
    *a->mu1 = mu;
    return LA_OK;
}

la_status
LA_FN(la_performer_recurrent)(const la_performer_args *a, void *work)
{
    const la_index f = a->f, T = a->t;
    LA_FN(perf_ws) w;
    char *rest;
    la_index t0, r;
    double mu = a->mu0;
    LA_T *o = (LA_T *)a->o;
    la_index ec;

    LA_FN(perf_carve)(a, work, &w, &rest);
    ec = w.ec;
    if (a->s1_cs == 1) {
        return LA_FN(perf_steps)(a, &w);
    }
    /* a new state with strided rows: the tokens on an [S | z] buffer */
    LA_FN(perf_load_state)(a, ec, w.Sx);
    for (t0 = 0; t0 < T; t0 += w.C) {
        const la_index n = T - t0 < w.C ? T - t0 : w.C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, n);
        LA_FN(perf_logblock)(a, &w, (const LA_T *)a->k + t0 * a->k_rs, a->k_rs, a->k_cs, n,
                             w.Lk);
        LA_FN(perf_queries)(a, &w, t0, n);
        LA_FN(perf_load_v)(a, t0, n, ec, w.Vb);
        for (r = 0; r < n; r++) {
            LA_T *lk = w.Lk + r * f;
            const double mk = LA_FN(perf_rowmax)(lk, f);
            const double mu_new = mk > mu ? mk : mu;
            const LA_T rho = (LA_T)LA_FN(perf_rescale)(mu, mu_new);
            LA_FN(perf_expshift)(lk, mu_new, f, lk);
            LA_FN(perf_token)(f, ec, rho, w.Sx, w.Lq + r * f, lk, w.Vb + r * ec, w.Ob);
            mu = mu_new;
            LA_FN(perf_finish)(a, w.Ob, w.nu[r] + mu, o + (t0 + r) * a->o_rs, a->o_cs);
        }
    }
    LA_FN(perf_store_state)(a, ec, w.Sx, mu);
    return LA_OK;
}

/* -------------------------------------------------------------- chunked -- */

la_status
LA_FN(la_performer_chunked)(const la_performer_args *a, void *work)
{
    const la_index f = a->f, T = a->t;
    LA_FN(perf_ws) w;
    char *rest;
    LA_T *P;
    la_index t0, r, j, ec, C;
    double mu = a->mu0;
    LA_T *o = (LA_T *)a->o;

    LA_FN(perf_carve)(a, work, &w, &rest);
    ec = w.ec;
    C = w.C;
    P = (LA_T *)la_carve(&rest, (size_t)(C * C) * sizeof(LA_T));
    LA_FN(perf_load_state)(a, ec, w.Sx);
    for (t0 = 0; t0 < T; t0 += C) {
        const la_index n = T - t0 < C ? T - t0 : C;
        la_index start = 0;
        double run = mu;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, n);
        LA_FN(perf_logblock)(a, &w, (const LA_T *)a->k + t0 * a->k_rs, a->k_rs, a->k_cs, n,
                             w.Lk);
        for (r = 0; r < n; r++) {
            const double mk = LA_FN(perf_rowmax)(w.Lk + r * f, f);
            run = mk > run ? mk : run;
            w.M[r] = run;
        }
        LA_FN(perf_queries)(a, &w, t0, n);
        LA_FN(perf_load_v)(a, t0, n, ec, w.Vb);
        while (start < n) {
            const la_index end = LA_FN(perf_piece_end)(w.M, start, n);
            const la_index np = end - start;
            const double mu_p = w.M[end - 1];
            const LA_T rho = (LA_T)LA_FN(perf_rescale)(mu, mu_p);
            LA_T *Qp = w.Lq + start * f, *Kp = w.Lk + start * f, *Vp = w.Vb + start * ec;
            if (rho != (LA_T)1) {
                for (j = 0; j < f * ec; j++) {
                    w.Sx[j] *= rho;
                }
            }
            LA_FN(perf_expshift)(Kp, mu_p, np * f, Kp);
            /* intra: tril(Q K^T) [V | 1];  inter: + Q [S | z] */
            LA_GEMM(0, 1, np, np, f, 1, Qp, f, Kp, f, 0, P, C);
            for (r = 0; r < np; r++) {
                for (j = r + 1; j < np; j++) {
                    P[r * C + j] = 0;
                }
            }
            LA_GEMM(0, 0, np, ec, np, 1, P, C, Vp, ec, 0, w.Ob, ec);
            LA_GEMM(0, 0, np, ec, f, 1, Qp, f, w.Sx, ec, 1, w.Ob, ec);
            for (r = 0; r < np; r++) {
                LA_FN(perf_finish)(a, w.Ob + r * ec, w.nu[start + r] + mu_p,
                                   o + (t0 + start + r) * a->o_rs, a->o_cs);
            }
            LA_GEMM(1, 0, f, ec, np, 1, Kp, f, Vp, ec, 1, w.Sx, ec);
            mu = mu_p;
            start = end;
        }
    }
    LA_FN(perf_store_state)(a, ec, w.Sx, mu);
    return LA_OK;
}

/* ------------------------------------------------------------- parallel -- */

la_status
LA_FN(la_performer_parallel)(const la_performer_args *a, void *work)
{
    const la_index f = a->f, T = a->t;
    const la_index ldp = T > 0 ? T : 1;
    LA_FN(perf_ws) w;
    char *rest;
    LA_T *Ka, *Va, *cs, *P;
    double *Ma;
    la_index r0, r, j, ec, C;
    double run = a->mu0, mu_T;
    LA_T *o = (LA_T *)a->o;

    LA_FN(perf_carve)(a, work, &w, &rest);
    ec = w.ec;
    C = w.C;
    Ka = (LA_T *)la_carve(&rest, (size_t)(ldp * f) * sizeof(LA_T));
    Va = (LA_T *)la_carve(&rest, (size_t)(ldp * (a->e + 1)) * sizeof(LA_T));
    Ma = (double *)la_carve(&rest, (size_t)ldp * sizeof(double));
    cs = (LA_T *)la_carve(&rest, (size_t)ldp * sizeof(LA_T));
    P = (LA_T *)la_carve(&rest, (size_t)(C * ldp) * sizeof(LA_T));
    LA_FN(perf_load_state)(a, ec, w.Sx);
    /* keys once: exp(l_j - M_j) on their own running maximum */
    for (r0 = 0; r0 < T; r0 += C) {
        const la_index n = T - r0 < C ? T - r0 : C;
        LA_FN(perf_logblock)(a, &w, (const LA_T *)a->k + r0 * a->k_rs, a->k_rs, a->k_cs, n,
                             Ka + r0 * f);
        LA_FN(perf_load_v)(a, r0, n, ec, Va + r0 * ec);
        for (r = r0; r < r0 + n; r++) {
            const double mk = LA_FN(perf_rowmax)(Ka + r * f, f);
            run = mk > run ? mk : run;
            Ma[r] = run;
            LA_FN(perf_expshift)(Ka + r * f, run, f, Ka + r * f);
        }
    }
    for (r0 = 0; r0 < T; r0 += C) {
        const la_index nb = T - r0 < C ? T - r0 : C;
        la_index start = 0;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        LA_FN(perf_queries)(a, &w, r0, nb);
        while (start < nb) {
            const la_index end = LA_FN(perf_piece_end)(Ma + r0, start, nb);
            const la_index np = end - start, kend = r0 + end;
            const double mu_p = Ma[kend - 1];
            const LA_T s0f = (LA_T)LA_FN(perf_rescale)(a->mu0, mu_p);
            LA_T *Qp = w.Lq + start * f;
            for (j = 0; j < kend; j++) {
                cs[j] = (LA_T)exp(Ma[j] - mu_p);
            }
            LA_GEMM(0, 1, np, kend, f, 1, Qp, f, Ka, f, 0, P, ldp);
            for (r = 0; r < np; r++) {
                const la_index t = r0 + start + r;
                LA_T *Pr = P + r * ldp;
                for (j = 0; j <= t; j++) {
                    Pr[j] *= cs[j];
                }
                for (j = t + 1; j < kend; j++) {
                    Pr[j] = 0;
                }
            }
            LA_GEMM(0, 0, np, ec, kend, 1, P, ldp, Va, ec, 0, w.Ob, ec);
            if (s0f != (LA_T)0) {
                LA_GEMM(0, 0, np, ec, f, s0f, Qp, f, w.Sx, ec, 1, w.Ob, ec);
            }
            for (r = 0; r < np; r++) {
                LA_FN(perf_finish)(a, w.Ob + r * ec, w.nu[start + r] + mu_p,
                                   o + (r0 + start + r) * a->o_rs, a->o_cs);
            }
            start = end;
        }
    }
    /* final state on mu_T: exp(mu0 - mu_T) S0 + sum_j exp(M_j - mu_T) kf_j v_j^T */
    mu_T = T > 0 ? Ma[T - 1] : a->mu0;
    if (T > 0) {
        const LA_T s0f = (LA_T)LA_FN(perf_rescale)(a->mu0, mu_T);
        for (j = 0; j < T; j++) {
            const LA_T c = (LA_T)exp(Ma[j] - mu_T);
            for (r = 0; r < f; r++) {
                Ka[j * f + r] *= c;
            }
        }
        if (s0f != (LA_T)1) {
            for (j = 0; j < f * ec; j++) {
                w.Sx[j] *= s0f;
            }
        }
        LA_GEMM(1, 0, f, ec, T, 1, Ka, f, Va, ec, 1, w.Sx, ec);
    }
    LA_FN(perf_store_state)(a, ec, w.Sx, mu_T);
    return LA_OK;
}

/* ------------------------------------------------------------ noncausal -- */

la_status
LA_FN(la_performer_noncausal)(const la_performer_args *a, void *work)
{
    const la_index f = a->f;
    LA_FN(perf_ws) w;
    char *rest;
    la_index r0, r, j, ec, C;
    double mu = -HUGE_VAL;
    LA_T *o = (LA_T *)a->o;

    LA_FN(perf_carve)(a, work, &w, &rest);
    ec = w.ec;
    C = w.C;
    for (j = 0; j < f * ec; j++) {
        w.Sx[j] = 0;
    }
    /* S = sum_s exp(l_s - mu) [v_s | 1], online over key blocks */
    for (r0 = 0; r0 < a->s; r0 += C) {
        const la_index nb = a->s - r0 < C ? a->s - r0 : C;
        double mb = mu;
        LA_T rho;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        LA_FN(perf_logblock)(a, &w, (const LA_T *)a->k + r0 * a->k_rs, a->k_rs, a->k_cs, nb,
                             w.Lk);
        for (r = 0; r < nb; r++) {
            const double mk = LA_FN(perf_rowmax)(w.Lk + r * f, f);
            mb = mk > mb ? mk : mb;
        }
        rho = (LA_T)LA_FN(perf_rescale)(mu, mb);
        if (rho != (LA_T)1) {
            for (j = 0; j < f * ec; j++) {
                w.Sx[j] *= rho;
            }
        }
        mu = mb;
        LA_FN(perf_expshift)(w.Lk, mu, nb * f, w.Lk);
        LA_FN(perf_load_v)(a, r0, nb, ec, w.Vb);
        LA_GEMM(1, 0, f, ec, nb, 1, w.Lk, f, w.Vb, ec, 1, w.Sx, ec);
    }
    for (r0 = 0; r0 < a->t; r0 += C) {
        const la_index nb = a->t - r0 < C ? a->t - r0 : C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_TICK(a->progress, nb);
        LA_FN(perf_queries)(a, &w, r0, nb);
        LA_GEMM(0, 0, nb, ec, f, 1, w.Lq, f, w.Sx, ec, 0, w.Ob, ec);
        for (r = 0; r < nb; r++) {
            LA_FN(perf_finish)(a, w.Ob + r * ec, w.nu[r] + mu, o + (r0 + r) * a->o_rs,
                               a->o_cs);
        }
    }
    return LA_OK;
}
