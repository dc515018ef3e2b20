/*
 * cpu_x86.c -- which x86 paths this CPU runs, and the dispatch tables.
 * A path needs its instructions in the CPU and their registers enabled by
 * the OS (GCC's and clang's __builtin_cpu_supports check both; the MSVC
 * branch reads CPUID and XCR0 itself).
 */
#include "arch/la_arch.h"

/* x86-64 only (a universal macOS build compiles this file for arm64 too, where
 * arch/generic/ supplies the entry points) */
#if defined(__x86_64__) || defined(_M_X64)
#include "arch/x86/la_x86.h"

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

int
la_arch_cpu_isa(void)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return __builtin_cpu_supports("avx512f") ? LA_ISA_AVX512 : LA_ISA_AVX2;
    }
    return LA_ISA_GENERIC;
#elif defined(_MSC_VER)
    int r[4];
    unsigned long long xcr0;
    int fma, avx2, avx512;
    __cpuid(r, 0);
    if (r[0] < 7) {
        return LA_ISA_GENERIC;
    }
    __cpuidex(r, 1, 0);
    if (!((r[2] >> 27) & 1) || !((r[2] >> 28) & 1)) { /* OSXSAVE, AVX */
        return LA_ISA_GENERIC;
    }
    fma = (r[2] >> 12) & 1;
    xcr0 = _xgetbv(0);
    __cpuidex(r, 7, 0);
    avx2 = ((r[1] >> 5) & 1) && fma && (xcr0 & 0x6) == 0x6;
    avx512 = avx2 && ((r[1] >> 16) & 1) && (xcr0 & 0xe6) == 0xe6;
    return avx512 ? LA_ISA_AVX512 : (avx2 ? LA_ISA_AVX2 : LA_ISA_GENERIC);
#else
    return LA_ISA_GENERIC;
#endif
}

unsigned
la_arch_compiled_isas(void)
{
    return (1u << LA_ISA_GENERIC) | (1u << LA_ISA_AVX2) | (1u << LA_ISA_AVX512);
}

la_rtoken_f32
la_arch_rtoken_f32(int isa)
{
    return isa == LA_ISA_AVX512 ? la_rtoken_avx512_f32
                                : (isa == LA_ISA_AVX2 ? la_rtoken_avx2_f32 : NULL);
}

la_rtoken_f64
la_arch_rtoken_f64(int isa)
{
    return isa == LA_ISA_AVX512 ? la_rtoken_avx512_f64
                                : (isa == LA_ISA_AVX2 ? la_rtoken_avx2_f64 : NULL);
}

la_rtoken_oop_f32
la_arch_rtoken_oop_f32(int isa)
{
    return isa == LA_ISA_AVX512 ? la_rtoken_oop_avx512_f32 : NULL;
}

la_rtoken_oop_f64
la_arch_rtoken_oop_f64(int isa)
{
    return isa == LA_ISA_AVX512 ? la_rtoken_oop_avx512_f64 : NULL;
}

la_rtoken2_f32
la_arch_rtoken2_f32(int isa)
{
    return isa == LA_ISA_AVX512 ? la_rtoken2_avx512_f32
                                : (isa == LA_ISA_AVX2 ? la_rtoken2_avx2_f32 : NULL);
}

la_rtoken2_f64
la_arch_rtoken2_f64(int isa)
{
    return isa == LA_ISA_AVX512 ? la_rtoken2_avx512_f64
                                : (isa == LA_ISA_AVX2 ? la_rtoken2_avx2_f64 : NULL);
}

la_elu_f32
la_arch_elu_f32(int isa)
{
    return isa == LA_ISA_AVX512 ? la_elu_avx512_f32 : NULL;
}

#endif /* x86-64 */
