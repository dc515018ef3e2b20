/*
 * sscan.h -- Mamba-1's selective scan (S6), one (batch, channel) slice per
 * call, as mamba_ssm's selective_scan_ref (docs/design/kinds.md §10.2):
 *
 *   dt_t     = delta_t + delta_bias;  dt_t = softplus(dt_t) if requested
 *              (stable: max(x, 0) + log1p(exp(-|x|)))
 *   h_t[n]   = exp(dt_t A[n]) h_{t-1}[n] + dt_t B[n, t] u_t        h_{-1} = h0
 *   y_t      = sum_n C[n, t] h_t[n] + D u_t
 *   out_t    = y_t * z_t sigmoid(z_t)                 (when z is given)
 *
 * A per-feature (vector) decay: the pairwise form is not a GEMM, so this is
 * the recurrent scan (docs/design/family.md §4.3 rule 5).  B and C are (n, l) with any
 * strides (stride 0 on l for time-invariant B / C).  Scratch: la_sscan_work_size.
 */
#ifndef LA_SSCAN_H
#define LA_SSCAN_H

#include "la_common.h"

typedef struct {
    la_index l, n;
    const void *u, *delta, *A, *B, *C, *z, *h0;
    void *out, *h1;
    /* element strides */
    la_index u_s, dl_s, A_s, B_ns, B_ls, C_ns, C_ls, z_s, h0_s, out_s, h1_s;
    double D, delta_bias;
    int softplus, has_z;
} la_sscan_args;

size_t la_sscan_work_size(const la_sscan_args *a, size_t itemsize);
la_status la_sscan_f32(const la_sscan_args *a, void *work);
la_status la_sscan_f64(const la_sscan_args *a, void *work);

#endif
