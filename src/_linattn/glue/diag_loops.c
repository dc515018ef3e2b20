/*
 * diag_loops.c -- gufunc for TransNormer's DiagAttention (kernels/diag.h):
 *   q (t,d), k (s,d), v (s,e), kc (c,d), vc (c,e) cached rows of the current
 *   block, t0 () int64, w () int64, scale (), eps (), flags () int64 -> o (t,e)
 * flags: bit 0 causal, bit 1 variant (0 softmax / T2, 1 ReLU / T1),
 * bits 2-3 norm (0 none, 2 rms).  The outer loop is split over threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/diag.h"
#include "la_parallel.h"

typedef la_status (*la_diag_fn)(const la_diag_args *, void *);

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_diag_args proto;
    la_diag_fn fn;
    char *work;
    size_t wsize;
    volatile int status;
} la_diag_ctx;

static void
diag_task(void *vctx, int ith, int nth)
{
    la_diag_ctx *c = (la_diag_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char **args = c->args;
    const npy_intp *st = c->steps;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_diag_args a = c->proto;
        la_status s;
        a.q = args[0] + i * st[0];
        a.k = args[1] + i * st[1];
        a.v = args[2] + i * st[2];
        a.kc = args[3] + i * st[3];
        a.vc = args[4] + i * st[4];
        a.o = args[10] + i * st[10];
        s = c->fn(&a, c->work + (size_t)ith * c->wsize);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
diag_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 11; /* core strides */
    la_diag_ctx c;
    la_diag_args *a = &c.proto;
    npy_int64 flags = *(npy_int64 *)args[9];
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.fn = is == 4 ? la_diag_f32 : la_diag_f64;
    /* dims: n, t, d, s, e, c */
    a->t = dims[1];
    a->d = dims[2];
    a->s = dims[3];
    a->e = dims[4];
    a->c = dims[5];
    a->q_rs = LA_ES(cs[0], is);  a->q_cs = LA_ES(cs[1], is);
    a->k_rs = LA_ES(cs[2], is);  a->k_cs = LA_ES(cs[3], is);
    a->v_rs = LA_ES(cs[4], is);  a->v_cs = LA_ES(cs[5], is);
    a->kc_rs = LA_ES(cs[6], is); a->kc_cs = LA_ES(cs[7], is);
    a->vc_rs = LA_ES(cs[8], is); a->vc_cs = LA_ES(cs[9], is);
    a->o_rs = LA_ES(cs[10], is); a->o_cs = LA_ES(cs[11], is);
    /* scalars are loop-invariant: the wrapper passes Python scalars */
    a->t0 = (la_index) * (npy_int64 *)args[5];
    a->w = (la_index) * (npy_int64 *)args[6];
    a->scale = *(double *)args[7];
    a->eps = *(double *)args[8];
    a->causal = (int)(flags & 1);
    a->variant = (int)((flags >> 1) & 1);
    a->norm = (int)((flags >> 2) & 3);
    if (a->w < 1 || (a->causal && (a->s != a->t || a->c >= a->w))) {
        la_raise(LA_ERR_SHAPE, "linattn._diag_attention", 0);
        return;
    }

    nth = la_workers_for(c.n);
    c.wsize = LA_ALIGN_BYTES(la_diag_work_size(a, (size_t)is));
    la_run_workers(diag_task, &c, nth, c.wsize, &c.work, &c.status, "linattn._diag_attention");
}

static PyUFuncGenericFunction diag_funcs[2] = {diag_loop, diag_loop};
static int diag_f64_tag;
static void *diag_data[2] = {NULL, &diag_f64_tag};
static const char diag_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT,
    NPY_INT64, NPY_INT64, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE,
    NPY_INT64, NPY_INT64, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_DOUBLE};

int
la_register_diag(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_diag_attention", "(t,d),(s,d),(s,e),(c,d),(c,e),(),(),(),(),()->(t,e)",
         "TransNormer DiagAttention: block-local softmax (T2) or ReLU+norm (T1).",
         10, 1, 2, diag_funcs, diag_data, diag_types},
    };
    return la_add_gufuncs(module, table, 1);
}
