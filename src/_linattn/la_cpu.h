/*
 * la_cpu.h -- which ISA path the hand-written kernels take (run-time
 * dispatch, arch/la_arch.h), and what BLAS reports about itself.
 *
 * The path is the best one the CPU runs among those compiled in, unless the
 * environment asks for another when the library first needs it:
 *   LINATTN_SIMD=avx512|avx2|generic   (a path above the CPU's is lowered to
 *                                       the CPU's; other values are ignored)
 *   LINATTN_NO_SIMD=1                  (older spelling of LINATTN_SIMD=generic)
 * The path selects the recurrent token loop and the GEMM register tiles; the
 * loops GCC clones per ISA (LA_TARGET_CLONES) follow the CPU, not this choice.
 */
#ifndef LA_CPU_H
#define LA_CPU_H

#include "la_common.h"

/* The active path: LA_ISA_GENERIC, LA_ISA_AVX2 or LA_ISA_AVX512. */
int la_cpu_isa(void);

/* Switch paths for this process (the benchmark and la.tune() compare them);
 * lowered to what the CPU runs.  Returns the path now active. */
int la_cpu_set_isa(int isa);

/* Where the active path came from: "cpu", "LINATTN_SIMD", "LINATTN_NO_SIMD",
 * "LINATTN_SIMD (lowered to the CPU's)", "LINATTN_SIMD (unknown value ignored)"
 * or "set_simd". */
const char *la_cpu_isa_source(void);

/* "avx512", "avx2", "generic" for LA_ISA_*; -1 from la_isa_from_name for
 * anything else. */
const char *la_isa_name(int isa);
int la_isa_from_name(const char *name);

/* 1 when the active path is AVX-512. */
int la_cpu_avx512(void);

/* The name of the active path. */
const char *la_cpu_simd_level(void);

/* BLAS name/version and the core type it picked ("" when unknown). */
const char *la_blas_vendor(void);
const char *la_blas_corename(void);
const char *la_blas_config(void);
void la_blas_single_thread(void);

/* Python-side functions of the arch layer (_core.simd, set_simd, fma_peak,
 * tuning_table, set_tuning), added to the module by arch/arch_py.c; declared
 * only where Python.h is in scope. */
#ifdef Py_PYTHON_H
int la_register_arch(PyObject *m);
#endif

#endif
