/*
 * softmax_bwd_impl.h -- WARNING: included once per dtype by softmax_bwd.c (no
 * include guard).
 */

/* p = exp(p - l) over one row of scores (vectorised exp, la_vmath.h). */
LA_TARGET_CLONES static void
LA_FN(smb_exp_rows)(la_index n, LA_T *LA_RESTRICT p, LA_T l)
{
    la_index j;
    for (j = 0; j < n; j++) {
        p[j] = LA_EXP(p[j] - l);
    }
}

/* dZ = P o (dP - D) over one row, in dP. */
LA_TARGET_CLONES static void
LA_FN(smb_dz_row)(la_index n, const LA_T *LA_RESTRICT p, LA_T *LA_RESTRICT dp, LA_T D)
{
    la_index j;
    for (j = 0; j < n; j++) {
        dp[j] = p[j] * (dp[j] - D);
    }
}

la_status
LA_FN(la_softmax_bwd)(const la_softmax_bwd_args *a, void *work)
{
    const la_index T = a->t, S = a->s, d = a->d, e = a->e;
    const la_index C = a->block < 1 ? 1 : (T > 0 && a->block > T ? T : a->block);
    const la_index lds = S > 0 ? S : 1;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v, *o = (const LA_T *)a->o;
    const LA_T *dout = (const LA_T *)a->dout;
    LA_T *dq = (LA_T *)a->dq, *dk = (LA_T *)a->dk, *dv = (LA_T *)a->dv;
    char *p = (char *)work;
    LA_T *Ka = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *Va = (LA_T *)la_carve(&p, (size_t)(S * e) * sizeof(LA_T));
    LA_T *dKa = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *dVa = (LA_T *)la_carve(&p, (size_t)(S * e) * sizeof(LA_T));
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(C * d) * sizeof(LA_T));
    LA_T *dQb = (LA_T *)la_carve(&p, (size_t)(C * d) * sizeof(LA_T));
    LA_T *dOb = (LA_T *)la_carve(&p, (size_t)(C * e) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(C * lds) * sizeof(LA_T));
    LA_T *dP = (LA_T *)la_carve(&p, (size_t)(C * lds) * sizeof(LA_T));
    double *Dr = (double *)la_carve(&p, (size_t)C * sizeof(double));
    const LA_T scale = (LA_T)a->scale;
    la_index r0, r, j;

    for (j = 0; j < S; j++) {
        for (r = 0; r < d; r++) {
            Ka[j * d + r] = k[j * a->k_rs + r * a->k_cs];
            dKa[j * d + r] = 0;
        }
        for (r = 0; r < e; r++) {
            Va[j * e + r] = v[j * a->v_rs + r * a->v_cs];
            dVa[j * e + r] = 0;
        }
    }
    for (r0 = 0; r0 < T; r0 += C) {
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        const la_index nb = T - r0 < C ? T - r0 : C;
        const la_index nk = a->causal ? (r0 + nb < S ? r0 + nb : S) : S;
        for (r = 0; r < nb; r++) {
            const la_index t = r0 + r;
            double acc = 0;
            for (j = 0; j < d; j++) {
                Qb[r * d + j] = scale * q[t * a->q_rs + j * a->q_cs];
            }
            for (j = 0; j < e; j++) {
                const LA_T g = dout[t * a->do_rs + j * a->do_cs];
                dOb[r * e + j] = g;
                acc += (double)g * (double)o[t * a->o_rs + j * a->o_cs];
            }
            Dr[r] = acc;
        }
        /* P = exp(Z - lse) on the mask */
        LA_GEMM(0, 1, nb, nk, d, 1, Qb, d, Ka, d, 0, P, lds);
        for (r = 0; r < nb; r++) {
            LA_T *Pr = P + r * lds;
            const la_index valid = a->causal ? (r0 + r + 1 < nk ? r0 + r + 1 : nk) : nk;
            LA_FN(smb_exp_rows)(valid, Pr, (LA_T)a->lse[(r0 + r) * a->lse_s]);
            for (j = valid; j < nk; j++) {
                Pr[j] = 0;
            }
        }
        /* dV += P^T dO;  dP = dO V^T */
        LA_GEMM(1, 0, nk, e, nb, 1, P, lds, dOb, e, 1, dVa, e);
        LA_GEMM(0, 1, nb, nk, e, 1, dOb, e, Va, e, 0, dP, lds);
        /* dZ = P o (dP - D), in dP */
        for (r = 0; r < nb; r++) {
            const LA_T *Pr = P + r * lds;
            LA_T *dPr = dP + r * lds;
            const LA_T Dt = (LA_T)Dr[r];
            const la_index valid = a->causal ? (r0 + r + 1 < nk ? r0 + r + 1 : nk) : nk;
            LA_FN(smb_dz_row)(valid, Pr, dPr, Dt);
            for (j = valid; j < nk; j++) {
                dPr[j] = 0;
            }
        }
        /* dQ = s dZ K;  dK += dZ^T (s Q) */
        LA_GEMM(0, 0, nb, d, nk, 1, dP, lds, Ka, d, 0, dQb, d);
        LA_GEMM(1, 0, nk, d, nb, 1, dP, lds, Qb, d, 1, dKa, d);
        for (r = 0; r < nb; r++) {
            for (j = 0; j < d; j++) {
                dq[(r0 + r) * a->dq_rs + j * a->dq_cs] = scale * dQb[r * d + j];
            }
        }
    }
    for (j = 0; j < S; j++) {
        for (r = 0; r < d; r++) {
            dk[j * a->dk_rs + r * a->dk_cs] = dKa[j * d + r];
        }
        for (r = 0; r < e; r++) {
            dv[j * a->dv_rs + r * a->dv_cs] = dVa[j * e + r];
        }
    }
    return LA_OK;
}
