/*
 * la_cpu.h -- CPU features, for reporting the SIMD level the clones use.
 */
#ifndef LA_CPU_H
#define LA_CPU_H

/* "avx512", "avx2", or "generic": the level the run-time dispatch selects. */
const char *la_cpu_simd_level(void);

/* BLAS name/version and the core type it picked ("" when unknown). */
const char *la_blas_vendor(void);
const char *la_blas_corename(void);
const char *la_blas_config(void);
void la_blas_single_thread(void);

#endif
