/*
 * diag_bwd_impl.h -- WARNING: included once per dtype by diag_bwd.c (no
 * include guard).
 */

static void
LA_FN(diag_bwd_load)(const LA_T *x, la_index rs, la_index cs, la_index n,
                     la_index w, LA_T mul, LA_T *dst)
{
    la_index r, j;
    for (r = 0; r < n; r++) {
        for (j = 0; j < w; j++) {
            dst[r * w + j] = mul * x[r * rs + j * cs];
        }
    }
}

static void
LA_FN(diag_bwd_store)(const LA_T *src, la_index n, la_index w, LA_T mul,
                      LA_T *x, la_index rs, la_index cs)
{
    la_index r, j;
    for (r = 0; r < n; r++) {
        for (j = 0; j < w; j++) {
            x[r * rs + j * cs] = mul * src[r * w + j];
        }
    }
}

static void
LA_FN(diag_bwd_zero)(la_index n, la_index w, LA_T *x, la_index rs, la_index cs)
{
    la_index r, j;
    for (r = 0; r < n; r++) {
        for (j = 0; j < w; j++) {
            x[r * rs + j * cs] = 0;
        }
    }
}

la_status
LA_FN(la_diag_bwd)(const la_diag_bwd_args *a, void *work)
{
    const la_index T = a->t, S = a->s, d = a->d, e = a->e, w = a->w;
    const la_index wb = la_diag_bwd_block_rows(a);
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v, *dout = (const LA_T *)a->dout;
    LA_T *dq = (LA_T *)a->dq, *dk = (LA_T *)a->dk, *dv = (LA_T *)a->dv;
    char *p = (char *)work;
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(wb * d) * sizeof(LA_T));
    LA_T *Kb = (LA_T *)la_carve(&p, (size_t)(wb * d) * sizeof(LA_T));
    LA_T *dQb = (LA_T *)la_carve(&p, (size_t)(wb * d) * sizeof(LA_T));
    LA_T *dKb = (LA_T *)la_carve(&p, (size_t)(wb * d) * sizeof(LA_T));
    LA_T *Vb = (LA_T *)la_carve(&p, (size_t)(wb * e) * sizeof(LA_T));
    LA_T *dOb = (LA_T *)la_carve(&p, (size_t)(wb * e) * sizeof(LA_T));
    LA_T *Ob = (LA_T *)la_carve(&p, (size_t)(wb * e) * sizeof(LA_T));
    LA_T *dVb = (LA_T *)la_carve(&p, (size_t)(wb * e) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(wb * wb) * sizeof(LA_T));
    LA_T *dP = (LA_T *)la_carve(&p, (size_t)(wb * wb) * sizeof(LA_T));
    la_index pre = a->causal ? a->c : 0;
    la_index r0 = 0, r, j;

    /* rows no block writes (non-causal keys past the queries; empty caches)
     * keep these zeros */
    LA_FN(diag_bwd_zero)(S, d, dk, a->dk_rs, a->dk_cs);
    LA_FN(diag_bwd_zero)(S, e, dv, a->dv_rs, a->dv_cs);
    LA_FN(diag_bwd_zero)(a->c, d, (LA_T *)a->dkc, a->dkc_rs, a->dkc_cs);
    LA_FN(diag_bwd_zero)(a->c, e, (LA_T *)a->dvc, a->dvc_rs, a->dvc_cs);
    while (r0 < T) {
        /* queries r0 .. r0+n-1 lie in one block, after `pre` cached rows */
        const la_index n = (w - pre < T - r0) ? w - pre : T - r0;
        la_index nk;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        if (a->causal) {
            if (pre > 0) {
                LA_FN(diag_bwd_load)((const LA_T *)a->kc, a->kc_rs, a->kc_cs, pre, d,
                                     1, Kb);
                LA_FN(diag_bwd_load)((const LA_T *)a->vc, a->vc_rs, a->vc_cs, pre, e,
                                     1, Vb);
            }
            LA_FN(diag_bwd_load)(k + r0 * a->k_rs, a->k_rs, a->k_cs, n, d, 1,
                                 Kb + pre * d);
            LA_FN(diag_bwd_load)(v + r0 * a->v_rs, a->v_rs, a->v_cs, n, e, 1,
                                 Vb + pre * e);
            nk = pre + n;
        }
        else {
            nk = r0 >= S ? 0 : (S - r0 < w ? S - r0 : w);
            LA_FN(diag_bwd_load)(k + r0 * a->k_rs, a->k_rs, a->k_cs, nk, d, 1, Kb);
            LA_FN(diag_bwd_load)(v + r0 * a->v_rs, a->v_rs, a->v_cs, nk, e, 1, Vb);
        }
        LA_FN(diag_bwd_load)(q + r0 * a->q_rs, a->q_rs, a->q_cs, n, d,
                             (LA_T)a->scale, Qb);
        LA_FN(diag_bwd_load)(dout + r0 * a->do_rs, a->do_rs, a->do_cs, n, e, 1, dOb);
        /* the forward's weights: P (T2, normalised) or R (T1), 0 off the mask */
        LA_GEMM(0, 1, n, nk, d, 1, Qb, d, Kb, d, 0, P, wb);
        for (r = 0; r < n; r++) {
            LA_T *Pr = P + r * wb;
            const la_index valid = a->causal ? pre + r + 1 : nk;
            if (a->variant == LA_DIAG_SOFTMAX) {
                LA_T m = -LA_TMAX;
                double sum = 0, inv;
                for (j = 0; j < valid; j++) {
                    m = Pr[j] > m ? Pr[j] : m;
                }
                for (j = 0; j < valid; j++) {
                    Pr[j] = LA_EXP(Pr[j] - m);
                    sum += Pr[j];
                }
                inv = sum > 0 ? 1.0 / sum : 0.0;
                for (j = 0; j < valid; j++) {
                    Pr[j] = (LA_T)((double)Pr[j] * inv);
                }
            }
            else {
                for (j = 0; j < valid; j++) {
                    Pr[j] = Pr[j] > 0 ? Pr[j] : (LA_T)0;
                }
            }
            for (j = valid; j < nk; j++) {
                Pr[j] = 0;
            }
        }
        /* T1 with the norm: the numerator, then the norm's backward into dOb */
        if (a->variant == LA_DIAG_RELU && a->norm == LA_NORM_RMS && e > 0) {
            LA_GEMM(0, 0, n, e, nk, 1, P, wb, Vb, e, 0, Ob, e);
            for (r = 0; r < n; r++) {
                const LA_T *Or = Ob + r * e;
                LA_T *Dr = dOb + r * e;
                double dot = 0, ss = 0, rr, rho, cc;
                for (j = 0; j < e; j++) {
                    dot += (double)Dr[j] * (double)Or[j];
                    ss += (double)Or[j] * (double)Or[j];
                }
                rr = sqrt(ss / (double)e);
                rho = rr + a->eps;
                cc = rr > 0 ? dot / ((double)e * rr * rho) : 0.0;
                for (j = 0; j < e; j++) {
                    Dr[j] = (LA_T)(((double)Dr[j] - cc * (double)Or[j]) / rho);
                }
            }
        }
        /* dV = P^T dnum, dP = dnum V^T */
        LA_GEMM(1, 0, nk, e, n, 1, P, wb, dOb, e, 0, dVb, e);
        LA_GEMM(0, 1, n, nk, e, 1, dOb, e, Vb, e, 0, dP, wb);
        for (r = 0; r < n; r++) {
            const LA_T *Pr = P + r * wb;
            LA_T *dPr = dP + r * wb;
            if (a->variant == LA_DIAG_SOFTMAX) {
                /* D_t = do_t . o_t = sum_s P_ts dP_ts (exactly dP where P = 1) */
                double acc = 0;
                LA_T D;
                for (j = 0; j < nk; j++) {
                    acc += (double)Pr[j] * (double)dPr[j];
                }
                D = (LA_T)acc;
                for (j = 0; j < nk; j++) {
                    dPr[j] = Pr[j] * (dPr[j] - D);
                }
            }
            else {
                for (j = 0; j < nk; j++) {
                    dPr[j] = Pr[j] > 0 ? dPr[j] : (LA_T)0;
                }
            }
        }
        /* dQ = s dZ K; dK = s dZ^T Q (Qb already holds s Q) */
        LA_GEMM(0, 0, n, d, nk, 1, dP, wb, Kb, d, 0, dQb, d);
        LA_GEMM(1, 0, nk, d, n, 1, dP, wb, Qb, d, 0, dKb, d);
        LA_FN(diag_bwd_store)(dQb, n, d, (LA_T)a->scale, dq + r0 * a->dq_rs, a->dq_rs,
                              a->dq_cs);
        if (a->causal) {
            if (pre > 0) {
                LA_FN(diag_bwd_store)(dKb, pre, d, 1, (LA_T *)a->dkc, a->dkc_rs,
                                      a->dkc_cs);
                LA_FN(diag_bwd_store)(dVb, pre, e, 1, (LA_T *)a->dvc, a->dvc_rs,
                                      a->dvc_cs);
            }
            LA_FN(diag_bwd_store)(dKb + pre * d, n, d, 1, dk + r0 * a->dk_rs, a->dk_rs,
                                  a->dk_cs);
            LA_FN(diag_bwd_store)(dVb + pre * e, n, e, 1, dv + r0 * a->dv_rs, a->dv_rs,
                                  a->dv_cs);
        }
        else {
            LA_FN(diag_bwd_store)(dKb, nk, d, 1, dk + r0 * a->dk_rs, a->dk_rs, a->dk_cs);
            LA_FN(diag_bwd_store)(dVb, nk, e, 1, dv + r0 * a->dv_rs, a->dv_rs, a->dv_cs);
        }
        r0 += n;
        pre = 0;
    }
    return LA_OK;
}
