#include <math.h>

#include "diag.h"
#include "diag_bwd.h"
#include "la_util.h"
#include "linear.h"

/* Rows of a block buffer: w, but never more than the call can fill. */
static la_index
la_diag_bwd_block_rows(const la_diag_bwd_args *a)
{
    la_index most = (a->t > a->s ? a->t : a->s) + (a->causal ? a->c : 0);
    la_index wb = a->w < 1 ? 1 : a->w;
    if (most < 1) {
        most = 1;
    }
    return wb < most ? wb : most;
}

size_t
la_diag_bwd_work_size(const la_diag_bwd_args *a, size_t itemsize)
{
    const size_t wb = (size_t)la_diag_bwd_block_rows(a);
    const size_t d = (size_t)a->d, e = (size_t)a->e;
    /* Q K dQ dK (d wide), V dO O dV (e wide), P dP */
    return LA_ALIGN_BYTES(wb * d * itemsize) * 4 +
           LA_ALIGN_BYTES(wb * e * itemsize) * 4 +
           LA_ALIGN_BYTES(wb * wb * itemsize) * 2 + 64;
}

#include "dtype/la_f32.h"
#include "diag_bwd_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "diag_bwd_impl.h"
#include "dtype/la_undef.h"
