/*
 * softmax.h -- exact softmax attention, the quality baseline.
 *
 *   o_t = sum_{s in A(t)} exp(l_ts - m_t) v_s / sum_{s in A(t)} exp(l_ts - m_t)
 *   l_ts = scale * q_t . k_s,  m_t = max_{s in A(t)} l_ts
 *   A(t) = {s <= t} when causal (S == T), all keys otherwise.
 *
 * Row blocks of `block` queries: one GEMM for the logits, one for P V.  With
 * `lse` non-NULL the row's log-sum-exp lse_t = m_t + log sum_s exp(l_ts - m_t)
 * is stored too (float64, stride lse_s): what the backward needs.
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
} la_softmax_args;

size_t la_softmax_work_size(const la_softmax_args *a, size_t itemsize);
la_status la_softmax_f32(const la_softmax_args *a, void *work);
la_status la_softmax_f64(const la_softmax_args *a, void *work);

#endif
