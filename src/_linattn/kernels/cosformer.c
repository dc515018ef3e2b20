#include <math.h>

#include "cosformer.h"

void
la_cosformer_angles(la_index t0, la_index t, double horizon, double *sn,
                    double *cs)
{
    const double pi = 3.14159265358979323846;
    la_index r;
    for (r = 0; r < t; r++) {
        /* the position is 1-based and absolute: never chunk-local */
        const double th = pi * (double)(t0 + r + 1) / (2.0 * horizon);
        sn[r] = sin(th);
        cs[r] = cos(th);
    }
}

#include "dtype/la_f32.h"
#include "cosformer_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "cosformer_impl.h"
#include "dtype/la_undef.h"
