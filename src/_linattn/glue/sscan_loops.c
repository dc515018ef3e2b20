/*
 * sscan_loops.c -- gufunc for the selective scan (kernels/sscan.h), one
 * (batch, channel) slice per outer index; D and delta_bias are per-channel
 * data.  flags: bit 0 softplus, bit 1 "z is given".  Time-invariant B / C arrive
 * broadcast with stride 0 on l.  The outer loop is split over threads.
 */
#include "gufunc_util.h"

#include "kernels/sscan.h"

enum { SS_U, SS_DELTA, SS_A, SS_B, SS_C, SS_D, SS_Z, SS_DBIAS, SS_H0, SS_FLAGS, SS_OUT, SS_H1 };

static la_status
sscan_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_sscan_args a = *(const la_sscan_args *)proto;
    a.u = LA_AT(c, SS_U, i);
    a.delta = LA_AT(c, SS_DELTA, i);
    a.A = LA_AT(c, SS_A, i);
    a.B = LA_AT(c, SS_B, i);
    a.C = LA_AT(c, SS_C, i);
    a.z = LA_AT(c, SS_Z, i);
    a.h0 = LA_AT(c, SS_H0, i);
    a.out = LA_AT(c, SS_OUT, i);
    a.h1 = LA_AT(c, SS_H1, i);
    a.D = c->f64 ? *(const double *)LA_AT(c, SS_D, i) : *(const float *)LA_AT(c, SS_D, i);
    a.delta_bias = c->f64 ? *(const double *)LA_AT(c, SS_DBIAS, i)
                          : *(const float *)LA_AT(c, SS_DBIAS, i);
    return (c->f64 ? la_sscan_f64 : la_sscan_f32)(&a, work);
}

static void
sscan_loop(const la_call *c)
{
    la_sscan_args a;
    const npy_int64 flags = LA_OPT_I(c, SS_FLAGS);
    memset(&a, 0, sizeof(a));
    a.l = la_dim(c, "l");
    a.n = la_dim(c, "n");
    a.u_s = la_stride(c, SS_U, 0);
    a.dl_s = la_stride(c, SS_DELTA, 0);
    a.A_s = la_stride(c, SS_A, 0);
    a.B_ns = la_stride(c, SS_B, 0); a.B_ls = la_stride(c, SS_B, 1);
    a.C_ns = la_stride(c, SS_C, 0); a.C_ls = la_stride(c, SS_C, 1);
    a.z_s = la_stride(c, SS_Z, 0);
    a.h0_s = la_stride(c, SS_H0, 0);
    a.out_s = la_stride(c, SS_OUT, 0);
    a.h1_s = la_stride(c, SS_H1, 0);
    a.softplus = (int)(flags & 1);
    a.has_z = (int)((flags >> 1) & 1);
    la_run(c, sscan_item, &a, la_sscan_work_size(&a, c->is),
           8.0 * (double)a.l * (double)(a.n + 1));
}

static const la_gufunc sscan_table[] = {
    {"_selective_scan", "(l),(l),(n),(n,l),(n,l),(),(l),(),(n),()->(l),(n)",
     "u:T delta:T A:T B:T C:T D:T z:T delta_bias:T h0:T flags:Q -> out:T h1:T",
     "Mamba-1 selective scan over one (batch, channel) slice per outer index.",
     sscan_loop, NULL},
};

LA_REGISTER(sscan, sscan_table)
