/*
 * softmax_impl.h -- WARNING: included once per dtype by softmax.c (no include
 * guard).  Needs softmax_rows_impl.h included before it for the same dtype.
 */

la_status
LA_FN(la_softmax)(const la_softmax_args *a, void *work)
{
    const la_index T = a->t, S = a->s, d = a->d, e = a->e;
    const la_index C = la_softmax_qblock(a), CK = LA_SOFTMAX_KB(a->kblock);
    const la_index nparts = a->nparts < 1 ? 1 : a->nparts;
    const LA_T *q = (const LA_T *)a->q;
    LA_T *o = (LA_T *)a->o;
    char *p = (char *)work;
    LA_T *Kt = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *Va = (LA_T *)la_carve(&p, (size_t)(S * e) * sizeof(LA_T));
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(C * d) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(C * CK) * sizeof(LA_T));
    LA_T *Ob = (LA_T *)la_carve(&p, (size_t)(C * e) * sizeof(LA_T));
    double *mx = (double *)la_carve(&p, (size_t)C * sizeof(double));
    double *ls = (double *)la_carve(&p, (size_t)C * sizeof(double));
    la_index r0, r, j;

    /* K^T by key blocks (d x CK each, contiguous): each is a row-major GEMM
     * operand as is, read without the cache-set conflicts of a long stride */
    for (j = 0; j < S; j += CK) {
        LA_FN(sm_pack_t)(S - j < CK ? S - j : CK, d, (const LA_T *)a->k + j * a->k_rs, a->k_rs,
                         a->k_cs, S - j < CK ? S - j : CK, Kt + j * d);
    }
    LA_FN(sm_pack)(S, e, (const LA_T *)a->v, a->v_rs, a->v_cs, 1, Va, NULL);
    for (r0 = a->part * C; r0 < T; r0 += nparts * C) {
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        const la_index nb = T - r0 < C ? T - r0 : C;
        /* keys any row of the block sees: causal skips blocks above the diagonal */
        const la_index nk = a->causal ? (r0 + nb < S ? r0 + nb : S) : S;
        la_index j0;
        LA_FN(sm_pack)(nb, d, q + r0 * a->q_rs, a->q_rs, a->q_cs, (LA_T)a->scale, Qb, NULL);
        for (r = 0; r < nb; r++) {
            mx[r] = -(double)LA_TMAX;
            ls[r] = 0;
        }
        if (nk == 0) {
            LA_FN(sm_zero)(nb * e, Ob);
        }
        for (j0 = 0; j0 < nk; j0 += CK) {
            const la_index kb = nk - j0 < CK ? nk - j0 : CK;
            /* the block's width as packed (a causal last block may use fewer) */
            const la_index ldk = S - j0 < CK ? S - j0 : CK;
            LA_GEMM(0, 0, nb, kb, d, 1, Qb, d, Kt + j0 * d, ldk, 0, P, CK);
            for (r = 0; r < nb; r++) {
                LA_T *Pr = P + r * CK;
                /* keys of the block row r sees: the causal mask cuts the
                 * blocks that cross the diagonal */
                const la_index valid = !a->causal || r0 + r + 1 - j0 >= kb ? kb
                                     : r0 + r + 1 - j0;
                double mnew, alpha;
                if (valid <= 0) {
                    LA_FN(sm_zero)(kb, Pr);
                    continue;
                }
                mnew = (double)LA_FN(sm_rowmax)(valid, Pr, (LA_T)mx[r]);
                alpha = mnew > mx[r] ? exp(mx[r] - mnew) : 1.0;
                ls[r] = ls[r] * alpha + LA_FN(sm_exp_sum)(valid, Pr, (LA_T)mnew);
                if (alpha != 1.0 && j0 > 0) {
                    LA_FN(sm_scale_row)(e, Ob + r * e, (LA_T)alpha);
                }
                mx[r] = mnew;
                LA_FN(sm_zero)(kb - valid, Pr + valid);
            }
            LA_GEMM(0, 0, nb, e, kb, 1, P, CK, Va + j0 * e, e, j0 > 0 ? 1 : 0, Ob, e);
        }
        for (r = 0; r < nb; r++) {
            const LA_T inv = (LA_T)(1.0 / ls[r]);
            for (j = 0; j < e; j++) {
                o[(r0 + r) * a->o_rs + j * a->o_cs] = Ob[r * e + j] * inv;
            }
            if (a->lse != NULL) {
                a->lse[(r0 + r) * a->lse_s] = ls[r] > 0 ? mx[r] + log(ls[r]) : -HUGE_VAL;
            }
        }
    }
    return LA_OK;
}
