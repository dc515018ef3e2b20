#include <math.h>

#include "la_util.h"
#include "la_vmath.h"
#include "softmax_bwd.h"

static size_t
block_of(la_index block, la_index t)
{
    size_t c = (size_t)(block < 1 ? 1 : block);
    if (t > 0 && c > (size_t)t) {
        c = (size_t)t;
    }
    return c;
}

size_t
la_softmax_bwd_work_size(const la_softmax_bwd_args *a, size_t itemsize)
{
    /* K, V, dK, dV (s rows); Q, dQ (c x d), dO (c x e), P, dP (c x s), D (c) */
    const size_t s = (size_t)a->s, d = (size_t)a->d, e = (size_t)a->e;
    const size_t c = block_of(a->block, a->t), s1 = s ? s : 1;
    size_t n = 0;
    n += 2 * LA_ALIGN_BYTES(s * d * itemsize) + 2 * LA_ALIGN_BYTES(s * e * itemsize);
    n += 2 * LA_ALIGN_BYTES(c * d * itemsize) + LA_ALIGN_BYTES(c * e * itemsize);
    n += 2 * LA_ALIGN_BYTES(c * s1 * itemsize) + LA_ALIGN_BYTES(c * sizeof(double));
    return n + 64;
}

#include "dtype/la_f32.h"
#include "softmax_bwd_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "softmax_bwd_impl.h"
#include "dtype/la_undef.h"
