#include "la_cpu.h"

#include "la_cblas.h"

#include <stdlib.h>
#include <string.h>

#include "arch/la_arch.h"

#ifndef LA_BLAS_VENDOR
#define LA_BLAS_VENDOR "unknown"
#endif

static const char *const la_isa_names[LA_ISA_COUNT] = {"generic", "avx2", "avx512"};

static volatile int la_isa_active = -1;
static const char *volatile la_isa_src = "cpu";

const char *
la_isa_name(int isa)
{
    return isa >= 0 && isa < LA_ISA_COUNT ? la_isa_names[isa] : "unknown";
}

int
la_isa_from_name(const char *name)
{
    int i;
    for (i = 0; name != NULL && i < LA_ISA_COUNT; i++) {
        if (strcmp(name, la_isa_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* Read once, on first use (a race between threads computes the same value). */
static int
la_cpu_init(void)
{
    const int cpu = la_arch_cpu_isa();
    const char *env = getenv("LINATTN_SIMD");
    const char *off = getenv("LINATTN_NO_SIMD");
    int isa = cpu;
    if (env != NULL && env[0] != '\0') {
        const int want = la_isa_from_name(env);
        if (want < 0) {
            la_isa_src = "LINATTN_SIMD (unknown value ignored)";
        }
        else if (want > cpu) {
            la_isa_src = "LINATTN_SIMD (lowered to the CPU's)";
        }
        else {
            isa = want;
            la_isa_src = "LINATTN_SIMD";
        }
    }
    else if (off != NULL && off[0] == '1') {
        isa = LA_ISA_GENERIC;
        la_isa_src = "LINATTN_NO_SIMD";
    }
    la_isa_active = isa;
    return isa;
}

int
la_cpu_isa(void)
{
    const int isa = la_isa_active;
    return isa >= 0 ? isa : la_cpu_init();
}

int
la_cpu_set_isa(int isa)
{
    const int cpu = la_arch_cpu_isa();
    (void)la_cpu_isa();
    isa = isa < 0 ? 0 : isa;
    la_isa_active = isa > cpu ? cpu : isa;
    la_isa_src = "set_simd";
    return la_isa_active;
}

const char *
la_cpu_isa_source(void)
{
    (void)la_cpu_isa();
    return la_isa_src;
}

int
la_cpu_avx512(void)
{
    return la_cpu_isa() == LA_ISA_AVX512;
}

const char *
la_cpu_simd_level(void)
{
    return la_isa_name(la_cpu_isa());
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
 * two BLAS threads on 64x64 blocks are slower than one
 * (docs/design/performance.md §1).
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
