/* Undo la_f32.h / la_f64.h before the next dtype is included. */
#undef LA_T
#undef LA_FN
#undef LA_EXP
#undef LA_LOG
#undef LA_SQRT
#undef LA_FABS
#undef LA_GEMM
#undef LA_TMAX
#undef LA_LOG_TMAX
#undef LA_VEXP
