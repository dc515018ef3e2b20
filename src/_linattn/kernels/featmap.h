/*
 * featmap.h -- elementwise feature maps phi applied per token
 * (docs/design/family.md §2.2).
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

/*
 * Random-feature maps (docs/design/kinds.md §4 and §5): one row x (d, element
 * stride xs) and a projection W (r x d, element strides w_rs, w_cs).
 *
 *   rfa        xh = x / (|x| + 1e-3),  u = sqrt(scale) W xh,
 *              y = sqrt(2/F) [sin u ; cos u]                           F = 2r
 *   performer  x' = sqrt(scale) x,  h = |x'|^2 / 2,  u = W x'
 *     positive    l = u - h - log(sqrt(r))                             F = r
 *     hyperbolic  l = [u - h ; -u - h] - log(sqrt(2r))                  F = 2r
 *     relu        y = max(u, 0) / sqrt(r) + 1e-3  (features, not logs)  F = r
 *
 * la_performer_logrow writes the log-features l (the true features are
 * exp(l)); for "relu" it writes the features themselves.  The output row is
 * contiguous.
 */
typedef enum {
    LA_PERF_POSITIVE = 0,
    LA_PERF_HYPERBOLIC = 1,
    LA_PERF_RELU = 2
} la_perf_kind;

#define LA_RFA_NORM_EPS 1e-3
#define LA_PERF_RELU_EPS 1e-3

void la_rfa_row_f32(double scale, const float *x, la_index xs, la_index d,
                    const float *W, la_index w_rs, la_index w_cs, la_index r,
                    float *y);
void la_rfa_row_f64(double scale, const double *x, la_index xs, la_index d,
                    const double *W, la_index w_rs, la_index w_cs, la_index r,
                    double *y);
void la_performer_logrow_f32(int kind, double scale, const float *x, la_index xs,
                             la_index d, const float *W, la_index w_rs,
                             la_index w_cs, la_index r, float *y);
void la_performer_logrow_f64(int kind, double scale, const double *x,
                             la_index xs, la_index d, const double *W,
                             la_index w_rs, la_index w_cs, la_index r,
                             double *y);

/*
 * One token's projection (the decoding step's path: docs/design/kinds.md §4.1
 * and §5, its targets docs/design/performance.md §3):
 * u[i] = sum_k x[k] W[i, k] for i < r, in an order fixed by d alone (even
 * and odd k summed apart), so the bits do not depend on W's layout.  W (r x d)
 * has element strides w_rs, w_cs; with w_rs == 1 (a transposed projection, as
 * la.Decoder keeps it) its columns are read in place and the loop runs over i
 * in vectors, else W is first copied transposed into wt (r * d scratch).
 */
void la_rf_project_row_f32(const float *x, la_index d, const float *W, la_index w_rs,
                           la_index w_cs, la_index r, float *wt, float *u);
void la_rf_project_row_f64(const double *x, la_index d, const double *W, la_index w_rs,
                           la_index w_cs, la_index r, double *wt, double *u);

/*
 * How the block kernels use a projection W (r x d, element strides w_rs,
 * w_cs) in their product U = X W^T: 1 when W^T is a row-major (d x r) matrix
 * as it stands (w_rs == 1: the transposed projection the Python layer keeps),
 * 2 when W is row-major (w_cs == 1), 0 when it must be copied first.
 */
static inline int
la_rf_w_inplace(la_index d, la_index r, la_index w_rs, la_index w_cs)
{
    if (w_rs == 1 && w_cs >= (r > 1 ? r : 1) && d > 0) {
        return 1;
    }
    if (w_cs == 1 && w_rs >= (d > 1 ? d : 1) && r > 0) {
        return 2;
    }
    return 0;
}

/* Rows per block of the slice functions; their scratch in bytes. */
#define LA_RF_BLOCK 64
size_t la_rf_work_size(la_index t, la_index d, la_index r, size_t itemsize);

/*
 * Whole slices (t rows of x (d) -> t rows of y (F)), output strides y_rs, y_cs:
 *
 *   la_rfa_features        y_t = rfa(x_t)                              F = 2r
 *   la_performer_features  y_t = exp(l_t - s) + eps/sqrt(r')  (r' = r, or 2r
 *                          for hyperbolic), i.e. c (exp(u - h - s) + eps)
 *                          with the published constant c; s = 0 (shift 0),
 *                          the row max of the projections u (shift 1, the
 *                          query stabiliser) or their max over the whole slice
 *                          (shift 2, the published key stabiliser).  With
 *                          `log`, y = l - s instead (no eps).  relu ignores
 *                          shift, eps and log.
 */
void la_rfa_features_f32(la_index t, double scale, const float *x, la_index x_rs,
                         la_index x_cs, la_index d, const float *W, la_index w_rs,
                         la_index w_cs, la_index r, float *y, la_index y_rs,
                         la_index y_cs, void *work);
void la_rfa_features_f64(la_index t, double scale, const double *x,
                         la_index x_rs, la_index x_cs, la_index d,
                         const double *W, la_index w_rs, la_index w_cs,
                         la_index r, double *y, la_index y_rs, la_index y_cs,
                         void *work);
void la_performer_features_f32(la_index t, int kind, int shift, int log_out,
                               double scale, double eps, const float *x,
                               la_index x_rs, la_index x_cs, la_index d,
                               const float *W, la_index w_rs, la_index w_cs,
                               la_index r, float *y, la_index y_rs,
                               la_index y_cs, void *work);
void la_performer_features_f64(la_index t, int kind, int shift, int log_out,
                               double scale, double eps, const double *x,
                               la_index x_rs, la_index x_cs, la_index d,
                               const double *W, la_index w_rs, la_index w_cs,
                               la_index r, double *y, la_index y_rs,
                               la_index y_cs, void *work);

#endif
