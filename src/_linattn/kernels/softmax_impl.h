/*
 * softmax_impl.h -- WARNING: included once per dtype by softmax.c (no include
 * guard).
 */

la_status
LA_FN(la_softmax)(const la_softmax_args *a, void *work)
{
    const la_index T = a->t, S = a->s, d = a->d, e = a->e;
    const la_index C = a->block < 1 ? 1 : (T > 0 && a->block > T ? T : a->block);
    const la_index lds = S > 0 ? S : 1;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    char *p = (char *)work;
    LA_T *Ka = (LA_T *)la_carve(&p, (size_t)(S * d) * sizeof(LA_T));
    LA_T *Va = (LA_T *)la_carve(&p, (size_t)(S * e) * sizeof(LA_T));
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(C * d) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(C * lds) * sizeof(LA_T));
    LA_T *Ob = (LA_T *)la_carve(&p, (size_t)(C * e) * sizeof(LA_T));
    double *rs = (double *)la_carve(&p, (size_t)C * sizeof(double));
    const LA_T scale = (LA_T)a->scale;
    la_index r0, r, j;

    for (j = 0; j < S; j++) {
        for (r = 0; r < d; r++) {
            Ka[j * d + r] = k[j * a->k_rs + r * a->k_cs];
        }
        for (r = 0; r < e; r++) {
            Va[j * e + r] = v[j * a->v_rs + r * a->v_cs];
        }
    }
    for (r0 = 0; r0 < T; r0 += C) {
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        const la_index nb = T - r0 < C ? T - r0 : C;
        const la_index nk = a->causal ? (r0 + nb < S ? r0 + nb : S) : S;
        for (r = 0; r < nb; r++) {
            for (j = 0; j < d; j++) {
                Qb[r * d + j] = scale * q[(r0 + r) * a->q_rs + j * a->q_cs];
            }
        }
        LA_GEMM(0, 1, nb, nk, d, 1, Qb, d, Ka, d, 0, P, lds);
        for (r = 0; r < nb; r++) {
            LA_T *Pr = P + r * lds;
            const la_index valid = a->causal ? (r0 + r + 1 < nk ? r0 + r + 1 : nk) : nk;
            LA_T m = -LA_TMAX;
            double sum = 0;
            for (j = 0; j < valid; j++) {
                m = Pr[j] > m ? Pr[j] : m;
            }
            for (j = 0; j < valid; j++) {
                Pr[j] -= m;
            }
            LA_VEXP(valid, Pr, Pr);
            for (j = 0; j < valid; j++) {
                sum += Pr[j];
            }
            for (j = valid; j < nk; j++) {
                Pr[j] = 0;
            }
            rs[r] = sum;
            if (a->lse != NULL) {
                a->lse[(r0 + r) * a->lse_s] = valid > 0 ? (double)m + log(sum) : -HUGE_VAL;
            }
        }
        LA_GEMM(0, 0, nb, e, nk, 1, P, lds, Va, e, 0, Ob, e);
        for (r = 0; r < nb; r++) {
            const LA_T inv = (LA_T)(1.0 / rs[r]);
            for (j = 0; j < e; j++) {
                o[(r0 + r) * a->o_rs + j * a->o_cs] = Ob[r * e + j] * inv;
            }
        }
    }
    return LA_OK;
}
