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

#include "dtype/la_f32.h"
#include "featmap_impl.h"
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#include "featmap_impl.h"
#include "dtype/la_undef.h"
