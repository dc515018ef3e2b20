/*
 * linear_loops.c -- gufunc loops for the generic operator (kernels/linear.h):
 * causal recurrent | chunked | parallel (one signature), the in-place step,
 * non-causal.  flags packs the options: bits 0-3 query map, 4-7 key map,
 * 8-9 normalise mode, 10-11 eps mode, bit 12 "g holds a decay".  The outer
 * loop (batch x heads) is split over worker threads; BLAS runs
 * single-threaded inside.
 */
#include "gufunc_util.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/linear.h"
#include "la_parallel.h"
#include "arch/la_tuning.h"

/* causal (and the in-place step, which has LC_O as its only output) */
enum { LC_Q, LC_K, LC_V, LC_G, LC_S0, LC_Z0, LC_SCALE, LC_EPS, LC_FLAGS, LC_CHUNK,
       LC_O, LC_S1, LC_Z1 };
/* non-causal */
enum { LN_Q, LN_K, LN_V, LN_SCALE, LN_EPS, LN_FLAGS, LN_CHUNK, LN_O };

typedef la_status (*la_linear_fn)(const la_linear_args *, void *);

typedef struct {
    la_linear_fn fn[2]; /* float32, float64 */
    int form;
    int inplace; /* the state inputs S, z are updated in place (no outputs) */
} la_linear_data;

/* Point the prototype at item i (causal). */
static void
linear_bind(const la_call *c, la_linear_args *a, npy_intp i)
{
    const la_linear_data *d = (const la_linear_data *)c->data;
    a->q = LA_AT(c, LC_Q, i);
    a->k = LA_AT(c, LC_K, i);
    a->v = LA_AT(c, LC_V, i);
    if (a->g != NULL) {
        a->g = (const double *)LA_AT(c, LC_G, i);
    }
    a->s0 = LA_AT(c, LC_S0, i);
    a->z0 = LA_AT(c, LC_Z0, i);
    a->o = LA_AT(c, LC_O, i);
    a->s1 = d->inplace ? (void *)a->s0 : LA_AT(c, LC_S1, i);
    a->z1 = d->inplace ? (void *)a->z0 : LA_AT(c, LC_Z1, i);
}

static la_status
linear_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    const la_linear_data *d = (const la_linear_data *)c->data;
    la_linear_args a = *(const la_linear_args *)proto;
    if (d->form == LA_FORM_NONCAUSAL) {
        a.q = LA_AT(c, LN_Q, i);
        a.k = LA_AT(c, LN_K, i);
        a.v = LA_AT(c, LN_V, i);
        a.o = LA_AT(c, LN_O, i);
    }
    else {
        linear_bind(c, &a, i);
    }
    return d->fn[c->f64](&a, work);
}

/*
 * Sequence parallelism (docs/design/family.md §7) for fewer (batch, head) slices than
 * threads: per window of chunks, pass 1 computes every chunk's state
 * increment in parallel, a serial scan turns increments into entering
 * states, pass 2 computes every chunk's outputs in parallel.  The operations
 * are those of the serial chunked kernel, so the results are bit-identical.
 * A window holds the tuning table's seq_window chunks (bounds the stored
 * states).
 */

typedef struct {
    const la_linear_args *a;
    int f64, pass;
    la_index c0, C;
    char *states;  /* window blocks of f x ec, rows ld apart */
    double *betas;
    size_t sbytes; /* bytes per state block */
} la_seq_ctx;

/* Chunk j of the window: pass 1 its state increment, pass 2 its outputs. */
static la_status
seq_item(void *vctx, la_index j, char *work)
{
    const la_seq_ctx *c = (const la_seq_ctx *)vctx;
    const la_index t0 = (c->c0 + j) * c->C;
    void *st = c->states + (size_t)j * c->sbytes;
    if (c->pass == 1) {
        return c->f64 ? la_linear_chunk_pass1_f64(c->a, work, t0, (double *)st, &c->betas[j])
                      : la_linear_chunk_pass1_f32(c->a, work, t0, (float *)st, &c->betas[j]);
    }
    return c->f64 ? la_linear_chunk_pass2_f64(c->a, work, t0, (const double *)st)
                  : la_linear_chunk_pass2_f32(c->a, work, t0, (const float *)st);
}

static la_status
linear_seqpar_slice(const la_linear_args *a, int f64, int nth)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    const la_index C = a->chunk < a->t ? a->chunk : a->t;
    const la_index nchunks = (a->t + C - 1) / C;
    const la_index ld = la_linear_chunk_ld(a, is); /* row stride of states and outputs */
    la_seq_ctx c;
    la_status st = LA_OK;
    char *work, *states_mem = NULL;
    double *Sx; /* the running state, float64 in both dtypes (kernels/linear.h) */
    size_t wsize;
    la_index c0, j, cw;
    const la_index window = la_tuning_active().seq_window;
    memset(&c, 0, sizeof(c));
    c.a = a;
    c.f64 = f64;
    c.C = C;
    c.sbytes = LA_ALIGN_BYTES((size_t)(a->f * ld) * is);
    wsize = LA_ALIGN_BYTES(la_linear_work_size(LA_FORM_CHUNK_ONE, a, is));
    /* blocks on 64-byte boundaries, as the kernels' own scratch */
    states_mem = malloc(c.sbytes * window + LA_ALIGN_BYTES((size_t)(a->f * ld) * sizeof(double)) +
                        64);
    c.betas = malloc(sizeof(double) * window);
    work = malloc(wsize * (size_t)nth + 64);
    if (states_mem == NULL || c.betas == NULL || work == NULL) {
        st = LA_ERR_NOMEM;
        goto done;
    }
    c.states = states_mem + (64 - (size_t)((uintptr_t)states_mem & 63u)) % 64;
    Sx = (double *)(void *)(c.states + c.sbytes * window);
    f64 ? la_linear_state_load_f64(a, Sx) : la_linear_state_load_f32(a, Sx);
    for (c0 = 0; c0 < nchunks && st == LA_OK; c0 += window) {
        c.c0 = c0;
        cw = nchunks - c0 < window ? nchunks - c0 : window;
        c.pass = 1;
        if ((st = la_parallel_items(cw, nth, seq_item, &c, work, wsize)) != LA_OK) {
            break;
        }
        for (j = 0; j < cw; j++) {
            char *sj = c.states + (size_t)j * c.sbytes;
            f64 ? la_linear_state_scan_f64(a, Sx, c.betas[j], (double *)sj)
                : la_linear_state_scan_f32(a, Sx, c.betas[j], (float *)sj);
        }
        c.pass = 2;
        st = la_parallel_items(cw, nth, seq_item, &c, work, wsize);
    }
    if (st == LA_OK) {
        f64 ? la_linear_state_store_f64(a, Sx) : la_linear_state_store_f32(a, Sx);
    }
done:
    free(states_mem);
    free(c.betas);
    free(work);
    return st;
}

static void
linear_loop(const la_call *c)
{
    const la_linear_data *d = (const la_linear_data *)c->data;
    const int causal = d->form != LA_FORM_NONCAUSAL;
    const int nth = la_get_num_threads();
    la_linear_args a;
    npy_int64 flags;
    npy_intp i;

    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.f = la_dim(c, "f");
    a.e = la_dim(c, "e");
    a.s = causal ? a.t : la_dim(c, "s");
    /* q, k, v and the options sit at the same positions in both signatures */
    a.q_rs = la_stride(c, LC_Q, 0);  a.q_cs = la_stride(c, LC_Q, 1);
    a.k_rs = la_stride(c, LC_K, 0);  a.k_cs = la_stride(c, LC_K, 1);
    a.v_rs = la_stride(c, LC_V, 0);  a.v_cs = la_stride(c, LC_V, 1);
    if (causal) {
        a.g_s = la_stride(c, LC_G, 0);
        a.s0_rs = la_stride(c, LC_S0, 0); a.s0_cs = la_stride(c, LC_S0, 1);
        a.z0_s = la_stride(c, LC_Z0, 0);
        a.o_rs = la_stride(c, LC_O, 0);   a.o_cs = la_stride(c, LC_O, 1);
        a.s1_rs = d->inplace ? a.s0_rs : la_stride(c, LC_S1, 0);
        a.s1_cs = d->inplace ? a.s0_cs : la_stride(c, LC_S1, 1);
        a.z1_s = d->inplace ? a.z0_s : la_stride(c, LC_Z1, 0);
    }
    else {
        a.o_rs = la_stride(c, LN_O, 0); a.o_cs = la_stride(c, LN_O, 1);
    }
    a.scale = LA_OPT_F(c, causal ? LC_SCALE : LN_SCALE);
    a.eps = LA_OPT_F(c, causal ? LC_EPS : LN_EPS);
    flags = LA_OPT_I(c, causal ? LC_FLAGS : LN_FLAGS);
    a.chunk = (la_index)LA_OPT_I(c, causal ? LC_CHUNK : LN_CHUNK);
    a.fmap_q = (int)(flags & 15);
    a.fmap_k = (int)((flags >> 4) & 15);
    a.norm = (int)((flags >> 8) & 3);
    a.eps_mode = (int)((flags >> 10) & 3);
    /* any non-NULL marks "decayed"; linear_bind sets the real pointer */
    a.g = causal && ((flags >> 12) & 1) ? (const double *)c->args[LC_G] : NULL;
    a.cancel = &la_cancel_flag;
    a.progress = &la_progress_done;

    if (d->form == LA_FORM_CHUNKED && c->n < nth && a.chunk >= 1 &&
        a.t >= la_tuning_active().seq_min_chunks * a.chunk * nth) {
        /* fewer slices than threads and a long sequence: split the sequence */
        const int sig = la_interrupt_begin();
        la_status st = LA_OK;
        for (i = 0; i < c->n && st == LA_OK; i++) {
            la_linear_args s1 = a;
            linear_bind(c, &s1, i);
            st = linear_seqpar_slice(&s1, c->f64, nth);
        }
        if (la_interrupt_end(sig) && st == LA_OK) {
            st = LA_ERR_INTERRUPTED;
        }
        if (st != LA_OK) {
            la_raise(st, c->name, 0);
        }
        return;
    }
    /* about 4 f e flops per token and slice */
    la_run(c, linear_item, &a, la_linear_work_size(d->form, &a, c->is),
           4.0 * (double)(a.t > a.s ? a.t : a.s) * (double)(a.f > 0 ? a.f : 1) *
               (double)(a.e + 1));
}

/* The block's state from a zero state (kernels/linear.h la_linear_transition):
 * k, v, g, flags, chunk -> S1, z1. */
enum { LT_K, LT_V, LT_G, LT_FLAGS, LT_CHUNK, LT_S1, LT_Z1 };

static la_status
transition_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_linear_args a = *(const la_linear_args *)proto;
    a.k = LA_AT(c, LT_K, i);
    a.v = LA_AT(c, LT_V, i);
    if (a.g != NULL) {
        a.g = (const double *)LA_AT(c, LT_G, i);
    }
    a.s1 = LA_AT(c, LT_S1, i);
    a.z1 = LA_AT(c, LT_Z1, i);
    return c->f64 ? la_linear_transition_f64(&a, work) : la_linear_transition_f32(&a, work);
}

static void
transition_loop(const la_call *c)
{
    la_linear_args a;
    npy_int64 flags;
    memset(&a, 0, sizeof(a));
    a.t = a.s = la_dim(c, "t");
    a.f = la_dim(c, "f");
    a.e = la_dim(c, "e");
    a.k_rs = la_stride(c, LT_K, 0);  a.k_cs = la_stride(c, LT_K, 1);
    a.v_rs = la_stride(c, LT_V, 0);  a.v_cs = la_stride(c, LT_V, 1);
    a.g_s = la_stride(c, LT_G, 0);
    a.s1_rs = la_stride(c, LT_S1, 0); a.s1_cs = la_stride(c, LT_S1, 1);
    a.z1_s = la_stride(c, LT_Z1, 0);
    flags = LA_OPT_I(c, LT_FLAGS);
    a.chunk = (la_index)LA_OPT_I(c, LT_CHUNK);
    a.fmap_q = (int)(flags & 15);
    a.fmap_k = (int)((flags >> 4) & 15);
    a.norm = (int)((flags >> 8) & 3);
    a.g = ((flags >> 12) & 1) ? (const double *)c->args[LT_G] : NULL;
    a.scale = 1.0;
    a.cancel = &la_cancel_flag;
    a.progress = &la_progress_done;
    /* about 2 f e flops per token and slice */
    la_run(c, transition_item, &a, la_linear_work_size(LA_FORM_CHUNKED, &a, c->is),
           2.0 * (double)a.t * (double)(a.f > 0 ? a.f : 1) * (double)(a.e + 1));
}

static const la_linear_data ld_rec = {
    {la_linear_recurrent_f32, la_linear_recurrent_f64}, LA_FORM_RECURRENT, 0};
static const la_linear_data ld_step = {
    {la_linear_recurrent_f32, la_linear_recurrent_f64}, LA_FORM_RECURRENT, 1};
static const la_linear_data ld_chk = {
    {la_linear_chunked_f32, la_linear_chunked_f64}, LA_FORM_CHUNKED, 0};
static const la_linear_data ld_par = {
    {la_linear_parallel_f32, la_linear_parallel_f64}, LA_FORM_PARALLEL, 0};
static const la_linear_data ld_nc = {
    {la_linear_noncausal_f32, la_linear_noncausal_f64}, LA_FORM_NONCAUSAL, 0};

#define LA_CAUSAL_SIG "(t,f),(t,f),(t,e),(t),(f,e),(f),(),(),(),()->(t,e),(f,e),(f)"
#define LA_CAUSAL_IN "q:T k:T v:T g:d S0:T z0:T scale:D eps:D flags:Q chunk:Q"

static const la_gufunc linear_table[] = {
    {"_causal_recurrent", LA_CAUSAL_SIG, LA_CAUSAL_IN " -> o:T S1:T z1:T",
     "Causal linear attention, recurrent (prefix-sum state) form.", linear_loop, &ld_rec},
    {"_causal_chunked", LA_CAUSAL_SIG, LA_CAUSAL_IN " -> o:T S1:T z1:T",
     "Causal linear attention, chunked form (three GEMMs per chunk).", linear_loop, &ld_chk},
    {"_causal_parallel", LA_CAUSAL_SIG, LA_CAUSAL_IN " -> o:T S1:T z1:T",
     "Causal linear attention, parallel (masked quadratic) form.", linear_loop, &ld_par},
    {"_step_inplace", "(t,f),(t,f),(t,e),(t),(f,e),(f),(),(),(),()->(t,e)",
     LA_CAUSAL_IN " -> o:T",
     "Recurrent form updating the state inputs S, z in place (la.step inplace=True).",
     linear_loop, &ld_step},
    {"_linear_transition", "(t,f),(t,e),(t),(),()->(f,e),(f)",
     "k:T v:T g:d flags:Q chunk:Q -> S1:T z1:T",
     "The state after a block from a zero state, without outputs (block-state scan, "
     "pass 1).", transition_loop, NULL},
    {"_noncausal", "(t,f),(s,f),(s,e),(),(),(),()->(t,e)",
     "q:T k:T v:T scale:D eps:D flags:Q chunk:Q -> o:T",
     "Non-causal linear attention (and cross-attention).", linear_loop, &ld_nc},
};

LA_REGISTER(linear, linear_table)
