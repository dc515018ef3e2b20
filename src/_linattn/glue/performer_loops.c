/*
 * performer_loops.c -- gufunc loops for Performer with the prefix-safe
 * stabiliser (kernels/performer.h).
 *
 * causal (recurrent | chunked | parallel) and noncausal (tables at the end).
 * flags: bits 0-1 la_perf_kind (positive | hyperbolic), bits 2-3 la_norm.
 * The feature width is f = m (positive) or 2m (hyperbolic); noncausal derives
 * it, causal checks the state's f against it.  The outer loop (batch x heads)
 * is split over worker threads; BLAS runs single-threaded inside.
 */
#include "gufunc_util.h"

#include "kernels/featmap.h"
#include "kernels/linear.h"
#include "kernels/performer.h"
#include "la_parallel.h"

enum { PC_Q, PC_K, PC_V, PC_W, PC_S0, PC_Z0, PC_MU0, PC_SCALE, PC_EPS, PC_FLAGS, PC_CHUNK,
       PC_O, PC_S1, PC_Z1, PC_MU1 };
enum { PN_Q, PN_K, PN_V, PN_W, PN_SCALE, PN_EPS, PN_FLAGS, PN_CHUNK, PN_O };

typedef la_status (*la_performer_fn)(const la_performer_args *, void *);

typedef struct {
    la_performer_fn fn[2]; /* float32, float64 */
    int form;
    int inplace; /* S0, z0 and mu0 are updated in place (o the only output) */
} la_performer_data;

static la_status
performer_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    const la_performer_data *d = (const la_performer_data *)c->data;
    la_performer_args a = *(const la_performer_args *)proto;
    a.q = LA_AT(c, PC_Q, i);
    a.k = LA_AT(c, PC_K, i);
    a.v = LA_AT(c, PC_V, i);
    a.w = LA_AT(c, PC_W, i);
    if (d->form != LA_FORM_NONCAUSAL) {
        a.s0 = LA_AT(c, PC_S0, i);
        a.z0 = LA_AT(c, PC_Z0, i);
        a.mu0 = *(const double *)LA_AT(c, PC_MU0, i);
        a.o = LA_AT(c, PC_O, i);
        a.s1 = d->inplace ? (void *)a.s0 : LA_AT(c, PC_S1, i);
        a.z1 = d->inplace ? (void *)a.z0 : LA_AT(c, PC_Z1, i);
        a.mu1 = (double *)LA_AT(c, d->inplace ? PC_MU0 : PC_MU1, i);
    }
    else {
        a.o = LA_AT(c, PN_O, i);
    }
    return d->fn[c->f64](&a, work);
}

static void
performer_loop(const la_call *c)
{
    const la_performer_data *d = (const la_performer_data *)c->data;
    const int causal = d->form != LA_FORM_NONCAUSAL;
    la_performer_args a;
    npy_int64 flags;

    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.s = causal ? a.t : la_dim(c, "s");
    a.d = la_dim(c, "d");
    a.e = la_dim(c, "e");
    a.m = la_dim(c, "m");
    /* q, k, v and W sit at the same positions in both signatures */
    a.q_rs = la_stride(c, PC_Q, 0);  a.q_cs = la_stride(c, PC_Q, 1);
    a.k_rs = la_stride(c, PC_K, 0);  a.k_cs = la_stride(c, PC_K, 1);
    a.v_rs = la_stride(c, PC_V, 0);  a.v_cs = la_stride(c, PC_V, 1);
    a.w_rs = la_stride(c, PC_W, 0);  a.w_cs = la_stride(c, PC_W, 1);
    a.cancel = &la_cancel_flag;
    a.progress = &la_progress_done;
    if (causal) {
        a.f = la_dim(c, "f");
        a.s0_rs = la_stride(c, PC_S0, 0); a.s0_cs = la_stride(c, PC_S0, 1);
        a.z0_s = la_stride(c, PC_Z0, 0);
        a.o_rs = la_stride(c, PC_O, 0);   a.o_cs = la_stride(c, PC_O, 1);
        a.s1_rs = d->inplace ? a.s0_rs : la_stride(c, PC_S1, 0);
        a.s1_cs = d->inplace ? a.s0_cs : la_stride(c, PC_S1, 1);
        a.z1_s = d->inplace ? a.z0_s : la_stride(c, PC_Z1, 0);
    }
    else {
        a.o_rs = la_stride(c, PN_O, 0);   a.o_cs = la_stride(c, PN_O, 1);
    }
    a.scale = LA_OPT_F(c, causal ? PC_SCALE : PN_SCALE);
    a.eps = LA_OPT_F(c, causal ? PC_EPS : PN_EPS);
    flags = LA_OPT_I(c, causal ? PC_FLAGS : PN_FLAGS);
    a.chunk = (la_index)LA_OPT_I(c, causal ? PC_CHUNK : PN_CHUNK);
    a.feat = (int)(flags & 3);
    a.norm = (int)((flags >> 2) & 3);
    if (!causal) {
        a.f = a.feat == LA_PERF_HYPERBOLIC ? 2 * a.m : a.m;
    }
    if ((a.feat != LA_PERF_POSITIVE && a.feat != LA_PERF_HYPERBOLIC) ||
        a.f != (a.feat == LA_PERF_HYPERBOLIC ? 2 * a.m : a.m)) {
        la_raise(LA_ERR_SHAPE, c->name, 0);
        return;
    }
    la_run(c, performer_item, &a, la_performer_work_size(d->form, &a, c->is),
           4.0 * (double)(a.t > a.s ? a.t : a.s) * (double)(a.f + a.d) * (double)(a.e + 1));
}

static const la_performer_data pd_rec = {
    {la_performer_recurrent_f32, la_performer_recurrent_f64}, LA_FORM_RECURRENT, 0};
static const la_performer_data pd_step = {
    {la_performer_recurrent_f32, la_performer_recurrent_f64}, LA_FORM_RECURRENT, 1};
static const la_performer_data pd_chk = {
    {la_performer_chunked_f32, la_performer_chunked_f64}, LA_FORM_CHUNKED, 0};
static const la_performer_data pd_par = {
    {la_performer_parallel_f32, la_performer_parallel_f64}, LA_FORM_PARALLEL, 0};
static const la_performer_data pd_nc = {
    {la_performer_noncausal_f32, la_performer_noncausal_f64}, LA_FORM_NONCAUSAL, 0};

#define LA_PC_SIG "(t,d),(t,d),(t,e),(m,d),(f,e),(f),(),(),(),(),()->(t,e),(f,e),(f),()"
#define LA_PC_OPS \
    "q:T k:T v:T W:T S0:T z0:T mu0:d scale:D eps:D flags:Q chunk:Q -> o:T S1:T z1:T mu1:d"

static const la_gufunc performer_table[] = {
    {"_performer_recurrent", LA_PC_SIG, LA_PC_OPS,
     "Causal Performer, recurrent form, running-max stabiliser.", performer_loop, &pd_rec},
    {"_performer_chunked", LA_PC_SIG, LA_PC_OPS,
     "Causal Performer, chunked form, per-chunk max with exact rescaling.", performer_loop,
     &pd_chk},
    {"_performer_parallel", LA_PC_SIG, LA_PC_OPS,
     "Causal Performer, parallel (masked quadratic) form.", performer_loop, &pd_par},
    {"_performer_step_inplace", "(t,d),(t,d),(t,e),(m,d),(f,e),(f),(),(),(),(),()->(t,e)",
     "q:T k:T v:T W:T S0:T z0:T mu0:d scale:D eps:D flags:Q chunk:Q -> o:T",
     "Performer recurrent form updating S0, z0 and mu0 in place (la.step inplace=True).",
     performer_loop, &pd_step},
    {"_performer_noncausal", "(t,d),(s,d),(s,e),(m,d),(),(),(),()->(t,e)",
     "q:T k:T v:T W:T scale:D eps:D flags:Q chunk:Q -> o:T",
     "Non-causal Performer, online key maximum, true-scale guard.", performer_loop, &pd_nc},
};

LA_REGISTER(performer, performer_table)
