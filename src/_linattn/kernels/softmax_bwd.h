/*
 * softmax_bwd.h -- exact softmax attention with the log-sum-exp saved, and
 * its backward (FlashAttention's scheme: only lse_t is kept between the two;
 * the scores are recomputed per block of queries, never T x S at once).
 *
 * Forward: la_softmax (kernels/softmax.h) with its `lse` output set.
 *
 * Backward (la_softmax_bwd), docs/design/grad.md §3 "Exact softmax":
 *
 *   P_ts = exp(s q_t.k_s - lse_t) on the mask        D_t = do_t . o_t
 *   dV = P^T dO   dP = dO V^T   dZ = P o (dP - D 1^T)   dQ = s dZ K   dK = s dZ^T Q
 *
 * Blocks of `block` query rows: four GEMMs each; dK, dV accumulate in scratch.
 * Memory: O(S (d + e) + block S) per slice.
 */
#ifndef LA_SOFTMAX_BWD_H
#define LA_SOFTMAX_BWD_H

#include "la_common.h"

typedef struct {
    la_index t, s, d, e, block;
    const void *q, *k, *v, *o, *dout;
    const double *lse;
    void *dq, *dk, *dv;
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, o_rs, o_cs, do_rs, do_cs, lse_s;
    la_index dq_rs, dq_cs, dk_rs, dk_cs, dv_rs, dv_cs;
    double scale;
    int causal;
    const volatile int *cancel;
} la_softmax_bwd_args;

size_t la_softmax_bwd_work_size(const la_softmax_bwd_args *a, size_t itemsize);
la_status la_softmax_bwd_f32(const la_softmax_bwd_args *a, void *work);
la_status la_softmax_bwd_f64(const la_softmax_bwd_args *a, void *work);

#endif
