/*
 * diag_bwd.h -- backward of TransNormer's DiagAttention (kernels/diag.h),
 * docs/design/grad.md §3 "TransNormer".  Per block (the forward's blocks:
 * queries of one block of w absolute positions, keys of the same block, the
 * c cached rows first when causal), with Z = scale Q K^T on the mask:
 *
 *   T2 (softmax):  P = softmax(Z) row-wise     D_t = do_t . o_t = (P o dP) 1
 *                  dV = P^T dO   dP = dO V^T   dZ = P o (dP - D 1^T)
 *   T1 (ReLU):     R = relu(Z)   num = R V     dnum = the norm's backward of
 *                  do (rms: (do - c num) / rho, c = do.num / (e r rho),
 *                  c = 0 where r = 0; none: do)
 *                  dV = R^T dnum   dZ = (dnum V^T) o [Z > 0]
 *   both:          dQ = scale dZ K   dK = scale dZ^T Q
 *
 * Nothing is saved by the forward: each block's scores, its softmax (or
 * ReLU) are recomputed (T1 with the norm also its numerator), then four
 * GEMMs.  Cached rows get their gradients in dkc, dvc; key rows no
 * query block meets (non-causal, s > t) get 0.  O(w (d + e)) per token.
 */
#ifndef LA_DIAG_BWD_H
#define LA_DIAG_BWD_H

#include "la_common.h"

typedef struct {
    la_index t, s, d, e, c; /* queries, keys, features, values, cached rows */
    la_index w;             /* block size >= 1 */
    const void *q, *k, *v, *kc, *vc, *dout;
    void *dq, *dk, *dv, *dkc, *dvc;
    /* element strides: row, column */
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, kc_rs, kc_cs, vc_rs, vc_cs;
    la_index do_rs, do_cs, dq_rs, dq_cs, dk_rs, dk_cs, dv_rs, dv_cs;
    la_index dkc_rs, dkc_cs, dvc_rs, dvc_cs;
    double scale, eps;
    int causal, variant, norm; /* as la_diag_args */
    const volatile int *cancel;
} la_diag_bwd_args;

size_t la_diag_bwd_work_size(const la_diag_bwd_args *a, size_t itemsize);
la_status la_diag_bwd_f32(const la_diag_bwd_args *a, void *work);
la_status la_diag_bwd_f64(const la_diag_bwd_args *a, void *work);

#endif
