/*
 * diag_impl.h -- WARNING: included once per dtype by diag.c (no include
 * guard).
 */

static void
LA_FN(diag_copy_rows)(const LA_T *x, la_index rs, la_index cs, la_index n,
                      la_index w, LA_T mul, LA_T *dst)
{
    la_index r, j;
    for (r = 0; r < n; r++) {
        for (j = 0; j < w; j++) {
            dst[r * w + j] = mul * x[r * rs + j * cs];
        }
    }
}

la_status
LA_FN(la_diag)(const la_diag_args *a, void *work)
{
    const la_index T = a->t, S = a->s, d = a->d, e = a->e, w = a->w;
    const la_index wb = la_diag_block_rows(a);
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k;
    const LA_T *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    char *p = (char *)work;
    LA_T *Qb = (LA_T *)la_carve(&p, (size_t)(wb * d) * sizeof(LA_T));
    LA_T *Kb = (LA_T *)la_carve(&p, (size_t)(wb * d) * sizeof(LA_T));
    LA_T *Vb = (LA_T *)la_carve(&p, (size_t)(wb * e) * sizeof(LA_T));
    LA_T *P = (LA_T *)la_carve(&p, (size_t)(wb * wb) * sizeof(LA_T));
    LA_T *Ob = (LA_T *)la_carve(&p, (size_t)(wb * e) * sizeof(LA_T));
    double *rs = (double *)la_carve(&p, (size_t)wb * sizeof(double));
    la_index pre = a->causal ? a->c : 0;
    la_index r0 = 0, r, j;

    while (r0 < T) {
        /* queries r0 .. r0+n-1 lie in one block, after `pre` earlier rows */
        const la_index n = (w - pre < T - r0) ? w - pre : T - r0;
        la_index nk;
        if (a->causal) {
            if (pre > 0) {
                LA_FN(diag_copy_rows)((const LA_T *)a->kc, a->kc_rs, a->kc_cs,
                                      pre, d, 1, Kb);
                LA_FN(diag_copy_rows)((const LA_T *)a->vc, a->vc_rs, a->vc_cs,
                                      pre, e, 1, Vb);
            }
            LA_FN(diag_copy_rows)(k + r0 * a->k_rs, a->k_rs, a->k_cs, n, d, 1,
                                  Kb + pre * d);
            LA_FN(diag_copy_rows)(v + r0 * a->v_rs, a->v_rs, a->v_cs, n, e, 1,
                                  Vb + pre * e);
            nk = pre + n;
        }
        else {
            nk = r0 >= S ? 0 : (S - r0 < w ? S - r0 : w);
            LA_FN(diag_copy_rows)(k + r0 * a->k_rs, a->k_rs, a->k_cs, nk, d, 1,
                                  Kb);
            LA_FN(diag_copy_rows)(v + r0 * a->v_rs, a->v_rs, a->v_cs, nk, e, 1,
                                  Vb);
        }
        LA_FN(diag_copy_rows)(q + r0 * a->q_rs, a->q_rs, a->q_cs, n, d,
                              (LA_T)a->scale, Qb);
        LA_GEMM(0, 1, n, nk, d, 1, Qb, d, Kb, d, 0, P, wb);
        for (r = 0; r < n; r++) {
            LA_T *Pr = P + r * wb;
            const la_index valid = a->causal ? pre + r + 1 : nk;
            if (a->variant == LA_DIAG_SOFTMAX) {
                LA_T m = -LA_TMAX;
                double sum = 0;
                for (j = 0; j < valid; j++) {
                    m = Pr[j] > m ? Pr[j] : m;
                }
                for (j = 0; j < valid; j++) {
                    Pr[j] = LA_EXP(Pr[j] - m);
                    sum += Pr[j];
                }
                rs[r] = sum > 0 ? 1.0 / sum : 0.0;
            }
            else {
                for (j = 0; j < valid; j++) {
                    Pr[j] = Pr[j] > 0 ? Pr[j] : (LA_T)0;
                }
                rs[r] = 1.0;
            }
            for (j = valid; j < nk; j++) {
                Pr[j] = 0;
            }
        }
        LA_GEMM(0, 0, n, e, nk, 1, P, wb, Vb, e, 0, Ob, e);
        for (r = 0; r < n; r++) {
            LA_T *Or = Ob + r * e;
            LA_T *out = o + (r0 + r) * a->o_rs;
            LA_T mul = (LA_T)rs[r];
            if (a->variant == LA_DIAG_RELU && a->norm == LA_NORM_RMS && e > 0) {
                double ss = 0;
                for (j = 0; j < e; j++) {
                    ss += (double)Or[j] * (double)Or[j];
                }
                mul = (LA_T)(1.0 / (sqrt(ss / (double)e) + a->eps));
            }
            for (j = 0; j < e; j++) {
                out[j * a->o_cs] = Or[j] * mul;
            }
        }
        r0 += n;
        pre = 0;
    }
    return LA_OK;
}
