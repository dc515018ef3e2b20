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
 * Sequence parallelism (docs/design/family.md §7) for fewer (batch, head)
 * slices than threads, as one job of the pool per slice.  Each chunk j has
 * three steps: pass 1 (its state increment dS_j from its keys and values,
 * any order), the scan (S <- exp(beta_j) S + dS_j, strictly in chunk order,
 * leaving the state entering chunk j in dS_j's place) and pass 2 (its
 * outputs from that entering state).  Every worker loops: pass 2 of the
 * oldest scanned chunk if there is one, else the scan as far as pass 1 has
 * gone, else pass 1 of the next chunk while a ring slot is free; only when
 * the step it needs is running on another worker does it wait
 * (la_wait_progress: a short spin, then a sleep).  No barrier per window, the
 * scan overlaps the passes, and pass 1 keeps the chunk's key features and
 * [V | 1] rows in the slot, so pass 2 computes only the query features.  The
 * operations are those of the serial chunked kernel: bit-identical results.
 * The ring holds at most the tuning table's seq_window chunks (state,
 * kept keys and values), and at most LA_SEQ_RING_BYTES of them.
 */
#define LA_SEQ_RING_BYTES ((size_t)1 << 20)

typedef struct {
    const la_linear_args *a;
    int f64;
    la_index C, nchunks, R;
    char *ring;       /* R slots of slot bytes: state block | keys | [V | 1] */
    size_t slot, sbytes, kbytes;
    double *betas;    /* per slot */
    la_index *p1_done;  /* per slot: j + 1 once pass 1 of chunk j is done */
    la_index *free_for; /* per slot: the chunk whose pass 1 may use it next */
    double *Sx;       /* the running state (the scan's), float64 in both dtypes */
    char *work;
    size_t wsize;
    la_index p1_next, p2_next, scanned;
    int scan_lock, status, caller_cpu;
    unsigned progress; /* bumped after every step, for waiting workers */
} la_seq_ctx;

static char *
seq_slot(const la_seq_ctx *c, la_index j)
{
    return c->ring + (size_t)(j % c->R) * c->slot;
}

/* The scan of chunk j: the running state absorbs dS_j, which receives the
 * state entering chunk j. */
static void
seq_scan_one(la_seq_ctx *c, la_index j)
{
    char *sj = seq_slot(c, j);
    const double beta = c->betas[j % c->R];
    c->f64 ? la_linear_state_scan_f64(c->a, c->Sx, beta, (double *)sj)
           : la_linear_state_scan_f32(c->a, c->Sx, beta, (float *)sj);
}

static la_status
seq_pass1(la_seq_ctx *c, la_index j, char *work)
{
    char *sj = seq_slot(c, j);
    const la_index t0 = j * c->C;
    double *beta = &c->betas[j % c->R];
    return c->f64 ? la_linear_chunk_pass1_keep_f64(c->a, work, t0, (double *)sj, beta,
                                                   (double *)(sj + c->sbytes),
                                                   (double *)(sj + c->sbytes + c->kbytes))
                  : la_linear_chunk_pass1_keep_f32(c->a, work, t0, (float *)sj, beta,
                                                   (float *)(sj + c->sbytes),
                                                   (float *)(sj + c->sbytes + c->kbytes));
}

static la_status
seq_pass2(la_seq_ctx *c, la_index j, char *work)
{
    const char *sj = seq_slot(c, j);
    const la_index t0 = j * c->C;
    return c->f64
               ? la_linear_chunk_pass2_kept_f64(c->a, work, t0, (const double *)sj,
                                                (const double *)(sj + c->sbytes),
                                                (const double *)(sj + c->sbytes + c->kbytes))
               : la_linear_chunk_pass2_kept_f32(c->a, work, t0, (const float *)sj,
                                                (const float *)(sj + c->sbytes),
                                                (const float *)(sj + c->sbytes + c->kbytes));
}

/* Scan as far as pass 1 has gone, if no other worker is scanning; returns
 * whether it scanned any chunk. */
static int
seq_try_scan(la_seq_ctx *c)
{
    la_index s;
    int moved = 0;
    if (__atomic_exchange_n(&c->scan_lock, 1, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    s = __atomic_load_n(&c->scanned, __ATOMIC_RELAXED);
    while (s < c->nchunks &&
           __atomic_load_n(&c->p1_done[s % c->R], __ATOMIC_ACQUIRE) == s + 1) {
        seq_scan_one(c, s);
        __atomic_store_n(&c->scanned, ++s, __ATOMIC_RELEASE);
        __atomic_add_fetch(&c->progress, 1, __ATOMIC_RELEASE);
        moved = 1;
    }
    __atomic_store_n(&c->scan_lock, 0, __ATOMIC_RELEASE);
    return moved;
}

static void
seq_fail(la_seq_ctx *c, la_status st)
{
    int ok = LA_OK;
    __atomic_compare_exchange_n(&c->status, &ok, (int)st, 0, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->progress, 1, __ATOMIC_RELEASE);
}

static void
seq_worker(void *vctx, int ith, int nth)
{
    la_seq_ctx *c = (la_seq_ctx *)vctx;
    char *work = c->work + (size_t)ith * c->wsize;
    (void)nth;
    while (__atomic_load_n(&c->status, __ATOMIC_RELAXED) == LA_OK) {
        const unsigned seen = __atomic_load_n(&c->progress, __ATOMIC_ACQUIRE);
        la_index j = __atomic_load_n(&c->p2_next, __ATOMIC_RELAXED);
        la_status st;
        if (j >= c->nchunks) {
            break; /* every output pass is taken: the scan is complete */
        }
        if (la_leave_caller_cpu(&c->caller_cpu, ith)) {
            break; /* on the caller's core: it does the rest (this worker holds no step) */
        }
        if (la_cancel_flag) {
            seq_fail(c, LA_ERR_INTERRUPTED);
            break;
        }
        if (j < __atomic_load_n(&c->scanned, __ATOMIC_ACQUIRE)) {
            if (__atomic_compare_exchange_n(&c->p2_next, &j, j + 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) {
                if ((st = seq_pass2(c, j, work)) != LA_OK) {
                    seq_fail(c, st);
                    break;
                }
                /* the slot is free for the chunk R later */
                __atomic_store_n(&c->free_for[j % c->R], j + c->R, __ATOMIC_RELEASE);
                __atomic_add_fetch(&c->progress, 1, __ATOMIC_RELEASE);
            }
            continue;
        }
        if (seq_try_scan(c)) {
            continue;
        }
        j = __atomic_load_n(&c->p1_next, __ATOMIC_RELAXED);
        if (j < c->nchunks && __atomic_load_n(&c->free_for[j % c->R], __ATOMIC_ACQUIRE) == j) {
            if (__atomic_compare_exchange_n(&c->p1_next, &j, j + 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) {
                if ((st = seq_pass1(c, j, work)) != LA_OK) {
                    seq_fail(c, st);
                    break;
                }
                __atomic_store_n(&c->p1_done[j % c->R], j + 1, __ATOMIC_RELEASE);
                __atomic_add_fetch(&c->progress, 1, __ATOMIC_RELEASE);
            }
            continue;
        }
        /* what this worker could do next runs on another one */
        (void)la_wait_progress(&c->progress, seen);
    }
}

static la_status
linear_seqpar_slice(const la_linear_args *a, int f64, int nth)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    const la_index C = a->chunk < a->t ? a->chunk : a->t;
    const la_index ld = la_linear_chunk_ld(a, is); /* row stride of states and values */
    la_seq_ctx c;
    la_status st = LA_OK;
    char *mem = NULL, *work = NULL;
    la_index j, R = la_tuning_active().seq_window;
    memset(&c, 0, sizeof(c));
    c.a = a;
    c.f64 = f64;
    c.caller_cpu = -1;
    c.C = C;
    c.nchunks = (a->t + C - 1) / C;
    c.sbytes = LA_ALIGN_BYTES((size_t)(a->f * ld) * is);
    c.kbytes = LA_ALIGN_BYTES((size_t)(C * a->f) * is);
    c.slot = c.sbytes + c.kbytes + LA_ALIGN_BYTES((size_t)(C * ld) * is);
    /* a few chunks ahead per worker is all the lookahead the loop needs */
    if ((la_index)(LA_SEQ_RING_BYTES / c.slot) < R) {
        R = (la_index)(LA_SEQ_RING_BYTES / c.slot);
    }
    R = R < 4 * (la_index)nth ? 4 * (la_index)nth : R;
    c.R = R < c.nchunks ? R : c.nchunks;
    c.wsize = LA_ALIGN_BYTES(la_linear_work_size(LA_FORM_CHUNK_ONE, a, is));
    /* blocks on 64-byte boundaries, as the kernels' own scratch */
    mem = malloc(c.slot * (size_t)c.R + LA_ALIGN_BYTES((size_t)(a->f * ld) * sizeof(double)) + 64);
    c.betas = malloc((sizeof(double) + 2 * sizeof(la_index)) * (size_t)c.R);
    work = malloc(c.wsize * (size_t)nth + 64);
    if (mem == NULL || c.betas == NULL || work == NULL) {
        st = LA_ERR_NOMEM;
        goto done;
    }
    c.p1_done = (la_index *)(c.betas + c.R);
    c.free_for = c.p1_done + c.R;
    for (j = 0; j < c.R; j++) {
        c.p1_done[j] = 0;
        c.free_for[j] = j;
    }
    c.ring = mem + (64 - (size_t)((uintptr_t)mem & 63u)) % 64;
    c.Sx = (double *)(void *)(c.ring + c.slot * (size_t)c.R);
    c.work = work;
    f64 ? la_linear_state_load_f64(a, c.Sx) : la_linear_state_load_f32(a, c.Sx);
    la_parallel_run(seq_worker, &c, nth);
    st = (la_status)c.status;
    if (st == LA_OK) {
        f64 ? la_linear_state_store_f64(a, c.Sx) : la_linear_state_store_f32(a, c.Sx);
    }
done:
    free(mem);
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
    /* any non-NULL marks "decayed"; linear_bind sets the real pointer */
    a.g = la_linear_set_flags(&a, flags) && causal ? (const double *)c->args[LC_G] : NULL;
    a.cancel = &la_cancel_flag;
    a.progress = &la_progress_done;

    if (d->form == LA_FORM_CHUNKED && c->n < nth && a.chunk >= 1 &&
        a.t >= la_tuning_active().seq_min_chunks * a.chunk * nth &&
        !la_oversubscribed(nth - 1)) {
        /* fewer slices than threads and a long sequence: split the sequence
         * (not on a machine without free cores: each step of the scan's chain
         * would wait for a preempted worker) */
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
    a.g = la_linear_set_flags(&a, flags) ? (const double *)c->args[LT_G] : NULL;
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


/* ---------------------------------- the entries without the gufunc dispatch -- */

/*
 * Two plain C functions run what the recurrent gufuncs run per (batch, head)
 * item, without NumPy's gufunc dispatch (operand iterator, the output's
 * allocation through it, the loop's set-up): about 3 us of a small call
 * (docs/internals.md, "One call, described once").  They share the operand
 * checks, the item binding and the runner below; every operand is checked
 * before anything runs, so a wrong call raises (TypeError / ValueError,
 * naming the argument, the expected and the actual) and writes nothing.
 * Items are split over the pool by the runner's rule (la_workers_for_work:
 * the same estimate and load awareness as every gufunc call).
 *
 * _step_token(q, k, v, g, S, z, scale, eps, flags, copy) -> o, or (o, S1, z1)
 *
 * One decoding step of the generic operator: the entry of la.Decoder's plan
 * and la.step's, which have checked the kind and its options once.  It runs
 * exactly what the _step_inplace gufunc (copy = 0) and _causal_recurrent
 * with T = 1 (copy = 1) run per item (la_linear_step_token:
 * la_linear_recurrent's operations on one token), so the results are the
 * same bit for bit:
 *
 *   q, k    (..., F) and v (..., E), ndarrays of S's dtype (float32 or
 *           float64), the batch dimensions ... those of S (no broadcasting);
 *   g       None (no decay) or a float64 log-decay broadcasting to the batch
 *           shape, every entry <= 0 (checked here, before anything runs: the
 *           caller then takes la.step's full path for its error);
 *   S, z    (..., F, E) and (..., F): updated in place when copy = 0
 *           (writeable, aligned); read only when copy = 1, and the new state
 *           comes back in fresh C-contiguous arrays S1, z1 (z1 = zeros
 *           without the div normaliser, as the gufunc writes it);
 *   scale, eps (float), flags (int: the gufunc's flags, bit 12 ignored: g
 *           decides).
 *
 * _causal_token(q, k, v, g, S0, z0, scale, eps, flags) -> (o, S1, z1)
 *
 * A causal call in the recurrent form: the entry of la.causal's plans whose
 * mode resolves to it (linattn._call.linear_causal_plan: the small calls).
 * Each item runs la_linear_recurrent on its rows from S0, z0 with the scratch
 * the _causal_recurrent gufunc gives it, so o, S1 and z1 are that gufunc's
 * bit for bit.  A separate entry rather than _step_token with a T axis: that
 * one's operands have no time axis and its state may be updated in place,
 * this one's are the gufunc's (a time axis, broadcasting, a new state):
 *
 *   q, k    (..., T, F), v (..., T, E): ndarrays of q's dtype (float32 or
 *           float64), any strides (multiples of the item size);
 *   g       None (no decay) or a float64 (..., T) log-decay, every entry <= 0
 *           (checked here: the caller then takes la.causal's full path for
 *           its error);
 *   S0, z0  (..., F, E) and (..., F) in q's dtype, read only;
 *   scale, eps (float), flags (int: bit 12 ignored, g decides).
 *
 * The batch dimensions of the six operands broadcast as the gufunc's do
 * (the plan's zero state has none, a per-head decay fewer, grouped keys
 * size-1 heads); o (..., T, E), S1 (..., F, E) and z1 (..., F) are new
 * C-contiguous arrays of the broadcast batch shape (z1 = zeros without the
 * div normaliser).
 */
enum { ST_Q, ST_K, ST_V, ST_G, ST_S, ST_Z, ST_O, ST_S1, ST_Z1, ST_NOP };

typedef struct {
    la_linear_args proto;
    la_linear_fn fn;
    const char *where;                     /* "linattn._step_token", for errors */
    const char *batch_of;                  /* whose batch shape: "the state's" */
    size_t is;                             /* the item size */
    int nb;                                /* batch dimensions */
    npy_intp shape[NPY_MAXDIMS];           /* the batch shape */
    char *base[ST_NOP];
    npy_intp bstr[ST_NOP][NPY_MAXDIMS];   /* byte strides over the batch (0: broadcast) */
} la_token_ctx;

static la_status
token_item(void *vctx, la_index i, char *work)
{
    const la_token_ctx *c = (const la_token_ctx *)vctx;
    la_linear_args a = c->proto;
    char *p[ST_NOP];
    npy_intp rest = (npy_intp)i;
    int op, d;
    for (op = 0; op < ST_NOP; op++) {
        p[op] = c->base[op];
    }
    for (d = c->nb - 1; d >= 0; d--) {
        const npy_intp idx = rest % c->shape[d];
        rest /= c->shape[d];
        for (op = 0; op < ST_NOP; op++) {
            p[op] += idx * c->bstr[op][d];
        }
    }
    a.q = p[ST_Q];
    a.k = p[ST_K];
    a.v = p[ST_V];
    a.g = a.g != NULL ? (const double *)(void *)p[ST_G] : NULL;
    a.s0 = p[ST_S];
    a.z0 = p[ST_Z];
    a.o = p[ST_O];
    a.s1 = p[ST_S1];
    a.z1 = p[ST_Z1];
    return c->fn(&a, work);
}

/* TypeError unless x is an ndarray with at least `core` dimensions. */
static int
token_array(const la_token_ctx *c, const char *name, PyObject *x, int core)
{
    if (!PyArray_Check(x)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an ndarray, got %s", c->where, name,
                     Py_TYPE(x)->tp_name);
        return -1;
    }
    if (PyArray_NDIM((PyArrayObject *)x) < core) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have at least %d dimensions (its core), "
                     "got %d", c->where, name, core, PyArray_NDIM((PyArrayObject *)x));
        return -1;
    }
    return 0;
}

/* Widen c's batch shape (c->nb, c->shape) by x's batch dimensions (those
 * before its `core` axes), as NumPy broadcasts; ValueError naming x when
 * they do not broadcast. */
static int
token_broadcast(la_token_ctx *c, const char *name, PyObject *x, int core)
{
    PyArrayObject *arr = (PyArrayObject *)x;
    const int nd = PyArray_NDIM(arr) - core;
    int d;
    if (token_array(c, name, x, core) < 0) {
        return -1;
    }
    if (nd > c->nb) { /* more batch dimensions: the shape gains leading ones */
        memmove(c->shape + (nd - c->nb), c->shape, sizeof(npy_intp) * (size_t)c->nb);
        for (d = 0; d < nd - c->nb; d++) {
            c->shape[d] = 1;
        }
        c->nb = nd;
    }
    for (d = 0; d < nd; d++) {
        const npy_intp n = PyArray_DIM(arr, d);
        npy_intp *s = &c->shape[c->nb - nd + d];
        if (*s == 1) {
            *s = n;
        }
        else if (n != *s && n != 1) {
            PyObject *shp = PyArray_IntTupleFromIntp(PyArray_NDIM(arr), PyArray_DIMS(arr));
            PyObject *bat = PyArray_IntTupleFromIntp(c->nb, c->shape);
            if (shp != NULL && bat != NULL) {
                PyErr_Format(PyExc_ValueError,
                             "%s: %s has shape %R, whose batch dimensions do not broadcast "
                             "against the other operands' %R", c->where, name, shp, bat);
            }
            Py_XDECREF(shp);
            Py_XDECREF(bat);
            return -1;
        }
    }
    return 0;
}

/*
 * TypeError / ValueError naming the argument; returns 0 when x is an aligned
 * native ndarray of dtype `type` with `core` core axes after batch dimensions
 * equal to c->shape (bcast: broadcasting to it, without widening it) and, where
 * `want` is given, the core sizes want[0..core) (`axes` names them: "(T, F)"),
 * filling its base pointer and batch strides.
 */
static int
token_operand(la_token_ctx *c, int op, const char *name, PyObject *x, int type, int core,
              int bcast, int writeable, const npy_intp *want, const char *axes)
{
    PyArrayObject *arr;
    int nd, d, off;
    if (token_array(c, name, x, 0) < 0) {
        return -1;
    }
    arr = (PyArrayObject *)x;
    nd = PyArray_NDIM(arr);
    if (PyArray_TYPE(arr) != type || !PyArray_ISALIGNED(arr) ||
        !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be an aligned native %s array, got dtype %R%s", c->where,
                     name, type == NPY_FLOAT32 ? "float32" : "float64",
                     (PyObject *)PyArray_DESCR(arr),
                     PyArray_ISALIGNED(arr) ? "" : " (not aligned)");
        return -1;
    }
    if (writeable && !PyArray_ISWRITEABLE(arr)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be writeable (updated in place)",
                     c->where, name);
        return -1;
    }
    if (nd < core || (bcast ? nd - core > c->nb : nd != c->nb + core)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: %s must have %s%d dimensions (%s %d batch dimensions and %d core), "
                     "got %d", c->where, name, bcast ? "at most " : "", c->nb + core,
                     c->batch_of, c->nb, core, nd);
        return -1;
    }
    off = c->nb - (nd - core); /* leading batch axes a broadcast operand lacks */
    for (d = 0; d < c->nb; d++) {
        npy_intp n = d < off ? 1 : PyArray_DIM(arr, d - off);
        if (n != c->shape[d] && !(bcast && n == 1)) {
            PyObject *shp = PyArray_IntTupleFromIntp(nd, PyArray_DIMS(arr));
            if (shp != NULL) {
                PyErr_Format(PyExc_ValueError,
                             "%s: %s has shape %R, whose batch dimensions are not %s",
                             c->where, name, shp, c->batch_of);
                Py_DECREF(shp);
            }
            return -1;
        }
        c->bstr[op][d] = (d < off || n == 1) ? 0 : PyArray_STRIDE(arr, d - off);
    }
    for (d = 0; d < core; d++) {
        const int ax = nd - core + d;
        if (want != NULL && PyArray_DIM(arr, ax) != want[d]) {
            PyObject *shp = PyArray_IntTupleFromIntp(nd, PyArray_DIMS(arr));
            PyObject *core_want = PyArray_IntTupleFromIntp(core, want);
            if (shp != NULL && core_want != NULL) {
                PyErr_Format(PyExc_ValueError, "%s: %s must have the core shape %s = %R, "
                             "got shape %R", c->where, name, axes, core_want, shp);
            }
            Py_XDECREF(shp);
            Py_XDECREF(core_want);
            return -1;
        }
        if (PyArray_STRIDE(arr, ax) % (npy_intp)PyArray_ITEMSIZE(arr) != 0) {
            PyErr_Format(PyExc_ValueError, "%s: %s has a stride that is not a "
                         "multiple of its item size", c->where, name);
            return -1;
        }
    }
    c->base[op] = PyArray_BYTES(arr);
    return 0;
}

/* Element stride of core axis ax (counted from the end: 1 the last) of x. */
static la_index
token_stride(PyObject *x, int ax, size_t is)
{
    PyArrayObject *arr = (PyArrayObject *)x;
    return LA_ES(PyArray_STRIDE(arr, PyArray_NDIM(arr) - ax), is);
}

/* ValueError unless every log-decay the items read (t tokens each, ts bytes
 * apart) is <= 0 (NaN included): checked before any item runs, so a rejected
 * call writes nothing.  Batch dimensions g broadcasts over are read once. */
static int
token_check_decay(const la_token_ctx *c, npy_intp t, npy_intp ts)
{
    npy_intp i, j, rest, m = 1;
    int d;
    if (ts == 0 && t > 1) {
        t = 1; /* one decay for every token */
    }
    for (d = 0; d < c->nb; d++) {
        m *= c->bstr[ST_G][d] != 0 ? c->shape[d] : 1;
    }
    for (i = 0; i < m; i++) {
        const char *p = c->base[ST_G];
        for (rest = i, d = c->nb - 1; d >= 0; d--) {
            if (c->bstr[ST_G][d] != 0) {
                p += (rest % c->shape[d]) * c->bstr[ST_G][d];
                rest /= c->shape[d];
            }
        }
        for (j = 0; j < t; j++) {
            const double x = *(const double *)(const void *)(p + j * ts);
            if (!(x <= 0.0)) {
                PyObject *got = PyFloat_FromDouble(x);
                if (got != NULL) {
                    PyErr_Format(PyExc_ValueError, "%s: g must be a log-decay <= 0 (no "
                                 "NaN), got %R", c->where, got);
                    Py_DECREF(got);
                }
                return -1;
            }
        }
    }
    return 0;
}

/* A new C-contiguous array of the batch shape and `core` more axes, its base
 * and batch strides bound to operand op. */
static PyArrayObject *
token_output(la_token_ctx *c, int op, int type, int core, const npy_intp *tail)
{
    npy_intp dims[NPY_MAXDIMS + 2];
    PyArrayObject *r;
    int d;
    memcpy(dims, c->shape, sizeof(npy_intp) * (size_t)c->nb);
    memcpy(dims + c->nb, tail, sizeof(npy_intp) * (size_t)core);
    r = (PyArrayObject *)PyArray_SimpleNew(c->nb + core, dims, type);
    if (r == NULL) {
        return NULL;
    }
    c->base[op] = PyArray_BYTES(r);
    for (d = 0; d < c->nb; d++) {
        c->bstr[op][d] = PyArray_STRIDE(r, d);
    }
    return r;
}

/*
 * Run the n items over the pool: threads by la_workers_for_work from the
 * flops and operand bytes of one item, the kernel's recurrent-form scratch
 * per worker, the GIL released (la_run_items, the gufuncs' runner).
 * interruptible: a call of at least one worker's share routes Ctrl-C to the
 * kernels, as for the gufuncs.  Returns 0, or -1 with an exception set.
 */
static int
token_run(la_token_ctx *c, npy_intp n, double flops, double bytes, int interruptible)
{
    const size_t wsize = la_linear_work_size(LA_FORM_RECURRENT, &c->proto, c->is);
    double total = 0.0;
    const int nth = n > 0 ? la_workers_for_work(n, flops, bytes, &total) : 1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = la_run_items(n, nth, total, token_item, c, wsize, c->where, interruptible);
    Py_END_ALLOW_THREADS
    return rc;
}

/*
 * The start of both entries: the argument count, the operand that sets the
 * dtype (argument ref: S of the step, q of the causal call, an ndarray of
 * float32 or float64 with at least `core` dimensions), and scale, eps and
 * flags (arguments 6, 7, 8) into the prototype: the maps, the normaliser, the
 * eps mode (bit 12 is left to g).  Returns the dtype's type number, or -1.
 */
static int
token_begin(la_token_ctx *c, const char *where, const char *batch_of, PyObject *const *args,
            Py_ssize_t nargs, Py_ssize_t want, int ref, const char *ref_name, int core)
{
    la_linear_args *a = &c->proto;
    long long flags;
    int type;
    memset(c, 0, sizeof(*c));
    c->where = where;
    c->batch_of = batch_of;
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", where, want, nargs);
        return -1;
    }
    if (token_array(c, ref_name, args[ref], core) < 0) {
        return -1;
    }
    type = PyArray_TYPE((PyArrayObject *)args[ref]);
    if (type != NPY_FLOAT32 && type != NPY_FLOAT64) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be float32 or float64, got %R", where,
                     ref_name, (PyObject *)PyArray_DESCR((PyArrayObject *)args[ref]));
        return -1;
    }
    c->is = type == NPY_FLOAT64 ? sizeof(double) : sizeof(float);
    a->scale = PyFloat_AsDouble(args[6]);
    a->eps = PyFloat_AsDouble(args[7]);
    flags = PyLong_AsLongLong(args[8]);
    if (PyErr_Occurred()) {
        return -1;
    }
    (void)la_linear_set_flags(a, flags);
    a->cancel = &la_cancel_flag;
    a->progress = &la_progress_done;
    return type;
}

/* The entries' result: (o, S1, z1), or o alone when there is no new state
 * (S1 NULL); when ok is 0, NULL (an exception is set) and the new arrays freed. */
static PyObject *
token_result(int ok, PyArrayObject *o, PyArrayObject *S1, PyArrayObject *z1)
{
    if (!ok) {
        Py_XDECREF(o);
        Py_XDECREF(S1);
        Py_XDECREF(z1);
        return NULL;
    }
    if (S1 == NULL) {
        return (PyObject *)o;
    }
    return Py_BuildValue("(NNN)", (PyObject *)o, (PyObject *)S1, (PyObject *)z1);
}

PyObject *
la_step_token(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyArrayObject *S, *o = NULL, *S1 = NULL, *z1 = NULL;
    la_token_ctx c;
    la_linear_args *a = &c.proto;
    npy_intp n = 1, tail[2];
    int type, f64, copy, d;
    size_t is;
    (void)self;
    if ((type = token_begin(&c, "linattn._step_token", "the state's", args, nargs, 10, 4, "S",
                            2)) < 0 ||
        (copy = PyObject_IsTrue(args[9])) < 0) {
        return NULL;
    }
    S = (PyArrayObject *)args[4];
    f64 = type == NPY_FLOAT64;
    is = c.is;
    c.nb = PyArray_NDIM(S) - 2;
    for (d = 0; d < c.nb; d++) {
        c.shape[d] = PyArray_DIM(S, d);
        n *= c.shape[d];
    }
    a->t = a->s = 1;
    a->f = PyArray_DIM(S, c.nb);
    a->e = PyArray_DIM(S, c.nb + 1);
    a->chunk = 1;
    if (token_operand(&c, ST_S, "S", args[4], type, 2, 0, !copy, NULL, NULL) < 0 ||
        token_operand(&c, ST_Z, "z", args[5], type, 1, 0, !copy, NULL, NULL) < 0 ||
        token_operand(&c, ST_Q, "q", args[0], type, 1, 0, 0, NULL, NULL) < 0 ||
        token_operand(&c, ST_K, "k", args[1], type, 1, 0, 0, NULL, NULL) < 0 ||
        token_operand(&c, ST_V, "v", args[2], type, 1, 0, 0, NULL, NULL) < 0 ||
        (args[3] != Py_None &&
         token_operand(&c, ST_G, "g", args[3], NPY_FLOAT64, 0, 1, 0, NULL, NULL) < 0)) {
        return NULL;
    }
    if (PyArray_DIM((PyArrayObject *)args[5], c.nb) != a->f ||
        PyArray_DIM((PyArrayObject *)args[0], c.nb) != a->f ||
        PyArray_DIM((PyArrayObject *)args[1], c.nb) != a->f ||
        PyArray_DIM((PyArrayObject *)args[2], c.nb) != a->e) {
        PyErr_Format(PyExc_ValueError,
                     "_step_token: q, k and z must have F = %zd entries and v E = %zd "
                     "(the state's S is (..., F, E))", (Py_ssize_t)a->f, (Py_ssize_t)a->e);
        return NULL;
    }
    a->q_cs = token_stride(args[0], 1, is);
    a->k_cs = token_stride(args[1], 1, is);
    a->v_cs = token_stride(args[2], 1, is);
    a->q_rs = a->k_rs = a->v_rs = a->o_rs = 0; /* one token */
    a->s0_rs = token_stride(args[4], 2, is);
    a->s0_cs = token_stride(args[4], 1, is);
    a->z0_s = token_stride(args[5], 1, is);
    a->g = args[3] != Py_None ? (const double *)PyArray_DATA((PyArrayObject *)args[3]) : NULL;
    a->g_s = 0;
    /* the outputs: o (..., E); with copy the new state (..., F, E), (..., F) */
    tail[0] = a->e;
    if ((o = token_output(&c, ST_O, type, 1, tail)) == NULL) {
        return NULL;
    }
    a->o_cs = 1;
    if (copy) {
        tail[0] = a->f;
        tail[1] = a->e;
        if ((S1 = token_output(&c, ST_S1, type, 2, tail)) == NULL ||
            (z1 = token_output(&c, ST_Z1, type, 1, tail)) == NULL) {
            goto fail;
        }
        a->s1_rs = a->e;
        a->s1_cs = 1;
        a->z1_s = 1;
    }
    else {
        c.base[ST_S1] = c.base[ST_S];
        c.base[ST_Z1] = c.base[ST_Z];
        memcpy(c.bstr[ST_S1], c.bstr[ST_S], sizeof(c.bstr[ST_S]));
        memcpy(c.bstr[ST_Z1], c.bstr[ST_Z], sizeof(c.bstr[ST_Z]));
        a->s1_rs = a->s0_rs;
        a->s1_cs = a->s0_cs;
        a->z1_s = a->z0_s;
    }
    c.fn = f64 ? la_linear_step_token_f64 : la_linear_step_token_f32;
    if (a->g != NULL && token_check_decay(&c, 1, 0) < 0) {
        goto fail;
    }
    /* the operands of one item as the _step_inplace gufunc counts them (the
     * copy's new state once more), and about 4 f e flops */
    if (token_run(&c, n, 4.0 * (double)(a->f > 0 ? a->f : 1) * (double)(a->e + 1),
                  (double)is * (double)(2 * a->f + 2 * a->e + a->f * a->e + a->f) + 40.0 +
                      (copy ? (double)is * (double)(a->f * a->e + a->f) : 0.0),
                  0) < 0) {
        goto fail;
    }
    return token_result(1, o, S1, z1);
fail:
    return token_result(0, o, S1, z1);
}

PyObject *
la_causal_token(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* operands in argument order: name, core axes, slot */
    static const char *const names[6] = {"q", "k", "v", "g", "S0", "z0"};
    static const int cores[6] = {2, 2, 2, 1, 2, 1};
    static const int slots[6] = {ST_Q, ST_K, ST_V, ST_G, ST_S, ST_Z};
    static const char *const axes[6] = {"(T, F)", "(T, F)", "(T, E)", "(T,)", "(F, E)",
                                        "(F,)"};
    PyArrayObject *q, *o = NULL, *S1 = NULL, *z1 = NULL;
    la_token_ctx c;
    la_linear_args *a = &c.proto;
    npy_intp n = 1, want[6][2], T, F, E;
    int type, f64, j, d;
    size_t is;
    (void)self;
    if ((type = token_begin(&c, "linattn._causal_token", "the operands' broadcast", args,
                            nargs, 9, 0, "q", 2)) < 0 ||
        token_array(&c, "v", args[2], 2) < 0) {
        return NULL;
    }
    q = (PyArrayObject *)args[0];
    f64 = type == NPY_FLOAT64;
    is = c.is;
    /* the batch shape: every operand's batch dimensions broadcast */
    for (j = 0; j < 6; j++) {
        if ((j != 3 || args[3] != Py_None) &&
            token_broadcast(&c, names[j], args[j], cores[j]) < 0) {
            return NULL;
        }
    }
    for (d = 0; d < c.nb; d++) {
        n *= c.shape[d];
    }
    T = PyArray_DIM(q, PyArray_NDIM(q) - 2);
    F = PyArray_DIM(q, PyArray_NDIM(q) - 1);
    E = PyArray_DIM((PyArrayObject *)args[2], PyArray_NDIM((PyArrayObject *)args[2]) - 1);
    want[0][0] = want[1][0] = want[2][0] = want[3][0] = T;
    want[0][1] = want[1][1] = want[4][0] = want[5][0] = F;
    want[2][1] = want[4][1] = E;
    for (j = 0; j < 6; j++) {
        if ((j != 3 || args[3] != Py_None) &&
            token_operand(&c, slots[j], names[j], args[j], j == 3 ? NPY_FLOAT64 : type,
                          cores[j], 1, 0, want[j], axes[j]) < 0) {
            return NULL;
        }
    }
    a->t = a->s = (la_index)T;
    a->f = (la_index)F;
    a->e = (la_index)E;
    a->chunk = 1; /* not read by the recurrent form */
    a->q_rs = token_stride(args[0], 2, is);
    a->q_cs = token_stride(args[0], 1, is);
    a->k_rs = token_stride(args[1], 2, is);
    a->k_cs = token_stride(args[1], 1, is);
    a->v_rs = token_stride(args[2], 2, is);
    a->v_cs = token_stride(args[2], 1, is);
    a->s0_rs = token_stride(args[4], 2, is);
    a->s0_cs = token_stride(args[4], 1, is);
    a->z0_s = token_stride(args[5], 1, is);
    if (args[3] != Py_None) {
        a->g = (const double *)PyArray_DATA((PyArrayObject *)args[3]);
        a->g_s = token_stride(args[3], 1, sizeof(double));
    }
    /* the outputs, as the gufunc allocates them */
    want[0][0] = T;
    want[0][1] = E;
    want[1][0] = F;
    want[1][1] = E;
    if ((o = token_output(&c, ST_O, type, 2, want[0])) == NULL ||
        (S1 = token_output(&c, ST_S1, type, 2, want[1])) == NULL ||
        (z1 = token_output(&c, ST_Z1, type, 1, want[1])) == NULL) {
        goto fail;
    }
    a->o_rs = a->e;
    a->o_cs = 1;
    a->s1_rs = a->e;
    a->s1_cs = 1;
    a->z1_s = 1;
    c.fn = f64 ? la_linear_recurrent_f64 : la_linear_recurrent_f32;
    if (a->g != NULL &&
        token_check_decay(&c, T, PyArray_STRIDE((PyArrayObject *)args[3],
                                                PyArray_NDIM((PyArrayObject *)args[3]) - 1)) <
            0) {
        goto fail;
    }
    /* the _causal_recurrent gufunc's estimate: about 4 f e flops per token, and
     * the bytes of its thirteen operands (four 8-byte options) */
    if (token_run(&c, n, 4.0 * (double)T * (double)(F > 0 ? F : 1) * (double)(E + 1),
                  (double)is * (double)(2 * T * F + 2 * T * E + 2 * F * E + 2 * F) +
                      8.0 * (double)T + 32.0,
                  1) < 0) {
        goto fail;
    }
    return token_result(1, o, S1, z1);
fail:
    return token_result(0, o, S1, z1);
}

LA_REGISTER(linear, linear_table)
