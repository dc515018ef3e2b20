/*
 * cosformer_loops.c -- gufunc for cosFormer's features (kernels/cosformer.h).
 * y[..., 0, :] is the sin part, y[..., 1, :] the cos part; a contiguous
 * (t,2,d) output reshapes to the (t, 2d) features without a copy.  The
 * angles are computed once per loop call (t0 and horizon are options) and
 * shared by every slice.
 */
#include "gufunc_util.h"

#include "kernels/cosformer.h"

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

static void
cosformer_loop(const la_call *c)
{
    la_cosformer_args a;
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
    ang = (double *)la_alloc_work((size_t)(2 * (a.t > 0 ? a.t : 1)) * sizeof(double), 1,
                                  c->name);
    if (ang == NULL) {
        return;
    }
    la_cosformer_angles((la_index)LA_OPT_I(c, CF_T0), a.t, LA_OPT_F(c, CF_HORIZON), ang,
                        ang + a.t);
    a.sn = ang;
    a.cs = ang + a.t;
    la_run(c, cosformer_item, &a, 0, 4.0 * (double)a.t * (double)a.d);
    la_free_work((char *)ang);
}

static const la_gufunc cosformer_table[] = {
    {"_cosformer_features", "(t,d),(),(),()->(t,2,d)", "x:T t0:Q horizon:D scale:D -> y:T",
     "cosFormer features [relu(scale x) sin(theta_i); relu(scale x) cos(theta_i)], "
     "theta_i = pi i / (2 horizon), i = t0 + row + 1.", cosformer_loop, NULL},
};

LA_REGISTER(cosformer, cosformer_table)
