/*
 * sscan_loops.c -- gufunc for the selective scan (kernels/sscan.h), one
 * (batch, channel) slice per outer index:
 *   u (l), delta (l), A (n), B (n,l), C (n,l), D (), z (l), delta_bias (),
 *   h0 (n), flags () int64  ->  out (l), h1 (n)
 * flags: bit 0 softplus, bit 1 "z is given".  Time-invariant B / C arrive
 * broadcast with stride 0 on l.  The outer loop is split over threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/sscan.h"
#include "la_parallel.h"

typedef la_status (*la_sscan_fn)(const la_sscan_args *, void *);

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_sscan_args proto;
    la_sscan_fn fn;
    int itemsize;
    char *work;
    size_t wsize;
    volatile int status;
} la_sscan_ctx;

static void
sscan_task(void *vctx, int ith, int nth)
{
    la_sscan_ctx *c = (la_sscan_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char **args = c->args;
    const npy_intp *st = c->steps;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_sscan_args a = c->proto;
        la_status s;
        a.u = args[0] + i * st[0];
        a.delta = args[1] + i * st[1];
        a.A = args[2] + i * st[2];
        a.B = args[3] + i * st[3];
        a.C = args[4] + i * st[4];
        a.z = args[6] + i * st[6];
        a.h0 = args[8] + i * st[8];
        a.out = args[10] + i * st[10];
        a.h1 = args[11] + i * st[11];
        if (c->itemsize == 4) {
            a.D = *(float *)(args[5] + i * st[5]);
            a.delta_bias = *(float *)(args[7] + i * st[7]);
        }
        else {
            a.D = *(double *)(args[5] + i * st[5]);
            a.delta_bias = *(double *)(args[7] + i * st[7]);
        }
        s = c->fn(&a, c->work + (size_t)ith * c->wsize);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
sscan_loop(char **args, npy_intp const *dims, npy_intp const *steps,
           void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 12; /* core strides */
    la_sscan_ctx c;
    la_sscan_args *a = &c.proto;
    npy_int64 flags = *(npy_int64 *)args[9];
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.itemsize = is;
    c.fn = is == 4 ? la_sscan_f32 : la_sscan_f64;
    /* dims: n, l, n_state */
    a->l = dims[1];
    a->n = dims[2];
    a->u_s = LA_ES(cs[0], is);
    a->dl_s = LA_ES(cs[1], is);
    a->A_s = LA_ES(cs[2], is);
    a->B_ns = LA_ES(cs[3], is);
    a->B_ls = LA_ES(cs[4], is);
    a->C_ns = LA_ES(cs[5], is);
    a->C_ls = LA_ES(cs[6], is);
    a->z_s = LA_ES(cs[7], is);
    a->h0_s = LA_ES(cs[8], is);
    a->out_s = LA_ES(cs[9], is);
    a->h1_s = LA_ES(cs[10], is);
    a->softplus = (int)(flags & 1);
    a->has_z = (int)((flags >> 1) & 1);

    nth = la_workers_for(c.n);
    c.wsize = LA_ALIGN_BYTES(la_sscan_work_size(a, (size_t)is));
    la_run_workers(sscan_task, &c, nth, c.wsize, &c.work, &c.status, "linattn._selective_scan");
}

static PyUFuncGenericFunction sscan_funcs[2] = {sscan_loop, sscan_loop};
static int sscan_f64_tag;
static void *sscan_data[2] = {NULL, &sscan_f64_tag};
static const char sscan_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_FLOAT,
    NPY_FLOAT, NPY_FLOAT, NPY_FLOAT, NPY_INT64, NPY_FLOAT, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_DOUBLE, NPY_DOUBLE};

int
la_register_sscan(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_selective_scan", "(l),(l),(n),(n,l),(n,l),(),(l),(),(n),()->(l),(n)",
         "Mamba-1 selective scan over one (batch, channel) slice per outer index.",
         10, 2, 2, sscan_funcs, sscan_data, sscan_types},
    };
    return la_add_gufuncs(module, table, 1);
}
