/*
 * rf_loops.c -- gufuncs for the random-feature maps (kernels/featmap.h):
 *
 *   _rfa_features          x (t,d), W (r,d), scale ()                 -> y (t,2,r)
 *   _performer_features_1  x (t,d), W (r,d), scale, eps, flags        -> y (t,1,r)
 *   _performer_features_2  (the same, hyperbolic: F = 2r)              -> y (t,2,r)
 *
 * The frozen middle axis gives F = 2r (or r), which a signature cannot say;
 * Python reshapes (t,c,r) -> (t,c*r).  flags: bits 0-1 la_perf_kind, bits
 * 2-3 shift (0 none, 1 per row, 2 per slice), bit 4 "return log-features".
 * The outer loop is split over worker threads.
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/featmap.h"
#include "la_parallel.h"

typedef struct {
    int performer; /* 0: rfa */
    int itemsize;
    const char *name;
} la_rf_loop_data;

typedef struct {
    char **args;
    const npy_intp *steps;
    npy_intp n;
    la_index t, d, r, c, f;
    la_index x_rs, x_cs, w_rs, w_cs;
    npy_intp y_ts, y_cs, y_rs; /* byte strides of the output core axes */
    int uniform;               /* y row is one element stride */
    const la_rf_loop_data *ld;
    char *work;
    size_t wsize;
    volatile int status; /* stays LA_OK: the feature maps cannot fail */
} la_rf_ctx;

/* Copy a contiguous (t x f) block into the (t, c, r) output. */
#define LA_RF_SCATTER(T)                                                       \
    do {                                                                       \
        la_index tt, cc, ii;                                                   \
        for (tt = 0; tt < c->t; tt++) {                                        \
            for (cc = 0; cc < c->c; cc++) {                                    \
                for (ii = 0; ii < c->r; ii++) {                                \
                    *(T *)(yb + tt * c->y_ts + cc * c->y_cs + ii * c->y_rs) = \
                        ((T *)blk)[tt * c->f + cc * c->r + ii];                \
                }                                                              \
            }                                                                  \
        }                                                                      \
    } while (0)

static void
rf_task(void *vctx, int ith, int nth)
{
    la_rf_ctx *c = (la_rf_ctx *)vctx;
    const npy_intp lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth;
    const int is = c->ld->itemsize;
    char *tmp = c->work + (size_t)ith * c->wsize;
    char *blk = tmp + LA_ALIGN_BYTES(la_rf_work_size(c->t, c->d, c->r, (size_t)is));
    char **args = c->args;
    const npy_intp *st = c->steps;
    const int nin = c->ld->performer ? 5 : 3;
    npy_intp i;
    for (i = lo; i < hi; i++) {
        const char *x = args[0] + i * st[0];
        const char *W = args[1] + i * st[1];
        const double scale = *(double *)(args[2] + i * st[2]);
        char *yb = args[nin] + i * st[nin];
        char *y = c->uniform ? yb : blk;
        const la_index y_rs = c->uniform ? LA_ES(c->y_ts, is) : c->f;
        const la_index y_cs = c->uniform ? LA_ES(c->y_rs, is) : 1;
        if (!c->ld->performer) {
            if (is == 4) {
                la_rfa_features_f32(c->t, scale, (const float *)x, c->x_rs, c->x_cs, c->d,
                                    (const float *)W, c->w_rs, c->w_cs, c->r, (float *)y,
                                    y_rs, y_cs, tmp);
            }
            else {
                la_rfa_features_f64(c->t, scale, (const double *)x, c->x_rs, c->x_cs, c->d,
                                    (const double *)W, c->w_rs, c->w_cs, c->r, (double *)y,
                                    y_rs, y_cs, tmp);
            }
        }
        else {
            const double eps = *(double *)(args[3] + i * st[3]);
            const npy_int64 flags = *(npy_int64 *)(args[4] + i * st[4]);
            const int kind = (int)(flags & 3), shift = (int)((flags >> 2) & 3);
            const int lg = (int)((flags >> 4) & 1);
            if (is == 4) {
                la_performer_features_f32(c->t, kind, shift, lg, scale, eps, (const float *)x,
                                          c->x_rs, c->x_cs, c->d, (const float *)W, c->w_rs,
                                          c->w_cs, c->r, (float *)y, y_rs, y_cs, tmp);
            }
            else {
                la_performer_features_f64(c->t, kind, shift, lg, scale, eps,
                                          (const double *)x, c->x_rs, c->x_cs, c->d,
                                          (const double *)W, c->w_rs, c->w_cs, c->r,
                                          (double *)y, y_rs, y_cs, tmp);
            }
        }
        if (!c->uniform) {
            if (is == 4) {
                LA_RF_SCATTER(float);
            }
            else {
                LA_RF_SCATTER(double);
            }
        }
    }
}

static void
rf_loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const la_rf_loop_data *ld = (const la_rf_loop_data *)data;
    const int nin = ld->performer ? 5 : 3;
    const npy_intp *cs = steps + nin + 1; /* x (t,d), W (r,d), y (t,c,r) */
    const int is = ld->itemsize;
    la_rf_ctx c;
    int nth;

    memset(&c, 0, sizeof(c));
    c.args = args;
    c.steps = steps;
    c.ld = ld;
    c.n = dims[0];
    /* dims: n, t, d, r, c */
    c.t = dims[1];
    c.d = dims[2];
    c.r = dims[3];
    c.c = dims[4];
    c.f = c.c * c.r;
    c.x_rs = LA_ES(cs[0], is);
    c.x_cs = LA_ES(cs[1], is);
    c.w_rs = LA_ES(cs[2], is);
    c.w_cs = LA_ES(cs[3], is);
    c.y_ts = cs[4];
    c.y_cs = cs[5];
    c.y_rs = cs[6];
    c.uniform = (c.c == 1 || c.y_cs == c.r * c.y_rs) && c.y_ts % is == 0 &&
                c.y_rs % is == 0;
    nth = la_workers_for(c.n);
    c.wsize = LA_ALIGN_BYTES(la_rf_work_size(c.t, c.d, c.r, (size_t)is));
    if (!c.uniform) {
        c.wsize += LA_ALIGN_BYTES((size_t)(c.t * c.f > 0 ? c.t * c.f : 1) * (size_t)is);
    }
    la_run_workers(rf_task, &c, nth, c.wsize, &c.work, &c.status, ld->name);
}

static la_rf_loop_data rfa_ld[2] = {{0, 4, "linattn._rfa_features"},
                                    {0, 8, "linattn._rfa_features"}};
static la_rf_loop_data perf_ld[2] = {{1, 4, "linattn._performer_features"},
                                     {1, 8, "linattn._performer_features"}};
static PyUFuncGenericFunction rf_funcs[2] = {rf_loop, rf_loop};
static void *rfa_data[2] = {&rfa_ld[0], &rfa_ld[1]};
static void *perf_data[2] = {&perf_ld[0], &perf_ld[1]};
static const char rfa_types[] = {NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_FLOAT,
                                 NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE};
static const char perf_types[] = {
    NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_DOUBLE};

int
la_register_rf(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_rfa_features", "(t,d),(r,d),()->(t,2,r)",
         "RFA random Fourier features sqrt(2/F)[sin u; cos u], u = sqrt(scale) W x/(|x|+1e-3).",
         3, 1, 2, rf_funcs, rfa_data, rfa_types},
        {"_performer_features_1", "(t,d),(r,d),(),(),()->(t,1,r)",
         "Performer positive / relu features (F = r).", 5, 1, 2, rf_funcs, perf_data,
         perf_types},
        {"_performer_features_2", "(t,d),(r,d),(),(),()->(t,2,r)",
         "Performer hyperbolic features (F = 2r).", 5, 1, 2, rf_funcs, perf_data,
         perf_types},
    };
    return la_add_gufuncs(module, table, (int)(sizeof(table) / sizeof(table[0])));
}
