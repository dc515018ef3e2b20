/*
 * linear_loops.c -- gufunc loops for the generic operator (kernels/linear.h).
 *
 * causal (recurrent | chunked | parallel), one signature for all three:
 *   q (t,f), k (t,f), v (t,e), g (t) float64 log-decay, S0 (f,e), z0 (f),
 *   scale (), eps (), flags () int64, chunk () int64
 *   -> o (t,e), S1 (f,e), z1 (f)
 * noncausal:
 *   q (t,f), k (s,f), v (s,e), scale (), eps (), flags (), chunk () -> o (t,e)
 *
 * flags packs the options: bits 0-3 query map, 4-7 key map, 8-9 normalise
 * mode, 10-11 eps mode, bit 12 "g holds a decay".  The outer loop (batch x
 * heads) is split over worker threads; BLAS runs single-threaded inside.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/linear.h"
#include "la_parallel.h"

typedef la_status (*la_linear_fn)(const la_linear_args *, void *);

typedef struct {
    la_linear_fn fn;
    int form;
    int itemsize;
    const char *name;
    int inplace; /* the state inputs S, z are updated in place (no outputs) */
} la_linear_loop_data;

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    int causal;
    la_linear_args proto;
    const la_linear_loop_data *d;
    char *work;
    size_t wsize;
    volatile int status;
} la_linear_ctx;

static void
linear_task(void *vctx, int ith, int nth)
{
    la_linear_ctx *c = (la_linear_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_linear_args a = c->proto;
        char **args = c->args;
        const npy_intp *st = c->steps;
        la_status s;
        a.q = args[0] + i * st[0];
        a.k = args[1] + i * st[1];
        a.v = args[2] + i * st[2];
        if (c->causal) {
            if (a.g != NULL) {
                a.g = (const double *)(args[3] + i * st[3]);
            }
            a.s0 = args[4] + i * st[4];
            a.z0 = args[5] + i * st[5];
            a.o = args[10] + i * st[10];
            if (c->d->inplace) {
                a.s1 = (void *)a.s0;
                a.z1 = (void *)a.z0;
            }
            else {
                a.s1 = args[11] + i * st[11];
                a.z1 = args[12] + i * st[12];
            }
        }
        else {
            a.o = args[7] + i * st[7];
        }
        s = c->d->fn(&a, work);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

/*
 * Sequence parallelism (family.md 7) for fewer (batch, head) slices than
 * threads: per window of chunks, pass 1 computes every chunk's state
 * increment in parallel, a serial scan turns increments into entering
 * states, pass 2 computes every chunk's outputs in parallel.  The operations
 * are those of the serial chunked kernel, so the results are bit-identical.
 */
#define LA_SEQ_WINDOW 32 /* chunks per window: bounds the stored states */

typedef struct {
    const la_linear_args *a;
    int f64;
    la_index c0, cw, C;
    char *states;  /* cw blocks of f x ec */
    char *outs;    /* cw blocks of chunk x ec: intra-chunk outputs */
    double *betas;
    size_t sbytes; /* bytes per state block */
    size_t obytes; /* bytes per output block */
    char *work;
    size_t wsize;
    int pass;
    volatile int status;
} la_seq_ctx;

static void
seq_task(void *vctx, int ith, int nth)
{
    la_seq_ctx *c = (la_seq_ctx *)vctx;
    const la_index lo = c->cw * ith / nth, hi = c->cw * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    la_index j;
    for (j = lo; j < hi && c->status == LA_OK; j++) {
        const la_index t0 = (c->c0 + j) * c->C;
        void *st = c->states + (size_t)j * c->sbytes;
        void *oc = c->outs + (size_t)j * c->obytes;
        la_status s;
        if (LA_CANCELLED(c->a->cancel)) {
            c->status = LA_ERR_INTERRUPTED;
            break;
        }
        if (c->pass == 1) {
            s = c->f64 ? la_linear_chunk_pass1_f64(c->a, work, t0, (double *)st, &c->betas[j],
                                                   (double *)oc)
                       : la_linear_chunk_pass1_f32(c->a, work, t0, (float *)st, &c->betas[j],
                                                   (float *)oc);
        }
        else {
            s = c->f64 ? la_linear_chunk_pass2_f64(c->a, work, t0, (const double *)st,
                                                   (double *)oc)
                       : la_linear_chunk_pass2_f32(c->a, work, t0, (const float *)st,
                                                   (float *)oc);
        }
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static la_status
linear_seqpar_slice(const la_linear_args *a, int f64, int nth)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    const la_index C = a->chunk < a->t ? a->chunk : a->t;
    const la_index nchunks = (a->t + C - 1) / C;
    const la_index ec = a->e + (a->norm == LA_NORM_DIV);
    la_seq_ctx c;
    char *Sx;
    la_index c0, j;
    memset(&c, 0, sizeof(c));
    c.a = a;
    c.f64 = f64;
    c.C = C;
    c.sbytes = LA_ALIGN_BYTES((size_t)(a->f * ec) * is);
    c.obytes = LA_ALIGN_BYTES((size_t)(C * ec) * is);
    c.wsize = LA_ALIGN_BYTES(la_linear_work_size(LA_FORM_CHUNK_ONE, a, is));
    c.states = malloc(c.sbytes * (LA_SEQ_WINDOW + 1));
    c.outs = malloc(c.obytes * LA_SEQ_WINDOW);
    c.betas = malloc(sizeof(double) * LA_SEQ_WINDOW);
    c.work = malloc(c.wsize * (size_t)nth + 64);
    if (c.states == NULL || c.outs == NULL || c.betas == NULL || c.work == NULL) {
        free(c.states);
        free(c.outs);
        free(c.betas);
        free(c.work);
        return LA_ERR_NOMEM;
    }
    Sx = c.states + c.sbytes * LA_SEQ_WINDOW;
    if (f64) {
        la_linear_state_load_f64(a, (double *)Sx);
    }
    else {
        la_linear_state_load_f32(a, (float *)Sx);
    }
    for (c0 = 0; c0 < nchunks && c.status == LA_OK; c0 += LA_SEQ_WINDOW) {
        c.c0 = c0;
        c.cw = nchunks - c0 < LA_SEQ_WINDOW ? nchunks - c0 : LA_SEQ_WINDOW;
        c.pass = 1;
        la_parallel_run(seq_task, &c, nth);
        for (j = 0; j < c.cw; j++) {
            char *st = c.states + (size_t)j * c.sbytes;
            if (f64) {
                la_linear_state_scan_f64(a, (double *)Sx, c.betas[j], (double *)st);
            }
            else {
                la_linear_state_scan_f32(a, (float *)Sx, c.betas[j], (float *)st);
            }
        }
        c.pass = 2;
        la_parallel_run(seq_task, &c, nth);
    }
    if (f64) {
        la_linear_state_store_f64(a, (const double *)Sx);
    }
    else {
        la_linear_state_store_f32(a, (const float *)Sx);
    }
    free(c.states);
    free(c.outs);
    free(c.betas);
    free(c.work);
    return (la_status)c.status;
}

static void
linear_loop(char **args, npy_intp const *dims, npy_intp const *steps,
            void *data)
{
    const la_linear_loop_data *d = (const la_linear_loop_data *)data;
    const int causal = d->form != LA_FORM_NONCAUSAL;
    const npy_intp is = d->itemsize;
    la_linear_ctx c;
    la_linear_args *a = &c.proto;
    const npy_intp *cs; /* core strides */
    npy_int64 flags;
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.causal = causal;
    c.d = d;
    if (causal) {
        /* dims: n, t, f, e;  13 operands (11 in place) */
        a->t = a->s = dims[1];
        a->f = dims[2];
        a->e = dims[3];
        cs = steps + (d->inplace ? 11 : 13);
        a->q_rs = LA_ES(cs[0], is);  a->q_cs = LA_ES(cs[1], is);
        a->k_rs = LA_ES(cs[2], is);  a->k_cs = LA_ES(cs[3], is);
        a->v_rs = LA_ES(cs[4], is);  a->v_cs = LA_ES(cs[5], is);
        a->g_s = LA_ES(cs[6], sizeof(double));
        a->s0_rs = LA_ES(cs[7], is); a->s0_cs = LA_ES(cs[8], is);
        a->z0_s = LA_ES(cs[9], is);
        a->o_rs = LA_ES(cs[10], is); a->o_cs = LA_ES(cs[11], is);
        if (d->inplace) {
            a->s1_rs = a->s0_rs; a->s1_cs = a->s0_cs; a->z1_s = a->z0_s;
        }
        else {
            a->s1_rs = LA_ES(cs[12], is); a->s1_cs = LA_ES(cs[13], is);
            a->z1_s = LA_ES(cs[14], is);
        }
        /* scalars are loop-invariant in practice: read the first ones */
        a->scale = *(double *)args[6];
        a->eps = *(double *)args[7];
        flags = *(npy_int64 *)args[8];
        a->chunk = (la_index) * (npy_int64 *)args[9];
    }
    else {
        /* dims: n, t, f, s, e;  8 operands */
        a->t = dims[1];
        a->f = dims[2];
        a->s = dims[3];
        a->e = dims[4];
        cs = steps + 8;
        a->q_rs = LA_ES(cs[0], is);  a->q_cs = LA_ES(cs[1], is);
        a->k_rs = LA_ES(cs[2], is);  a->k_cs = LA_ES(cs[3], is);
        a->v_rs = LA_ES(cs[4], is);  a->v_cs = LA_ES(cs[5], is);
        a->o_rs = LA_ES(cs[6], is);  a->o_cs = LA_ES(cs[7], is);
        a->scale = *(double *)args[3];
        a->eps = *(double *)args[4];
        flags = *(npy_int64 *)args[5];
        a->chunk = (la_index) * (npy_int64 *)args[6];
    }
    a->fmap_q = (int)(flags & 15);
    a->fmap_k = (int)((flags >> 4) & 15);
    a->norm = (int)((flags >> 8) & 3);
    a->eps_mode = (int)((flags >> 10) & 3);
    /* any non-NULL marks "decayed"; the task sets the real pointer */
    a->g = causal && ((flags >> 12) & 1) ? (const double *)args[3] : NULL;
    a->cancel = &la_cancel_flag;

    /* about 4 f e flops per token and slice; below ~256 kflop per worker a
     * second thread costs more to wake than it saves */
    nth = la_workers_for(c.n);
    {
        const double work = 4.0 * (double)c.n * (double)(a->t > a->s ? a->t : a->s) *
                            (double)(a->f > 0 ? a->f : 1) * (double)(a->e + 1);
        const int cap = work < 262144.0 ? 1 : (int)(work / 262144.0);
        nth = nth < cap ? nth : cap;
    }
    if (d->form == LA_FORM_CHUNKED && c.n < la_get_num_threads() && a->chunk >= 1 &&
        a->t >= 4 * a->chunk * la_get_num_threads()) {
        /* fewer slices than threads and a long sequence: split the sequence */
        npy_intp i;
        const int nseq = la_get_num_threads();
        const int sig = la_interrupt_begin();
        for (i = 0; i < c.n; i++) {
            la_linear_args s1 = *a;
            la_status st;
            s1.q = args[0] + i * steps[0];
            s1.k = args[1] + i * steps[1];
            s1.v = args[2] + i * steps[2];
            s1.g = a->g != NULL ? (const double *)(args[3] + i * steps[3]) : NULL;
            s1.s0 = args[4] + i * steps[4];
            s1.z0 = args[5] + i * steps[5];
            s1.o = args[10] + i * steps[10];
            s1.s1 = args[11] + i * steps[11];
            s1.z1 = args[12] + i * steps[12];
            st = linear_seqpar_slice(&s1, is == 8, nseq);
            if (st != LA_OK) {
                la_interrupt_end(sig);
                la_raise(st, d->name, 0);
                return;
            }
        }
        if (la_interrupt_end(sig)) {
            la_raise(LA_ERR_INTERRUPTED, d->name, 0);
        }
        return;
    }
    c.wsize = LA_ALIGN_BYTES(la_linear_work_size(d->form, a, (size_t)is));
    la_run_workers(linear_task, &c, nth, c.wsize, &c.work, &c.status, d->name);
}

static la_linear_loop_data ld_rec[2] = {
    {la_linear_recurrent_f32, LA_FORM_RECURRENT, 4, "linattn._causal_recurrent", 0},
    {la_linear_recurrent_f64, LA_FORM_RECURRENT, 8, "linattn._causal_recurrent", 0}};
static la_linear_loop_data ld_step[2] = {
    {la_linear_recurrent_f32, LA_FORM_RECURRENT, 4, "linattn._step_inplace", 1},
    {la_linear_recurrent_f64, LA_FORM_RECURRENT, 8, "linattn._step_inplace", 1}};
static la_linear_loop_data ld_chk[2] = {
    {la_linear_chunked_f32, LA_FORM_CHUNKED, 4, "linattn._causal_chunked", 0},
    {la_linear_chunked_f64, LA_FORM_CHUNKED, 8, "linattn._causal_chunked", 0}};
static la_linear_loop_data ld_par[2] = {
    {la_linear_parallel_f32, LA_FORM_PARALLEL, 4, "linattn._causal_parallel", 0},
    {la_linear_parallel_f64, LA_FORM_PARALLEL, 8, "linattn._causal_parallel", 0}};
static la_linear_loop_data ld_nc[2] = {
    {la_linear_noncausal_f32, LA_FORM_NONCAUSAL, 4, "linattn._noncausal", 0},
    {la_linear_noncausal_f64, LA_FORM_NONCAUSAL, 8, "linattn._noncausal", 0}};

static PyUFuncGenericFunction linear_funcs[2] = {linear_loop, linear_loop};
static void *rec_data[2] = {&ld_rec[0], &ld_rec[1]};
static void *chk_data[2] = {&ld_chk[0], &ld_chk[1]};
static void *step_data[2] = {&ld_step[0], &ld_step[1]};
static void *par_data[2] = {&ld_par[0], &ld_par[1]};
static void *nc_data[2] = {&ld_nc[0], &ld_nc[1]};

static const char causal_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_FLOAT, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64,
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE,
    NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE};
static const char step_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_FLOAT, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE,
    NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64, NPY_DOUBLE};
static const char nc_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64, NPY_DOUBLE};

#define LA_CAUSAL_SIG "(t,f),(t,f),(t,e),(t),(f,e),(f),(),(),(),()->(t,e),(f,e),(f)"

int
la_register_linear(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_causal_recurrent", LA_CAUSAL_SIG,
         "Causal linear attention, recurrent (prefix-sum state) form.", 10, 3, 2,
         linear_funcs, rec_data, causal_types},
        {"_causal_chunked", LA_CAUSAL_SIG,
         "Causal linear attention, chunked form (three GEMMs per chunk).", 10, 3, 2,
         linear_funcs, chk_data, causal_types},
        {"_causal_parallel", LA_CAUSAL_SIG,
         "Causal linear attention, parallel (masked quadratic) form.", 10, 3, 2,
         linear_funcs, par_data, causal_types},
        {"_step_inplace", "(t,f),(t,f),(t,e),(t),(f,e),(f),(),(),(),()->(t,e)",
         "Recurrent form updating the state inputs S, z in place (la.step inplace=True).",
         10, 1, 2, linear_funcs, step_data, step_types},
        {"_noncausal", "(t,f),(s,f),(s,e),(),(),(),()->(t,e)",
         "Non-causal linear attention (and cross-attention).", 7, 1, 2,
         linear_funcs, nc_data, nc_types},
    };
    return la_add_gufuncs(module, table, (int)(sizeof(table) / sizeof(table[0])));
}
