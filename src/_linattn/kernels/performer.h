/*
 * performer.h -- Performer (FAVOR+) attention on log-features with the
 * prefix-safe stabiliser (docs/design/kinds.md §5.4; docs/design/family.md §4.2,
 * §7, §8.1), one (batch, head) slice per call.
 *
 *   x' = sqrt(scale) x,  u = W x' (W: m x d),  h = |x'|^2 / 2
 *   positive:    l = u - h - log sqrt(m)                      F = m
 *   hyperbolic:  l = [u - h ; -u - h] - log sqrt(2m)           F = 2m
 *   phi(x) = exp(l)   (the true features; never formed unshifted)
 *
 * Keys are put on a running maximum mu of their log-features, queries on
 * their own maximum nu_t; the state (S~, z~) is kept on the scale mu:
 *
 *   recurrent  mu_t = max(mu_{t-1}, max_i lk_{t,i}),  rho = exp(mu_{t-1} - mu_t)
 *              S~_t = rho S~_{t-1} + exp(lk_t - mu_t) v_t^T,   z~_t likewise
 *              qf_t = exp(lq_t - nu_t)
 *   div        o_t = S~_t^T qf / (z~_t . qf + eps exp(-nu_t - mu_t))
 *              (the guard of the TRUE denominator; an infinite guard -> 0)
 *   none       o_t = exp(nu_t + mu_t) S~_t^T qf
 *   rms        o_t = n / (rms(n) + eps exp(-nu_t - mu_t)),  n = S~_t^T qf
 *   chunked    mu per chunk = running max at its last key; the carried state
 *              is rescaled by exp(mu_prev - mu_c), intra and inter terms are
 *              summed on mu_c (three GEMMs).  A chunk is split where the
 *              running max rises more than LA_PERF_SPLIT (60 in float32, 600
 *              in float64) above its value at the piece's first key, so no
 *              key underflows only because of a later one.
 *   parallel   keys stored once as exp(lk_j - M_j) (M_j = running max); a row
 *              block on scale mu_b weights key j by exp(M_j - mu_b); the same
 *              split rule on row blocks.
 *   noncausal  one pass over key blocks with online rescaling (exact global
 *              key maximum), the true-scale guard.
 *
 * mu starts at mu0 (-inf: empty state) and ends in *mu1.  Strides in
 * elements.  No allocation, no threads: la_performer_work_size() bytes of
 * scratch from the caller.
 */
#ifndef LA_PERFORMER_H
#define LA_PERFORMER_H

#include "la_common.h"

typedef struct {
    la_index t;     /* query tokens */
    la_index s;     /* key tokens (== t when causal) */
    la_index d;     /* input features */
    la_index m;     /* projection rows */
    la_index f;     /* features: m (positive) or 2m (hyperbolic) */
    la_index e;     /* value width */
    la_index chunk; /* chunk / row-block size, >= 1 */
    const void *q, *k, *v, *w;
    const void *s0, *z0; /* (f, e), (f); causal only */
    double mu0;          /* scale of s0, z0 (-inf: empty) */
    void *o, *s1, *z1;
    double *mu1;
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, w_rs, w_cs, o_rs, o_cs;
    la_index s0_rs, s0_cs, z0_s, s1_rs, s1_cs, z1_s;
    double scale, eps;
    int feat; /* LA_PERF_POSITIVE or LA_PERF_HYPERBOLIC (featmap.h) */
    int norm; /* la_norm of linear.h */
    const volatile int *cancel; /* polled between blocks; NULL: never */
    long long *progress;        /* tokens done are added here; NULL: not counted */
} la_performer_args;

/* form: la_form of linear.h */
size_t la_performer_work_size(int form, const la_performer_args *a, size_t itemsize);

la_status la_performer_recurrent_f32(const la_performer_args *a, void *work);
la_status la_performer_recurrent_f64(const la_performer_args *a, void *work);
la_status la_performer_chunked_f32(const la_performer_args *a, void *work);
la_status la_performer_chunked_f64(const la_performer_args *a, void *work);
la_status la_performer_parallel_f32(const la_performer_args *a, void *work);
la_status la_performer_parallel_f64(const la_performer_args *a, void *work);
la_status la_performer_noncausal_f32(const la_performer_args *a, void *work);
la_status la_performer_noncausal_f64(const la_performer_args *a, void *work);

#endif
