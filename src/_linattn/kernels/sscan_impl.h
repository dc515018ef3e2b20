/*
 * sscan_impl.h -- WARNING: included once per dtype by sscan.c (no include
 * guard).
 */

/* One token over the n state entries (contiguous rows); returns sum C h. */
LA_TARGET_CLONES static LA_T
LA_FN(sscan_token)(la_index n, LA_T dt, LA_T du, const LA_T *LA_RESTRICT A,
                   const LA_T *LA_RESTRICT Bt, const LA_T *LA_RESTRICT Ct,
                   LA_T *LA_RESTRICT h)
{
    LA_T y = 0;
    la_index i;
    for (i = 0; i < n; i++) {
        const LA_T x = LA_EXP(dt * A[i]) * h[i] + du * Bt[i];
        h[i] = x;
        y += Ct[i] * x;
    }
    return y;
}

la_status
LA_FN(la_sscan)(const la_sscan_args *a, void *work)
{
    const la_index L = a->l, N = a->n;
    const LA_T *u = (const LA_T *)a->u, *dl = (const LA_T *)a->delta;
    const LA_T *Ap = (const LA_T *)a->A, *B = (const LA_T *)a->B;
    const LA_T *C = (const LA_T *)a->C, *z = (const LA_T *)a->z;
    const LA_T *h0 = (const LA_T *)a->h0;
    LA_T *out = (LA_T *)a->out, *h1 = (LA_T *)a->h1;
    const LA_T Dc = (LA_T)a->D, bias = (LA_T)a->delta_bias;
    char *p = (char *)work;
    LA_T *h = (LA_T *)la_carve(&p, (size_t)N * sizeof(LA_T));
    LA_T *A = (LA_T *)la_carve(&p, (size_t)N * sizeof(LA_T));
    LA_T *bt = (LA_T *)la_carve(&p, (size_t)N * sizeof(LA_T));
    LA_T *ct = (LA_T *)la_carve(&p, (size_t)N * sizeof(LA_T));
    la_index t, i;

    for (i = 0; i < N; i++) {
        h[i] = h0[i * a->h0_s];
        A[i] = Ap[i * a->A_s];
    }
    /* time-invariant B / C (stride 0 on l): gather once */
    if (a->B_ls == 0) {
        for (i = 0; i < N; i++) {
            bt[i] = B[i * a->B_ns];
        }
    }
    if (a->C_ls == 0) {
        for (i = 0; i < N; i++) {
            ct[i] = C[i * a->C_ns];
        }
    }
    for (t = 0; t < L; t++) {
        const LA_T ut = u[t * a->u_s];
        LA_T dt = dl[t * a->dl_s] + bias;
        LA_T y;
        if (a->softplus) {
            dt = (dt > 0 ? dt : (LA_T)0) + (LA_T)log1p(exp(-(double)LA_FABS(dt)));
        }
        if (a->B_ls != 0) {
            const LA_T *Bc = B + t * a->B_ls;
            for (i = 0; i < N; i++) {
                bt[i] = Bc[i * a->B_ns];
            }
        }
        if (a->C_ls != 0) {
            const LA_T *Cc = C + t * a->C_ls;
            for (i = 0; i < N; i++) {
                ct[i] = Cc[i * a->C_ns];
            }
        }
        y = LA_FN(sscan_token)(N, dt, dt * ut, A, bt, ct, h) + Dc * ut;
        if (a->has_z) {
            const LA_T zt = z[t * a->z_s];
            y *= zt / ((LA_T)1 + LA_EXP(-zt));
        }
        out[t * a->out_s] = y;
    }
    for (i = 0; i < N; i++) {
        h1[i * a->h1_s] = h[i];
    }
    return LA_OK;
}
