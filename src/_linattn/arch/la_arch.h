/*
 * la_arch.h -- the seam between the portable kernels and the CPU-specific
 * code (docs/design/performance.md §2).  Everything that depends on an
 * instruction set lives under arch/<family>/ and is reached only through the
 * functions below; the portable C loops in kernels/ stay the fallback and the
 * reference.  One build carries every path its target can compile and picks
 * one at run time (la_cpu.h): never at build time, no -march=native.
 *
 *   arch/x86/      AVX-512 and AVX2+FMA paths (intrinsics, GCC/clang function
 *                  target attributes or MSVC), CPU detection by CPUID
 *   arch/generic/  the same entry points for builds without x86 code
 *                  (-DLINATTN_ARCH=generic, aarch64, ...): no hand paths
 *   arch/          the tuning table (la_tuning.h) and the FMA-peak timer
 */
#ifndef LA_ARCH_H
#define LA_ARCH_H

#include "la_common.h"

/* ISA paths, in increasing order of preference. */
enum { LA_ISA_GENERIC = 0, LA_ISA_AVX2 = 1, LA_ISA_AVX512 = 2, LA_ISA_COUNT = 3 };

/* The best path this CPU can run among those compiled into this build. */
int la_arch_cpu_isa(void);

/* Bit (1 << LA_ISA_x) for every path compiled into this build (generic always). */
unsigned la_arch_compiled_isas(void);

/*
 * One token of the recurrent update (linear_impl.h's recurrent_token):
 *   S_i <- a S_i + kf_i v (a = 1 without decay),   num = sum_i qf_i S_i
 * Returns NULL for the generic path (the portable C loop runs instead).
 */
typedef void (*la_rtoken_f32)(la_index f, la_index e, float a, int decayed, float *S,
                              la_index ld, const float *qf, const float *kf,
                              const float *vv, float *num);
typedef void (*la_rtoken_f64)(la_index f, la_index e, double a, int decayed, double *S,
                              la_index ld, const double *qf, const double *kf,
                              const double *vv, double *num);
la_rtoken_f32 la_arch_rtoken_f32(int isa);
la_rtoken_f64 la_arch_rtoken_f64(int isa);

/*
 * The one-token update out of place (a copying decoding step): S1_i <- a S0_i
 * + kf_i v, num = sum_i qf_i S1_i, reading S0 (rows ld0 apart) and writing S1
 * (rows ld1 apart) in one pass, with exactly the operations of the path's
 * la_rtoken on S1 = S0 (the same bits).  NULL where a path has none (copy S0
 * into S1, then la_rtoken).
 */
typedef void (*la_rtoken_oop_f32)(la_index f, la_index e, float a, int decayed,
                                  const float *S0, la_index ld0, float *S1, la_index ld1,
                                  const float *qf, const float *kf, const float *vv,
                                  float *num);
typedef void (*la_rtoken_oop_f64)(la_index f, la_index e, double a, int decayed,
                                  const double *S0, la_index ld0, double *S1, la_index ld1,
                                  const double *qf, const double *kf, const double *vv,
                                  double *num);
la_rtoken_oop_f32 la_arch_rtoken_oop_f32(int isa);
la_rtoken_oop_f64 la_arch_rtoken_oop_f64(int isa);

/*
 * Two consecutive tokens in one pass over S (token 1 with a1, q1, k1, v1, then
 * token 2): each vector of S is loaded and stored once per pair instead of
 * once per token, the bound of the one-token loop.  Every entry goes through
 * exactly the operations of two one-token calls, so the results are the same
 * bit for bit.  NULL where a path has no pair loop (call the one-token loop
 * twice).
 */
typedef void (*la_rtoken2_f32)(la_index f, la_index e, float a1, float a2, int decayed,
                               float *S, la_index ld, const float *q1, const float *k1,
                               const float *v1, const float *q2, const float *k2,
                               const float *v2, float *num1, float *num2);
typedef void (*la_rtoken2_f64)(la_index f, la_index e, double a1, double a2, int decayed,
                               double *S, la_index ld, const double *q1, const double *k1,
                               const double *v1, const double *q2, const double *k2,
                               const double *v2, double *num1, double *num2);
la_rtoken2_f32 la_arch_rtoken2_f32(int isa);
la_rtoken2_f64 la_arch_rtoken2_f64(int isa);

/*
 * The float32 elu1 (elu1 = 1) or elu feature map of n contiguous entries,
 * y = phi(scale x) (y may alias x), with the bits of la_featmap_row's
 * portable loop on every input.  NULL where the path has no hand-written map
 * (la_featmap_row runs its loop).
 */
typedef void (*la_elu_f32)(int elu1, float scale, const float *x, la_index n, float *y);
la_elu_f32 la_arch_elu_f32(int isa);

/*
 * Register-tile GEMM for chunk-sized products, row-major
 * C = op(A) op(B) + beta C with beta in {0, 1}, every dimension <= max_dim.
 * Returns 1 when it computed C, 0 when the path, the shape or beta are
 * outside its range and BLAS must run instead.  Every path accumulates each
 * entry of C in the same order (p = 0 .. k-1, one FMA per step, then + C), so
 * the AVX2 and AVX-512 tiles give bit-identical results.
 */
int la_arch_gemm_tiles_f32(int isa, int ta, int tb, la_index m, la_index n, la_index k,
                           const float *A, la_index lda, const float *B, la_index ldb,
                           float beta, float *C, la_index ldc, la_index max_dim);
int la_arch_gemm_tiles_f64(int isa, int ta, int tb, la_index m, la_index n, la_index k,
                           const double *A, la_index lda, const double *B, la_index ldb,
                           double beta, double *C, la_index ldc, la_index max_dim);

/*
 * The FMA throughput loop of one path: `iters` iterations of independent
 * multiply-add chains over the path's widest registers; returns the floating
 * point operations it executed (2 per lane per FMA), 0 when the path is not
 * compiled or not runnable here.  la_fma_peak() (la_fma_peak.c) times it.
 */
double la_arch_fma_loop_f32(int isa, int64_t iters);
double la_arch_fma_loop_f64(int isa, int64_t iters);

/* The portable scalar loop (the generic path's limit), in arch/la_fma_peak.c. */
double la_fma_loop_generic_f32(int64_t iters);
double la_fma_loop_generic_f64(int64_t iters);

/* Best GFLOP/s of the path's FMA loop over `reps` timed runs of at least
 * min_seconds each (one thread, the calling one), by the wall clock or (cpu_clock)
 * the thread's CPU time; 0 when the path cannot run. */
double la_fma_peak(int isa, int f64, double min_seconds, int reps, int cpu_clock);

/* Seconds now by the wall clock or (cpu_clock) the calling thread's CPU time
 * (arch/la_fma_peak.c). */
double la_arch_now(int cpu_clock);

/* Best seconds of one in-place float32 pass (each element read and written
 * once) over a 64-byte-aligned buffer of nbytes, the pass repeated while the
 * buffer stays cached, over `reps` timed runs of at least min_seconds each;
 * 0 for an empty buffer, -1 when the buffer cannot be allocated
 * (arch/la_mem_pass.c). */
double la_mem_pass(size_t nbytes, double min_seconds, int reps, int cpu_clock);

#endif
