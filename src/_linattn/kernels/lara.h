/*
 * lara.h -- RA and LARA (docs/design/lara.md), per (batch, head), in scaled space
 * q_n = sqrt(scale) Q_n, k_m = sqrt(scale) K_m.
 *
 * RA (quadratic; section 3):  pi_n = softmax_m(q_n . k_m);  for each of S samples
 *   omega = q_n + k_{m*} + sigma eps   (m* = first index with cumsum(pi_n) >= u; or the
 *   mixture mean sum_m pi_nm k_m; or mean_m k_m), no eps when sampling = mean;
 *   f(omega) = sum_j softmax_j(omega . k_j - |k_j|^2/2) v_j;   y_n = mean over samples.
 *
 * LARA (linear; section 4.4), proposals c = 1..C with samples omega_c, means mu_c and
 * pooled queries qbar_c:
 *   lk_cm = omega_c . k_m - |k_m|^2/2;  Z_c = LSE_m lk_cm;  f_c = sum_m e^{lk_cm - Z_c} v_m
 *   P_cj = omega_c . mu_j - |mu_j|^2/2;  Pself_c = P_cc;  Pmix_c = LSE_j P_cj
 *   logw_nc = omega_c . q_n + Z_c - Pmix_c                           (alpha = bh)
 *           = omega_c . q_n + Z_c - Pself_c                          (alpha = const)
 *           = log max(BH_c + a (r_nc - mean_c r_nc), 1e-8) + omega_c . q_n + Z_c - Pself_c
 *             with BH_c = e^{Pself_c - Pmix_c}, r_nc = e^{qbar_c . q_n - L_c},
 *             L_c = LSE_n qbar_c . q_n                               (alpha = opt)
 *   y_n = sum_c softmax_c(logw_nc) f_c
 * Everything is a log; only x - max is exponentiated; LSE accumulators are float64.
 * GEMMs: omega k^T, P V, q omega^T, q qbar^T, W F.
 */
#ifndef LA_LARA_H
#define LA_LARA_H

#include "la_common.h"

#define LA_RA_COMPONENT_MASK 3 /* 0 sample, 1 mean, 2 keymean */
#define LA_RA_NO_NOISE 4       /* sampling = "mean" */
#define LA_LARA_ALPHA_MASK 3   /* 0 opt, 1 bh, 2 const */

typedef struct {
    la_index n, m, d, e, c; /* queries, keys, features, values, proposals or samples */
    const void *q, *k, *v;
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs;
    /* RA: noise (n, c, d), uniforms (n, c) float64 */
    const void *noise;
    la_index nz_s0, nz_s1, nz_s2;
    const double *unif;
    la_index u_s0, u_s1;
    /* LARA: qbar, mu, omega (c, d) */
    const void *qbar, *mu, *omega;
    la_index qb_rs, qb_cs, mu_rs, mu_cs, om_rs, om_cs;
    void *o;
    la_index o_rs, o_cs;
    double scale, sigma, alpha_coeff;
    int flags;
} la_lara_args;

size_t la_ra_work_size(const la_lara_args *a, size_t itemsize);
la_status la_ra_f32(const la_lara_args *a, void *work);
la_status la_ra_f64(const la_lara_args *a, void *work);

size_t la_lara_work_size(const la_lara_args *a, size_t itemsize);
la_status la_lara_f32(const la_lara_args *a, void *work);
la_status la_lara_f64(const la_lara_args *a, void *work);

#define LA_LARA_BLOCK 256

#endif
