#include <math.h>
#include <stdint.h>
#include <string.h>

#include "featmap.h"
#include "la_util.h"
#include "la_vmath.h"
#include "linear.h"
#include "arch/la_arch.h"
#include "la_cpu.h"
#include "performer.h"

size_t
la_performer_work_size(int form, const la_performer_args *a, size_t itemsize)
{
    const size_t f = (size_t)a->f, e = (size_t)a->e, d = (size_t)a->d;
    const size_t m = (size_t)a->m;
    const size_t ec = e + 1;
    const size_t t = (size_t)(a->t > a->s ? a->t : a->s);
    const size_t c = (size_t)la_block_rows(a->chunk, (la_index)t);
    const size_t tt = t > 0 ? t : 1;
    size_t n = 0;
#define LA_ADD(count, size) (n += LA_ALIGN_BYTES((size_t)(count) * (size)))
    LA_ADD(m * d, itemsize);      /* W, contiguous */
    LA_ADD(c * d, itemsize);      /* scaled input rows */
    LA_ADD(c * m, itemsize);      /* projections U */
    LA_ADD(c, sizeof(double));    /* h */
    LA_ADD(c * f, itemsize);      /* query log-features / features */
    LA_ADD(c, sizeof(double));    /* nu */
    LA_ADD(c * ec, itemsize);     /* output rows */
    LA_ADD(f * ec, itemsize);     /* state [S | z] */
    LA_ADD(c * f, itemsize);      /* key block */
    LA_ADD(c * ec, itemsize);     /* value block */
    LA_ADD(c, sizeof(double));    /* running maxima of the block */
    if (form == LA_FORM_CHUNKED) {
        LA_ADD(c * c, itemsize);
    }
    else if (form == LA_FORM_PARALLEL) {
        LA_ADD(tt * f, itemsize);
        LA_ADD(tt * ec, itemsize);
        LA_ADD(tt, sizeof(double));
        LA_ADD(tt, itemsize);
        LA_ADD(c * tt, itemsize);
    }
#undef LA_ADD
    return n + 64;
}

/* exp of x <= 0 (the shifted log-features): float32 takes la_exp_nonpos_f32 on
 * its range (<= 1.01 ulp, no clamps) and 0 below it, where exp(x) is under the
 * smallest normal; float64 la_exp_f64. */
#include "dtype/la_f32.h"
#define LA_EXP_NEG(x) ((x) >= LA_EXP_NONPOS_MIN_F32 ? la_exp_nonpos_f32(x) : 0.0f)
#define LA_PERF_FMA fmaf
#define LA_PERF_SPLIT 60.0
#include "performer_impl.h"
#undef LA_PERF_SPLIT
#undef LA_PERF_FMA
#undef LA_EXP_NEG
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#define LA_EXP_NEG la_exp_f64
#define LA_PERF_FMA fma
#define LA_PERF_SPLIT 600.0
#include "performer_impl.h"
#undef LA_PERF_SPLIT
#undef LA_PERF_FMA
#undef LA_EXP_NEG
#include "dtype/la_undef.h"
