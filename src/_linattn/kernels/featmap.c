#include <math.h>

#include "featmap.h"
#include "la_vmath.h"

#define LA_FMAP_BLOCK 256

#include "dtype/la_f32.h"
#include "featmap_impl.h"
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#include "featmap_impl.h"
#include "dtype/la_undef.h"
