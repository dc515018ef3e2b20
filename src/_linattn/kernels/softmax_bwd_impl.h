/*
 * softmax_bwd_impl.h -- WARNING: included once per dtype by softmax_bwd.c (no
 * include guard).  Needs softmax_rows_impl.h included before it for the same
 * dtype.
 */

la_status
LA_FN(la_softmax_bwd)(const la_softmax_bwd_args *a, void *work)
{
    const la_index T = a->t, S = a->s, d = a->d, e = a->e;
    const la_index C = la_softmax_bwd_qblock(a), CK = LA_SOFTMAX_KB(a->kblock);
    const LA_T *q = (const LA_T *)a->q, *o = (const LA_T *)a->o;
    const LA_T *dout = (const LA_T *)a->dout;
    LA_T *dq = (LA_T *)a->dq;
    char *p = (char *)work;
    LA_T *Ka = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *Kt = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *Vt = (LA_T *)la_carve(&p, (size_t)(S * e) * sizeof(LA_T));
    LA_T *dKa = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *dVa = (LA_T *)la_carve(&p, (size_t)(S * e) * sizeof(LA_T));
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(C * d) * sizeof(LA_T));
    LA_T *dQb = (LA_T *)la_carve(&p, (size_t)(C * d) * sizeof(LA_T));
    LA_T *dOb = (LA_T *)la_carve(&p, (size_t)(C * e) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(C * CK) * sizeof(LA_T));
    LA_T *dP = (LA_T *)la_carve(&p, (size_t)(C * CK) * sizeof(LA_T));
    double *Dr = (double *)la_carve(&p, (size_t)C * sizeof(double));
    const LA_T scale = (LA_T)a->scale;
    const int mode = a->mode;
    const la_index nparts = a->nparts < 1 ? 1 : a->nparts;
    la_index r0, r, j, qb, kbi;

    /* K (row-major, for dQ), K^T and V^T by key blocks (for the scores and
     * dP: d x CK and e x CK each, contiguous) */
    LA_FN(sm_pack)(S, d, (const LA_T *)a->k, a->k_rs, a->k_cs, 1, Ka, NULL);
    for (j = 0; j < S; j += CK) {
        const la_index w = S - j < CK ? S - j : CK;
        LA_FN(sm_pack_t)(w, d, (const LA_T *)a->k + j * a->k_rs, a->k_rs, a->k_cs, w,
                         Kt + j * d);
        LA_FN(sm_pack_t)(w, e, (const LA_T *)a->v + j * a->v_rs, a->v_rs, a->v_cs, w,
                         Vt + j * e);
    }
    if (mode != LA_SOFTMAX_BWD_DQ) {
        LA_FN(sm_zero)(S * d, dKa);
        LA_FN(sm_zero)(S * e, dVa);
    }
    for (r0 = 0, qb = 0; r0 < T; r0 += C, qb++) {
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        if (mode == LA_SOFTMAX_BWD_DQ && qb % nparts != a->part) {
            continue;
        }
        const la_index nb = T - r0 < C ? T - r0 : C;
        /* keys any row of the block sees: causal skips blocks above the diagonal */
        const la_index nk = a->causal ? (r0 + nb < S ? r0 + nb : S) : S;
        la_index j0;
        LA_FN(sm_pack)(nb, d, q + r0 * a->q_rs, a->q_rs, a->q_cs, scale, Qb, NULL);
        LA_FN(sm_pack)(nb, e, dout + r0 * a->do_rs, a->do_rs, a->do_cs, 1, dOb, NULL);
        for (r = 0; r < nb; r++) {
            const LA_T *orow = o + (r0 + r) * a->o_rs;
            double acc = 0;
            for (j = 0; j < e; j++) {
                acc += (double)dOb[r * e + j] * (double)orow[j * a->o_cs];
            }
            Dr[r] = acc;
        }
        if (nk == 0) {
            LA_FN(sm_zero)(nb * d, dQb);
        }
        for (j0 = 0, kbi = 0; j0 < nk; j0 += CK, kbi++) {
            const la_index kb = nk - j0 < CK ? nk - j0 : CK;
            /* the block's width as packed (a causal last block may use fewer) */
            const la_index ldk = S - j0 < CK ? S - j0 : CK;
            if (mode == LA_SOFTMAX_BWD_DKV && kbi % nparts != a->part) {
                continue;
            }
            /* P = exp(Z - lse) on the mask */
            LA_GEMM(0, 0, nb, kb, d, 1, Qb, d, Kt + j0 * d, ldk, 0, P, CK);
            /* dP = dO V^T */
            LA_GEMM(0, 0, nb, kb, e, 1, dOb, e, Vt + j0 * e, ldk, 0, dP, CK);
            for (r = 0; r < nb; r++) {
                LA_T *Pr = P + r * CK, *dPr = dP + r * CK;
                const la_index valid = !a->causal || r0 + r + 1 - j0 >= kb ? kb
                                     : (r0 + r + 1 - j0 > 0 ? r0 + r + 1 - j0 : 0);
                LA_FN(sm_exp_shift)(valid, Pr, (LA_T)a->lse[(r0 + r) * a->lse_s]);
                /* dZ = P o (dP - D), in dP */
                LA_FN(sm_dz_row)(valid, Pr, dPr, (LA_T)Dr[r]);
                LA_FN(sm_zero)(kb - valid, Pr + valid);
                LA_FN(sm_zero)(kb - valid, dPr + valid);
            }
            /* dV += P^T dO;  dQ (+)= dZ K;  dK += dZ^T (s Q) */
            if (mode != LA_SOFTMAX_BWD_DQ) {
                LA_GEMM(1, 0, kb, e, nb, 1, P, CK, dOb, e, 1, dVa + j0 * e, e);
            }
            if (mode != LA_SOFTMAX_BWD_DKV) {
                LA_GEMM(0, 0, nb, d, kb, 1, dP, CK, Ka + j0 * d, d, j0 > 0 ? 1 : 0, dQb, d);
            }
            if (mode != LA_SOFTMAX_BWD_DQ) {
                LA_GEMM(1, 0, kb, d, nb, 1, dP, CK, Qb, d, 1, dKa + j0 * d, d);
            }
        }
        if (mode == LA_SOFTMAX_BWD_DKV) {
            continue;
        }
        for (r = 0; r < nb; r++) {
            for (j = 0; j < d; j++) {
                dq[(r0 + r) * a->dq_rs + j * a->dq_cs] = scale * dQb[r * d + j];
            }
        }
    }
    if (mode == LA_SOFTMAX_BWD_DQ) {
        return LA_OK;
    }
    for (j = 0; j < S; j++) {
        if (mode == LA_SOFTMAX_BWD_DKV && (j / CK) % nparts != a->part) {
            continue;
        }
        for (r = 0; r < d; r++) {
            ((LA_T *)a->dk)[j * a->dk_rs + r * a->dk_cs] = dKa[j * d + r];
        }
        for (r = 0; r < e; r++) {
            ((LA_T *)a->dv)[j * a->dv_rs + r * a->dv_cs] = dVa[j * e + r];
        }
    }
    return LA_OK;
}
