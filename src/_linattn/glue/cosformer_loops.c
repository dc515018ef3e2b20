/*
 * cosformer_loops.c -- gufunc for cosFormer's features (kernels/cosformer.h).
 * y[..., 0, :] is the sin part, y[..., 1, :] the cos part; a contiguous
 * (t,2,d) output reshapes to the (t, 2d) features without a copy.  The
 * angles are computed once per loop call (t0 and horizon are options) and
 * shared by every slice.
 *
 * _cosformer_step_inplace: the features of q (scale) and k (1) and the linear
 * operator's recurrent form on them (identity maps), updating S and z in
 * place: what _cosformer_features twice and _step_inplace compute, the same
 * kernels on the same values (so the same bits), in one call.
 */
#include "gufunc_util.h"

#include "kernels/cosformer.h"
#include "kernels/linear.h"
#include "la_parallel.h"

enum { CF_X, CF_T0, CF_HORIZON, CF_SCALE, CF_Y };

static la_status
cosformer_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_cosformer_args a = *(const la_cosformer_args *)proto;
    (void)work;
    a.x = LA_AT(c, CF_X, i);
    a.y = LA_AT(c, CF_Y, i);
    return (c->f64 ? la_cosformer_features_f64 : la_cosformer_features_f32)(&a);
}

/* The angles of up to LA_CF_ANGLES_LOCAL rows live on the loop's stack (a
 * decoding step allocates nothing); longer calls allocate them. */
#define LA_CF_ANGLES_LOCAL 64

static double *
la_cf_angles_alloc(la_index t, const char *name)
{
    return (double *)la_alloc_work((size_t)(2 * (t > 0 ? t : 1)) * sizeof(double), 1, name);
}

static void
cosformer_loop(const la_call *c)
{
    la_cosformer_args a;
    double local[2 * LA_CF_ANGLES_LOCAL];
    double *ang;
    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.d = la_dim(c, "d");
    a.x_rs = la_stride(c, CF_X, 0);
    a.x_cs = la_stride(c, CF_X, 1);
    a.y_rs = la_stride(c, CF_Y, 0);
    a.y_ps = la_stride(c, CF_Y, 1);
    a.y_cs = la_stride(c, CF_Y, 2);
    a.scale = LA_OPT_F(c, CF_SCALE);
    ang = a.t <= LA_CF_ANGLES_LOCAL ? local : la_cf_angles_alloc(a.t, c->name);
    if (ang == NULL) {
        return;
    }
    la_cosformer_angles((la_index)LA_OPT_I(c, CF_T0), a.t, LA_OPT_F(c, CF_HORIZON), ang,
                        ang + a.t);
    a.sn = ang;
    a.cs = ang + a.t;
    la_run(c, cosformer_item, &a, 0, 4.0 * (double)a.t * (double)a.d);
    if (ang != local) {
        la_free_work((char *)ang);
    }
}

enum { CS_Q, CS_K, CS_V, CS_S, CS_Z, CS_T0, CS_HORIZON, CS_SCALE, CS_EPS, CS_FLAGS, CS_O };

typedef struct {
    la_linear_args lin;   /* the recurrent form; q and k point into the scratch */
    la_cosformer_args fx; /* the features of one input (x and scale set per call) */
    la_index q_rs, q_cs, k_rs, k_cs;
    double scale;
} la_cfstep_proto;

static la_status
cfstep_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    const la_cfstep_proto *p = (const la_cfstep_proto *)proto;
    la_linear_args a = p->lin;
    la_cosformer_args fx = p->fx;
    const size_t fb = LA_ALIGN_BYTES((size_t)(a.t * a.f > 0 ? a.t * a.f : 1) * c->is);
    char *fq = (char *)work, *fk = fq + fb, *lw = fk + fb;
    la_status (*feat)(const la_cosformer_args *) =
        c->f64 ? la_cosformer_features_f64 : la_cosformer_features_f32;
    fx.x = LA_AT(c, CS_Q, i);
    fx.x_rs = p->q_rs;
    fx.x_cs = p->q_cs;
    fx.y = fq;
    fx.scale = p->scale;
    feat(&fx);
    fx.x = LA_AT(c, CS_K, i);
    fx.x_rs = p->k_rs;
    fx.x_cs = p->k_cs;
    fx.y = fk;
    fx.scale = 1.0;
    feat(&fx);
    a.q = fq;
    a.k = fk;
    a.v = LA_AT(c, CS_V, i);
    a.s0 = a.s1 = LA_AT(c, CS_S, i);
    a.z0 = a.z1 = LA_AT(c, CS_Z, i);
    a.o = LA_AT(c, CS_O, i);
    return c->f64 ? la_linear_recurrent_f64(&a, lw) : la_linear_recurrent_f32(&a, lw);
}

static void
cfstep_loop(const la_call *c)
{
    la_cfstep_proto p;
    la_linear_args *a = &p.lin;
    size_t fb;
    double local[2 * LA_CF_ANGLES_LOCAL];
    double *ang;
    memset(&p, 0, sizeof(p));
    a->t = a->s = la_dim(c, "t");
    a->f = la_dim(c, "f");
    a->e = la_dim(c, "e");
    p.fx.t = a->t;
    p.fx.d = la_dim(c, "d");
    if (a->f != 2 * p.fx.d) {
        la_raise(LA_ERR_SHAPE, c->name, 0);
        return;
    }
    p.fx.y_rs = a->f;
    p.fx.y_ps = p.fx.d;
    p.fx.y_cs = 1;
    p.q_rs = la_stride(c, CS_Q, 0);  p.q_cs = la_stride(c, CS_Q, 1);
    p.k_rs = la_stride(c, CS_K, 0);  p.k_cs = la_stride(c, CS_K, 1);
    p.scale = LA_OPT_F(c, CS_SCALE);
    la_step_args_dense(a, c, CS_V, CS_S, CS_Z, CS_O, CS_EPS, CS_FLAGS);
    ang = a->t <= LA_CF_ANGLES_LOCAL ? local : la_cf_angles_alloc(a->t, c->name);
    if (ang == NULL) {
        return;
    }
    la_cosformer_angles((la_index)LA_OPT_I(c, CS_T0), a->t, LA_OPT_F(c, CS_HORIZON), ang,
                        ang + a->t);
    p.fx.sn = ang;
    p.fx.cs = ang + a->t;
    fb = LA_ALIGN_BYTES((size_t)(a->t * a->f > 0 ? a->t * a->f : 1) * c->is);
    la_run(c, cfstep_item, &p, 2 * fb + la_linear_work_size(LA_FORM_RECURRENT, a, c->is),
           4.0 * (double)a->t * (double)(a->f > 0 ? a->f : 1) * (double)(a->e + 1));
    if (ang != local) {
        la_free_work((char *)ang);
    }
}

static const la_gufunc cosformer_table[] = {
    {"_cosformer_features", "(t,d),(),(),()->(t,2,d)", "x:T t0:Q horizon:D scale:D -> y:T",
     "cosFormer features [relu(scale x) sin(theta_i); relu(scale x) cos(theta_i)], "
     "theta_i = pi i / (2 horizon), i = t0 + row + 1.", cosformer_loop, NULL},
    {"_cosformer_step_inplace", "(t,d),(t,d),(t,e),(f,e),(f),(),(),(),(),()->(t,e)",
     "q:T k:T v:T S:T z:T t0:Q horizon:D scale:D eps:D flags:Q -> o:T",
     "cosFormer's features of q (scale) and k, then the recurrent form (identity maps, "
     "flags as _step_inplace, no decay) updating S, z in place (la.step inplace=True).",
     cfstep_loop, NULL},
};

LA_REGISTER(cosformer, cosformer_table)
