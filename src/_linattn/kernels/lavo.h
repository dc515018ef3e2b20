/*
 * lavo.h -- LAVO-R v1 (docs/design/lavo.md): orthogonal memory + local window,
 * read by one joint softmax.  Per (batch, head), 1-based absolute positions t.
 *
 *   c_j = B x_j (r coefficients),  S_t = sum_{j <= m_t} c_j (float64),  h_t = S_t / m_t
 *   memory logits  a_ti = scale * h_ti * (b_i . q_t) + mb[i]      (left out when m_t = 0)
 *   local logits   l_tj = scale * q_t . x_j + pb[t - j],  j in [lo_t, t]
 *   o_t = ( sum_i e^{a_ti - M} hv_ti b_i + sum_j e^{l_tj - M} v_j ) / Z
 *
 * lo_t: sliding max(1, t-w+1); block floor((t-1)/w)*w + 1; no local branch when w = 0.
 * m_t : t ("all") or lo_t - 1 ("before_local"; t when w = 0).
 * Without separate values v_j = x_j and hv = h; with them hv is the mean of B v_j.
 *
 * Causal forms: recurrent (token by token, (3r + 2w) d MACs per token) and chunked
 * (per chunk: G = Q B^T, coefficients of the rows entering memory, banded local
 * logits Q Xw^T, output (P_A . H) B + P_L Xw: all GEMMs).  The carried state is
 * sums (r) and value sums (r) in float64 and a ring of the last w rows, newest in
 * row w-1 (rows before the start of the sequence are zero).  Without separate
 * values the value sums and ring are neither read nor written.
 *
 * The recurrent form computes in the kernel's dtype except the sums, the
 * logits and Z (float64): products B x, B q and q . x_j and the weighted sums on
 * contiguous rows (the rings and bases read where they are), each in an order
 * fixed by the sizes; float32 weights by la_exp_sm_f32.
 *
 * Non-causal (self, t == s): h = mean over all keys ("all") or over the keys outside
 * the window |t - j| <= w ("before_local"); pb indexed by (t - j) + w, length 2w+1.
 * Cross-attention (t != s) needs w = 0.
 */
#ifndef LA_LAVO_H
#define LA_LAVO_H

#include "la_common.h"

#define LA_LAVO_BLOCK 1        /* window_mode="block" */
#define LA_LAVO_BEFORE_LOCAL 2 /* memory_scope="before_local" */
#define LA_LAVO_SEPARATE_V 4   /* v is not k: E == d, value sums and value ring */
#define LA_LAVO_RECURRENT 8    /* token-by-token form (else chunked) */

typedef struct {
    la_index t, s, d, e, r, w; /* queries, keys, features, values, slots, window */
    la_index pos;              /* tokens consumed before this call (causal) */
    la_index chunk;
    const void *q, *k, *v, *bases;
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, b_rs, b_cs;
    const double *pb, *mb;     /* (w) causal / (2w+1) non-causal; (r) */
    la_index pb_s, mb_s;
    const double *sums0, *vsums0; /* (r) */
    la_index s0_s, vs0_s;
    const void *ring_k0, *ring_v0; /* (w,d), (w,e) */
    la_index rk0_rs, rk0_cs, rv0_rs, rv0_cs;
    void *o;
    la_index o_rs, o_cs;
    double *sums1, *vsums1;
    la_index s1_s, vs1_s;
    void *ring_k1, *ring_v1;
    la_index rk1_rs, rk1_cs, rv1_rs, rv1_cs;
    double scale;
    int flags;
    /* optional, recurrent form: the bases transposed (d x r, dense), when one
     * set of bases serves every item of a call (NULL: each item transposes) */
    const void *bases_t;
} la_lavo_args;

size_t la_lavo_causal_work_size(const la_lavo_args *a, size_t itemsize);
la_status la_lavo_causal_f32(const la_lavo_args *a, void *work);
la_status la_lavo_causal_f64(const la_lavo_args *a, void *work);

size_t la_lavo_noncausal_work_size(const la_lavo_args *a, size_t itemsize);
la_status la_lavo_noncausal_f32(const la_lavo_args *a, void *work);
la_status la_lavo_noncausal_f64(const la_lavo_args *a, void *work);

/* Window start and memory count at absolute position t (0 for t <= 0). */
static inline la_index
la_lavo_lo(la_index t, la_index w, int flags)
{
    if (w == 0) {
        return t + 1;
    }
    if (flags & LA_LAVO_BLOCK) {
        return ((t - 1) / w) * w + 1;
    }
    return t - w + 1 < 1 ? 1 : t - w + 1;
}

static inline la_index
la_lavo_mem(la_index t, la_index w, int flags)
{
    if (t <= 0) {
        return 0;
    }
    return (flags & LA_LAVO_BEFORE_LOCAL) ? la_lavo_lo(t, w, flags) - 1 : t;
}

#endif
