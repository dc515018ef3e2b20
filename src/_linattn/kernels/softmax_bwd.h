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
 * Tiles of `block` queries x LA_SOFTMAX_KBLOCK keys (the forward's), five
 * GEMMs each (scores, dP, dV, dQ, dK); causal skips the tiles above the
 * diagonal and masks only those that cross it.  dK, dV accumulate in scratch,
 * dQ per query block.  Memory: O(S (d + e) + block (key block + d + e)) per
 * slice, never T x S.
 */
#ifndef LA_SOFTMAX_BWD_H
#define LA_SOFTMAX_BWD_H

#include "la_common.h"
#include "softmax.h" /* LA_SOFTMAX_KBLOCK */

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
    la_index kblock; /* keys per tile; < 1: LA_SOFTMAX_KBLOCK */
    int mode;        /* LA_SOFTMAX_BWD_ALL / _DKV / _DQ */
    la_index part, nparts;
} la_softmax_bwd_args;

/*
 * mode: what one call computes.  ALL: dq, dk, dv of the slice in one pass.
 * Split over threads (part / nparts; 0 / 0 = one part): DKV computes the dk,
 * dv rows of the key blocks kb = part, part + nparts, ... (kb counted in key
 * tiles), DQ the dq rows of the query blocks b = part, part + nparts, ...;
 * the two together recompute the scores twice (7 GEMMs per tile instead of 5)
 * but each output row is computed by exactly the operations of ALL, so the
 * results do not depend on the split.
 */
enum { LA_SOFTMAX_BWD_ALL = 0, LA_SOFTMAX_BWD_DKV = 1, LA_SOFTMAX_BWD_DQ = 2 };

/* The query block the kernel uses (block clipped to [1, t]). */
la_index la_softmax_bwd_qblock(const la_softmax_bwd_args *a);
size_t la_softmax_bwd_work_size(const la_softmax_bwd_args *a, size_t itemsize);
la_status la_softmax_bwd_f32(const la_softmax_bwd_args *a, void *work);
la_status la_softmax_bwd_f64(const la_softmax_bwd_args *a, void *work);

#endif
