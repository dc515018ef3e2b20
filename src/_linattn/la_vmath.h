/*
 * la_vmath.h -- vectorisable exp for the hot loops (feature maps, decay masks,
 * softmax rows).  Written so GCC auto-vectorises it in each LA_TARGET_CLONES
 * clone; libm's scalar exp would dominate the elu+1 and Performer maps.
 *
 * Accuracy: float32 <= 2 ulp, float64 <= 2 ulp over the normal range; results
 * below the smallest normal flush to 0; overflow gives +inf; NaN propagates.
 * y may alias x.
 */
#ifndef LA_VMATH_H
#define LA_VMATH_H

#include "la_common.h"

void la_vexp_f32(la_index n, const float *x, float *y);
void la_vexp_f64(la_index n, const double *x, double *y);

#endif
