#include "la_cpu.h"

#include "la_cblas.h"

#include <stdlib.h>

#ifndef LA_BLAS_VENDOR
#define LA_BLAS_VENDOR "unknown"
#endif

int
la_cpu_avx512(void)
{
    static int cached = -1;
    if (cached < 0) {
        int yes = 0;
#if defined(__GNUC__) && defined(__x86_64__)
        const char *off = getenv("LINATTN_NO_SIMD");
        __builtin_cpu_init();
        yes = __builtin_cpu_supports("avx512f") && !(off != NULL && off[0] == '1');
#endif
        cached = yes;
    }
    return cached;
}

const char *
la_cpu_simd_level(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        return "avx512";
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return "avx2";
    }
#endif
    return "generic";
}

const char *
la_blas_vendor(void)
{
    return LA_BLAS_VENDOR;
}

const char *
la_blas_corename(void)
{
#ifdef LA_HAVE_OPENBLAS_EXT
    const char *s = LA_BLASEXT(openblas_get_corename)();
    return s ? s : "";
#else
    return "";
#endif
}

const char *
la_blas_config(void)
{
#ifdef LA_HAVE_OPENBLAS_EXT
    const char *s = LA_BLASEXT(openblas_get_config)();
    return s ? s : "";
#else
    return "";
#endif
}

/*
 * Our BLAS calls are chunk-sized and run inside our own parallel regions:
 * two BLAS threads on 64x64 blocks are slower than one (performance.md).
 * Only the vendored copy (private to linattn) is set; a system OpenBLAS may
 * be shared with NumPy and is left as the user configured it.
 */
void
la_blas_single_thread(void)
{
#ifdef LA_BLAS_PRIVATE
    LA_BLASEXT(openblas_set_num_threads)(1);
#endif
}
