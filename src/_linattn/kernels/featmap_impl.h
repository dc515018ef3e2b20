/* featmap_impl.h: included once per dtype by featmap.c -- no include guard. */

/* elu1 / elu over a contiguous row: one fused loop (scale, exp, select) per
 * map, auto-vectorised in each clone; LA_FMAP_ELU1_AT / LA_FMAP_ELU_AT (from
 * featmap.c, per dtype) give phi at one point u = scale * x.  Inlined into
 * each clone of la_featmap_row (y may alias x).  LA_FMAP_ELU_HAND (from
 * featmap.c) runs the active ISA path's hand-written map instead where it has
 * one (float32 on AVX-512, the same bits) and says whether it did. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void
LA_FN(fmap_elu_dense)(int fmap, LA_T scale, const LA_T *x, la_index n, LA_T *y)
{
    la_index j;
    if (LA_FMAP_ELU_HAND(fmap, scale, x, n, y)) {
        return;
    }
    if (fmap == LA_FMAP_ELU1) {
        for (j = 0; j < n; j++) {
            const LA_T uu = scale * x[j];
            y[j] = LA_FMAP_ELU1_AT(uu);
        }
    }
    else {
        for (j = 0; j < n; j++) {
            const LA_T uu = scale * x[j];
            y[j] = LA_FMAP_ELU_AT(uu);
        }
    }
}

LA_TARGET_CLONES void
LA_FN(la_featmap_row)(int fmap, double scale_d, const LA_T *x, la_index xs,
                      la_index n, LA_T *y)
{
    const LA_T scale = (LA_T)scale_d;
    LA_T u[LA_FMAP_BLOCK];
    la_index j0, j, nb;
    switch (fmap) {
    case LA_FMAP_ELU1:
    case LA_FMAP_ELU:
        if (xs == 1) {
            LA_FN(fmap_elu_dense)(fmap, scale, x, n, y);
            break;
        }
        /* strided rows: gather blocks, then the same loop (same bits) */
        for (j0 = 0; j0 < n; j0 += LA_FMAP_BLOCK) {
            nb = n - j0 < LA_FMAP_BLOCK ? n - j0 : LA_FMAP_BLOCK;
            for (j = 0; j < nb; j++) {
                u[j] = x[(j0 + j) * xs];
            }
            LA_FN(fmap_elu_dense)(fmap, scale, u, nb, y + j0);
        }
        break;
    case LA_FMAP_RELU:
        for (j = 0; j < n; j++) {
            const LA_T v = scale * x[j * xs];
            y[j] = v > 0 ? v : (LA_T)0;
        }
        break;
    default: /* identity */
        if (scale == (LA_T)1) {
            for (j = 0; j < n; j++) {
                y[j] = x[j * xs];
            }
        }
        else {
            for (j = 0; j < n; j++) {
                y[j] = scale * x[j * xs];
            }
        }
        break;
    }
}

/* ------------------------------------------------- random-feature maps -- */

/* sum_j a[j*as] b[j*bs], accumulated in double (vectorised when contiguous). */
LA_TARGET_CLONES static double
LA_FN(rf_dot)(const LA_T *a, la_index as, const LA_T *b, la_index bs, la_index n)
{
    double u = 0;
    la_index j;
    if (as == 1 && bs == 1) {
#pragma omp simd reduction(+ : u)
        for (j = 0; j < n; j++) {
            u += (double)a[j] * (double)b[j];
        }
        return u;
    }
    for (j = 0; j < n; j++) {
        u += (double)a[j * as] * (double)b[j * bs];
    }
    return u;
}

void
LA_FN(la_rfa_row)(double scale, const LA_T *x, la_index xs, la_index d,
                  const LA_T *W, la_index w_rs, la_index w_cs, la_index r,
                  LA_T *y)
{
    const double amp = r > 0 ? sqrt(2.0 / (double)(2 * r)) : 0.0;
    const double ss = LA_FN(rf_dot)(x, xs, x, xs, d);
    double c;
    la_index i;
    /* u = sqrt(scale) W x / (|x| + 1e-3) */
    c = sqrt(scale) / (sqrt(ss) + LA_RFA_NORM_EPS);
    for (i = 0; i < r; i++) {
        const double u = c * LA_FN(rf_dot)(W + i * w_rs, w_cs, x, xs, d);
        y[i] = (LA_T)(amp * sin(u));
        y[r + i] = (LA_T)(amp * cos(u));
    }
}

void
LA_FN(la_performer_logrow)(int kind, double scale, const LA_T *x, la_index xs,
                           la_index d, const LA_T *W, la_index w_rs,
                           la_index w_cs, la_index r, LA_T *y)
{
    const double rs = sqrt(scale);
    const double ss = LA_FN(rf_dot)(x, xs, x, xs, d);
    double h, logc;
    la_index i;
    h = 0.5 * scale * ss;
    logc = kind == LA_PERF_HYPERBOLIC ? -0.5 * log(2.0 * (double)r)
                                      : -0.5 * log((double)r);
    for (i = 0; i < r; i++) {
        const double u = rs * LA_FN(rf_dot)(W + i * w_rs, w_cs, x, xs, d);
        if (kind == LA_PERF_RELU) {
            y[i] = (LA_T)((u > 0 ? u : 0.0) * exp(logc) + LA_PERF_RELU_EPS);
        }
        else if (kind == LA_PERF_HYPERBOLIC) {
            y[i] = (LA_T)(u - h + logc);
            y[r + i] = (LA_T)(-u - h + logc);
        }
        else {
            y[i] = (LA_T)(u - h + logc);
        }
    }
}

/* Outputs [i0, i0 + NB) of la_rf_project_row (NB <= 64; a constant keeps
 * the accumulators in registers): even and odd k in two chains, added at the
 * end. */
#define LA_RF_PROJECT_BLOCK(NB)                                                   \
    do {                                                                          \
        const la_index nb_ = (NB);                                                \
        LA_T acc[64], acc2[64];                                                   \
        for (i = 0; i < nb_; i++) {                                               \
            acc[i] = 0;                                                           \
            acc2[i] = 0;                                                          \
        }                                                                         \
        for (k = 0; k + 1 < d; k += 2) {                                          \
            const LA_T xk = x[k], xk2 = x[k + 1];                                 \
            const LA_T *LA_RESTRICT Wk = W + k * w_cs + i0;                       \
            const LA_T *LA_RESTRICT Wk2 = Wk + w_cs;                              \
            for (i = 0; i < nb_; i++) {                                           \
                acc[i] += xk * Wk[i];                                             \
                acc2[i] += xk2 * Wk2[i];                                          \
            }                                                                     \
        }                                                                         \
        if (k < d) {                                                              \
            const LA_T xk = x[k];                                                 \
            const LA_T *LA_RESTRICT Wk = W + k * w_cs + i0;                       \
            for (i = 0; i < nb_; i++) {                                           \
                acc[i] += xk * Wk[i];                                             \
            }                                                                     \
        }                                                                         \
        for (i = 0; i < nb_; i++) {                                               \
            u[i0 + i] = acc[i] + acc2[i];                                         \
        }                                                                         \
        i0 += nb_;                                                                \
    } while (0)

LA_TARGET_CLONES void
LA_FN(la_rf_project_row)(const LA_T *x, la_index d, const LA_T *W, la_index w_rs,
                         la_index w_cs, la_index r, LA_T *wt, LA_T *u)
{
    la_index i, k, i0 = 0;
    if (w_rs != 1) {
        for (i = 0; i < r; i++) {
            for (k = 0; k < d; k++) {
                wt[k * r + i] = W[i * w_rs + k * w_cs];
            }
        }
        W = wt;
        w_cs = r;
    }
    while (r - i0 >= 64) {
        LA_RF_PROJECT_BLOCK(64);
    }
    if (r - i0 >= 32) {
        LA_RF_PROJECT_BLOCK(32);
    }
    if (r - i0 >= 16) {
        LA_RF_PROJECT_BLOCK(16);
    }
    if (r > i0) {
        LA_RF_PROJECT_BLOCK(r - i0);
    }
}
#undef LA_RF_PROJECT_BLOCK

/* Scratch of the slice functions, carved in la_rf_work_size's order.  W is
 * copied into Wc only when neither of its axes is contiguous (see
 * rf_gemm_w). */
static la_index
LA_FN(rf_carve)(la_index t, la_index d, la_index r, const LA_T *W, la_index w_rs,
                la_index w_cs, void *work, LA_T **Wc, LA_T **Xs, LA_T **U, LA_T **L,
                double **h)
{
    const la_index B = la_block_rows(LA_RF_BLOCK, t);
    char *p = (char *)work;
    la_index i, j;
    *Wc = (LA_T *)la_carve(&p, (size_t)(r * d) * sizeof(LA_T));
    *Xs = (LA_T *)la_carve(&p, (size_t)(B * d) * sizeof(LA_T));
    *U = (LA_T *)la_carve(&p, (size_t)(B * r) * sizeof(LA_T));
    *L = (LA_T *)la_carve(&p, (size_t)(B * 2 * r) * sizeof(LA_T));
    *h = (double *)la_carve(&p, (size_t)B * sizeof(double));
    if (la_rf_w_inplace(d, r, w_rs, w_cs)) {
        return B;
    }
    for (i = 0; i < r; i++) {
        for (j = 0; j < d; j++) {
            (*Wc)[i * d + j] = W[i * w_rs + j * w_cs];
        }
    }
    return B;
}

/* U (n x r) = Xs (n x d) W^T: W read in place when one axis is contiguous
 * (the transposed projection the Python layer keeps: W^T as the product's
 * right operand as it is), else its copy Wc. */
static void
LA_FN(rf_gemm_w)(la_index n, la_index r, la_index d, const LA_T *Xs, const LA_T *W,
                 la_index w_rs, la_index w_cs, const LA_T *Wc, LA_T *U)
{
    if (la_rf_w_inplace(d, r, w_rs, w_cs) == 1) {
        LA_GEMM(0, 0, n, r, d, 1, Xs, d, W, w_cs, 0, U, r);
    }
    else if (la_rf_w_inplace(d, r, w_rs, w_cs) == 2) {
        LA_GEMM(0, 1, n, r, d, 1, Xs, d, W, w_rs, 0, U, r);
    }
    else {
        LA_GEMM(0, 1, n, r, d, 1, Xs, d, Wc, d, 0, U, r);
    }
}

/* y[i] = amp sin(u_i), y[r + i] = amp cos(u_i) (element stride ycs).  float32
 * (LA_RF_FAST_SINCOS): the vectorised la_sincos_red in double, libm for the
 * inputs outside its range; float64: libm. */
LA_TARGET_CLONES static void
LA_FN(rf_sincos_row)(const LA_T *U, la_index r, double amp, LA_T *y, la_index ycs)
{
    la_index i;
#if LA_RF_FAST_SINCOS
    if (ycs == 1) {
        LA_T *LA_RESTRICT ys = y, *LA_RESTRICT yc = y + r;
        int out = 0; /* some |u| beyond the reduction's range, or NaN */
        for (i = 0; i < r; i++) {
            double sn, cs;
            la_sincos_red((double)U[i], &sn, &cs);
            ys[i] = (LA_T)(amp * sn);
            yc[i] = (LA_T)(amp * cs);
            out |= !(fabs((double)U[i]) <= LA_SINCOS_MAX);
        }
        for (i = 0; out && i < r; i++) {
            if (!(fabs((double)U[i]) <= LA_SINCOS_MAX)) {
                ys[i] = (LA_T)(amp * sin((double)U[i]));
                yc[i] = (LA_T)(amp * cos((double)U[i]));
            }
        }
        return;
    }
#endif
    for (i = 0; i < r; i++) {
        const double u = (double)U[i];
        y[i * ycs] = (LA_T)(amp * sin(u));
        y[(r + i) * ycs] = (LA_T)(amp * cos(u));
    }
}

/* Blocks of rows: U = X W^T by one GEMM, then sin/cos. */
void
LA_FN(la_rfa_features)(la_index t, double scale, const LA_T *x, la_index x_rs,
                       la_index x_cs, la_index d, const LA_T *W, la_index w_rs,
                       la_index w_cs, la_index r, LA_T *y, la_index y_rs,
                       la_index y_cs, void *work)
{
    const double amp = r > 0 ? sqrt(1.0 / (double)r) : 0.0; /* sqrt(2/F) */
    LA_T *Wc, *Xs, *U, *L;
    double *h;
    la_index B, t0, rr, i;
    if (t == 1) {
        /* one token (a decoding step): no copy of W, no GEMM */
        char *p = (char *)work;
        LA_T *wt = (LA_T *)la_carve(&p, (size_t)(r * d) * sizeof(LA_T));
        const double ss = LA_FN(rf_dot)(x, x_cs, x, x_cs, d);
        const LA_T c = (LA_T)(sqrt(scale) / (sqrt(ss) + LA_RFA_NORM_EPS));
        Xs = (LA_T *)la_carve(&p, (size_t)d * sizeof(LA_T));
        U = (LA_T *)la_carve(&p, (size_t)r * sizeof(LA_T));
        for (i = 0; i < d; i++) {
            Xs[i] = c * x[i * x_cs];
        }
        LA_FN(la_rf_project_row)(Xs, d, W, w_rs, w_cs, r, wt, U);
        LA_FN(rf_sincos_row)(U, r, amp, y, y_cs);
        return;
    }
    B = LA_FN(rf_carve)(t, d, r, W, w_rs, w_cs, work, &Wc, &Xs, &U, &L, &h);
    for (t0 = 0; t0 < t; t0 += B) {
        const la_index n = t - t0 < B ? t - t0 : B;
        for (rr = 0; rr < n; rr++) {
            const LA_T *xr = x + (t0 + rr) * x_rs;
            const double ss = LA_FN(rf_dot)(xr, x_cs, xr, x_cs, d);
            const LA_T c = (LA_T)(sqrt(scale) / (sqrt(ss) + LA_RFA_NORM_EPS));
            for (i = 0; i < d; i++) {
                Xs[rr * d + i] = c * xr[i * x_cs];
            }
        }
        LA_FN(rf_gemm_w)(n, r, d, Xs, W, w_rs, w_cs, Wc, U);
        for (rr = 0; rr < n; rr++) {
            LA_FN(rf_sincos_row)(U + rr * r, r, amp, y + (t0 + rr) * y_rs, y_cs);
        }
    }
}

void
LA_FN(la_performer_features)(la_index t, int kind, int shift, int log_out,
                             double scale, double eps, const LA_T *x,
                             la_index x_rs, la_index x_cs, la_index d,
                             const LA_T *W, la_index w_rs, la_index w_cs,
                             la_index r, LA_T *y, la_index y_rs, la_index y_cs,
                             void *work)
{
    const la_index f = kind == LA_PERF_HYPERBOLIC ? 2 * r : r;
    const double logc = -0.5 * log((double)f);
    const double cc = exp(logc), ce = eps * cc;
    const LA_T sq = (LA_T)sqrt(scale);
    double gmax = -HUGE_VAL;
    LA_T *Wc, *Xs, *U, *L;
    double *h;
    const la_index B = LA_FN(rf_carve)(t, d, r, W, w_rs, w_cs, work, &Wc, &Xs, &U, &L, &h);
    la_index t0, rr, i, j;
    for (t0 = 0; t0 < t; t0 += B) {
        const la_index n = t - t0 < B ? t - t0 : B;
        for (rr = 0; rr < n; rr++) {
            const LA_T *xr = x + (t0 + rr) * x_rs;
            for (i = 0; i < d; i++) {
                Xs[rr * d + i] = sq * xr[i * x_cs];
            }
            h[rr] = 0.5 * LA_FN(rf_dot)(Xs + rr * d, 1, Xs + rr * d, 1, d) - logc;
        }
        LA_FN(rf_gemm_w)(n, r, d, Xs, W, w_rs, w_cs, Wc, U);
        for (rr = 0; rr < n; rr++) {
            const LA_T *Ur = U + rr * r;
            LA_T *Lr = L + rr * f;
            LA_T *yr = y + (t0 + rr) * y_rs;
            LA_T s = 0;
            if (kind == LA_PERF_RELU) {
                for (i = 0; i < r; i++) {
                    yr[i * y_cs] = (LA_T)((Ur[i] > 0 ? (double)Ur[i] : 0.0) * cc +
                                          LA_PERF_RELU_EPS);
                }
                continue;
            }
            for (i = 0; i < r; i++) {
                Lr[i] = (LA_T)((double)Ur[i] - h[rr]);
                if (kind == LA_PERF_HYPERBOLIC) {
                    Lr[r + i] = (LA_T)(-(double)Ur[i] - h[rr]);
                }
            }
            /* The published stabiliser (performer-pytorch, google-research)
             * subtracts the maximum of the projections u (not of u - h):
             * c (exp(u - h - max u) + eps).  With l = u - h + log c stored in
             * Lr and h[rr] = h - log c, u = Lr + h[rr]. */
            if (shift == 2) {
                for (j = 0; j < f; j++) {
                    const double uj = (double)Lr[j] + h[rr];
                    yr[j * y_cs] = Lr[j];
                    gmax = uj > gmax ? uj : gmax;
                }
                continue;
            }
            if (shift == 1 && f > 0) {
                LA_T mx = Lr[0];
                for (j = 1; j < f; j++) {
                    mx = Lr[j] > mx ? Lr[j] : mx;
                }
                s = (LA_T)((double)mx + h[rr]);
            }
            for (j = 0; j < f; j++) {
                yr[j * y_cs] = log_out ? Lr[j] - s : (LA_T)(LA_EXP(Lr[j] - s) + ce);
            }
        }
    }
    if (kind == LA_PERF_RELU || shift != 2 || t == 0 || f == 0) {
        return;
    }
    {
        const LA_T s = (LA_T)gmax;
        for (i = 0; i < t; i++) {
            LA_T *yi = y + i * y_rs;
            for (j = 0; j < f; j++) {
                const LA_T l = yi[j * y_cs];
                yi[j * y_cs] = log_out ? l - s : (LA_T)(LA_EXP(l - s) + ce);
            }
        }
    }
}
