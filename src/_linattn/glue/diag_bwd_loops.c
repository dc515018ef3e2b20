/*
 * diag_bwd_loops.c -- gufunc for the backward of TransNormer's DiagAttention
 * (kernels/diag_bwd.h):
 *   _diag_attention_bwd: q (t,d), k (s,d), v (s,e), kc (c,d), vc (c,e),
 *                        do (t,e), w, scale, eps, flags
 *                        -> dq (t,d), dk (s,d), dv (s,e), dkc (c,d), dvc (c,e)
 * flags as the forward's _diag_attention (diag_loops.c): bit 0 causal, bit 1
 * variant (0 softmax / T2, 1 ReLU / T1), bits 2-3 norm (0 none, 2 rms).
 * Nothing is saved by the forward: the kernel recomputes each block.
 */
#include "gufunc_util.h"

#include "kernels/diag_bwd.h"
#include "la_parallel.h"

enum {
    DB_Q, DB_K, DB_V, DB_KC, DB_VC, DB_DO, DB_W, DB_SCALE, DB_EPS, DB_FLAGS,
    DB_DQ, DB_DK, DB_DV, DB_DKC, DB_DVC
};

static la_status
diag_bwd_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_diag_bwd_args a = *(const la_diag_bwd_args *)proto;
    a.q = LA_AT(c, DB_Q, i);
    a.k = LA_AT(c, DB_K, i);
    a.v = LA_AT(c, DB_V, i);
    a.kc = LA_AT(c, DB_KC, i);
    a.vc = LA_AT(c, DB_VC, i);
    a.dout = LA_AT(c, DB_DO, i);
    a.dq = LA_AT(c, DB_DQ, i);
    a.dk = LA_AT(c, DB_DK, i);
    a.dv = LA_AT(c, DB_DV, i);
    a.dkc = LA_AT(c, DB_DKC, i);
    a.dvc = LA_AT(c, DB_DVC, i);
    return (c->f64 ? la_diag_bwd_f64 : la_diag_bwd_f32)(&a, work);
}

static void
diag_bwd_loop(const la_call *c)
{
    la_diag_bwd_args a;
    const npy_int64 flags = LA_OPT_I(c, DB_FLAGS);
    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.d = la_dim(c, "d");
    a.s = la_dim(c, "s");
    a.e = la_dim(c, "e");
    a.c = la_dim(c, "c");
    a.q_rs = la_stride(c, DB_Q, 0);     a.q_cs = la_stride(c, DB_Q, 1);
    a.k_rs = la_stride(c, DB_K, 0);     a.k_cs = la_stride(c, DB_K, 1);
    a.v_rs = la_stride(c, DB_V, 0);     a.v_cs = la_stride(c, DB_V, 1);
    a.kc_rs = la_stride(c, DB_KC, 0);   a.kc_cs = la_stride(c, DB_KC, 1);
    a.vc_rs = la_stride(c, DB_VC, 0);   a.vc_cs = la_stride(c, DB_VC, 1);
    a.do_rs = la_stride(c, DB_DO, 0);   a.do_cs = la_stride(c, DB_DO, 1);
    a.dq_rs = la_stride(c, DB_DQ, 0);   a.dq_cs = la_stride(c, DB_DQ, 1);
    a.dk_rs = la_stride(c, DB_DK, 0);   a.dk_cs = la_stride(c, DB_DK, 1);
    a.dv_rs = la_stride(c, DB_DV, 0);   a.dv_cs = la_stride(c, DB_DV, 1);
    a.dkc_rs = la_stride(c, DB_DKC, 0); a.dkc_cs = la_stride(c, DB_DKC, 1);
    a.dvc_rs = la_stride(c, DB_DVC, 0); a.dvc_cs = la_stride(c, DB_DVC, 1);
    a.w = (la_index)LA_OPT_I(c, DB_W);
    a.scale = LA_OPT_F(c, DB_SCALE);
    a.eps = LA_OPT_F(c, DB_EPS);
    a.causal = (int)(flags & 1);
    a.variant = (int)((flags >> 1) & 1);
    a.norm = (int)((flags >> 2) & 3);
    a.cancel = &la_cancel_flag;
    if (a.w < 1 || (a.causal && (a.s != a.t || a.c >= a.w)) || (!a.causal && a.c != 0)) {
        la_raise(LA_ERR_SHAPE, c->name, 0);
        return;
    }
    /* six GEMMs per block (three recompute the forward) */
    la_run(c, diag_bwd_item, &a, la_diag_bwd_work_size(&a, c->is),
           6.0 * (double)a.t * (double)(a.w + a.c) * (double)(a.d + a.e));
}

static const la_gufunc diag_bwd_table[] = {
    {"_diag_attention_bwd",
     "(t,d),(s,d),(s,e),(c,d),(c,e),(t,e),(),(),(),()->(t,d),(s,d),(s,e),(c,d),(c,e)",
     "q:T k:T v:T kc:T vc:T do:T w:Q scale:D eps:D flags:Q -> dq:T dk:T dv:T dkc:T dvc:T",
     "Backward of TransNormer DiagAttention (block-local softmax T2 / ReLU+norm T1).",
     diag_bwd_loop, NULL},
};

/* declared here, not in gufunc_util.h: module.c declares it too */
int la_register_diag_bwd(PyObject *module);
LA_REGISTER(diag_bwd, diag_bwd_table)
