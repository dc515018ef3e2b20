/*
 * softmax_bwd_loops.c -- gufunc for the softmax backward (kernels/softmax_bwd.h):
 *   _softmax_bwd: q (t,d), k (s,d), v (s,e), o (t,e), do (t,e), lse (t) float64,
 *                 scale, causal -> dq (t,d), dk (s,d), dv (s,e)
 * The forward that saves lse is _softmax_lse (softmax_loops.c).
 *
 * Threads go over the slices.  With fewer slices than threads and more than
 * one key tile, two runs split each slice instead: dk, dv by interleaved key
 * tiles, then dq by interleaved query blocks (kernel modes DKV and DQ; the
 * results are those of the single pass, whatever the split).
 */
#include "gufunc_util.h"

#include "kernels/softmax_bwd.h"
#include "la_parallel.h"

enum { SB_Q, SB_K, SB_V, SB_O, SB_DO, SB_LSE, SB_SCALE, SB_CAUSAL, SB_DQ, SB_DK, SB_DV };

static la_status
softmax_bwd_item(const la_call *c, const void *proto, npy_intp iv, void *work)
{
    la_softmax_bwd_args a = *(const la_softmax_bwd_args *)proto;
    /* item iv of the run: part iv % nparts of slice iv / nparts */
    const npy_intp i = iv / a.nparts;
    a.part = iv % a.nparts;
    a.q = LA_AT(c, SB_Q, i);
    a.k = LA_AT(c, SB_K, i);
    a.v = LA_AT(c, SB_V, i);
    a.o = LA_AT(c, SB_O, i);
    a.dout = LA_AT(c, SB_DO, i);
    a.lse = (const double *)LA_AT(c, SB_LSE, i);
    a.dq = LA_AT(c, SB_DQ, i);
    a.dk = LA_AT(c, SB_DK, i);
    a.dv = LA_AT(c, SB_DV, i);
    return (c->f64 ? la_softmax_bwd_f64 : la_softmax_bwd_f32)(&a, work);
}

static void
softmax_bwd_loop(const la_call *c)
{
    la_softmax_bwd_args a;
    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.d = la_dim(c, "d");
    a.s = la_dim(c, "s");
    a.e = la_dim(c, "e");
    a.block = 64;
    a.q_rs = la_stride(c, SB_Q, 0);   a.q_cs = la_stride(c, SB_Q, 1);
    a.k_rs = la_stride(c, SB_K, 0);   a.k_cs = la_stride(c, SB_K, 1);
    a.v_rs = la_stride(c, SB_V, 0);   a.v_cs = la_stride(c, SB_V, 1);
    a.o_rs = la_stride(c, SB_O, 0);   a.o_cs = la_stride(c, SB_O, 1);
    a.do_rs = la_stride(c, SB_DO, 0); a.do_cs = la_stride(c, SB_DO, 1);
    a.lse_s = la_stride(c, SB_LSE, 0);
    a.dq_rs = la_stride(c, SB_DQ, 0); a.dq_cs = la_stride(c, SB_DQ, 1);
    a.dk_rs = la_stride(c, SB_DK, 0); a.dk_cs = la_stride(c, SB_DK, 1);
    a.dv_rs = la_stride(c, SB_DV, 0); a.dv_cs = la_stride(c, SB_DV, 1);
    a.scale = LA_OPT_F(c, SB_SCALE);
    a.causal = LA_OPT_I(c, SB_CAUSAL) != 0;
    a.cancel = &la_cancel_flag;
    {
        /* five GEMMs per tile: scores, dQ, dK over d; dP, dV over e */
        const double flops = 2.0 * (double)a.t * (double)a.s * (double)(3 * a.d + 2 * a.e);
        const size_t wsize = la_softmax_bwd_work_size(&a, c->is);
        const la_index C = la_softmax_bwd_qblock(&a), CK = LA_SOFTMAX_KB(a.kblock);
        const la_index nqb = (a.t + C - 1) / C, nkb = (a.s + CK - 1) / CK;
        const int nth = la_get_num_threads();
        la_index want = c->n > 0 && c->n < nth ? (la_index)((nth + c->n - 1) / c->n) : 1;
        la_call cc = *c;
        a.mode = LA_SOFTMAX_BWD_ALL;
        a.nparts = 1;
        if (want < 2 || nkb < 2 || nqb < 2) {
            la_run(c, softmax_bwd_item, &a, wsize, flops);
            return;
        }
        a.mode = LA_SOFTMAX_BWD_DKV;
        a.nparts = want < nkb ? want : nkb;
        cc.n = c->n * (npy_intp)a.nparts;
        if (la_run(&cc, softmax_bwd_item, &a, wsize, flops * 0.8 / (double)a.nparts) != 0) {
            return;
        }
        a.mode = LA_SOFTMAX_BWD_DQ;
        a.nparts = want < nqb ? want : nqb;
        cc.n = c->n * (npy_intp)a.nparts;
        la_run(&cc, softmax_bwd_item, &a, wsize, flops * 0.6 / (double)a.nparts);
    }
}

static const la_gufunc softmax_bwd_table[] = {
    {"_softmax_bwd", "(t,d),(s,d),(s,e),(t,e),(t,e),(t),(),()->(t,d),(s,d),(s,e)",
     "q:T k:T v:T o:T do:T lse:d scale:D causal:Q -> dq:T dk:T dv:T",
     "Backward of exact softmax attention from the saved log-sum-exp.", softmax_bwd_loop,
     NULL},
};

LA_REGISTER(softmax_bwd, softmax_bwd_table)
