#include <math.h>
#include <stdint.h>
#include <string.h>

#include "featmap.h"
#include "la_util.h"
#include "linear.h"
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

/*
 * exp(x) for x <= 0 (every shifted log-feature is), written so that the
 * compiler vectorises the loops that call it: Cody-Waite reduction
 * x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial (degree 7 in float32, 13 in
 * float64: below 1 ulp), 2^n assembled in the exponent bits.  Results below
 * the smallest normal number flush to 0 (relative to the shift they are
 * < 1e-38, resp. 1e-307).
 */
static inline float
la_exp_neg_f32(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: round to nearest */
    float t, r, p, s;
    uint32_t tb, sb;
    const int under = x < -87.0f;
    x = under ? -87.0f : x;
    t = x * 1.44269504088896341f + magic;
    memcpy(&tb, &t, sizeof(tb));
    t -= magic;
    r = x - t * 0.693359375f;
    r = r - t * -2.12194440e-4f;
    p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    sb = (tb - 0x4B400000u + 127u) << 23;
    memcpy(&s, &sb, sizeof(s));
    return under ? 0.0f : p * s;
}

static inline double
la_exp_neg_f64(double x)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double t, r, p, s;
    uint64_t tb, sb;
    const int under = x < -708.0;
    x = under ? -708.0 : x;
    t = x * 1.4426950408889634074 + magic;
    memcpy(&tb, &t, sizeof(tb));
    t -= magic;
    r = x - t * 6.93147180369123816490e-01;
    r = r - t * 1.90821492927058770002e-10;
    p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    sb = (tb - 0x4338000000000000ull + 1023ull) << 52;
    memcpy(&s, &sb, sizeof(s));
    return under ? 0.0 : p * s;
}

#include "dtype/la_f32.h"
#define LA_EXP_NEG la_exp_neg_f32
#define LA_PERF_SPLIT 60.0
#include "performer_impl.h"
#undef LA_PERF_SPLIT
#undef LA_EXP_NEG
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#define LA_EXP_NEG la_exp_neg_f64
#define LA_PERF_SPLIT 600.0
#include "performer_impl.h"
#undef LA_PERF_SPLIT
#undef LA_EXP_NEG
#include "dtype/la_undef.h"
