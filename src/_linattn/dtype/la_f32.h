#include "la_vmath.h"

/* Template parameters for float32 (CPython stringlib's ucs1lib.h pattern). */
#define LA_T float
#define LA_FN(name) name##_f32
#define LA_EXP la_exp_f32 /* vectorisable, <= 2 ulp (la_vmath.h) */
#define LA_LOG logf
#define LA_SQRT sqrtf
#define LA_FABS fabsf
#define LA_GEMM la_gemm_f32
#define LA_TMAX 3.402823466e+38f
/* Largest x with exp(x) finite. */
#define LA_LOG_TMAX 88.72283f
#define LA_VEXP la_vexp_f32
