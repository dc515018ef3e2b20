#include <math.h>
#include <string.h>

#include "la_util.h"
#include "lara.h"

size_t
la_ra_work_size(const la_lara_args *a, size_t is)
{
    const size_t m = (size_t)a->m, d = (size_t)a->d, e = (size_t)a->e;
    size_t n = 0;
    n += LA_ALIGN_BYTES(m * d * is) + LA_ALIGN_BYTES(m * e * is);
    n += 3 * LA_ALIGN_BYTES((m + 1) * sizeof(double));
    n += 3 * LA_ALIGN_BYTES((d + 1) * sizeof(double)) + LA_ALIGN_BYTES((d + 1) * is);
    n += 2 * LA_ALIGN_BYTES((e + 1) * sizeof(double));
    return n + 64;
}

size_t
la_lara_work_size(const la_lara_args *a, size_t is)
{
    const size_t d = (size_t)a->d, e = (size_t)a->e, c = (size_t)(a->c ? a->c : 1);
    const size_t b = LA_LARA_BLOCK;
    size_t n = 0;
    n += 3 * LA_ALIGN_BYTES(c * d * is);                 /* omega, qbar, mu */
    n += LA_ALIGN_BYTES(b * d * is) + LA_ALIGN_BYTES(b * e * is);
    n += LA_ALIGN_BYTES(b * sizeof(double));
    n += LA_ALIGN_BYTES(c * b * is);                     /* L / P */
    n += LA_ALIGN_BYTES(c * e * is) + LA_ALIGN_BYTES(c * e * sizeof(double));
    n += 8 * LA_ALIGN_BYTES(c * sizeof(double));
    n += 3 * LA_ALIGN_BYTES(b * c * is);                 /* Lq, R, W */
    n += LA_ALIGN_BYTES(c * e * is) + LA_ALIGN_BYTES(b * e * is);
    n += LA_ALIGN_BYTES(2 * c * sizeof(double));
    return n + 64;
}

#include "dtype/la_f32.h"
#include "lara_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "lara_impl.h"
#include "dtype/la_undef.h"
