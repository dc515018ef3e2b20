#include <math.h>
#include <stdint.h>
#include <string.h>

#include "la_util.h"
#include "la_vmath.h"
#include "softmax.h"

la_index
la_softmax_qblock(const la_softmax_args *a)
{
    const la_index c = a->block < 1 ? 1 : a->block;
    return a->t > 0 && c > a->t ? a->t : c;
}

size_t
la_softmax_work_size(const la_softmax_args *a, size_t itemsize)
{
    /* K^T, V (s rows); Q, O (c rows); P (c x key block); max, sum (c) */
    const size_t s = (size_t)a->s, d = (size_t)a->d, e = (size_t)a->e;
    const size_t c = (size_t)la_softmax_qblock(a);
    size_t n = 0;
    n += LA_ALIGN_BYTES(s * d * itemsize) + LA_ALIGN_BYTES(s * e * itemsize);
    n += LA_ALIGN_BYTES(c * d * itemsize) + LA_ALIGN_BYTES(c * (size_t)LA_SOFTMAX_KB(a->kblock) * itemsize);
    n += LA_ALIGN_BYTES(c * e * itemsize) + 2 * LA_ALIGN_BYTES(c * sizeof(double));
    return n + 64;
}

#include "dtype/la_f32.h"
#define SM_IT int32_t
#define SM_EXP la_exp_sm_f32
#include "softmax_rows_impl.h"
#include "softmax_impl.h"
#undef SM_IT
#undef SM_EXP
#undef SM_VN
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#define SM_IT int64_t
#define SM_EXP la_exp_f64
#include "softmax_rows_impl.h"
#include "softmax_impl.h"
#undef SM_IT
#undef SM_EXP
#undef SM_VN
#include "dtype/la_undef.h"
