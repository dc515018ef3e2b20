/*
 * linear.h -- the generic linear-attention operator (docs/design/family.md), one
 * (batch, head) slice per call, in four forms.
 *
 *   qf_t = phi(scale * q_t),  kf_s = phi(k_s)                  (F features)
 *   w(t,s) = exp(G_t - G_s),  G_t = sum_{r<=t} g_r             (g = log-decay <= 0)
 *   num_t = sum_{s<=t} w(t,s) (qf_t . kf_s) v_s  + exp(G_t) S0^T qf_t
 *   den_t = sum_{s<=t} w(t,s) (qf_t . kf_s)      + exp(G_t) z0 . qf_t
 *   o_t = num_t / guard(den_t)            (norm = DIV; guard per eps_mode)
 *       = num_t                           (norm = NONE)
 *       = num_t / (rms(num_t) + eps)      (norm = RMS, TransNormer's norm)
 *
 * recurrent: S_t = a_t S_{t-1} + kf_t v_t^T, z_t = a_t z_{t-1} + kf_t, read out
 *            after the update (the sum is inclusive).
 * chunked:   intra-chunk (Q K^T o L) V plus inter-chunk exp(b) Q S, state
 *            S <- exp(beta) S + (exp(beta - b) K)^T V; three GEMMs per chunk,
 *            the decay mask built from differences of float64 cumulative sums;
 *            the state is carried in float64 across chunks (float32: the
 *            chunk products read a float32 copy).
 * parallel:  masked quadratic over row blocks (no state hand-off).
 * noncausal: S = Kf^T V, z = Kf^T 1, o_t = S^T qf_t / guard(z . qf_t); S != T
 *            allowed (cross-attention).
 *
 * Strides are in elements; any strides are accepted (rows are copied into
 * contiguous scratch per chunk).  Kernels allocate nothing: the caller passes
 * la_linear_work_size() bytes of scratch.  No threads inside.
 */
#ifndef LA_LINEAR_H
#define LA_LINEAR_H

#include "la_common.h"

typedef enum { LA_NORM_NONE = 0, LA_NORM_DIV = 1, LA_NORM_RMS = 2 } la_norm;
typedef enum {
    LA_EPS_ADD = 0,      /* num / (den + eps) */
    LA_EPS_CLAMP = 1,    /* num / max(den, eps) */
    LA_EPS_ABS_CLAMP = 2 /* num / max(|den|, eps) */
} la_eps_mode;

typedef enum {
    LA_FORM_RECURRENT = 0,
    LA_FORM_CHUNKED = 1,
    LA_FORM_PARALLEL = 2,
    LA_FORM_NONCAUSAL = 3,
    LA_FORM_CHUNK_ONE = 4 /* scratch of one chunk worker (sequence-parallel) */
} la_form;

typedef struct {
    la_index t;     /* query tokens */
    la_index s;     /* key tokens (== t when causal) */
    la_index f;     /* features after the map */
    la_index e;     /* value width */
    la_index chunk; /* chunk (or row-block) size, >= 1 */
    /* data */
    const void *q, *k, *v;
    const double *g; /* per-token log-decay, NULL when there is none */
    const void *s0, *z0; /* initial state (f, e) and (f); causal only */
    void *o, *s1, *z1;   /* output (t, e); final state; causal only.  The
                          * recurrent form accepts s1 == s0, z1 == z0 with
                          * equal strides (in-place update) */
    /* strides in elements: row, column */
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, o_rs, o_cs;
    la_index g_s; /* 0 for one decay per head */
    la_index s0_rs, s0_cs, z0_s, s1_rs, s1_cs, z1_s;
    /* options */
    double scale, eps;
    int fmap_q, fmap_k; /* la_fmap of featmap.h */
    int norm, eps_mode;
    const volatile int *cancel; /* polled between chunks; NULL: never */
    long long *progress;        /* tokens done are added here; NULL: not counted */
} la_linear_args;

/* The operator's flag word as the Python layer packs it (docs/internals.md,
 * "The generic operators"): fmap_q | fmap_k << 4 | norm << 8 | eps_mode << 10
 * | has_decay << 12.  Sets the maps, the normaliser and the eps mode; returns
 * whether the word says "decayed" (the caller binds its decay). */
static inline int
la_linear_set_flags(la_linear_args *a, long long flags)
{
    a->fmap_q = (int)(flags & 15);
    a->fmap_k = (int)((flags >> 4) & 15);
    a->norm = (int)((flags >> 8) & 3);
    a->eps_mode = (int)((flags >> 10) & 3);
    return (int)((flags >> 12) & 1);
}

/* Tokens whose features the recurrent form computes in one batch. */
#define LA_RFEAT_ROWS 16

size_t la_linear_work_size(int form, const la_linear_args *a, size_t itemsize);

/* Row stride (in values) of the chunked form's [V | 1], output, increment and
 * state blocks: e + div rounded up to whole 64-byte lines, so that the vector
 * loads and stores of the chunk products never straddle two cache lines (e = 64
 * with the denominator column is 65 values; 80 in float32). */
la_index la_linear_chunk_ld(const la_linear_args *a, size_t itemsize);

la_status la_linear_recurrent_f32(const la_linear_args *a, void *work);
la_status la_linear_recurrent_f64(const la_linear_args *a, void *work);
/* One decoding step (a->t == 1) with la_linear_recurrent's operations (the
 * same bits); a copying step (s1 != s0) reads S0 and writes S1 in one pass. */
la_status la_linear_step_token_f32(const la_linear_args *a, void *work);
la_status la_linear_step_token_f64(const la_linear_args *a, void *work);
la_status la_linear_chunked_f32(const la_linear_args *a, void *work);
la_status la_linear_chunked_f64(const la_linear_args *a, void *work);
la_status la_linear_parallel_f32(const la_linear_args *a, void *work);
la_status la_linear_parallel_f64(const la_linear_args *a, void *work);
la_status la_linear_noncausal_f32(const la_linear_args *a, void *work);
la_status la_linear_noncausal_f64(const la_linear_args *a, void *work);

/*
 * Pass 1 of the block-state scan (docs/design/family.md §7): the state after the
 * block entered with a zero state, S1 = sum_s exp(G_last - G_s) kf_s v_s^T and
 * z1 = sum_s exp(G_last - G_s) kf_s (div mode; zeros otherwise), computed as the
 * chunked form's state (chunks of a->chunk tokens, float64 across chunks) without
 * outputs.  Reads k, v, g and the key map; work is LA_FORM_CHUNKED bytes.
 */
la_status la_linear_transition_f32(const la_linear_args *a, void *work);
la_status la_linear_transition_f64(const la_linear_args *a, void *work);

/*
 * The chunked form in pieces, for the sequence-parallel two-pass scan
 * (docs/design/family.md §7) run by the glue when there are fewer slices than threads.
 * States are f x (e + div) blocks [S | z], rows la_linear_chunk_ld() values
 * apart; work is LA_FORM_CHUNK_ONE bytes.  The running state Sm of the scan
 * is float64 in both instantiations (the serial form's master state: a float32
 * stream adds its chunk increments in float64, docs/design/family.md §10).
 *   chunk_pass1: dS = the chunk's state increment on a zero state (from its
 *                keys and values only), beta = its total log-decay;
 *   state_scan:  Sm <- exp(beta) Sm + dS, and dS <- the old Sm rounded to the
 *                dtype (the state entering that chunk);
 *   chunk_pass2: the chunk's outputs, intra-chunk and inter-chunk from the
 *                entering state, finished into the output (it computes the key
 *                features again rather than storing a chunk x (e + div) block
 *                per chunk between the passes: less memory traffic, and the
 *                query features once).
 * The serial chunked kernel performs exactly these operations on each value,
 * so the two agree bit for bit.
 */
la_status la_linear_chunk_pass1_f32(const la_linear_args *a, void *work, la_index t0,
                                    float *dS, double *beta);
la_status la_linear_chunk_pass1_f64(const la_linear_args *a, void *work, la_index t0,
                                    double *dS, double *beta);
la_status la_linear_chunk_pass2_f32(const la_linear_args *a, void *work, la_index t0,
                                    const float *S_enter);
la_status la_linear_chunk_pass2_f64(const la_linear_args *a, void *work, la_index t0,
                                    const double *S_enter);
/* The same passes keeping the chunk's key features Kk (C x f) and [V | 1]
 * rows Vk (C x ld, ld = la_linear_chunk_ld) from pass 1 for pass 2, which
 * then computes only the query features; bit-identical to the above. */
la_status la_linear_chunk_pass1_keep_f32(const la_linear_args *a, void *work, la_index t0,
                                         float *dS, double *beta, float *Kk, float *Vk);
la_status la_linear_chunk_pass1_keep_f64(const la_linear_args *a, void *work, la_index t0,
                                         double *dS, double *beta, double *Kk, double *Vk);
la_status la_linear_chunk_pass2_kept_f32(const la_linear_args *a, void *work, la_index t0,
                                         const float *S_enter, const float *Kk,
                                         const float *Vk);
la_status la_linear_chunk_pass2_kept_f64(const la_linear_args *a, void *work, la_index t0,
                                         const double *S_enter, const double *Kk,
                                         const double *Vk);
void la_linear_state_load_f32(const la_linear_args *a, double *Sm);
void la_linear_state_load_f64(const la_linear_args *a, double *Sm);
void la_linear_state_store_f32(const la_linear_args *a, const double *Sm);
void la_linear_state_store_f64(const la_linear_args *a, const double *Sm);
void la_linear_state_scan_f32(const la_linear_args *a, double *Sm, double beta, float *dS);
void la_linear_state_scan_f64(const la_linear_args *a, double *Sm, double beta, double *dS);

#endif
