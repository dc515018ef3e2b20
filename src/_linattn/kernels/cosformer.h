/*
 * cosformer.h -- cosFormer's position-dependent feature map
 * (docs/design/kinds.md §8.1).
 *
 *   theta_i   = pi i / (2 M)                      i = 1-based absolute position
 *   phi(x, i) = [relu(scale x) sin theta_i ; relu(scale x) cos theta_i]  (2d)
 *
 * so that phi(q, i) . phi(k, j) = relu(q).relu(k) cos((pi/2)(i - j)/M) exactly.
 * Row r of a call has position i = t0 + r + 1 (t0: tokens consumed before, the
 * state's t when resuming).  sin/cos are computed once per position
 * (la_cosformer_angles) and shared by every (batch, head) slice.
 */
#ifndef LA_COSFORMER_H
#define LA_COSFORMER_H

#include "la_common.h"

/* sn[r] = sin(theta), cs[r] = cos(theta), theta = pi (t0 + r + 1) / (2 M). */
void la_cosformer_angles(la_index t0, la_index t, double horizon, double *sn,
                         double *cs);

typedef struct {
    la_index t, d;
    const void *x;     /* (t, d) */
    void *y;           /* (t, 2, d): y[r, 0, :] sin part, y[r, 1, :] cos part */
    la_index x_rs, x_cs, y_rs, y_ps, y_cs; /* element strides */
    const double *sn, *cs;                 /* (t) angles */
    double scale;
} la_cosformer_args;

la_status la_cosformer_features_f32(const la_cosformer_args *a);
la_status la_cosformer_features_f64(const la_cosformer_args *a);

#endif
