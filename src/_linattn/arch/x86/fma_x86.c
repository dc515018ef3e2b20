/*
 * fma_x86.c -- the FMA throughput loops of the x86 paths, for the machine's
 * own limits in `python -m linattn bench --roofline`: independent chains
 * a_i <- a_i x + y over all the registers a path can keep busy (16 zmm
 * chains for AVX-512, 12 ymm for AVX2: at ~4 cycles latency and two FMA
 * ports, 8 chains already saturate a core).  The values converge to
 * y / (1 - x) = 1, so no denormals or overflow slow them down.  Each chain
 * starts from its own value: chains with equal starts are equal throughout,
 * and the compiler merges them into one (a latency-bound loop whose counted
 * flops would be 12-16x what ran).
 */
#include "arch/la_arch.h"

/* x86-64 only (a universal macOS build compiles this file for arm64 too, where
 * arch/generic/ supplies the entry points) */
#if defined(__x86_64__) || defined(_M_X64)
#include "arch/x86/la_x86.h"

static volatile double la_fma_sink;

#define LA_CHAIN16(FMA)                                                        \
    a0 = FMA(a0, x, y); a1 = FMA(a1, x, y); a2 = FMA(a2, x, y);                \
    a3 = FMA(a3, x, y); a4 = FMA(a4, x, y); a5 = FMA(a5, x, y);                \
    a6 = FMA(a6, x, y); a7 = FMA(a7, x, y); a8 = FMA(a8, x, y);                \
    a9 = FMA(a9, x, y); a10 = FMA(a10, x, y); a11 = FMA(a11, x, y);

/* distinct starting values (0.5, 0.515625, ...: exact in both precisions) */
#define LA_STARTS12(SET, F)                                                    \
    a0 = SET(0.5##F); a1 = SET(0.515625##F); a2 = SET(0.53125##F);            \
    a3 = SET(0.546875##F); a4 = SET(0.5625##F); a5 = SET(0.578125##F);        \
    a6 = SET(0.59375##F); a7 = SET(0.609375##F); a8 = SET(0.625##F);          \
    a9 = SET(0.640625##F); a10 = SET(0.65625##F); a11 = SET(0.671875##F);
#define LA_STARTS16(SET, F)                                                    \
    LA_STARTS12(SET, F)                                                        \
    a12 = SET(0.6875##F); a13 = SET(0.703125##F); a14 = SET(0.71875##F);      \
    a15 = SET(0.734375##F);

LA_TARGET_AVX512 static double
fma512_f32(int64_t iters)
{
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.001f);
    __m512 a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15;
    LA_STARTS16(_mm512_set1_ps, f)
    int64_t it;
    for (it = 0; it < iters; it++) {
        LA_CHAIN16(_mm512_fmadd_ps)
        a12 = _mm512_fmadd_ps(a12, x, y); a13 = _mm512_fmadd_ps(a13, x, y);
        a14 = _mm512_fmadd_ps(a14, x, y); a15 = _mm512_fmadd_ps(a15, x, y);
    }
    a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                       _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    a8 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                       _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15)));
    {
        float out[16];
        _mm512_storeu_ps(out, _mm512_add_ps(a0, a8));
        la_fma_sink = out[0] + out[15];
    }
    return (double)iters * 16.0 * 16.0 * 2.0;
}

LA_TARGET_AVX512 static double
fma512_f64(int64_t iters)
{
    const __m512d x = _mm512_set1_pd(0.999), y = _mm512_set1_pd(0.001);
    __m512d a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15;
    LA_STARTS16(_mm512_set1_pd, )
    int64_t it;
    for (it = 0; it < iters; it++) {
        LA_CHAIN16(_mm512_fmadd_pd)
        a12 = _mm512_fmadd_pd(a12, x, y); a13 = _mm512_fmadd_pd(a13, x, y);
        a14 = _mm512_fmadd_pd(a14, x, y); a15 = _mm512_fmadd_pd(a15, x, y);
    }
    a0 = _mm512_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)),
                       _mm512_add_pd(_mm512_add_pd(a4, a5), _mm512_add_pd(a6, a7)));
    a8 = _mm512_add_pd(_mm512_add_pd(_mm512_add_pd(a8, a9), _mm512_add_pd(a10, a11)),
                       _mm512_add_pd(_mm512_add_pd(a12, a13), _mm512_add_pd(a14, a15)));
    {
        double out[8];
        _mm512_storeu_pd(out, _mm512_add_pd(a0, a8));
        la_fma_sink = out[0] + out[7];
    }
    return (double)iters * 16.0 * 8.0 * 2.0;
}

LA_TARGET_AVX2 static double
fma256_f32(int64_t iters)
{
    const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.001f);
    __m256 a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
    LA_STARTS12(_mm256_set1_ps, f)
    float out[8];
    int64_t it;
    for (it = 0; it < iters; it++) {
        LA_CHAIN16(_mm256_fmadd_ps)
    }
    a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                       _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    a0 = _mm256_add_ps(a0, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    _mm256_storeu_ps(out, a0);
    la_fma_sink = out[0] + out[7];
    return (double)iters * 12.0 * 8.0 * 2.0;
}

LA_TARGET_AVX2 static double
fma256_f64(int64_t iters)
{
    const __m256d x = _mm256_set1_pd(0.999), y = _mm256_set1_pd(0.001);
    __m256d a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
    LA_STARTS12(_mm256_set1_pd, )
    double out[4];
    int64_t it;
    for (it = 0; it < iters; it++) {
        LA_CHAIN16(_mm256_fmadd_pd)
    }
    a0 = _mm256_add_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)),
                       _mm256_add_pd(_mm256_add_pd(a4, a5), _mm256_add_pd(a6, a7)));
    a0 = _mm256_add_pd(a0, _mm256_add_pd(_mm256_add_pd(a8, a9), _mm256_add_pd(a10, a11)));
    _mm256_storeu_pd(out, a0);
    la_fma_sink = out[0] + out[3];
    return (double)iters * 12.0 * 4.0 * 2.0;
}

double
la_arch_fma_loop_f32(int isa, int64_t iters)
{
    if (isa > la_arch_cpu_isa()) {
        return 0;
    }
    switch (isa) {
    case LA_ISA_AVX512: return fma512_f32(iters);
    case LA_ISA_AVX2: return fma256_f32(iters);
    default: return la_fma_loop_generic_f32(iters);
    }
}

double
la_arch_fma_loop_f64(int isa, int64_t iters)
{
    if (isa > la_arch_cpu_isa()) {
        return 0;
    }
    switch (isa) {
    case LA_ISA_AVX512: return fma512_f64(iters);
    case LA_ISA_AVX2: return fma256_f64(iters);
    default: return la_fma_loop_generic_f64(iters);
    }
}

#endif /* x86-64 */
