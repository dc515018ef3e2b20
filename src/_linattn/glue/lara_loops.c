/*
 * lara_loops.c -- gufunc loops for RA and LARA (kernels/lara.h).
 *
 * _ra:   q (n,d), k (m,d), v (m,e), noise (n,s,d), uniforms (n,s) f64,
 *        scale () f64, sigma () f64, flags () int64 -> o (n,e)
 * _lara: q (n,d), k (m,d), v (m,e), qbar (c,d), mu (c,d), omega (c,d),
 *        scale () f64, alpha_coeff () f64, flags () int64 -> o (n,e)
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/lara.h"
#include "la_parallel.h"

typedef la_status (*la_lara_fn)(const la_lara_args *, void *);

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    int ra;
    la_lara_args proto;
    la_lara_fn fn;
    char *work;
    size_t wsize;
    volatile int status;
} la_lara_ctx;

static void
lara_task(void *vctx, int ith, int nth)
{
    la_lara_ctx *c = (la_lara_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    char *work = c->work + (size_t)ith * c->wsize;
    npy_intp i;
    for (i = lo; i < hi && c->status == LA_OK; i++) {
        la_lara_args a = c->proto;
        char **g = c->args;
        const npy_intp *st = c->steps;
        la_status s;
        a.q = g[0] + i * st[0];
        a.k = g[1] + i * st[1];
        a.v = g[2] + i * st[2];
        if (c->ra) {
            a.noise = g[3] + i * st[3];
            a.unif = (const double *)(g[4] + i * st[4]);
            a.scale = *(double *)(g[5] + i * st[5]);
            a.sigma = *(double *)(g[6] + i * st[6]);
        }
        else {
            a.qbar = g[3] + i * st[3];
            a.mu = g[4] + i * st[4];
            a.omega = g[5] + i * st[5];
            a.scale = *(double *)(g[6] + i * st[6]);
            a.alpha_coeff = *(double *)(g[6 + 1] + i * st[7]);
        }
        a.flags = (int)*(npy_int64 *)(g[7 + !c->ra] + i * st[7 + !c->ra]);
        a.o = g[8 + !c->ra] + i * st[8 + !c->ra];
        s = c->fn(&a, work);
        if (s != LA_OK) {
            c->status = s;
        }
    }
}

static void
lara_run(la_lara_ctx *c, size_t ws, const char *name)
{
    int nth = la_workers_for(c->n);
    if (c->n <= 0) {
        return;
    }
    c->wsize = LA_ALIGN_BYTES(ws);
    la_run_workers(lara_task, c, nth, c->wsize, &c->work, &c->status, name);
}

/* The part both loops share: the context, the five core sizes (queries,
 * features, keys, values, samples or proposals) and the strides of q, k, v. */
static void
lara_ctx_init(la_lara_ctx *c, char **args, npy_intp const *dims, npy_intp const *steps,
              int ra, la_lara_fn fn, const npy_intp *cs, int is)
{
    la_lara_args *a = &c->proto;
    memset(c, 0, sizeof(*c));
    c->args = args;
    c->steps = steps;
    c->n = dims[0];
    c->ra = ra;
    c->fn = fn;
    a->n = dims[1];
    a->d = dims[2];
    a->m = dims[3];
    a->e = dims[4];
    a->c = dims[5];
    a->q_rs = LA_ES(cs[0], is); a->q_cs = LA_ES(cs[1], is);
    a->k_rs = LA_ES(cs[2], is); a->k_cs = LA_ES(cs[3], is);
    a->v_rs = LA_ES(cs[4], is); a->v_cs = LA_ES(cs[5], is);
}

static void
ra_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 9;
    la_lara_ctx c;
    la_lara_args *a = &c.proto;

    /* dims: n, n(queries), d, m, e, s */
    lara_ctx_init(&c, args, dims, steps, 1, is == 4 ? la_ra_f32 : la_ra_f64, cs, is);
    a->nz_s0 = LA_ES(cs[6], is); a->nz_s1 = LA_ES(cs[7], is); a->nz_s2 = LA_ES(cs[8], is);
    a->u_s0 = LA_ES(cs[9], 8); a->u_s1 = LA_ES(cs[10], 8);
    a->o_rs = LA_ES(cs[11], is); a->o_cs = LA_ES(cs[12], is);
    lara_run(&c, la_ra_work_size(a, (size_t)is), "linattn._ra");
}

static void
lara_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const int is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 10;
    la_lara_ctx c;
    la_lara_args *a = &c.proto;

    /* dims: n, n(queries), d, m, e, c */
    lara_ctx_init(&c, args, dims, steps, 0, is == 4 ? la_lara_f32 : la_lara_f64, cs, is);
    a->qb_rs = LA_ES(cs[6], is); a->qb_cs = LA_ES(cs[7], is);
    a->mu_rs = LA_ES(cs[8], is); a->mu_cs = LA_ES(cs[9], is);
    a->om_rs = LA_ES(cs[10], is); a->om_cs = LA_ES(cs[11], is);
    a->o_rs = LA_ES(cs[12], is); a->o_cs = LA_ES(cs[13], is);
    lara_run(&c, la_lara_work_size(a, (size_t)is), "linattn._lara");
}

static PyUFuncGenericFunction ra_funcs[2] = {ra_loop, ra_loop};
static PyUFuncGenericFunction lara_funcs[2] = {lara_loop, lara_loop};
static int lara_f64_tag;
static void *lara_data[2] = {NULL, &lara_f64_tag};

#define F NPY_FLOAT
#define D NPY_DOUBLE
#define L NPY_INT64
static const char ra_types[] = {F, F, F, F, D, D, D, L, F, D, D, D, D, D, D, D, L, D};
static const char lara_types[] = {F, F, F, F, F, F, D, D, L, F,
                                  D, D, D, D, D, D, D, D, L, D};
#undef F
#undef D
#undef L

int
la_register_lara(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_ra", "(n,d),(m,d),(m,e),(n,s,d),(n,s),(),(),()->(n,e)",
         "Randomized attention (flags: bits 0-1 component, 4 no noise).", 8, 1, 2, ra_funcs,
         lara_data, ra_types},
        {"_lara", "(n,d),(m,d),(m,e),(c,d),(c,d),(c,d),(),(),()->(n,e)",
         "Linear randomized attention (flags: 0 opt, 1 bh, 2 const).", 9, 1, 2, lara_funcs,
         lara_data, lara_types},
    };
    return la_add_gufuncs(module, table, 2);
}
