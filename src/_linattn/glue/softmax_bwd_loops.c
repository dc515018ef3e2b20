/*
 * softmax_bwd_loops.c -- gufuncs for the softmax backward (kernels/softmax_bwd.h):
 *   _softmax_lse: q (t,d), k (s,d), v (s,e), scale (), causal () int64
 *                 -> o (t,e), lse (t) float64
 *   _softmax_bwd: q, k, v, o (t,e), do (t,e), lse (t) float64, scale, causal
 *                 -> dq (t,d), dk (s,d), dv (s,e)
 * One (batch, head) slice per outer index, split over threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/softmax.h"
#include "kernels/softmax_bwd.h"
#include "la_parallel.h"

#define SM_BLOCK 64

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_softmax_args fproto;
    la_softmax_bwd_args bproto;
    la_status (*ffn)(const la_softmax_args *, void *);
    la_status (*bfn)(const la_softmax_bwd_args *, void *);
    char *work;
    size_t wsize;
    volatile int status;
} la_smb_ctx;

static void
lse_task(void *vctx, int ith, int nth)
{
    la_smb_ctx *c = (la_smb_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_softmax_args a = c->fproto;
        la_status s;
        a.q = c->args[0] + i * c->steps[0];
        a.k = c->args[1] + i * c->steps[1];
        a.v = c->args[2] + i * c->steps[2];
        a.o = c->args[5] + i * c->steps[5];
        a.lse = (double *)(c->args[6] + i * c->steps[6]);
        s = c->ffn(&a, c->work + (size_t)ith * c->wsize);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
lse_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    la_smb_ctx c;
    la_softmax_args *a = &c.fproto;
    const npy_intp *cs = steps + 7;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.ffn = is == 4 ? la_softmax_f32 : la_softmax_f64;
    /* dims: n, t, d, s, e */
    a->t = dims[1];
    a->d = dims[2];
    a->s = dims[3];
    a->e = dims[4];
    a->block = SM_BLOCK;
    a->q_rs = LA_ES(cs[0], is); a->q_cs = LA_ES(cs[1], is);
    a->k_rs = LA_ES(cs[2], is); a->k_cs = LA_ES(cs[3], is);
    a->v_rs = LA_ES(cs[4], is); a->v_cs = LA_ES(cs[5], is);
    a->o_rs = LA_ES(cs[6], is); a->o_cs = LA_ES(cs[7], is);
    a->lse_s = LA_ES(cs[8], 8);
    a->scale = *(double *)args[3];
    a->causal = *(npy_int64 *)args[4] != 0;
    a->cancel = &la_cancel_flag;
    c.wsize = LA_ALIGN_BYTES(la_softmax_work_size(a, (size_t)is));
    la_run_workers(lse_task, &c, la_workers_for(c.n), c.wsize, &c.work, &c.status,
                   "linattn._softmax_lse");
}

static void
bwd_task(void *vctx, int ith, int nth)
{
    la_smb_ctx *c = (la_smb_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_softmax_bwd_args a = c->bproto;
        char **g = c->args;
        const npy_intp *st = c->steps;
        la_status s;
        a.q = g[0] + i * st[0];
        a.k = g[1] + i * st[1];
        a.v = g[2] + i * st[2];
        a.o = g[3] + i * st[3];
        a.dout = g[4] + i * st[4];
        a.lse = (const double *)(g[5] + i * st[5]);
        a.dq = g[8] + i * st[8];
        a.dk = g[9] + i * st[9];
        a.dv = g[10] + i * st[10];
        s = c->bfn(&a, c->work + (size_t)ith * c->wsize);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
bwd_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    la_smb_ctx c;
    la_softmax_bwd_args *a = &c.bproto;
    const npy_intp *cs = steps + 11;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.bfn = is == 4 ? la_softmax_bwd_f32 : la_softmax_bwd_f64;
    a->t = dims[1];
    a->d = dims[2];
    a->s = dims[3];
    a->e = dims[4];
    a->block = SM_BLOCK;
    a->q_rs = LA_ES(cs[0], is); a->q_cs = LA_ES(cs[1], is);
    a->k_rs = LA_ES(cs[2], is); a->k_cs = LA_ES(cs[3], is);
    a->v_rs = LA_ES(cs[4], is); a->v_cs = LA_ES(cs[5], is);
    a->o_rs = LA_ES(cs[6], is); a->o_cs = LA_ES(cs[7], is);
    a->do_rs = LA_ES(cs[8], is); a->do_cs = LA_ES(cs[9], is);
    a->lse_s = LA_ES(cs[10], 8);
    a->dq_rs = LA_ES(cs[11], is); a->dq_cs = LA_ES(cs[12], is);
    a->dk_rs = LA_ES(cs[13], is); a->dk_cs = LA_ES(cs[14], is);
    a->dv_rs = LA_ES(cs[15], is); a->dv_cs = LA_ES(cs[16], is);
    a->scale = *(double *)args[6];
    a->causal = *(npy_int64 *)args[7] != 0;
    a->cancel = &la_cancel_flag;
    c.wsize = LA_ALIGN_BYTES(la_softmax_bwd_work_size(a, (size_t)is));
    la_run_workers(bwd_task, &c, la_workers_for(c.n), c.wsize, &c.work, &c.status,
                   "linattn._softmax_bwd");
}

static PyUFuncGenericFunction lse_funcs[2] = {lse_loop, lse_loop};
static PyUFuncGenericFunction bwd_funcs[2] = {bwd_loop, bwd_loop};
static int smb_f64_tag;
static void *smb_data[2] = {NULL, &smb_f64_tag};
static const char lse_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_INT64, NPY_FLOAT, NPY_DOUBLE,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_DOUBLE, NPY_DOUBLE};
static const char bwd_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_DOUBLE,
    NPY_INT64, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE,
    NPY_INT64, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE};

int
la_register_softmax_bwd(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_softmax_lse", "(t,d),(s,d),(s,e),(),()->(t,e),(t)",
         "Exact softmax attention that also returns the row log-sum-exp (float64).",
         5, 2, 2, lse_funcs, smb_data, lse_types},
        {"_softmax_bwd", "(t,d),(s,d),(s,e),(t,e),(t,e),(t),(),()->(t,d),(s,d),(s,e)",
         "Backward of exact softmax attention from the saved log-sum-exp.",
         8, 3, 2, bwd_funcs, smb_data, bwd_types},
    };
    return la_add_gufuncs(module, table, 2);
}
