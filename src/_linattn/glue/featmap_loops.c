/*
 * featmap_loops.c -- gufunc for the elementwise feature maps
 * (kernels/featmap.h), one row per outer item.
 */
#include "gufunc_util.h"

#include "kernels/featmap.h"

enum { FM_X, FM_SCALE, FM_FMAP, FM_Y };

/* A strided output row is computed into the scratch, then scattered. */
#define LA_FEATMAP_ROW(SUF, T)                                                      \
    do {                                                                            \
        const la_index d = la_dim(c, "d");                                          \
        const npy_intp ys = la_bstride(c, FM_Y, 0);                                 \
        T *y = ys == (npy_intp)sizeof(T) ? (T *)LA_AT(c, FM_Y, i) : (T *)work;      \
        la_index j;                                                                 \
        la_featmap_row_##SUF((int)LA_OPT_I(c, FM_FMAP), LA_OPT_F(c, FM_SCALE),      \
                             (const T *)LA_AT(c, FM_X, i), la_stride(c, FM_X, 0), d, y); \
        for (j = 0; y == (T *)work && j < d; j++) {                                 \
            *(T *)(LA_AT(c, FM_Y, i) + j * ys) = y[j];                              \
        }                                                                           \
    } while (0)

static la_status
featmap_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    (void)proto;
    if (c->f64) {
        LA_FEATMAP_ROW(f64, double);
    }
    else {
        LA_FEATMAP_ROW(f32, float);
    }
    return LA_OK;
}

static void
featmap_loop(const la_call *c)
{
    const la_index d = la_dim(c, "d");
    la_run(c, featmap_item, NULL, (size_t)(d > 0 ? d : 1) * c->is, 8.0 * (double)d);
}

static const la_gufunc featmap_table[] = {
    {"_featmap", "(d),(),()->(d)", "x:T scale:D fmap:Q -> y:T",
     "Elementwise feature map phi(scale * x).", featmap_loop, NULL},
};

LA_REGISTER(featmap, featmap_table)
