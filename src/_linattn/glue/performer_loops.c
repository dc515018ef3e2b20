/*
 * performer_loops.c -- gufunc loops for Performer with the prefix-safe
 * stabiliser (kernels/performer.h).
 *
 * causal (recurrent | chunked | parallel):
 *   q (t,d), k (t,d), v (t,e), W (m,d), S0 (f,e), z0 (f), mu0 () float64,
 *   scale (), eps (), flags () int64, chunk () int64
 *   -> o (t,e), S1 (f,e), z1 (f), mu1 () float64
 * noncausal:
 *   q (t,d), k (s,d), v (s,e), W (m,d), scale (), eps (), flags (), chunk ()
 *   -> o (t,e)
 *
 * flags: bits 0-1 la_perf_kind (positive | hyperbolic), bits 2-3 la_norm.
 * The feature width is f = m (positive) or 2m (hyperbolic); noncausal derives
 * it, causal checks the state's f against it.  The outer loop (batch x heads)
 * is split over worker threads; BLAS runs single-threaded inside.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/featmap.h"
#include "kernels/linear.h"
#include "kernels/performer.h"
#include "la_parallel.h"

typedef la_status (*la_performer_fn)(const la_performer_args *, void *);

typedef struct {
    la_performer_fn fn;
    int form;
    int itemsize;
    const char *name;
} la_performer_loop_data;

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    int causal;
    la_performer_args proto;
    const la_performer_loop_data *d;
    char *work;
    size_t wsize;
    volatile int status;
} la_performer_ctx;

static void
performer_task(void *vctx, int ith, int nth)
{
    la_performer_ctx *c = (la_performer_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_performer_args a = c->proto;
        char **args = c->args;
        const npy_intp *st = c->steps;
        la_status s;
        a.q = args[0] + i * st[0];
        a.k = args[1] + i * st[1];
        a.v = args[2] + i * st[2];
        a.w = args[3] + i * st[3];
        if (c->causal) {
            a.s0 = args[4] + i * st[4];
            a.z0 = args[5] + i * st[5];
            a.mu0 = *(const double *)(args[6] + i * st[6]);
            a.o = args[11] + i * st[11];
            a.s1 = args[12] + i * st[12];
            a.z1 = args[13] + i * st[13];
            a.mu1 = (double *)(args[14] + i * st[14]);
        }
        else {
            a.o = args[8] + i * st[8];
        }
        s = c->d->fn(&a, work);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
performer_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const la_performer_loop_data *d = (const la_performer_loop_data *)data;
    const int causal = d->form != LA_FORM_NONCAUSAL;
    const npy_intp is = d->itemsize;
    la_performer_ctx c;
    la_performer_args *a = &c.proto;
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
        /* dims: n, t, d, e, m, f;  15 operands */
        a->t = a->s = dims[1];
        a->d = dims[2];
        a->e = dims[3];
        a->m = dims[4];
        a->f = dims[5];
        cs = steps + 15;
        a->q_rs = LA_ES(cs[0], is);  a->q_cs = LA_ES(cs[1], is);
        a->k_rs = LA_ES(cs[2], is);  a->k_cs = LA_ES(cs[3], is);
        a->v_rs = LA_ES(cs[4], is);  a->v_cs = LA_ES(cs[5], is);
        a->w_rs = LA_ES(cs[6], is);  a->w_cs = LA_ES(cs[7], is);
        a->s0_rs = LA_ES(cs[8], is); a->s0_cs = LA_ES(cs[9], is);
        a->z0_s = LA_ES(cs[10], is);
        a->o_rs = LA_ES(cs[11], is); a->o_cs = LA_ES(cs[12], is);
        a->s1_rs = LA_ES(cs[13], is); a->s1_cs = LA_ES(cs[14], is);
        a->z1_s = LA_ES(cs[15], is);
        a->scale = *(double *)args[7];
        a->eps = *(double *)args[8];
        flags = *(npy_int64 *)args[9];
        a->chunk = (la_index) * (npy_int64 *)args[10];
    }
    else {
        /* dims: n, t, d, s, e, m;  9 operands */
        a->t = dims[1];
        a->d = dims[2];
        a->s = dims[3];
        a->e = dims[4];
        a->m = dims[5];
        cs = steps + 9;
        a->q_rs = LA_ES(cs[0], is);  a->q_cs = LA_ES(cs[1], is);
        a->k_rs = LA_ES(cs[2], is);  a->k_cs = LA_ES(cs[3], is);
        a->v_rs = LA_ES(cs[4], is);  a->v_cs = LA_ES(cs[5], is);
        a->w_rs = LA_ES(cs[6], is);  a->w_cs = LA_ES(cs[7], is);
        a->o_rs = LA_ES(cs[8], is);  a->o_cs = LA_ES(cs[9], is);
        a->scale = *(double *)args[4];
        a->eps = *(double *)args[5];
        flags = *(npy_int64 *)args[6];
        a->chunk = (la_index) * (npy_int64 *)args[7];
    }
    a->feat = (int)(flags & 3);
    a->norm = (int)((flags >> 2) & 3);
    if (!causal) {
        a->f = a->feat == LA_PERF_HYPERBOLIC ? 2 * a->m : a->m;
    }
    if ((a->feat != LA_PERF_POSITIVE && a->feat != LA_PERF_HYPERBOLIC) ||
        a->f != (a->feat == LA_PERF_HYPERBOLIC ? 2 * a->m : a->m)) {
        la_raise(LA_ERR_SHAPE, d->name, 0);
        return;
    }
    nth = la_workers_for(c.n);
    c.wsize = LA_ALIGN_BYTES(la_performer_work_size(d->form, a, (size_t)is));
    la_run_workers(performer_task, &c, nth, c.wsize, &c.work, &c.status, d->name);
}

static la_performer_loop_data pd_rec[2] = {
    {la_performer_recurrent_f32, LA_FORM_RECURRENT, 4, "linattn._performer_recurrent"},
    {la_performer_recurrent_f64, LA_FORM_RECURRENT, 8, "linattn._performer_recurrent"}};
static la_performer_loop_data pd_chk[2] = {
    {la_performer_chunked_f32, LA_FORM_CHUNKED, 4, "linattn._performer_chunked"},
    {la_performer_chunked_f64, LA_FORM_CHUNKED, 8, "linattn._performer_chunked"}};
static la_performer_loop_data pd_par[2] = {
    {la_performer_parallel_f32, LA_FORM_PARALLEL, 4, "linattn._performer_parallel"},
    {la_performer_parallel_f64, LA_FORM_PARALLEL, 8, "linattn._performer_parallel"}};
static la_performer_loop_data pd_nc[2] = {
    {la_performer_noncausal_f32, LA_FORM_NONCAUSAL, 4, "linattn._performer_noncausal"},
    {la_performer_noncausal_f64, LA_FORM_NONCAUSAL, 8, "linattn._performer_noncausal"}};

static PyUFuncGenericFunction performer_funcs[2] = {performer_loop, performer_loop};
static void *prec_data[2] = {&pd_rec[0], &pd_rec[1]};
static void *pchk_data[2] = {&pd_chk[0], &pd_chk[1]};
static void *ppar_data[2] = {&pd_par[0], &pd_par[1]};
static void *pnc_data[2] = {&pd_nc[0], &pd_nc[1]};

static const char pcausal_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64,
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_INT64,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE};
static const char pnc_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64,
    NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64,
    NPY_INT64, NPY_DOUBLE};

#define LA_PCAUSAL_SIG \
    "(t,d),(t,d),(t,e),(m,d),(f,e),(f),(),(),(),(),()->(t,e),(f,e),(f),()"

int
la_register_performer(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_performer_recurrent", LA_PCAUSAL_SIG,
         "Causal Performer, recurrent form, running-max stabiliser.", 11, 4, 2,
         performer_funcs, prec_data, pcausal_types},
        {"_performer_chunked", LA_PCAUSAL_SIG,
         "Causal Performer, chunked form, per-chunk max with exact rescaling.", 11, 4, 2,
         performer_funcs, pchk_data, pcausal_types},
        {"_performer_parallel", LA_PCAUSAL_SIG,
         "Causal Performer, parallel (masked quadratic) form.", 11, 4, 2,
         performer_funcs, ppar_data, pcausal_types},
        {"_performer_noncausal", "(t,d),(s,d),(s,e),(m,d),(),(),(),()->(t,e)",
         "Non-causal Performer, online key maximum, true-scale guard.", 8, 1, 2,
         performer_funcs, pnc_data, pnc_types},
    };
    return la_add_gufuncs(module, table, (int)(sizeof(table) / sizeof(table[0])));
}
