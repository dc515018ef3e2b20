/*
 * la_cpu.h -- CPU features, for reporting the SIMD level the clones use.
 */
#ifndef LA_CPU_H
#define LA_CPU_H

/* 1 when the hand-written AVX-512 paths may run: the CPU has AVX-512F and the
 * environment does not set LINATTN_NO_SIMD=1 (read once). */
int la_cpu_avx512(void);

/* "avx512", "avx2", or "generic": the level the run-time dispatch selects. */
const char *la_cpu_simd_level(void);

/* BLAS name/version and the core type it picked ("" when unknown). */
const char *la_blas_vendor(void);
const char *la_blas_corename(void);
const char *la_blas_config(void);
void la_blas_single_thread(void);

#endif
