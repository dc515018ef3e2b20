#include <math.h>
#include <stdint.h>
#include <string.h>

#include "la_util.h"
#include "la_vmath.h"
#include "softmax_bwd.h"

la_index
la_softmax_bwd_qblock(const la_softmax_bwd_args *a)
{
    const la_index c = a->block < 1 ? 1 : a->block;
    return a->t > 0 && c > a->t ? a->t : c;
}

size_t
la_softmax_bwd_work_size(const la_softmax_bwd_args *a, size_t itemsize)
{
    /* K, K^T, V^T, dK, dV (s rows); Q, dQ (c x d), dO (c x e), P, dP (c x key
     * block), D (c) */
    const size_t s = (size_t)a->s, d = (size_t)a->d, e = (size_t)a->e;
    const size_t c = (size_t)la_softmax_bwd_qblock(a), ck = (size_t)LA_SOFTMAX_KB(a->kblock);
    size_t n = 0;
    n += 3 * LA_ALIGN_BYTES(s * d * itemsize) + 2 * LA_ALIGN_BYTES(s * e * itemsize);
    n += 2 * LA_ALIGN_BYTES(c * d * itemsize) + LA_ALIGN_BYTES(c * e * itemsize);
    n += 2 * LA_ALIGN_BYTES(c * ck * itemsize) + LA_ALIGN_BYTES(c * sizeof(double));
    return n + 64;
}

#include "dtype/la_f32.h"
#define SM_IT int32_t
#define SM_EXP la_exp_sm_f32
#include "softmax_rows_impl.h"
#include "softmax_bwd_impl.h"
#undef SM_IT
#undef SM_EXP
#undef SM_VN
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#define SM_IT int64_t
#define SM_EXP la_exp_f64
#include "softmax_rows_impl.h"
#include "softmax_bwd_impl.h"
#undef SM_IT
#undef SM_EXP
#undef SM_VN
#include "dtype/la_undef.h"
