/*
 * lavo_loops.c -- gufunc loops for LAVO (kernels/lavo.h).
 *
 * _lavo_causal:
 *   q (t,d), k (t,d), v (t,e), bases (r,d), pb (w) f64, mb (r) f64,
 *   sums0 (r) f64, vsums0 (r) f64, ring_k0 (w,d), ring_v0 (w,e),
 *   pos () int64, scale () f64, flags () int64, chunk () int64
 *   -> o (t,e), sums1 (r) f64, vsums1 (r) f64, ring_k1 (w,d), ring_v1 (w,e)
 * _lavo_noncausal:
 *   q (t,d), k (s,d), v (s,e), bases (r,d), pb (p) f64 (p = 2w+1), mb (r) f64,
 *   scale () f64, flags () int64 -> o (t,e)
 *
 * The outer loop (batch x heads) is split over worker threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/lavo.h"
#include "la_parallel.h"

typedef la_status (*la_lavo_fn)(const la_lavo_args *, void *);

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    int causal;
    la_lavo_args proto;
    la_lavo_fn fn;
    char *work;
    size_t wsize;
    volatile int status;
} la_lavo_ctx;

static void
lavo_task(void *vctx, int ith, int nth)
{
    la_lavo_ctx *c = (la_lavo_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_lavo_args a = c->proto;
        char **g = c->args;
        const npy_intp *st = c->steps;
        la_status s;
        a.q = g[0] + i * st[0];
        a.k = g[1] + i * st[1];
        a.v = g[2] + i * st[2];
        a.bases = g[3] + i * st[3];
        a.pb = (const double *)(g[4] + i * st[4]);
        a.mb = (const double *)(g[5] + i * st[5]);
        if (c->causal) {
            a.sums0 = (const double *)(g[6] + i * st[6]);
            a.vsums0 = (const double *)(g[7] + i * st[7]);
            a.ring_k0 = g[8] + i * st[8];
            a.ring_v0 = g[9] + i * st[9];
            a.pos = (la_index) * (npy_int64 *)(g[10] + i * st[10]);
            a.scale = *(double *)(g[11] + i * st[11]);
            a.flags = (int)*(npy_int64 *)(g[12] + i * st[12]);
            a.chunk = (la_index) * (npy_int64 *)(g[13] + i * st[13]);
            a.o = g[14] + i * st[14];
            a.sums1 = (double *)(g[15] + i * st[15]);
            a.vsums1 = (double *)(g[16] + i * st[16]);
            a.ring_k1 = g[17] + i * st[17];
            a.ring_v1 = g[18] + i * st[18];
        }
        else {
            a.scale = *(double *)(g[6] + i * st[6]);
            a.flags = (int)*(npy_int64 *)(g[7] + i * st[7]);
            a.o = g[8] + i * st[8];
        }
        s = c->fn(&a, work);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
lavo_run(la_lavo_ctx *c, size_t (*wsize)(const la_lavo_args *, size_t), int is,
         const char *name)
{
    int nth = la_workers_for(c->n);
    size_t ws;
    la_lavo_args probe = c->proto;
    if (c->n <= 0) {
        return;
    }
    /* the work size depends on the chunk and flags of the first item (all equal) */
    if (c->causal) {
        probe.flags = (int)*(npy_int64 *)c->args[12];
        probe.chunk = (la_index) * (npy_int64 *)c->args[13];
    }
    ws = wsize(&probe, (size_t)is);
    if (c->causal) {
        /* flags or chunk may differ between items: size for the largest block */
        probe.flags &= ~LA_LAVO_RECURRENT;
        probe.chunk = probe.t;
        if (ws < wsize(&probe, (size_t)is) && c->steps[13] != 0) {
            ws = wsize(&probe, (size_t)is);
        }
    }
    c->wsize = LA_ALIGN_BYTES(ws);
    la_run_workers(lavo_task, c, nth, c->wsize, &c->work, &c->status, name);
}

/* The part both loops share: the context and the strides of q, k, v, the
 * bases and the two bias tables (the first ten core strides of either form). */
static void
lavo_ctx_init(la_lavo_ctx *c, char **args, npy_intp const *steps, npy_intp n,
              int causal, la_lavo_fn fn, const npy_intp *cs, int is)
{
    la_lavo_args *a = &c->proto;
    memset(c, 0, sizeof(*c));
    c->args = args;
    c->steps = steps;
    c->n = n;
    c->causal = causal;
    c->fn = fn;
    a->q_rs = LA_ES(cs[0], is); a->q_cs = LA_ES(cs[1], is);
    a->k_rs = LA_ES(cs[2], is); a->k_cs = LA_ES(cs[3], is);
    a->v_rs = LA_ES(cs[4], is); a->v_cs = LA_ES(cs[5], is);
    a->b_rs = LA_ES(cs[6], is); a->b_cs = LA_ES(cs[7], is);
    a->pb_s = LA_ES(cs[8], 8);
    a->mb_s = LA_ES(cs[9], 8);
}

static void
lavo_causal_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 19;
    la_lavo_ctx c;
    la_lavo_args *a = &c.proto;

    lavo_ctx_init(&c, args, steps, dims[0], 1,
                  is == 4 ? la_lavo_causal_f32 : la_lavo_causal_f64, cs, is);
    /* dims: n, t, d, e, r, w */
    a->t = dims[1];
    a->s = dims[1];
    a->d = dims[2];
    a->e = dims[3];
    a->r = dims[4];
    a->w = dims[5];
    a->s0_s = LA_ES(cs[10], 8);
    a->vs0_s = LA_ES(cs[11], 8);
    a->rk0_rs = LA_ES(cs[12], is); a->rk0_cs = LA_ES(cs[13], is);
    a->rv0_rs = LA_ES(cs[14], is); a->rv0_cs = LA_ES(cs[15], is);
    a->o_rs = LA_ES(cs[16], is); a->o_cs = LA_ES(cs[17], is);
    a->s1_s = LA_ES(cs[18], 8);
    a->vs1_s = LA_ES(cs[19], 8);
    a->rk1_rs = LA_ES(cs[20], is); a->rk1_cs = LA_ES(cs[21], is);
    a->rv1_rs = LA_ES(cs[22], is); a->rv1_cs = LA_ES(cs[23], is);
    lavo_run(&c, la_lavo_causal_work_size, is, "linattn._lavo_causal");
}

static void
lavo_noncausal_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 9;
    la_lavo_ctx c;
    la_lavo_args *a = &c.proto;

    lavo_ctx_init(&c, args, steps, dims[0], 0,
                  is == 4 ? la_lavo_noncausal_f32 : la_lavo_noncausal_f64, cs, is);
    /* dims: n, t, d, s, e, r, p */
    a->t = dims[1];
    a->d = dims[2];
    a->s = dims[3];
    a->e = dims[4];
    a->r = dims[5];
    a->w = dims[6] > 0 ? (dims[6] - 1) / 2 : 0;
    a->o_rs = LA_ES(cs[10], is); a->o_cs = LA_ES(cs[11], is);
    lavo_run(&c, la_lavo_noncausal_work_size, is, "linattn._lavo_noncausal");
}

static PyUFuncGenericFunction lavo_causal_funcs[2] = {lavo_causal_loop, lavo_causal_loop};
static PyUFuncGenericFunction lavo_nc_funcs[2] = {lavo_noncausal_loop, lavo_noncausal_loop};
static int lavo_f64_tag;
static void *lavo_data[2] = {NULL, &lavo_f64_tag};

#define F NPY_FLOAT
#define D NPY_DOUBLE
#define L NPY_INT64
static const char lavo_causal_types[] = {
    F, F, F, F, D, D, D, D, F, F, L, D, L, L, F, D, D, F, F,
    D, D, D, D, D, D, D, D, D, D, L, D, L, L, D, D, D, D, D};
static const char lavo_nc_types[] = {
    F, F, F, F, D, D, D, L, F,
    D, D, D, D, D, D, D, L, D};
#undef F
#undef D
#undef L

int
la_register_lavo(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_lavo_causal",
         "(t,d),(t,d),(t,e),(r,d),(w),(r),(r),(r),(w,d),(w,e),(),(),(),()"
         "->(t,e),(r),(r),(w,d),(w,e)",
         "LAVO causal (flags: 1 block, 2 before_local, 4 separate v, 8 recurrent).", 14, 5,
         2, lavo_causal_funcs, lavo_data, lavo_causal_types},
        {"_lavo_noncausal", "(t,d),(s,d),(s,e),(r,d),(p),(r),(),()->(t,e)",
         "LAVO non-causal / cross-attention (p = 2w+1 position-bias entries).", 8, 1, 2,
         lavo_nc_funcs, lavo_data, lavo_nc_types},
    };
    return la_add_gufuncs(module, table, 2);
}
