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
void la_rtoken_oop_avx512_f32(la_index f, la_index e, float a, int decayed, const float *S0,
                              la_index ld0, float *S1, la_index ld1, const float *qf,
                              const float *kf, const float *vv, float *num);
void la_rtoken_oop_avx512_f64(la_index f, la_index e, double a, int decayed,
                              const double *S0, la_index ld0, double *S1, la_index ld1,
                              const double *qf, const double *kf, const double *vv,
                              double *num);
void la_rtoken2_avx512_f32(la_index f, la_index e, float a1, float a2, int decayed,
                           float *S, la_index ld, const float *q1, const float *k1,
                           const float *v1, const float *q2, const float *k2,
                           const float *v2, float *num1, float *num2);
void la_rtoken2_avx512_f64(la_index f, la_index e, double a1, double a2, int decayed,
                           double *S, la_index ld, const double *q1, const double *k1,
                           const double *v1, const double *q2, const double *k2,
                           const double *v2, double *num1, double *num2);
void la_rtoken2_avx2_f32(la_index f, la_index e, float a1, float a2, int decayed, float *S,
                         la_index ld, const float *q1, const float *k1, const float *v1,
                         const float *q2, const float *k2, const float *v2, float *num1,
                         float *num2);
void la_rtoken2_avx2_f64(la_index f, la_index e, double a1, double a2, int decayed,
                         double *S, la_index ld, const double *q1, const double *k1,
                         const double *v1, const double *q2, const double *k2,
                         const double *v2, double *num1, double *num2);
void la_rtoken_avx2_f32(la_index f, la_index e, float a, int decayed, float *S,
                        la_index ld, const float *qf, const float *kf, const float *vv,
                        float *num);
void la_rtoken_avx2_f64(la_index f, la_index e, double a, int decayed, double *S,
                        la_index ld, const double *qf, const double *kf,
                        const double *vv, double *num);

void la_elu_avx512_f32(int elu1, float scale, const float *x, la_index n, float *y);

#endif
