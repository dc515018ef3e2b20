#include "la_vmath.h"

/* Template parameters for float64. */
#define LA_T double
#define LA_FN(name) name##_f64
#define LA_EXP la_exp_f64 /* vectorisable, <= 2 ulp (la_vmath.h) */
#define LA_LOG log
#define LA_SQRT sqrt
#define LA_FABS fabs
#define LA_GEMM la_gemm_f64
#define LA_TMAX 1.7976931348623157e+308
#define LA_LOG_TMAX 709.782712893384
#define LA_VEXP la_vexp_f64
