#include <math.h>

#include "featmap.h"
#include "la_util.h"
#include "la_vmath.h"

#define LA_FMAP_BLOCK 256

size_t
la_rf_work_size(la_index t, la_index d, la_index r, size_t itemsize)
{
    const size_t B = (size_t)la_block_rows(LA_RF_BLOCK, t);
    size_t n = 0;
    n += LA_ALIGN_BYTES((size_t)(r * d) * itemsize);
    n += LA_ALIGN_BYTES(B * (size_t)d * itemsize);
    n += LA_ALIGN_BYTES(B * (size_t)r * itemsize);
    n += LA_ALIGN_BYTES(B * 2 * (size_t)r * itemsize);
    n += LA_ALIGN_BYTES(B * sizeof(double));
    return n + 64;
}

/* exp(min(u, 0)) of elu1 / elu: float32 the reduced-range la_exp_neg_f32
 * (<= ~1 ulp, cheaper than la_exp_f32), float64 la_exp_f64 as before. */
#include "dtype/la_f32.h"
#define LA_FMAP_EXPNEG(u) la_exp_neg_f32(u)
#include "featmap_impl.h"
#undef LA_FMAP_EXPNEG
#undef LA_FMAP_ELU_OUT
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#define LA_FMAP_EXPNEG(u) la_exp_f64((u) > 0 ? 0.0 : (u))
#include "featmap_impl.h"
#undef LA_FMAP_EXPNEG
#undef LA_FMAP_ELU_OUT
#include "dtype/la_undef.h"
