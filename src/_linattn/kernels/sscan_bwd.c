#include <math.h>

#include "la_util.h"
#include "sscan_bwd.h"

size_t
la_sscan_bwd_work_size(const la_sscan_bwd_args *a, size_t itemsize)
{
    const size_t n = (size_t)(a->n > 0 ? a->n : 1), bl = LA_SSCAN_BWD_BLOCK;
    const size_t nblk = (size_t)((a->l + LA_SSCAN_BWD_BLOCK - 1) / LA_SSCAN_BWD_BLOCK) + 1;
    size_t s = 0;
    s += LA_ALIGN_BYTES(nblk * n * itemsize);       /* checkpoints */
    s += LA_ALIGN_BYTES((bl + 1) * n * itemsize);   /* block states */
    s += LA_ALIGN_BYTES(bl * n * itemsize);         /* block exp(dt A) */
    s += LA_ALIGN_BYTES(bl * itemsize);             /* block dt */
    s += 6 * LA_ALIGN_BYTES(n * itemsize);          /* A, B_t, C_t, dh, dB_t, dC_t */
    s += 3 * LA_ALIGN_BYTES(n * sizeof(double));    /* dA, dB, dC sums */
    return s + 64;
}

#include "dtype/la_f32.h"
#include "sscan_bwd_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "sscan_bwd_impl.h"
#include "dtype/la_undef.h"
