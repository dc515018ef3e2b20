#include "la_vmath.h"

LA_TARGET_CLONES void
la_vexp_f32(la_index n, const float *x, float *y)
{
    la_index i;
    for (i = 0; i < n; i++) {
        y[i] = la_exp_f32(x[i]);
    }
}

LA_TARGET_CLONES void
la_vexp_f64(la_index n, const double *x, double *y)
{
    la_index i;
    for (i = 0; i < n; i++) {
        y[i] = la_exp_f64(x[i]);
    }
}
