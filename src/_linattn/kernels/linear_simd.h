/*
 * linear_simd.h -- hand-vectorised AVX-512 version of the recurrent token
 * update (linear_impl.h's recurrent_token), picked at run time.
 *
 *   S_i <- a S_i + kf_i v   (a = 1 without decay),   num = sum_i qf_i S_i
 *
 * Column blocks of 4 vectors keep their num accumulators and v in registers
 * while the rows stream past: one load, two FMAs and one store per vector of
 * S, 2.5x the auto-vectorised loop (GCC spills the accumulators).  The
 * generic C loop remains the fallback and the reference.
 */
#ifndef LA_LINEAR_SIMD_H
#define LA_LINEAR_SIMD_H

#include "la_common.h"

/* 1 when the AVX-512 path can run on this CPU (and was compiled), unless the
 * environment sets LINATTN_NO_SIMD=1 (read once). */
int la_recurrent_simd_available(void);

void la_recurrent_token_avx512_f32(la_index f, la_index e, float a, int decayed,
                                   float *S, la_index ld, const float *qf,
                                   const float *kf, const float *vv, float *num);
void la_recurrent_token_avx512_f64(la_index f, la_index e, double a, int decayed,
                                   double *S, la_index ld, const double *qf,
                                   const double *kf, const double *vv, double *num);

#endif
