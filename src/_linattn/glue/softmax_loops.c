/*
 * softmax_loops.c -- gufuncs for exact softmax attention (kernels/softmax.h):
 * _softmax, and _softmax_lse, which also returns each row's log-sum-exp
 * (float64) for the backward.
 *
 * Threads go over the slices; with fewer slices than threads each slice is
 * split into `parts` interleaved sets of query blocks (kernel args part /
 * nparts), run as parts separate items: a query block's result does not
 * depend on the split, so the output is the same for every thread count.
 */
#include "gufunc_util.h"

#include "kernels/softmax.h"
#include "la_parallel.h"

enum { SM_Q, SM_K, SM_V, SM_SCALE, SM_CAUSAL, SM_O, SM_LSE };

static const int sm_with_lse = 1; /* la_gufunc.data of _softmax_lse */

static la_status
softmax_item(const la_call *c, const void *proto, npy_intp iv, void *work)
{
    la_softmax_args a = *(const la_softmax_args *)proto;
    /* item iv of the loop: part iv % nparts of slice iv / nparts */
    const npy_intp i = iv / a.nparts;
    a.part = iv % a.nparts;
    a.q = LA_AT(c, SM_Q, i);
    a.k = LA_AT(c, SM_K, i);
    a.v = LA_AT(c, SM_V, i);
    a.o = LA_AT(c, SM_O, i);
    if (c->data == &sm_with_lse) {
        a.lse = (double *)LA_AT(c, SM_LSE, i);
    }
    return (c->f64 ? la_softmax_f64 : la_softmax_f32)(&a, work);
}

static void
softmax_loop(const la_call *c)
{
    la_softmax_args a;
    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.d = la_dim(c, "d");
    a.s = la_dim(c, "s");
    a.e = la_dim(c, "e");
    a.block = 64;
    a.q_rs = la_stride(c, SM_Q, 0); a.q_cs = la_stride(c, SM_Q, 1);
    a.k_rs = la_stride(c, SM_K, 0); a.k_cs = la_stride(c, SM_K, 1);
    a.v_rs = la_stride(c, SM_V, 0); a.v_cs = la_stride(c, SM_V, 1);
    a.o_rs = la_stride(c, SM_O, 0); a.o_cs = la_stride(c, SM_O, 1);
    if (c->data == &sm_with_lse) {
        a.lse_s = la_stride(c, SM_LSE, 0);
    }
    a.scale = LA_OPT_F(c, SM_SCALE);
    a.causal = LA_OPT_I(c, SM_CAUSAL) != 0;
    a.cancel = &la_cancel_flag;
    {
        /* split slices when there are fewer than threads (and blocks allow) */
        const la_index nblocks = (a.t + la_softmax_qblock(&a) - 1) / la_softmax_qblock(&a);
        const int nth = la_get_num_threads();
        la_call cc = *c;
        a.nparts = 1;
        if (c->n > 0 && c->n < nth && nblocks > 1) {
            a.nparts = (la_index)((nth + c->n - 1) / c->n);
            a.nparts = a.nparts < nblocks ? a.nparts : nblocks;
        }
        cc.n = c->n * (npy_intp)a.nparts;
        la_run(&cc, softmax_item, &a, la_softmax_work_size(&a, c->is),
               2.0 * (double)a.t * (double)a.s * (double)(a.d + a.e) / (double)a.nparts);
    }
}

static const la_gufunc softmax_table[] = {
    {"_softmax", "(t,d),(s,d),(s,e),(),()->(t,e)", "q:T k:T v:T scale:D causal:Q -> o:T",
     "Exact softmax attention (causal requires s == t).", softmax_loop, NULL},
    {"_softmax_lse", "(t,d),(s,d),(s,e),(),()->(t,e),(t)",
     "q:T k:T v:T scale:D causal:Q -> o:T lse:d",
     "Exact softmax attention that also returns the row log-sum-exp (float64).",
     softmax_loop, &sm_with_lse},
};

LA_REGISTER(softmax, softmax_table)
