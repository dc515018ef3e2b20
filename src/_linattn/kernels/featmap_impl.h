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
