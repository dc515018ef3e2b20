/*
 * linear_bwd_loops.c -- gufunc loops for the backward of the generic
 * operator (kernels/linear_bwd.h).
 *
 * causal (recurrent | chunked), one signature:
 *   q (t,f), k (t,f), v (t,e), g (t) float64, S0 (f,e), z0 (f),
 *   do (t,e), dS (f,e), dz (f), scale (), eps (), flags () int64, chunk () int64
 *   -> dq (t,f), dk (t,f), dv (t,e), dg (t) float64, dS0 (f,e), dz0 (f)
 * noncausal:
 *   q (t,f), k (s,f), v (s,e), do (t,e), scale (), eps (), flags (), chunk ()
 *   -> dq (t,f), dk (s,f), dv (s,e)
 *
 * flags as the forward's (linear_loops.c).  dg is written only when flags
 * has the decay bit.  The outer loop (batch x heads) is split over threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/linear.h"
#include "kernels/linear_bwd.h"
#include "la_parallel.h"

typedef la_status (*la_bwd_fn)(const la_linear_bwd_args *, void *);

typedef struct {
    la_bwd_fn fn;
    int form;
    int itemsize;
    const char *name;
} la_bwd_loop_data;

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    int causal;
    la_linear_bwd_args proto;
    const la_bwd_loop_data *d;
    char *work;
    size_t wsize;
    volatile int status;
} la_bwd_ctx;

static void
bwd_task(void *vctx, int ith, int nth)
{
    la_bwd_ctx *c = (la_bwd_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_linear_bwd_args a = c->proto;
        char **x = c->args;
        const npy_intp *st = c->steps;
        la_status s;
#define LA_ARG(j) (x[j] + i * st[j])
        a.q = LA_ARG(0);
        a.k = LA_ARG(1);
        a.v = LA_ARG(2);
        if (c->causal) {
            if (a.g != NULL) {
                a.g = (const double *)LA_ARG(3);
                a.dg = (double *)LA_ARG(16);
            }
            a.s0 = LA_ARG(4);
            a.z0 = LA_ARG(5);
            a.dout = LA_ARG(6);
            a.ds = LA_ARG(7);
            a.dz = LA_ARG(8);
            a.dq = LA_ARG(13);
            a.dk = LA_ARG(14);
            a.dv = LA_ARG(15);
            a.ds0 = LA_ARG(17);
            a.dz0 = LA_ARG(18);
        }
        else {
            a.dout = LA_ARG(3);
            a.dq = LA_ARG(8);
            a.dk = LA_ARG(9);
            a.dv = LA_ARG(10);
        }
#undef LA_ARG
        s = c->d->fn(&a, work);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

/*
 * Sequence parallelism for fewer (batch, head) slices than threads: the forward
 * states (pass A in parallel, serial scan), the chunks' shares of the state
 * cotangent (pass B in parallel, serial reverse scan storing the cotangent that
 * leaves every chunk), then every chunk's gradients (pass C in parallel).  The
 * operations are those of the serial chunked backward: bit-identical results.
 */
typedef struct {
    const la_linear_bwd_args *a;
    int f64, pass;
    la_index C, nch;
    char *Sst, *Dl; /* nch blocks of f x ec each */
    double *betas;
    size_t sbytes;
    char *work;
    size_t wsize;
    volatile int status;
} la_bwd_seq_ctx;

static void
bwd_seq_task(void *vctx, int ith, int nth)
{
    la_bwd_seq_ctx *c = (la_bwd_seq_ctx *)vctx;
    const la_index lo = c->nch * ith / nth, hi = c->nch * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    la_index j;
    for (j = lo; j < hi && c->status == LA_OK; j++) {
        const la_index t0 = j * c->C;
        void *S = c->Sst + (size_t)j * c->sbytes, *D = c->Dl + (size_t)j * c->sbytes;
        if (LA_CANCELLED(c->a->cancel)) {
            c->status = LA_ERR_INTERRUPTED;
            break;
        }
        if (c->pass == 0) {
            if (j + 1 < c->nch) {
                c->betas[j] = c->f64 ? la_linear_bwd_state_delta_f64(c->a, work, t0, D)
                                     : la_linear_bwd_state_delta_f32(c->a, work, t0, D);
            }
        }
        else if (c->pass == 1) {
            c->betas[j] = c->f64 ? la_linear_bwd_chunk_pass1_f64(c->a, work, t0, S, D)
                                 : la_linear_bwd_chunk_pass1_f32(c->a, work, t0, S, D);
        }
        else if (c->f64) {
            la_linear_bwd_chunk_pass2_f64(c->a, work, t0, S, D);
        }
        else {
            la_linear_bwd_chunk_pass2_f32(c->a, work, t0, S, D);
        }
    }
}

static void
bwd_seq_step(const la_bwd_seq_ctx *c, la_index m, char *X, double beta, const char *D)
{
    if (c->f64) {
        la_linear_bwd_step_f64(m, (double *)X, beta, (const double *)D);
    }
    else {
        la_linear_bwd_step_f32(m, (float *)X, beta, (const float *)D);
    }
}

static la_status
bwd_seqpar_slice(const la_linear_bwd_args *a, int f64, int nth)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    const la_index C = a->chunk < a->t ? a->chunk : a->t;
    const la_index fe = a->f * (a->e + (a->norm == LA_NORM_DIV));
    la_bwd_seq_ctx c;
    char *dS, *tmp;
    la_index j;
    memset(&c, 0, sizeof(c));
    c.a = a;
    c.f64 = f64;
    c.C = C;
    c.nch = (a->t + C - 1) / C;
    c.sbytes = LA_ALIGN_BYTES((size_t)fe * is);
    c.wsize = LA_ALIGN_BYTES(la_linear_bwd_work_size(LA_FORM_CHUNK_ONE, a, is));
    c.Sst = malloc(c.sbytes * (size_t)(2 * c.nch + 2));
    c.betas = malloc(sizeof(double) * (size_t)c.nch);
    c.work = malloc(c.wsize * (size_t)nth + 64);
    if (c.Sst == NULL || c.betas == NULL || c.work == NULL) {
        free(c.Sst);
        free(c.betas);
        free(c.work);
        return LA_ERR_NOMEM;
    }
    c.Dl = c.Sst + c.sbytes * (size_t)c.nch;
    dS = c.Dl + c.sbytes * (size_t)c.nch;
    tmp = dS + c.sbytes;
    if (f64) {
        la_linear_bwd_states_in_f64(a, (double *)c.Sst, (double *)dS);
    }
    else {
        la_linear_bwd_states_in_f32(a, (float *)c.Sst, (float *)dS);
    }
    /* A: the state entering every chunk */
    c.pass = 0;
    la_parallel_run(bwd_seq_task, &c, nth);
    for (j = 0; j + 1 < c.nch && c.status == LA_OK; j++) {
        char *Sn = c.Sst + (size_t)(j + 1) * c.sbytes;
        memcpy(Sn, c.Sst + (size_t)j * c.sbytes, (size_t)fe * is);
        bwd_seq_step(&c, fe, Sn, c.betas[j], c.Dl + (size_t)j * c.sbytes);
    }
    /* B: the chunks' shares of the cotangent, then the reverse scan; Dl[j] <- the
     * cotangent of the state leaving chunk j */
    if (c.status == LA_OK) {
        c.pass = 1;
        la_parallel_run(bwd_seq_task, &c, nth);
    }
    for (j = c.nch - 1; j >= 0 && c.status == LA_OK; j--) {
        char *D = c.Dl + (size_t)j * c.sbytes;
        memcpy(tmp, D, (size_t)fe * is);
        memcpy(D, dS, (size_t)fe * is);
        bwd_seq_step(&c, fe, dS, c.betas[j], tmp);
    }
    /* C: every chunk's gradients */
    if (c.status == LA_OK) {
        c.pass = 2;
        la_parallel_run(bwd_seq_task, &c, nth);
    }
    if (c.status == LA_OK) {
        if (f64) {
            la_linear_bwd_state_out_f64(a, (const double *)dS);
        }
        else {
            la_linear_bwd_state_out_f32(a, (const float *)dS);
        }
    }
    free(c.Sst);
    free(c.betas);
    free(c.work);
    return (la_status)c.status;
}

static void
bwd_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const la_bwd_loop_data *d = (const la_bwd_loop_data *)data;
    const int causal = d->form != LA_FORM_NONCAUSAL;
    const npy_intp is = d->itemsize;
    la_bwd_ctx c;
    la_linear_bwd_args *a = &c.proto;
    const npy_intp *cs;
    npy_int64 flags;
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.causal = causal;
    c.d = d;
    if (causal) {
        /* dims: n, t, f, e;  19 operands */
        a->t = a->s = dims[1];
        a->f = dims[2];
        a->e = dims[3];
        cs = steps + 19;
        a->q_rs = LA_ES(cs[0], is);   a->q_cs = LA_ES(cs[1], is);
        a->k_rs = LA_ES(cs[2], is);   a->k_cs = LA_ES(cs[3], is);
        a->v_rs = LA_ES(cs[4], is);   a->v_cs = LA_ES(cs[5], is);
        a->g_s = LA_ES(cs[6], sizeof(double));
        a->s0_rs = LA_ES(cs[7], is);  a->s0_cs = LA_ES(cs[8], is);
        a->z0_s = LA_ES(cs[9], is);
        a->do_rs = LA_ES(cs[10], is); a->do_cs = LA_ES(cs[11], is);
        a->ds_rs = LA_ES(cs[12], is); a->ds_cs = LA_ES(cs[13], is);
        a->dz_s = LA_ES(cs[14], is);
        a->dq_rs = LA_ES(cs[15], is); a->dq_cs = LA_ES(cs[16], is);
        a->dk_rs = LA_ES(cs[17], is); a->dk_cs = LA_ES(cs[18], is);
        a->dv_rs = LA_ES(cs[19], is); a->dv_cs = LA_ES(cs[20], is);
        a->dg_s = LA_ES(cs[21], sizeof(double));
        a->ds0_rs = LA_ES(cs[22], is); a->ds0_cs = LA_ES(cs[23], is);
        a->dz0_s = LA_ES(cs[24], is);
        a->scale = *(double *)args[9];
        a->eps = *(double *)args[10];
        flags = *(npy_int64 *)args[11];
        a->chunk = (la_index) * (npy_int64 *)args[12];
    }
    else {
        /* dims: n, t, f, s, e;  11 operands */
        a->t = dims[1];
        a->f = dims[2];
        a->s = dims[3];
        a->e = dims[4];
        cs = steps + 11;
        a->q_rs = LA_ES(cs[0], is);   a->q_cs = LA_ES(cs[1], is);
        a->k_rs = LA_ES(cs[2], is);   a->k_cs = LA_ES(cs[3], is);
        a->v_rs = LA_ES(cs[4], is);   a->v_cs = LA_ES(cs[5], is);
        a->do_rs = LA_ES(cs[6], is);  a->do_cs = LA_ES(cs[7], is);
        a->dq_rs = LA_ES(cs[8], is);  a->dq_cs = LA_ES(cs[9], is);
        a->dk_rs = LA_ES(cs[10], is); a->dk_cs = LA_ES(cs[11], is);
        a->dv_rs = LA_ES(cs[12], is); a->dv_cs = LA_ES(cs[13], is);
        a->scale = *(double *)args[4];
        a->eps = *(double *)args[5];
        flags = *(npy_int64 *)args[6];
        a->chunk = (la_index) * (npy_int64 *)args[7];
    }
    a->fmap_q = (int)(flags & 15);
    a->fmap_k = (int)((flags >> 4) & 15);
    a->norm = (int)((flags >> 8) & 3);
    a->eps_mode = (int)((flags >> 10) & 3);
    /* any non-NULL marks "decayed"; the task sets the real pointers */
    a->g = causal && ((flags >> 12) & 1) ? (const double *)args[3] : NULL;
    a->cancel = &la_cancel_flag;
    if (a->chunk < 1) {
        a->chunk = 1;
    }

    nth = la_workers_for(c.n);
    {
        /* about 12 f e flops per token and slice (docs/design/grad.md §2.6) */
        const double work = 12.0 * (double)c.n * (double)(a->t > a->s ? a->t : a->s) *
                            (double)(a->f > 0 ? a->f : 1) * (double)(a->e + 1);
        const int cap = work < 262144.0 ? 1 : (int)(work / 262144.0);
        nth = nth < cap ? nth : cap;
    }
    if (d->form == LA_FORM_CHUNKED && c.n < la_get_num_threads() && a->t >= 1 &&
        a->t >= 4 * a->chunk * la_get_num_threads()) {
        /* fewer slices than threads and a long sequence: split the sequence */
        const int nseq = la_get_num_threads();
        const int sig = la_interrupt_begin();
        npy_intp i;
        for (i = 0; i < c.n; i++) {
            la_linear_bwd_args s1 = *a;
#define LA_ARG(j) (args[j] + i * steps[j])
            la_status st;
            s1.q = LA_ARG(0);
            s1.k = LA_ARG(1);
            s1.v = LA_ARG(2);
            if (a->g != NULL) {
                s1.g = (const double *)LA_ARG(3);
                s1.dg = (double *)LA_ARG(16);
            }
            s1.s0 = LA_ARG(4);
            s1.z0 = LA_ARG(5);
            s1.dout = LA_ARG(6);
            s1.ds = LA_ARG(7);
            s1.dz = LA_ARG(8);
            s1.dq = LA_ARG(13);
            s1.dk = LA_ARG(14);
            s1.dv = LA_ARG(15);
            s1.ds0 = LA_ARG(17);
            s1.dz0 = LA_ARG(18);
#undef LA_ARG
            st = bwd_seqpar_slice(&s1, is == 8, nseq);
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
    c.wsize = LA_ALIGN_BYTES(la_linear_bwd_work_size(d->form, a, (size_t)is));
    la_run_workers(bwd_task, &c, nth, c.wsize, &c.work, &c.status, d->name);
}

static la_bwd_loop_data bd_rec[2] = {
    {la_linear_bwd_recurrent_f32, LA_FORM_RECURRENT, 4, "linattn._causal_bwd_recurrent"},
    {la_linear_bwd_recurrent_f64, LA_FORM_RECURRENT, 8, "linattn._causal_bwd_recurrent"}};
static la_bwd_loop_data bd_chk[2] = {
    {la_linear_bwd_chunked_f32, LA_FORM_CHUNKED, 4, "linattn._causal_bwd_chunked"},
    {la_linear_bwd_chunked_f64, LA_FORM_CHUNKED, 8, "linattn._causal_bwd_chunked"}};
static la_bwd_loop_data bd_nc[2] = {
    {la_linear_bwd_noncausal_f32, LA_FORM_NONCAUSAL, 4, "linattn._noncausal_bwd"},
    {la_linear_bwd_noncausal_f64, LA_FORM_NONCAUSAL, 8, "linattn._noncausal_bwd"}};

static PyUFuncGenericFunction bwd_funcs[2] = {bwd_loop, bwd_loop};
static void *rec_data[2] = {&bd_rec[0], &bd_rec[1]};
static void *chk_data[2] = {&bd_chk[0], &bd_chk[1]};
static void *nc_data[2] = {&bd_nc[0], &bd_nc[1]};

#define F_ NPY_FLOAT
#define D_ NPY_DOUBLE
#define I_ NPY_INT64
static const char causal_types[] = {
    F_, F_, F_, D_, F_, F_, F_, F_, F_, D_, D_, I_, I_, F_, F_, F_, D_, F_, F_,
    D_, D_, D_, D_, D_, D_, D_, D_, D_, D_, D_, I_, I_, D_, D_, D_, D_, D_, D_};
static const char nc_types[] = {
    F_, F_, F_, F_, D_, D_, I_, I_, F_, F_, F_,
    D_, D_, D_, D_, D_, D_, I_, I_, D_, D_, D_};
#undef F_
#undef D_
#undef I_

#define LA_CAUSAL_BWD_SIG                                                  \
    "(t,f),(t,f),(t,e),(t),(f,e),(f),(t,e),(f,e),(f),(),(),(),()"          \
    "->(t,f),(t,f),(t,e),(t),(f,e),(f)"

int
la_register_linear_bwd(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_causal_bwd_recurrent", LA_CAUSAL_BWD_SIG,
         "Backward of causal linear attention, recurrent (reverse scan) form.", 13, 6, 2,
         bwd_funcs, rec_data, causal_types},
        {"_causal_bwd_chunked", LA_CAUSAL_BWD_SIG,
         "Backward of causal linear attention, chunked form.", 13, 6, 2, bwd_funcs,
         chk_data, causal_types},
        {"_noncausal_bwd", "(t,f),(s,f),(s,e),(t,e),(),(),(),()->(t,f),(s,f),(s,e)",
         "Backward of non-causal linear attention (and cross-attention).", 8, 3, 2,
         bwd_funcs, nc_data, nc_types},
    };
    return la_add_gufuncs(module, table, (int)(sizeof(table) / sizeof(table[0])));
}
