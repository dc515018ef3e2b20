/*
 * diag_loops.c -- gufunc for TransNormer's DiagAttention (kernels/diag.h);
 * kc, vc are the cached rows of the current block.  flags: bit 0 causal,
 * bit 1 variant (0 softmax / T2, 1 ReLU / T1), bits 2-3 norm (0 none, 2 rms).
 * The outer loop is split over threads.
 */
#include "gufunc_util.h"

#include "kernels/diag.h"

enum { DG_Q, DG_K, DG_V, DG_KC, DG_VC, DG_T0, DG_W, DG_SCALE, DG_EPS, DG_FLAGS, DG_O };

static la_status
diag_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_diag_args a = *(const la_diag_args *)proto;
    a.q = LA_AT(c, DG_Q, i);
    a.k = LA_AT(c, DG_K, i);
    a.v = LA_AT(c, DG_V, i);
    a.kc = LA_AT(c, DG_KC, i);
    a.vc = LA_AT(c, DG_VC, i);
    a.o = LA_AT(c, DG_O, i);
    return (c->f64 ? la_diag_f64 : la_diag_f32)(&a, work);
}

static void
diag_loop(const la_call *c)
{
    la_diag_args a;
    const npy_int64 flags = LA_OPT_I(c, DG_FLAGS);
    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.d = la_dim(c, "d");
    a.s = la_dim(c, "s");
    a.e = la_dim(c, "e");
    a.c = la_dim(c, "c");
    a.q_rs = la_stride(c, DG_Q, 0);  a.q_cs = la_stride(c, DG_Q, 1);
    a.k_rs = la_stride(c, DG_K, 0);  a.k_cs = la_stride(c, DG_K, 1);
    a.v_rs = la_stride(c, DG_V, 0);  a.v_cs = la_stride(c, DG_V, 1);
    a.kc_rs = la_stride(c, DG_KC, 0); a.kc_cs = la_stride(c, DG_KC, 1);
    a.vc_rs = la_stride(c, DG_VC, 0); a.vc_cs = la_stride(c, DG_VC, 1);
    a.o_rs = la_stride(c, DG_O, 0); a.o_cs = la_stride(c, DG_O, 1);
    a.t0 = (la_index)LA_OPT_I(c, DG_T0);
    a.w = (la_index)LA_OPT_I(c, DG_W);
    a.scale = LA_OPT_F(c, DG_SCALE);
    a.eps = LA_OPT_F(c, DG_EPS);
    a.causal = (int)(flags & 1);
    a.variant = (int)((flags >> 1) & 1);
    a.norm = (int)((flags >> 2) & 3);
    if (a.w < 1 || (a.causal && (a.s != a.t || a.c >= a.w))) {
        la_raise(LA_ERR_SHAPE, c->name, 0);
        return;
    }
    la_run(c, diag_item, &a, la_diag_work_size(&a, c->is),
           2.0 * (double)a.t * (double)(a.w + a.c) * (double)(a.d + a.e));
}

static const la_gufunc diag_table[] = {
    {"_diag_attention", "(t,d),(s,d),(s,e),(c,d),(c,e),(),(),(),(),()->(t,e)",
     "q:T k:T v:T kc:T vc:T t0:Q w:Q scale:D eps:D flags:Q -> o:T",
     "TransNormer DiagAttention: block-local softmax (T2) or ReLU+norm (T1).", diag_loop,
     NULL},
};

LA_REGISTER(diag, diag_table)
