#include <math.h>

#include "la_util.h"
#include "sscan.h"

size_t
la_sscan_work_size(const la_sscan_args *a, size_t itemsize)
{
    return 4 * LA_ALIGN_BYTES((size_t)(a->n > 0 ? a->n : 1) * itemsize) + 64;
}

#include "dtype/la_f32.h"
#include "sscan_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "sscan_impl.h"
#include "dtype/la_undef.h"
