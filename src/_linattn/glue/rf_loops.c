/*
 * rf_loops.c -- gufuncs for the random-feature maps (kernels/featmap.h):
 * _rfa_features, _performer_features_1 and _performer_features_2 (F = 2r).
 * The frozen middle axis gives F = 2r (or r), which a signature cannot say;
 * Python reshapes (t,c,r) -> (t,c*r).  flags: bits 0-1 la_perf_kind, bits
 * 2-3 shift (0 none, 1 per row, 2 per slice), bit 4 "return log-features".
 * The outer loop is split over worker threads.
 *
 * _rfa_step_inplace: RFA's features of q and k and the linear operator's
 * recurrent form on them (identity maps), updating S and z in place: what
 * _rfa_features twice and _step_inplace compute, the same kernels on the same
 * values (so the same bits), in one call without the feature arrays.
 */
#include "gufunc_util.h"

#include "kernels/featmap.h"
#include "kernels/linear.h"
#include "la_parallel.h"

/* _rfa_features: x, W, scale -> y;  _performer_features_*: x, W, scale, eps, flags -> y */
enum { RF_X, RF_W, RF_SCALE, RF_EPS, RF_FLAGS };

typedef struct {
    la_index t, d, r, c, f;
    la_index x_rs, x_cs, w_rs, w_cs;
    int yop;                   /* the output's operand index */
    npy_intp y_ts, y_cs, y_rs; /* byte strides of the output core axes */
    int uniform;               /* y row is one element stride */
    size_t tmp_bytes;          /* the kernels' scratch; a (t x f) block follows */
} la_rf_proto;

/* The kernel into y (the output, or a contiguous (t x f) block that is then
 * copied into the (t, c, r) output). */
#define LA_RF_ITEM(SUF, T)                                                                \
    do {                                                                                  \
        la_index tt, cc, ii;                                                              \
        if (p->yop == RF_EPS) { /* rfa: the output follows scale */                      \
            la_rfa_features_##SUF(p->t, scale, (const T *)x, p->x_rs, p->x_cs, p->d,      \
                                  (const T *)W, p->w_rs, p->w_cs, p->r, (T *)y, y_rs,     \
                                  y_cs, tmp);                                             \
        }                                                                                 \
        else {                                                                            \
            const npy_int64 fl = LA_OPT_I(c, RF_FLAGS);                                   \
            la_performer_features_##SUF(p->t, (int)(fl & 3), (int)((fl >> 2) & 3),        \
                                        (int)((fl >> 4) & 1), scale, LA_OPT_F(c, RF_EPS), \
                                        (const T *)x, p->x_rs, p->x_cs, p->d,             \
                                        (const T *)W, p->w_rs, p->w_cs, p->r, (T *)y,     \
                                        y_rs, y_cs, tmp);                                 \
        }                                                                                 \
        for (tt = 0; !p->uniform && tt < p->t; tt++) {                                    \
            for (cc = 0; cc < p->c; cc++) {                                               \
                for (ii = 0; ii < p->r; ii++) {                                           \
                    *(T *)(yb + tt * p->y_ts + cc * p->y_cs + ii * p->y_rs) =            \
                        ((T *)blk)[tt * p->f + cc * p->r + ii];                           \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    } while (0)

static la_status
rf_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    const la_rf_proto *p = (const la_rf_proto *)proto;
    char *tmp = (char *)work, *blk = tmp + p->tmp_bytes;
    const char *x = LA_AT(c, RF_X, i), *W = LA_AT(c, RF_W, i);
    const double scale = LA_OPT_F(c, RF_SCALE);
    char *yb = LA_AT(c, p->yop, i), *y = p->uniform ? yb : blk;
    const la_index y_rs = p->uniform ? LA_ES(p->y_ts, c->is) : p->f;
    const la_index y_cs = p->uniform ? LA_ES(p->y_rs, c->is) : 1;
    if (c->f64) {
        LA_RF_ITEM(f64, double);
    }
    else {
        LA_RF_ITEM(f32, float);
    }
    return LA_OK;
}

static void
rf_loop(const la_call *c)
{
    const int is = (int)c->is;
    la_rf_proto p;
    size_t ws;
    memset(&p, 0, sizeof(p));
    p.yop = c->info->nin;
    p.t = la_dim(c, "t");
    p.d = la_dim(c, "d");
    p.r = la_dim(c, "r");
    p.c = c->info->ncore > 3 ? (la_index)c->dims[4] : 1; /* the frozen 1 or 2 */
    p.f = p.c * p.r;
    p.x_rs = la_stride(c, RF_X, 0);
    p.x_cs = la_stride(c, RF_X, 1);
    p.w_rs = la_stride(c, RF_W, 0);
    p.w_cs = la_stride(c, RF_W, 1);
    p.y_ts = la_bstride(c, p.yop, 0);
    p.y_cs = la_bstride(c, p.yop, 1);
    p.y_rs = la_bstride(c, p.yop, 2);
    p.uniform = (p.c == 1 || p.y_cs == p.r * p.y_rs) && p.y_ts % is == 0 &&
                p.y_rs % is == 0;
    p.tmp_bytes = LA_ALIGN_BYTES(la_rf_work_size(p.t, p.d, p.r, (size_t)is));
    ws = p.tmp_bytes;
    if (!p.uniform) {
        ws += LA_ALIGN_BYTES((size_t)(p.t * p.f > 0 ? p.t * p.f : 1) * (size_t)is);
    }
    la_run(c, rf_item, &p, ws, 2.0 * (double)p.t * (double)p.d * (double)p.f);
}

enum { RS_Q, RS_K, RS_V, RS_W, RS_S, RS_Z, RS_SCALE, RS_EPS, RS_FLAGS, RS_O };

typedef struct {
    la_linear_args lin; /* the recurrent form; q and k point into the scratch */
    la_index t, d, r, f;
    la_index q_rs, q_cs, k_rs, k_cs, w_rs, w_cs;
    double scale;    /* the features' kernel scale */
    size_t rf_bytes; /* la_rfa_features' scratch; the q and k features follow */
} la_rfstep_proto;

static la_status
rfstep_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    const la_rfstep_proto *p = (const la_rfstep_proto *)proto;
    la_linear_args a = p->lin;
    const size_t fb = LA_ALIGN_BYTES((size_t)(p->t * p->f > 0 ? p->t * p->f : 1) * c->is);
    char *rfw = (char *)work, *fq = rfw + p->rf_bytes, *fk = fq + fb, *lw = fk + fb;
    const char *q = LA_AT(c, RS_Q, i), *k = LA_AT(c, RS_K, i), *W = LA_AT(c, RS_W, i);
    a.q = fq;
    a.k = fk;
    a.v = LA_AT(c, RS_V, i);
    a.s0 = a.s1 = LA_AT(c, RS_S, i);
    a.z0 = a.z1 = LA_AT(c, RS_Z, i);
    a.o = LA_AT(c, RS_O, i);
    if (c->f64) {
        la_rfa_features_f64(p->t, p->scale, (const double *)q, p->q_rs, p->q_cs, p->d,
                            (const double *)W, p->w_rs, p->w_cs, p->r, (double *)fq, p->f, 1,
                            rfw);
        la_rfa_features_f64(p->t, p->scale, (const double *)k, p->k_rs, p->k_cs, p->d,
                            (const double *)W, p->w_rs, p->w_cs, p->r, (double *)fk, p->f, 1,
                            rfw);
        return la_linear_recurrent_f64(&a, lw);
    }
    la_rfa_features_f32(p->t, p->scale, (const float *)q, p->q_rs, p->q_cs, p->d,
                        (const float *)W, p->w_rs, p->w_cs, p->r, (float *)fq, p->f, 1, rfw);
    la_rfa_features_f32(p->t, p->scale, (const float *)k, p->k_rs, p->k_cs, p->d,
                        (const float *)W, p->w_rs, p->w_cs, p->r, (float *)fk, p->f, 1, rfw);
    return la_linear_recurrent_f32(&a, lw);
}

static void
rfstep_loop(const la_call *c)
{
    la_rfstep_proto p;
    la_linear_args *a = &p.lin;
    size_t fb;
    memset(&p, 0, sizeof(p));
    p.t = la_dim(c, "t");
    p.d = la_dim(c, "d");
    p.r = la_dim(c, "r");
    p.f = la_dim(c, "f");
    if (p.f != 2 * p.r) {
        la_raise(LA_ERR_SHAPE, c->name, 0);
        return;
    }
    p.q_rs = la_stride(c, RS_Q, 0);  p.q_cs = la_stride(c, RS_Q, 1);
    p.k_rs = la_stride(c, RS_K, 0);  p.k_cs = la_stride(c, RS_K, 1);
    p.w_rs = la_stride(c, RS_W, 0);  p.w_cs = la_stride(c, RS_W, 1);
    p.scale = LA_OPT_F(c, RS_SCALE);
    a->t = a->s = p.t;
    a->f = p.f;
    a->e = la_dim(c, "e");
    la_step_args_dense(a, c, RS_V, RS_S, RS_Z, RS_O, RS_EPS, RS_FLAGS);
    p.rf_bytes = LA_ALIGN_BYTES(la_rf_work_size(p.t, p.d, p.r, c->is));
    fb = LA_ALIGN_BYTES((size_t)(p.t * p.f > 0 ? p.t * p.f : 1) * c->is);
    la_run(c, rfstep_item, &p,
           p.rf_bytes + 2 * fb + la_linear_work_size(LA_FORM_RECURRENT, a, c->is),
           (double)p.t * (4.0 * (double)p.d * (double)p.f +
                          4.0 * (double)(p.f > 0 ? p.f : 1) * (double)(a->e + 1)));
}

static const la_gufunc rf_table[] = {
    {"_rfa_features", "(t,d),(r,d),()->(t,2,r)", "x:T W:T scale:D -> y:T",
     "RFA random Fourier features sqrt(2/F)[sin u; cos u], u = sqrt(scale) W x/(|x|+1e-3).",
     rf_loop, NULL},
    {"_performer_features_1", "(t,d),(r,d),(),(),()->(t,1,r)",
     "x:T W:T scale:D eps:D flags:Q -> y:T", "Performer positive / relu features (F = r).",
     rf_loop, NULL},
    {"_performer_features_2", "(t,d),(r,d),(),(),()->(t,2,r)",
     "x:T W:T scale:D eps:D flags:Q -> y:T", "Performer hyperbolic features (F = 2r).",
     rf_loop, NULL},
    {"_rfa_step_inplace", "(t,d),(t,d),(t,e),(r,d),(f,e),(f),(),(),()->(t,e)",
     "q:T k:T v:T W:T S:T z:T scale:D eps:D flags:Q -> o:T",
     "RFA's features of q and k, then the recurrent form (identity maps, flags as "
     "_step_inplace, no decay) updating S, z in place (la.step inplace=True).",
     rfstep_loop, NULL},
};

LA_REGISTER(rf, rf_table)
