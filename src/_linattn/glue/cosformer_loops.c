/*
 * cosformer_loops.c -- gufunc for cosFormer's features (kernels/cosformer.h):
 *   x (t,d), t0 () int64, horizon () float64, scale () float64 -> y (t,2,d)
 * y[..., 0, :] is the sin part, y[..., 1, :] the cos part; a contiguous
 * (t,2,d) output reshapes to the (t, 2d) features without a copy.  The
 * angles are computed once per loop call and shared by every slice.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/cosformer.h"
#include "la_parallel.h"

typedef la_status (*la_cosformer_fn)(const la_cosformer_args *);

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_cosformer_args proto;
    la_cosformer_fn fn;
} la_cosformer_ctx;

static void
cosformer_task(void *vctx, int ith, int nth)
{
    la_cosformer_ctx *c = (la_cosformer_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    npy_intp i;
    for (i = lo; i < hi; i++) {
        la_cosformer_args a = c->proto;
        a.x = c->args[0] + i * c->steps[0];
        a.y = c->args[4] + i * c->steps[4];
        (void)c->fn(&a);
    }
}

static void
cosformer_loop(char **args, npy_intp const *dims, npy_intp const *steps,
               void *data)
{
    const npy_intp is = data == NULL ? 4 : 8;
    const npy_intp *cs = steps + 5; /* core strides: x (t,d), y (t,2,d) */
    la_cosformer_ctx c;
    la_cosformer_args *a = &c.proto;
    double *ang;
    npy_int64 t0 = *(npy_int64 *)args[1];
    double horizon = *(double *)args[2];
    npy_intp i;
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.n = dims[0];
    c.fn = is == 4 ? la_cosformer_features_f32 : la_cosformer_features_f64;
    /* dims: n, t, d, (2 is frozen) */
    a->t = dims[1];
    a->d = dims[2];
    a->x_rs = LA_ES(cs[0], is);
    a->x_cs = LA_ES(cs[1], is);
    a->y_rs = LA_ES(cs[2], is);
    a->y_ps = LA_ES(cs[3], is);
    a->y_cs = LA_ES(cs[4], is);
    a->scale = *(double *)args[3];
    /* t0, horizon and scale are loop-invariant: the wrapper passes scalars */
    for (i = 1; i < c.n; i++) {
        if (*(npy_int64 *)(args[1] + i * steps[1]) != t0 ||
            *(double *)(args[2] + i * steps[2]) != horizon) {
            la_raise(LA_ERR_VALUE, "linattn._cosformer_features: t0 and horizon "
                     "must be the same for every slice", 0);
            return;
        }
    }
    ang = (double *)la_alloc_work((size_t)(2 * (a->t > 0 ? a->t : 1)) *
                                  sizeof(double), 1,
                                  "linattn._cosformer_features");
    if (ang == NULL) {
        return;
    }
    la_cosformer_angles((la_index)t0, a->t, horizon, ang, ang + a->t);
    a->sn = ang;
    a->cs = ang + a->t;
    nth = la_workers_for(c.n);
    la_parallel_run(cosformer_task, &c, nth);
    la_free_work((char *)ang);
}

static PyUFuncGenericFunction cosformer_funcs[2] = {cosformer_loop, cosformer_loop};
static int cosformer_f64_tag;
static void *cosformer_data[2] = {NULL, &cosformer_f64_tag};
static const char cosformer_types[] = {
    NPY_FLOAT, NPY_INT64, NPY_DOUBLE, NPY_DOUBLE, NPY_FLOAT,
    NPY_DOUBLE, NPY_INT64, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE};

int
la_register_cosformer(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_cosformer_features", "(t,d),(),(),()->(t,2,d)",
         "cosFormer features [relu(scale x) sin(theta_i); relu(scale x) cos(theta_i)], "
         "theta_i = pi i / (2 horizon), i = t0 + row + 1.", 4, 1, 2,
         cosformer_funcs, cosformer_data, cosformer_types},
    };
    return la_add_gufuncs(module, table, 1);
}
