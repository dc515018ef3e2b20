/*
 * sscan_bwd_impl.h -- WARNING: included once per dtype by sscan_bwd.c (no
 * include guard).
 */

/* dt_t as the forward computes it (kernels/sscan_impl.h). */
static inline LA_T
LA_FN(sscan_bwd_dt)(LA_T x, LA_T bias, int softplus)
{
    LA_T dt = x + bias;
    if (softplus) {
        dt = (dt > 0 ? dt : (LA_T)0) + (LA_T)log1p(exp(-(double)LA_FABS(dt)));
    }
    return dt;
}

static inline void
LA_FN(sscan_bwd_gather)(LA_T *dst, const LA_T *src, la_index n, la_index s)
{
    la_index i;
    for (i = 0; i < n; i++) {
        dst[i] = src[i * s];
    }
}

/* h <- exp(dt A) h + dut B over the n entries (pass 1, in place). */
LA_TARGET_CLONES static void
LA_FN(ssb_advance)(la_index n, LA_T dt, LA_T dut, const LA_T *LA_RESTRICT A,
                   const LA_T *LA_RESTRICT bt, LA_T *LA_RESTRICT h)
{
    la_index i;
    for (i = 0; i < n; i++) {
        h[i] = LA_EXP(dt * A[i]) * h[i] + dut * bt[i];
    }
}

/* hn = a o hp + dut B with a = exp(dt A) kept (the block recompute). */
LA_TARGET_CLONES static void
LA_FN(ssb_recompute)(la_index n, LA_T dt, LA_T dut, const LA_T *LA_RESTRICT A,
                     const LA_T *LA_RESTRICT bt, const LA_T *LA_RESTRICT hp,
                     LA_T *LA_RESTRICT hn, LA_T *LA_RESTRICT ar)
{
    la_index i;
    for (i = 0; i < n; i++) {
        const LA_T x = LA_EXP(dt * A[i]);
        ar[i] = x;
        hn[i] = x * hp[i] + dut * bt[i];
    }
}

/*
 * One token of the reverse walk over the n state entries: dhb = dh + C dy,
 * dC_t = dy h_t, dB_t = dhb dt u, dA += eps dt, dh <- a dhb; returns
 * sum_n (eps A + u dhb B) in r[0] and sum_n dhb B in r[1].  Contiguous rows,
 * no branches: vectorised.
 */
LA_TARGET_CLONES static void
LA_FN(ssb_token)(la_index n, const LA_T *LA_RESTRICT A, const LA_T *LA_RESTRICT bt,
                 const LA_T *LA_RESTRICT ct, const LA_T *LA_RESTRICT hp,
                 const LA_T *LA_RESTRICT hn, const LA_T *LA_RESTRICT ar,
                 LA_T *LA_RESTRICT dh, LA_T dy, LA_T dt, LA_T ut,
                 double *LA_RESTRICT sA, LA_T *LA_RESTRICT dBt, LA_T *LA_RESTRICT dCt,
                 LA_T *r)
{
    LA_T ddt = 0, sb = 0;
    const LA_T dtu = dt * ut;
    la_index i;
#pragma omp simd reduction(+ : ddt, sb)
    for (i = 0; i < n; i++) {
        const LA_T dhb = dh[i] + ct[i] * dy;
        const LA_T eps = dhb * ar[i] * hp[i];
        dCt[i] = dy * hn[i];
        dBt[i] = dhb * dtu;
        sA[i] += (double)(eps * dt);
        ddt += eps * A[i] + ut * dhb * bt[i];
        sb += dhb * bt[i];
        dh[i] = ar[i] * dhb;
    }
    r[0] = ddt;
    r[1] = sb;
}

la_status
LA_FN(la_sscan_bwd)(const la_sscan_bwd_args *a, void *work)
{
    const la_index L = a->l, N = a->n, BL = LA_SSCAN_BWD_BLOCK;
    const la_index nblk = (L + BL - 1) / BL;
    const LA_T *u = (const LA_T *)a->u, *dl = (const LA_T *)a->delta;
    const LA_T *Ap = (const LA_T *)a->A, *B = (const LA_T *)a->B;
    const LA_T *C = (const LA_T *)a->C, *z = (const LA_T *)a->z;
    const LA_T *h0 = (const LA_T *)a->h0, *dout = (const LA_T *)a->dout;
    const LA_T *dh1 = (const LA_T *)a->dh1;
    LA_T *du = (LA_T *)a->du, *ddl = (LA_T *)a->ddelta, *dAo = (LA_T *)a->dA;
    LA_T *dB = (LA_T *)a->dB, *dC = (LA_T *)a->dC, *dz = (LA_T *)a->dz;
    LA_T *dh0 = (LA_T *)a->dh0;
    const LA_T Dc = (LA_T)a->D, bias = (LA_T)a->delta_bias;
    char *p = (char *)work;
    const la_index N1 = N > 0 ? N : 1;
    LA_T *hck = (LA_T *)la_carve(&p, (size_t)((nblk + 1) * N1) * sizeof(LA_T));
    LA_T *hb = (LA_T *)la_carve(&p, (size_t)((BL + 1) * N1) * sizeof(LA_T));
    LA_T *ab = (LA_T *)la_carve(&p, (size_t)(BL * N1) * sizeof(LA_T));
    LA_T *dts = (LA_T *)la_carve(&p, (size_t)BL * sizeof(LA_T));
    LA_T *A = (LA_T *)la_carve(&p, (size_t)N1 * sizeof(LA_T));
    LA_T *bt = (LA_T *)la_carve(&p, (size_t)N1 * sizeof(LA_T));
    LA_T *ct = (LA_T *)la_carve(&p, (size_t)N1 * sizeof(LA_T));
    LA_T *dh = (LA_T *)la_carve(&p, (size_t)N1 * sizeof(LA_T));
    double *sA = (double *)la_carve(&p, (size_t)N1 * sizeof(double));
    double *sB = (double *)la_carve(&p, (size_t)N1 * sizeof(double));
    double *sC = (double *)la_carve(&p, (size_t)N1 * sizeof(double));
    LA_T *dBt = (LA_T *)la_carve(&p, (size_t)N1 * sizeof(LA_T));
    LA_T *dCt = (LA_T *)la_carve(&p, (size_t)N1 * sizeof(LA_T));
    LA_T rr[2];
    double sD = 0, sbias = 0;
    la_index t, i, b;

    LA_FN(sscan_bwd_gather)(A, Ap, N, a->A_s);
    LA_FN(sscan_bwd_gather)(hck, h0, N, a->h0_s);
    for (i = 0; i < N; i++) {
        dh[i] = dh1[i * a->dh1_s];
        sA[i] = sB[i] = sC[i] = 0;
    }
    if (a->B_ls == 0) {
        LA_FN(sscan_bwd_gather)(bt, B, N, a->B_ns);
    }
    if (a->C_ls == 0) {
        LA_FN(sscan_bwd_gather)(ct, C, N, a->C_ns);
    }
    /* pass 1: the state entering every block */
    for (b = 0; b + 1 < nblk; b++) {
        LA_T *h = hck + (b + 1) * N1;
        for (i = 0; i < N; i++) {
            h[i] = hck[b * N1 + i];
        }
        for (t = b * BL; t < (b + 1) * BL; t++) {
            const LA_T dt = LA_FN(sscan_bwd_dt)(dl[t * a->dl_s], bias, a->softplus);
            const LA_T dut = dt * u[t * a->u_s];
            if (a->B_ls != 0) {
                LA_FN(sscan_bwd_gather)(bt, B + t * a->B_ls, N, a->B_ns);
            }
            LA_FN(ssb_advance)(N, dt, dut, A, bt, h);
        }
    }
    /* pass 2: blocks in reverse */
    for (b = nblk - 1; b >= 0; b--) {
        const la_index t0 = b * BL, nb = L - t0 < BL ? L - t0 : BL;
        la_index r;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        for (i = 0; i < N; i++) {
            hb[i] = hck[b * N1 + i];
        }
        for (r = 0; r < nb; r++) {
            const la_index tt = t0 + r;
            const LA_T dt = LA_FN(sscan_bwd_dt)(dl[tt * a->dl_s], bias, a->softplus);
            const LA_T dut = dt * u[tt * a->u_s];
            const LA_T *hp = hb + r * N1;
            LA_T *hn = hb + (r + 1) * N1, *ar = ab + r * N1;
            dts[r] = dt;
            if (a->B_ls != 0) {
                LA_FN(sscan_bwd_gather)(bt, B + tt * a->B_ls, N, a->B_ns);
            }
            LA_FN(ssb_recompute)(N, dt, dut, A, bt, hp, hn, ar);
        }
        for (r = nb - 1; r >= 0; r--) {
            const la_index tt = t0 + r;
            const LA_T ut = u[tt * a->u_s], dt = dts[r], g = dout[tt * a->dout_s];
            const LA_T *hp = hb + r * N1, *hn = hb + (r + 1) * N1, *ar = ab + r * N1;
            double ddt, sb;
            LA_T dy = g;
            if (a->B_ls != 0) {
                LA_FN(sscan_bwd_gather)(bt, B + tt * a->B_ls, N, a->B_ns);
            }
            if (a->C_ls != 0) {
                LA_FN(sscan_bwd_gather)(ct, C + tt * a->C_ls, N, a->C_ns);
            }
            if (a->has_z) {
                const double zt = (double)z[tt * a->z_s];
                const double sg = 1.0 / (1.0 + exp(-zt));
                double y = (double)Dc * (double)ut;
                for (i = 0; i < N; i++) {
                    y += (double)ct[i] * (double)hn[i];
                }
                dy = (LA_T)((double)g * zt * sg);
                dz[tt * a->dz_s] = (LA_T)((double)g * y * sg * (1.0 + zt * (1.0 - sg)));
            }
            sD += (double)dy * (double)ut;
            LA_FN(ssb_token)(N, A, bt, ct, hp, hn, ar, dh, dy, dt, ut, sA, dBt, dCt, rr);
            ddt = (double)rr[0];
            sb = (double)rr[1];
            for (i = 0; i < N; i++) {
                if (a->c_sum) {
                    sC[i] += (double)dCt[i];
                }
                else {
                    dC[i * a->dC_ns + tt * a->dC_ls] = dCt[i];
                }
                if (a->b_sum) {
                    sB[i] += (double)dBt[i];
                }
                else {
                    dB[i * a->dB_ns + tt * a->dB_ls] = dBt[i];
                }
            }
            du[tt * a->du_s] = (LA_T)((double)Dc * (double)dy + (double)dt * sb);
            if (a->softplus) {
                const double x = (double)dl[tt * a->dl_s] + (double)bias;
                ddt *= 1.0 / (1.0 + exp(-x));
            }
            ddl[tt * a->ddl_s] = (LA_T)ddt;
            sbias += ddt;
        }
    }
    for (i = 0; i < N; i++) {
        dh0[i * a->dh0_s] = dh[i];
        dAo[i * a->dA_s] = (LA_T)sA[i];
        if (a->b_sum) {
            dB[i * a->dB_ns] = (LA_T)sB[i];
        }
        if (a->c_sum) {
            dC[i * a->dC_ns] = (LA_T)sC[i];
        }
    }
    *(LA_T *)a->dD = (LA_T)sD;
    *(LA_T *)a->dbias = (LA_T)sbias;
    return LA_OK;
}
