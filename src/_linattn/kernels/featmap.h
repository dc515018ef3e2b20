/*
 * featmap.h -- elementwise feature maps phi applied per token (family.md 2.2).
 *
 *   identity  phi(x) = x
 *   elu1      phi(x) = x + 1 (x > 0),  exp(x) (x <= 0)      (Katharopoulos et al.)
 *   relu      phi(x) = max(x, 0)
 *   elu       phi(x) = x (x > 0),      exp(x) - 1 (x <= 0)  (TransNormer T1)
 *
 * Every map is applied to scale * x.  Rows are (n,) vectors with an element
 * stride; the output row is contiguous.
 */
#ifndef LA_FEATMAP_H
#define LA_FEATMAP_H

#include "la_common.h"

typedef enum {
    LA_FMAP_IDENTITY = 0,
    LA_FMAP_ELU1 = 1,
    LA_FMAP_RELU = 2,
    LA_FMAP_ELU = 3
} la_fmap;

#define LA_FMAP_COUNT 4

/* y[j] = phi(scale * x[j * xs]), j < n. */
void la_featmap_row_f32(int fmap, double scale, const float *x, la_index xs,
                        la_index n, float *y);
void la_featmap_row_f64(int fmap, double scale, const double *x, la_index xs,
                        la_index n, double *y);

#endif
