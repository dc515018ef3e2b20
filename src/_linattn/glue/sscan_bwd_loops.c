/*
 * sscan_bwd_loops.c -- gufunc for the selective-scan backward
 * (kernels/sscan_bwd.h), one (batch, channel) slice per outer index:
 *   u (l), delta (l), A (n), B (n,l), C (n,l), D (), z (l), delta_bias (),
 *   h0 (n), flags () int64, dout (l), dh1 (n)
 *   -> du (l), ddelta (l), dA (n), dB (n,m), dC (n,p), dD (), dz (l),
 *      ddelta_bias (), dh0 (n)
 * flags: bit 0 softplus, bit 1 "z is given", bit 2 / bit 3 "sum dB / dC over
 * time into column 0" (time-invariant B / C; m / p = 1).  The caller sums the
 * per-slice gradients of shared inputs.  The outer loop is split over threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/sscan_bwd.h"
#include "la_parallel.h"

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_sscan_bwd_args proto;
    la_status (*fn)(const la_sscan_bwd_args *, void *);
    int itemsize;
    char *work;
    size_t wsize;
    volatile int status;
} la_ssb_ctx;

static void
ssb_task(void *vctx, int ith, int nth)
{
    la_ssb_ctx *c = (la_ssb_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char **g = c->args;
    const npy_intp *st = c->steps;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_sscan_bwd_args a = c->proto;
        la_status s;
        a.u = g[0] + i * st[0];
        a.delta = g[1] + i * st[1];
        a.A = g[2] + i * st[2];
        a.B = g[3] + i * st[3];
        a.C = g[4] + i * st[4];
        a.z = g[6] + i * st[6];
        a.h0 = g[8] + i * st[8];
        a.dout = g[10] + i * st[10];
        a.dh1 = g[11] + i * st[11];
        a.du = g[12] + i * st[12];
        a.ddelta = g[13] + i * st[13];
        a.dA = g[14] + i * st[14];
        a.dB = g[15] + i * st[15];
        a.dC = g[16] + i * st[16];
        a.dD = g[17] + i * st[17];
        a.dz = g[18] + i * st[18];
        a.dbias = g[19] + i * st[19];
        a.dh0 = g[20] + i * st[20];
        if (c->itemsize == 4) {
            a.D = *(float *)(g[5] + i * st[5]);
            a.delta_bias = *(float *)(g[7] + i * st[7]);
        }
        else {
            a.D = *(double *)(g[5] + i * st[5]);
            a.delta_bias = *(double *)(g[7] + i * st[7]);
        }
        s = c->fn(&a, c->work + (size_t)ith * c->wsize);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
ssb_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 21; /* core strides */
    la_ssb_ctx c;
    la_sscan_bwd_args *a = &c.proto;
    const npy_int64 flags = *(npy_int64 *)args[9];

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.itemsize = is;
    c.fn = is == 4 ? la_sscan_bwd_f32 : la_sscan_bwd_f64;
    /* dims: n, l, n_state, m, p */
    a->l = dims[1];
    a->n = dims[2];
    a->u_s = LA_ES(cs[0], is);
    a->dl_s = LA_ES(cs[1], is);
    a->A_s = LA_ES(cs[2], is);
    a->B_ns = LA_ES(cs[3], is); a->B_ls = LA_ES(cs[4], is);
    a->C_ns = LA_ES(cs[5], is); a->C_ls = LA_ES(cs[6], is);
    a->z_s = LA_ES(cs[7], is);
    a->h0_s = LA_ES(cs[8], is);
    a->dout_s = LA_ES(cs[9], is);
    a->dh1_s = LA_ES(cs[10], is);
    a->du_s = LA_ES(cs[11], is);
    a->ddl_s = LA_ES(cs[12], is);
    a->dA_s = LA_ES(cs[13], is);
    a->dB_ns = LA_ES(cs[14], is); a->dB_ls = LA_ES(cs[15], is);
    a->dC_ns = LA_ES(cs[16], is); a->dC_ls = LA_ES(cs[17], is);
    a->dz_s = LA_ES(cs[18], is);
    a->dh0_s = LA_ES(cs[19], is);
    a->softplus = (int)(flags & 1);
    a->has_z = (int)((flags >> 1) & 1);
    a->b_sum = (int)((flags >> 2) & 1);
    a->c_sum = (int)((flags >> 3) & 1);
    a->cancel = &la_cancel_flag;
    if ((!a->b_sum && dims[3] != dims[1]) || (!a->c_sum && dims[4] != dims[1])) {
        la_raise(LA_ERR_SHAPE, "linattn._selective_scan_bwd (dB / dC need l columns "
                 "unless summed)", 0);
        return;
    }
    c.wsize = LA_ALIGN_BYTES(la_sscan_bwd_work_size(a, (size_t)is));
    la_run_workers(ssb_task, &c, la_workers_for(c.n), c.wsize, &c.work, &c.status,
                   "linattn._selective_scan_bwd");
}

static PyUFuncGenericFunction ssb_funcs[2] = {ssb_loop, ssb_loop};
static int ssb_f64_tag;
static void *ssb_data[2] = {NULL, &ssb_f64_tag};
#define F NPY_FLOAT
#define D NPY_DOUBLE
static const char ssb_types[] = {
    F, F, F, F, F, F, F, F, F, NPY_INT64, F, F, F, F, F, F, F, F, F, F, F,
    D, D, D, D, D, D, D, D, D, NPY_INT64, D, D, D, D, D, D, D, D, D, D, D};
#undef F
#undef D

int
la_register_sscan_bwd(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_selective_scan_bwd",
         "(l),(l),(n),(n,l),(n,l),(),(l),(),(n),(),(l),(n)->(l),(l),(n),(n,m),(n,p),(),(l),(),(n)",
         "Backward of the selective scan over one (batch, channel) slice per outer index.",
         12, 9, 2, ssb_funcs, ssb_data, ssb_types},
    };
    return la_add_gufuncs(module, table, 1);
}
