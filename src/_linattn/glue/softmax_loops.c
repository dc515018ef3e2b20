/*
 * softmax_loops.c -- gufunc for exact softmax attention (kernels/softmax.h):
 *   q (t,d), k (s,d), v (s,e), scale (), causal () int64 -> o (t,e)
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/softmax.h"
#include "la_parallel.h"

typedef la_status (*la_softmax_fn)(const la_softmax_args *, void *);

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_softmax_args proto;
    la_softmax_fn fn;
    char *work;
    size_t wsize;
    volatile int status;
} la_softmax_ctx;

static void
softmax_task(void *vctx, int ith, int nth)
{
    la_softmax_ctx *c = (la_softmax_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_softmax_args a = c->proto;
        la_status s;
        a.q = c->args[0] + i * c->steps[0];
        a.k = c->args[1] + i * c->steps[1];
        a.v = c->args[2] + i * c->steps[2];
        a.o = c->args[5] + i * c->steps[5];
        s = c->fn(&a, c->work + (size_t)ith * c->wsize);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
softmax_loop(char **args, npy_intp const *dims, npy_intp const *steps,
             void *data)
{
    const int is = data == NULL ? 4 : 8;
    la_softmax_ctx c;
    la_softmax_args *a = &c.proto;
    const npy_intp *cs = steps + 6;
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.fn = is == 4 ? la_softmax_f32 : la_softmax_f64;
    /* dims: n, t, d, s, e */
    a->t = dims[1];
    a->d = dims[2];
    a->s = dims[3];
    a->e = dims[4];
    a->block = 64;
    a->q_rs = LA_ES(cs[0], is); a->q_cs = LA_ES(cs[1], is);
    a->k_rs = LA_ES(cs[2], is); a->k_cs = LA_ES(cs[3], is);
    a->v_rs = LA_ES(cs[4], is); a->v_cs = LA_ES(cs[5], is);
    a->o_rs = LA_ES(cs[6], is); a->o_cs = LA_ES(cs[7], is);
    a->scale = *(double *)args[3];
    a->causal = *(npy_int64 *)args[4] != 0;
    a->cancel = &la_cancel_flag;

    nth = la_workers_for(c.n);
    c.wsize = LA_ALIGN_BYTES(la_softmax_work_size(a, (size_t)is));
    la_run_workers(softmax_task, &c, nth, c.wsize, &c.work, &c.status, "linattn._softmax");
}

static PyUFuncGenericFunction softmax_funcs[2] = {softmax_loop, softmax_loop};
static int softmax_f64_tag;
static void *softmax_data[2] = {NULL, &softmax_f64_tag};
static const char softmax_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_DOUBLE};

int
la_register_softmax(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_softmax", "(t,d),(s,d),(s,e),(),()->(t,e)",
         "Exact softmax attention (causal requires s == t).", 5, 1, 2,
         softmax_funcs, softmax_data, softmax_types},
    };
    return la_add_gufuncs(module, table, 1);
}
