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

    /* about 4 f e flops per token and slice; below ~256 kflop per worker a
     * second thread costs more to wake than it saves */
    nth = la_workers_for(c.n);
    {
        const double work = 4.0 * (double)c.n * (double)(a->t > a->s ? a->t : a->s) *
                            (double)(a->f > 0 ? a->f : 1) * (double)(a->e + 1);
        const int cap = work < 262144.0 ? 1 : (int)(work / 262144.0);
        nth = nth < cap ? nth : cap;
    }
    c.wsize = LA_ALIGN_BYTES(la_linear_work_size(d->form, a, (size_t)is));
    c.work = la_alloc_work(c.wsize, nth, d->name);
    if (c.work == NULL) {
        return;
    }
    la_parallel_run(linear_task, &c, nth);
    la_free_work(c.work);
    if (c.status != LA_OK) {
        la_raise((la_status)c.status, d->name, 0);
    }
}

static la_linear_loop_data ld_rec[2] = {
    {la_linear_recurrent_f32, LA_FORM_RECURRENT, 4, "linattn._causal_recurrent"},
    {la_linear_recurrent_f64, LA_FORM_RECURRENT, 8, "linattn._causal_recurrent"}};
static la_linear_loop_data ld_step[2] = {
    {la_linear_recurrent_f32, LA_FORM_RECURRENT, 4, "linattn._step_inplace", 1},
    {la_linear_recurrent_f64, LA_FORM_RECURRENT, 8, "linattn._step_inplace", 1}};
static la_linear_loop_data ld_chk[2] = {
    {la_linear_chunked_f32, LA_FORM_CHUNKED, 4, "linattn._causal_chunked"},
    {la_linear_chunked_f64, LA_FORM_CHUNKED, 8, "linattn._causal_chunked"}};
static la_linear_loop_data ld_par[2] = {
    {la_linear_parallel_f32, LA_FORM_PARALLEL, 4, "linattn._causal_parallel"},
    {la_linear_parallel_f64, LA_FORM_PARALLEL, 8, "linattn._causal_parallel"}};
static la_linear_loop_data ld_nc[2] = {
    {la_linear_noncausal_f32, LA_FORM_NONCAUSAL, 4, "linattn._noncausal"},
    {la_linear_noncausal_f64, LA_FORM_NONCAUSAL, 8, "linattn._noncausal"}};

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
