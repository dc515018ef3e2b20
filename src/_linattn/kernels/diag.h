/*
 * diag.h -- TransNormer's DiagAttention (docs/design/kinds.md §6.2): softmax (T2) or
 * ReLU-then-norm (T1) attention restricted to non-overlapping blocks of w
 * tokens aligned to absolute positions (block floor(p / w)).
 *
 *   l_ts  = scale q_t . k_s                 for s in the block of t
 *                                           (and s <= t when causal)
 *   T2:   o_t = sum_s softmax_s(l_ts) v_s               (normalize ignored)
 *   T1:   o_t = norm( sum_s relu(l_ts) v_s )            norm: none | rms + eps
 *
 * Causal: queries and keys share positions t0 .. t0+t-1; the c = t0 mod w
 * cached keys / values (kc, vc) of the current block come first (positions
 * t0-c .. t0-1).  Non-causal: positions from 0, no cache, s != t allowed
 * (query block b meets key block b).  Block-wise quadratic: two GEMMs per
 * block, O(w (d + e)) per token.
 */
#ifndef LA_DIAG_H
#define LA_DIAG_H

#include "la_common.h"

typedef enum { LA_DIAG_SOFTMAX = 0, LA_DIAG_RELU = 1 } la_diag_variant;

typedef struct {
    la_index t, s, d, e, c; /* queries, keys, features, values, cached rows */
    la_index w;             /* block size >= 1 */
    la_index t0;            /* absolute position of the first query (causal) */
    const void *q, *k, *v, *kc, *vc;
    void *o;
    /* element strides: row, column */
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, kc_rs, kc_cs, vc_rs, vc_cs;
    la_index o_rs, o_cs;
    double scale, eps;
    int causal, variant, norm; /* norm: LA_NORM_NONE or LA_NORM_RMS (linear.h) */
} la_diag_args;

size_t la_diag_work_size(const la_diag_args *a, size_t itemsize);
la_status la_diag_f32(const la_diag_args *a, void *work);
la_status la_diag_f64(const la_diag_args *a, void *work);

#endif
