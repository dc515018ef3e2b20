/*
 * sscan_bwd_loops.c -- gufunc for the selective-scan backward
 * (kernels/sscan_bwd.h), one (batch, channel) slice per outer index:
 *   u (l), delta (l), A (n), B (n,l), C (n,l), D (), z (l), delta_bias (),
 *   h0 (n), flags () int64, dout (l), dh1 (n)
 *   -> du (l), ddelta (l), dA (n), dB (n,m), dC (n,p), dD (), dz (l),
 *      ddelta_bias (), dh0 (n)
 * flags: bit 0 softplus, bit 1 "z is given", bit 2 / bit 3 "sum dB / dC over
 * time into column 0" (time-invariant B / C; m / p = 1).  The caller sums the
 * per-slice gradients of shared inputs.
 */
#include "gufunc_util.h"

#include "kernels/sscan_bwd.h"
#include "la_parallel.h"

enum {
    SB_U, SB_DELTA, SB_A, SB_B, SB_C, SB_D, SB_Z, SB_DBIAS, SB_H0, SB_FLAGS, SB_DOUT, SB_DH1,
    SB_DU, SB_DDELTA, SB_DA, SB_DB, SB_DC, SB_DD, SB_DZ, SB_DDBIAS, SB_DH0
};

static la_status
sscan_bwd_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_sscan_bwd_args a = *(const la_sscan_bwd_args *)proto;
    a.u = LA_AT(c, SB_U, i);
    a.delta = LA_AT(c, SB_DELTA, i);
    a.A = LA_AT(c, SB_A, i);
    a.B = LA_AT(c, SB_B, i);
    a.C = LA_AT(c, SB_C, i);
    a.z = LA_AT(c, SB_Z, i);
    a.h0 = LA_AT(c, SB_H0, i);
    a.dout = LA_AT(c, SB_DOUT, i);
    a.dh1 = LA_AT(c, SB_DH1, i);
    a.du = LA_AT(c, SB_DU, i);
    a.ddelta = LA_AT(c, SB_DDELTA, i);
    a.dA = LA_AT(c, SB_DA, i);
    a.dB = LA_AT(c, SB_DB, i);
    a.dC = LA_AT(c, SB_DC, i);
    a.dD = LA_AT(c, SB_DD, i);
    a.dz = LA_AT(c, SB_DZ, i);
    a.dbias = LA_AT(c, SB_DDBIAS, i);
    a.dh0 = LA_AT(c, SB_DH0, i);
    a.D = c->f64 ? *(const double *)LA_AT(c, SB_D, i) : *(const float *)LA_AT(c, SB_D, i);
    a.delta_bias = c->f64 ? *(const double *)LA_AT(c, SB_DBIAS, i)
                          : *(const float *)LA_AT(c, SB_DBIAS, i);
    return (c->f64 ? la_sscan_bwd_f64 : la_sscan_bwd_f32)(&a, work);
}

static void
sscan_bwd_loop(const la_call *c)
{
    la_sscan_bwd_args a;
    const npy_int64 flags = LA_OPT_I(c, SB_FLAGS);
    memset(&a, 0, sizeof(a));
    a.l = la_dim(c, "l");
    a.n = la_dim(c, "n");
    a.u_s = la_stride(c, SB_U, 0);
    a.dl_s = la_stride(c, SB_DELTA, 0);
    a.A_s = la_stride(c, SB_A, 0);
    a.B_ns = la_stride(c, SB_B, 0);   a.B_ls = la_stride(c, SB_B, 1);
    a.C_ns = la_stride(c, SB_C, 0);   a.C_ls = la_stride(c, SB_C, 1);
    a.z_s = la_stride(c, SB_Z, 0);
    a.h0_s = la_stride(c, SB_H0, 0);
    a.dout_s = la_stride(c, SB_DOUT, 0);
    a.dh1_s = la_stride(c, SB_DH1, 0);
    a.du_s = la_stride(c, SB_DU, 0);
    a.ddl_s = la_stride(c, SB_DDELTA, 0);
    a.dA_s = la_stride(c, SB_DA, 0);
    a.dB_ns = la_stride(c, SB_DB, 0); a.dB_ls = la_stride(c, SB_DB, 1);
    a.dC_ns = la_stride(c, SB_DC, 0); a.dC_ls = la_stride(c, SB_DC, 1);
    a.dz_s = la_stride(c, SB_DZ, 0);
    a.dh0_s = la_stride(c, SB_DH0, 0);
    a.softplus = (int)(flags & 1);
    a.has_z = (int)((flags >> 1) & 1);
    a.b_sum = (int)((flags >> 2) & 1);
    a.c_sum = (int)((flags >> 3) & 1);
    a.cancel = &la_cancel_flag;
    if ((!a.b_sum && la_dim(c, "m") != a.l) || (!a.c_sum && la_dim(c, "p") != a.l)) {
        la_raise(LA_ERR_SHAPE, "linattn._selective_scan_bwd (dB / dC need l columns "
                 "unless summed)", 0);
        return;
    }
    la_run(c, sscan_bwd_item, &a, la_sscan_bwd_work_size(&a, c->is),
           24.0 * (double)a.l * (double)(a.n + 1));
}

static const la_gufunc sscan_bwd_table[] = {
    {"_selective_scan_bwd",
     "(l),(l),(n),(n,l),(n,l),(),(l),(),(n),(),(l),(n)->(l),(l),(n),(n,m),(n,p),(),(l),(),(n)",
     "u:T delta:T A:T B:T C:T D:T z:T delta_bias:T h0:T flags:Q dout:T dh1:T -> "
     "du:T ddelta:T dA:T dB:T dC:T dD:T dz:T ddelta_bias:T dh0:T",
     "Backward of the selective scan over one (batch, channel) slice per outer index.",
     sscan_bwd_loop, NULL},
};

LA_REGISTER(sscan_bwd, sscan_bwd_table)
