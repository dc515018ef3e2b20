/*
 * lavo_loops.c -- gufunc loops for LAVO (kernels/lavo.h).
 *
 * _lavo_causal and _lavo_noncausal (operands in the table at the end).
 * The outer loop (batch x heads) is split over worker threads.
 */
#include "gufunc_util.h"

#include "kernels/lavo.h"

#include <stdlib.h>

enum { VC_Q, VC_K, VC_V, VC_BASES, VC_PB, VC_MB, VC_SUMS0, VC_VSUMS0, VC_RK0, VC_RV0,
       VC_POS, VC_SCALE, VC_FLAGS, VC_CHUNK, VC_O, VC_SUMS1, VC_VSUMS1, VC_RK1, VC_RV1 };
enum { VN_Q, VN_K, VN_V, VN_BASES, VN_PB, VN_MB, VN_SCALE, VN_FLAGS, VN_O };

typedef la_status (*la_lavo_fn)(const la_lavo_args *, void *);

/* _lavo_step_inplace's data: the state inputs are its outputs (o the only one) */
static const int lavo_inplace = 1;

static la_status
lavo_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_lavo_args a = *(const la_lavo_args *)proto;
    /* q, k, v, the bases and the bias tables sit at the same positions in both */
    a.q = LA_AT(c, VC_Q, i);
    a.k = LA_AT(c, VC_K, i);
    a.v = LA_AT(c, VC_V, i);
    a.bases = LA_AT(c, VC_BASES, i);
    a.pb = (const double *)LA_AT(c, VC_PB, i);
    a.mb = (const double *)LA_AT(c, VC_MB, i);
    if (c->info->nop == VC_RV1 + 1 || c->data == &lavo_inplace) {
        const int ip = c->data == &lavo_inplace;
        a.sums0 = (const double *)LA_AT(c, VC_SUMS0, i);
        a.vsums0 = (const double *)LA_AT(c, VC_VSUMS0, i);
        a.ring_k0 = LA_AT(c, VC_RK0, i);
        a.ring_v0 = LA_AT(c, VC_RV0, i);
        a.pos = (la_index) * (const npy_int64 *)LA_AT(c, VC_POS, i);
        a.o = LA_AT(c, VC_O, i);
        a.sums1 = ip ? (double *)a.sums0 : (double *)LA_AT(c, VC_SUMS1, i);
        a.vsums1 = ip ? (double *)a.vsums0 : (double *)LA_AT(c, VC_VSUMS1, i);
        a.ring_k1 = ip ? (void *)a.ring_k0 : LA_AT(c, VC_RK1, i);
        a.ring_v1 = ip ? (void *)a.ring_v0 : LA_AT(c, VC_RV1, i);
        return (c->f64 ? la_lavo_causal_f64 : la_lavo_causal_f32)(&a, work);
    }
    a.o = LA_AT(c, VN_O, i);
    return (c->f64 ? la_lavo_noncausal_f64 : la_lavo_noncausal_f32)(&a, work);
}

/* The strides both loops share: q, k, v, the bases and the two bias tables. */
static void
lavo_init(const la_call *c, la_lavo_args *a)
{
    memset(a, 0, sizeof(*a));
    a->t = la_dim(c, "t");
    a->d = la_dim(c, "d");
    a->e = la_dim(c, "e");
    a->r = la_dim(c, "r");
    a->q_rs = la_stride(c, VC_Q, 0); a->q_cs = la_stride(c, VC_Q, 1);
    a->k_rs = la_stride(c, VC_K, 0); a->k_cs = la_stride(c, VC_K, 1);
    a->v_rs = la_stride(c, VC_V, 0); a->v_cs = la_stride(c, VC_V, 1);
    a->b_rs = la_stride(c, VC_BASES, 0); a->b_cs = la_stride(c, VC_BASES, 1);
    a->pb_s = la_stride(c, VC_PB, 0);
    a->mb_s = la_stride(c, VC_MB, 0);
}

static void
lavo_causal_loop(const la_call *c)
{
    la_lavo_args a;
    void *bt = NULL;
    lavo_init(c, &a);
    a.s = a.t;
    a.w = la_dim(c, "w");
    a.s0_s = la_stride(c, VC_SUMS0, 0);
    a.vs0_s = la_stride(c, VC_VSUMS0, 0);
    a.rk0_rs = la_stride(c, VC_RK0, 0); a.rk0_cs = la_stride(c, VC_RK0, 1);
    a.rv0_rs = la_stride(c, VC_RV0, 0); a.rv0_cs = la_stride(c, VC_RV0, 1);
    a.o_rs = la_stride(c, VC_O, 0); a.o_cs = la_stride(c, VC_O, 1);
    if (c->data == &lavo_inplace) {
        a.s1_s = a.s0_s;
        a.vs1_s = a.vs0_s;
        a.rk1_rs = a.rk0_rs; a.rk1_cs = a.rk0_cs;
        a.rv1_rs = a.rv0_rs; a.rv1_cs = a.rv0_cs;
    }
    else {
        a.s1_s = la_stride(c, VC_SUMS1, 0);
        a.vs1_s = la_stride(c, VC_VSUMS1, 0);
        a.rk1_rs = la_stride(c, VC_RK1, 0); a.rk1_cs = la_stride(c, VC_RK1, 1);
        a.rv1_rs = la_stride(c, VC_RV1, 0); a.rv1_cs = la_stride(c, VC_RV1, 1);
    }
    a.scale = LA_OPT_F(c, VC_SCALE);
    a.flags = (int)LA_OPT_I(c, VC_FLAGS);
    a.chunk = (la_index)LA_OPT_I(c, VC_CHUNK);
    if ((a.flags & LA_LAVO_SEPARATE_V) && (la_dim(c, "rv") != a.r || la_dim(c, "wv") != a.w)) {
        la_raise(LA_ERR_SHAPE, c->name, 0); /* separate values: value sums (r), ring (w, e) */
        return;
    }
    /* the recurrent form (a decoding step) takes the bases transposed: once per
     * call when every item has the same ones */
    if ((a.flags & LA_LAVO_RECURRENT) && c->steps[VC_BASES] == 0 && a.b_cs == 1 && c->n > 1 &&
        a.r > 0 && a.d > 0) {
        const la_index r = a.r, d = a.d;
        la_index i, j;
        bt = malloc((size_t)(r * d) * c->is);
        if (bt != NULL) {
            const char *b = c->args[VC_BASES];
            for (i = 0; i < r && c->f64; i++) {
                for (j = 0; j < d; j++) {
                    ((double *)bt)[j * r + i] = ((const double *)b)[i * a.b_rs + j];
                }
            }
            for (i = 0; i < r && !c->f64; i++) {
                for (j = 0; j < d; j++) {
                    ((float *)bt)[j * r + i] = ((const float *)b)[i * a.b_rs + j];
                }
            }
            a.bases_t = bt;
        }
    }
    la_run(c, lavo_item, &a, la_lavo_causal_work_size(&a, c->is), 0.0);
    free(bt);
}

static void
lavo_noncausal_loop(const la_call *c)
{
    la_lavo_args a;
    const la_index p = la_dim(c, "p");
    lavo_init(c, &a);
    a.s = la_dim(c, "s");
    a.w = p > 0 ? (p - 1) / 2 : 0;
    a.o_rs = la_stride(c, VN_O, 0); a.o_cs = la_stride(c, VN_O, 1);
    a.scale = LA_OPT_F(c, VN_SCALE);
    a.flags = (int)LA_OPT_I(c, VN_FLAGS);
    la_run(c, lavo_item, &a, la_lavo_noncausal_work_size(&a, c->is), 0.0);
}

static const la_gufunc lavo_table[] = {
    {"_lavo_causal",
     "(t,d),(t,d),(t,e),(r,d),(w),(r),(r),(rv),(w,d),(wv,e),(),(),(),()"
     "->(t,e),(r),(rv),(w,d),(wv,e)",
     "q:T k:T v:T bases:T pb:d mb:d sums0:d vsums0:d ring_k0:T ring_v0:T pos:q scale:D "
     "flags:Q chunk:Q -> o:T sums1:d vsums1:d ring_k1:T ring_v1:T",
     "LAVO causal (flags: 1 block, 2 before_local, 4 separate v, 8 recurrent; the value "
     "sums and ring (rv = r, wv = w) are read and written only with separate v: "
     "zero-sized otherwise).",
     lavo_causal_loop, NULL},
    {"_lavo_step_inplace",
     "(t,d),(t,d),(t,e),(r,d),(w),(r),(r),(rv),(w,d),(wv,e),(),(),(),()->(t,e)",
     "q:T k:T v:T bases:T pb:d mb:d sums0:d vsums0:d ring_k0:T ring_v0:T pos:q scale:D "
     "flags:Q chunk:Q -> o:T",
     "LAVO causal updating sums0, vsums0, ring_k0 and ring_v0 in place (la.step "
     "inplace=True).",
     lavo_causal_loop, &lavo_inplace},
    {"_lavo_noncausal", "(t,d),(s,d),(s,e),(r,d),(p),(r),(),()->(t,e)",
     "q:T k:T v:T bases:T pb:d mb:d scale:D flags:Q -> o:T",
     "LAVO non-causal / cross-attention (p = 2w+1 position-bias entries).",
     lavo_noncausal_loop, NULL},
};

LA_REGISTER(lavo, lavo_table)
