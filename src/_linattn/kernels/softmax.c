#include <math.h>

#include "la_util.h"
#include "la_vmath.h"
#include "softmax.h"

size_t
la_softmax_work_size(const la_softmax_args *a, size_t itemsize)
{
    const size_t s = (size_t)a->s, d = (size_t)a->d, e = (size_t)a->e;
    size_t c = (size_t)(a->block < 1 ? 1 : a->block);
    size_t n = 0;
    if (a->t > 0 && c > (size_t)a->t) {
        c = (size_t)a->t;
    }
    n += LA_ALIGN_BYTES(s * d * itemsize) + LA_ALIGN_BYTES(s * e * itemsize);
    n += LA_ALIGN_BYTES(c * d * itemsize) + LA_ALIGN_BYTES(c * (s ? s : 1) * itemsize);
    n += LA_ALIGN_BYTES(c * e * itemsize) + LA_ALIGN_BYTES(c * sizeof(double));
    return n + 64;
}

#include "dtype/la_f32.h"
#include "softmax_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "softmax_impl.h"
#include "dtype/la_undef.h"
