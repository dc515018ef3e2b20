/*
 * la_x86.h -- what the x86 files share: the intrinsics header and function
 * target attributes, so one translation unit holds every path and the
 * baseline x86-64 code around it (run-time dispatch, no -march flags).
 * GCC and clang take per-function targets; MSVC compiles intrinsics without
 * them.  Include this only from files under arch/x86/.
 */
#ifndef LA_X86_H
#define LA_X86_H

#include <immintrin.h>

#include "arch/la_arch.h"

#if defined(__GNUC__) || defined(__clang__)
#define LA_TARGET_AVX512 __attribute__((target("avx512f")))
#define LA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define LA_TARGET_AVX512
#define LA_TARGET_AVX2
#endif

/* the per-path entry points behind la_arch.h's dispatchers */
void la_rtoken_avx512_f32(la_index f, la_index e, float a, int decayed, float *S,
                          la_index ld, const float *qf, const float *kf,
                          const float *vv, float *num);
void la_rtoken_avx512_f64(la_index f, la_index e, double a, int decayed, double *S,
                          la_index ld, const double *qf, const double *kf,
                          const double *vv, double *num);
void la_rtoken_avx2_f32(la_index f, la_index e, float a, int decayed, float *S,
                        la_index ld, const float *qf, const float *kf, const float *vv,
                        float *num);
void la_rtoken_avx2_f64(la_index f, la_index e, double a, int decayed, double *S,
                        la_index ld, const double *qf, const double *kf,
                        const double *vv, double *num);

#endif
