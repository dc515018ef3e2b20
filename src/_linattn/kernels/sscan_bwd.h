/*
 * sscan_bwd.h -- backward of the selective scan (kernels/sscan.h), one
 * (batch, channel) slice per call, docs/design/grad.md §3 "selective_scan":
 *
 *   dy = dout silu(z)      dz = dout y sig(z) (1 + z (1 - sig(z)))     dD = sum_t dy u
 *   dhb_t = C_t dy_t + a_{t+1} dhb_{t+1}   (dhb_{L-1} = C dy + dh1)     dC_t = dy_t h_t
 *   eps_t = dhb_t o a_t h_{t-1}    dA = sum_t eps_t dt_t    dB_t = dhb_t dt_t u_t
 *   ddt_t = sum_n (eps_t A + u_t dhb_t B_t)    du_t = D dy_t + dt_t sum_n dhb_t B_t
 *   dh0 = a_0 dhb_0     ddelta = ddt sig(delta + bias) (softplus) or ddt
 *   dbias = sum_t ddelta
 *
 * h is recomputed: one forward pass stores the state entering every block of
 * LA_SSCAN_BWD_BLOCK tokens; the reverse pass recomputes a block's states
 * (and exp(dt A)) from its checkpoint, then walks it backwards.  Scratch:
 * O((L / block + block) N).  dB / dC are written per token, or summed over
 * time into column 0 when b_sum / c_sum (time-invariant B / C).
 */
#ifndef LA_SSCAN_BWD_H
#define LA_SSCAN_BWD_H

#include "la_common.h"

#define LA_SSCAN_BWD_BLOCK 64

typedef struct {
    la_index l, n;
    const void *u, *delta, *A, *B, *C, *z, *h0, *dout, *dh1;
    void *du, *ddelta, *dA, *dB, *dC, *dD, *dz, *dbias, *dh0;
    /* element strides */
    la_index u_s, dl_s, A_s, B_ns, B_ls, C_ns, C_ls, z_s, h0_s, dout_s, dh1_s;
    la_index du_s, ddl_s, dA_s, dB_ns, dB_ls, dC_ns, dC_ls, dz_s, dh0_s;
    double D, delta_bias;
    int softplus, has_z, b_sum, c_sum;
    const volatile int *cancel; /* polled between blocks; NULL: never */
} la_sscan_bwd_args;

size_t la_sscan_bwd_work_size(const la_sscan_bwd_args *a, size_t itemsize);
la_status la_sscan_bwd_f32(const la_sscan_bwd_args *a, void *work);
la_status la_sscan_bwd_f64(const la_sscan_bwd_args *a, void *work);

#endif
