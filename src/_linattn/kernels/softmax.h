/*
 * softmax.h -- exact softmax attention, the quality baseline.
 *
 *   o_t = sum_{s in A(t)} exp(l_ts - m_t) v_s / sum_{s in A(t)} exp(l_ts - m_t)
 *   l_ts = scale * q_t . k_s,  m_t = max_{s in A(t)} l_ts
 *   A(t) = {s <= t} when causal (S == T), all keys otherwise.
 *
 * FlashAttention's blocking: tiles of `block` queries x LA_SOFTMAX_KBLOCK
 * keys, one GEMM for the logits and one for P V per tile, a running row
 * maximum m_t and sum (the O rows rescaled by exp(m_old - m_new) when the
 * maximum grows); causal skips the tiles above the diagonal and masks only
 * those that cross it.  Memory: O(S (d + e) + block (key block + e)) per call,
 * never T x S.  With `lse` non-NULL the row's log-sum-exp
 * lse_t = m_t + log sum_s exp(l_ts - m_t) is stored too (float64, stride
 * lse_s): what the backward needs.
 *
 * part / nparts (0 / 0: the whole slice): compute only the query blocks
 * b = part, part + nparts, ... (b counted in `block`s), so that several
 * threads share one slice; each block's result does not depend on the split.
 */
#ifndef LA_SOFTMAX_H
#define LA_SOFTMAX_H

#include "la_common.h"

typedef struct {
    la_index t, s, d, e, block;
    const void *q, *k, *v;
    void *o;
    double *lse; /* NULL: not stored */
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, o_rs, o_cs, lse_s;
    double scale;
    int causal;
    const volatile int *cancel; /* polled between row blocks; NULL: never */
    la_index part, nparts;
    la_index kblock; /* keys per tile; < 1: LA_SOFTMAX_KBLOCK */
} la_softmax_args;

/* Keys per tile by default: the products stay within the register-tile GEMM's
 * range. */
#define LA_SOFTMAX_KBLOCK 256
#define LA_SOFTMAX_KB(kblock) ((kblock) < 1 ? (la_index)LA_SOFTMAX_KBLOCK : (kblock))

/* The query block the kernel uses (block clipped to [1, t]). */
la_index la_softmax_qblock(const la_softmax_args *a);

size_t la_softmax_work_size(const la_softmax_args *a, size_t itemsize);
la_status la_softmax_f32(const la_softmax_args *a, void *work);
la_status la_softmax_f64(const la_softmax_args *a, void *work);

#endif
