/* featmap_impl.h: included once per dtype by featmap.c -- no include guard. */

void
LA_FN(la_featmap_row)(int fmap, double scale_d, const LA_T *x, la_index xs,
                      la_index n, LA_T *y)
{
    const LA_T scale = (LA_T)scale_d;
    la_index j;
    switch (fmap) {
    case LA_FMAP_ELU1:
        for (j = 0; j < n; j++) {
            LA_T u = scale * x[j * xs];
            y[j] = u > 0 ? u + (LA_T)1 : LA_EXP(u);
        }
        break;
    case LA_FMAP_RELU:
        for (j = 0; j < n; j++) {
            LA_T u = scale * x[j * xs];
            y[j] = u > 0 ? u : (LA_T)0;
        }
        break;
    case LA_FMAP_ELU:
        for (j = 0; j < n; j++) {
            LA_T u = scale * x[j * xs];
            y[j] = u > 0 ? u : LA_EXP(u) - (LA_T)1;
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

void
LA_FN(la_rfa_row)(double scale, const LA_T *x, la_index xs, la_index d,
                  const LA_T *W, la_index w_rs, la_index w_cs, la_index r,
                  LA_T *y)
{
    const double amp = r > 0 ? sqrt(2.0 / (double)(2 * r)) : 0.0;
    double ss = 0, c;
    la_index i, j;
    for (j = 0; j < d; j++) {
        ss += (double)x[j * xs] * (double)x[j * xs];
    }
    /* u = sqrt(scale) W x / (|x| + 1e-3) */
    c = sqrt(scale) / (sqrt(ss) + LA_RFA_NORM_EPS);
    for (i = 0; i < r; i++) {
        const LA_T *Wi = W + i * w_rs;
        double u = 0;
        for (j = 0; j < d; j++) {
            u += (double)Wi[j * w_cs] * (double)x[j * xs];
        }
        u *= c;
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
    double ss = 0, h, logc;
    la_index i, j;
    for (j = 0; j < d; j++) {
        ss += (double)x[j * xs] * (double)x[j * xs];
    }
    h = 0.5 * scale * ss;
    logc = kind == LA_PERF_HYPERBOLIC ? -0.5 * log(2.0 * (double)r)
                                      : -0.5 * log((double)r);
    for (i = 0; i < r; i++) {
        const LA_T *Wi = W + i * w_rs;
        double u = 0;
        for (j = 0; j < d; j++) {
            u += (double)Wi[j * w_cs] * (double)x[j * xs];
        }
        u *= rs;
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

/* tmp: F values of scratch. */
void
LA_FN(la_rfa_features)(la_index t, double scale, const LA_T *x, la_index x_rs,
                       la_index x_cs, la_index d, const LA_T *W, la_index w_rs,
                       la_index w_cs, la_index r, LA_T *y, la_index y_rs,
                       la_index y_cs, LA_T *tmp)
{
    la_index i, j;
    for (i = 0; i < t; i++) {
        LA_FN(la_rfa_row)(scale, x + i * x_rs, x_cs, d, W, w_rs, w_cs, r, tmp);
        for (j = 0; j < 2 * r; j++) {
            y[i * y_rs + j * y_cs] = tmp[j];
        }
    }
}

/* tmp: F values of scratch. */
void
LA_FN(la_performer_features)(la_index t, int kind, int shift, int log_out,
                             double scale, double eps, const LA_T *x,
                             la_index x_rs, la_index x_cs, la_index d,
                             const LA_T *W, la_index w_rs, la_index w_cs,
                             la_index r, LA_T *y, la_index y_rs, la_index y_cs,
                             LA_T *tmp)
{
    const la_index f = kind == LA_PERF_HYPERBOLIC ? 2 * r : r;
    const double logc = -0.5 * log((double)f);
    const double ce = eps * exp(logc);
    double gmax = -HUGE_VAL;
    la_index i, j;
    for (i = 0; i < t; i++) {
        LA_T *yi = y + i * y_rs;
        LA_FN(la_performer_logrow)(kind, scale, x + i * x_rs, x_cs, d, W, w_rs,
                                   w_cs, r, tmp);
        if (kind == LA_PERF_RELU || shift == 2) {
            for (j = 0; j < f; j++) {
                yi[j * y_cs] = tmp[j];
                if ((double)tmp[j] > gmax) {
                    gmax = (double)tmp[j];
                }
            }
            continue;
        }
        {
            /* s = max_i (u_i - h) = max_i l_i - logc */
            LA_T s = 0;
            if (shift == 1 && f > 0) {
                LA_T mx = tmp[0];
                for (j = 1; j < f; j++) {
                    mx = tmp[j] > mx ? tmp[j] : mx;
                }
                s = (LA_T)((double)mx - logc);
            }
            for (j = 0; j < f; j++) {
                yi[j * y_cs] = log_out ? tmp[j] - s
                                       : (LA_T)(LA_EXP(tmp[j] - s) + ce);
            }
        }
    }
    if (kind == LA_PERF_RELU || shift != 2 || t == 0 || f == 0) {
        return;
    }
    {
        const LA_T s = (LA_T)(gmax - logc);
        for (i = 0; i < t; i++) {
            LA_T *yi = y + i * y_rs;
            for (j = 0; j < f; j++) {
                const LA_T l = yi[j * y_cs];
                yi[j * y_cs] = log_out ? l - s : (LA_T)(LA_EXP(l - s) + ce);
            }
        }
    }
}
