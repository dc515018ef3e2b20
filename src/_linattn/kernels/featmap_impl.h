/* featmap_impl.h: included once per dtype by featmap.c -- no include guard. */

void
LA_FN(la_featmap_row)(int fmap, double scale_d, const LA_T *x, la_index xs,
                      la_index n, LA_T *y)
{
    const LA_T scale = (LA_T)scale_d;
    LA_T u[LA_FMAP_BLOCK], ex[LA_FMAP_BLOCK];
    la_index j0, j, nb;
    switch (fmap) {
    case LA_FMAP_ELU1:
    case LA_FMAP_ELU:
        /* blocks of u = scale * x, then one vectorised exp of min(u, 0) */
        for (j0 = 0; j0 < n; j0 += LA_FMAP_BLOCK) {
            nb = n - j0 < LA_FMAP_BLOCK ? n - j0 : LA_FMAP_BLOCK;
            for (j = 0; j < nb; j++) {
                u[j] = scale * x[(j0 + j) * xs];
                ex[j] = u[j] > 0 ? (LA_T)0 : u[j];
            }
            LA_VEXP(nb, ex, ex);
            if (fmap == LA_FMAP_ELU1) {
                for (j = 0; j < nb; j++) {
                    y[j0 + j] = u[j] > 0 ? u[j] + (LA_T)1 : ex[j];
                }
            }
            else {
                for (j = 0; j < nb; j++) {
                    y[j0 + j] = u[j] > 0 ? u[j] : ex[j] - (LA_T)1;
                }
            }
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
