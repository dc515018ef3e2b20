/*
 * la_fma_peak.c -- times a path's FMA throughput loop (la_arch.h), and the
 * portable loop that is the generic path's limit: 64 independent scalar
 * chains a_i <- a_i x + y in plain C, which the compiler vectorises with
 * whatever the baseline target offers (SSE2 multiply + add on x86-64, NEON
 * FMA on aarch64).  Timing uses C11 timespec_get (POSIX, macOS, MSVC), or the
 * calling thread's CPU time where POSIX offers it (steadier on a shared
 * machine: time spent descheduled does not count).
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 199309L /* clock_gettime, CLOCK_THREAD_CPUTIME_ID */
#endif
#include <time.h>

#include "arch/la_arch.h"

static volatile double la_generic_sink;

#define LA_GENERIC_LOOP(T)                                                     \
    T a[64], x = (T)0.999, y = (T)0.001, s = 0;                                \
    int64_t it;                                                                \
    int i;                                                                     \
    for (i = 0; i < 64; i++) {                                                 \
        a[i] = (T)(0.5 + i / 256.0); /* distinct: equal chains may be merged */\
    }                                                                          \
    for (it = 0; it < iters; it++) {                                           \
        for (i = 0; i < 64; i++) {                                             \
            a[i] = a[i] * x + y;                                               \
        }                                                                      \
    }                                                                          \
    for (i = 0; i < 64; i++) {                                                 \
        s += a[i];                                                             \
    }                                                                          \
    la_generic_sink = (double)s;                                               \
    return (double)iters * 64.0 * 2.0;

double
la_fma_loop_generic_f32(int64_t iters)
{
    LA_GENERIC_LOOP(float)
}

double
la_fma_loop_generic_f64(int64_t iters)
{
    LA_GENERIC_LOOP(double)
}

double
la_arch_now(int cpu_clock)
{
    struct timespec ts;
#if defined(CLOCK_THREAD_CPUTIME_ID)
    if (cpu_clock && clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
#else
    if (cpu_clock) {
        return (double)clock() / CLOCKS_PER_SEC; /* the process's CPU time */
    }
#endif
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double
la_fma_peak(int isa, int f64, double min_seconds, int reps, int cpu_clock)
{
    int64_t iters = 1 << 12;
    double best = 0, t0, dt, flops;
    int r;
    if (isa < 0 || isa >= LA_ISA_COUNT || !((la_arch_compiled_isas() >> isa) & 1u)) {
        return 0;
    }
    /* grow the loop until one run lasts min_seconds (the first runs warm up
     * the core's clock and the wide units) */
    for (;;) {
        t0 = la_arch_now(cpu_clock);
        flops = f64 ? la_arch_fma_loop_f64(isa, iters) : la_arch_fma_loop_f32(isa, iters);
        dt = la_arch_now(cpu_clock) - t0;
        if (flops == 0) {
            return 0;
        }
        if (dt >= min_seconds || iters >= ((int64_t)1 << 40)) {
            break;
        }
        iters *= dt > 0 && min_seconds / dt < 16 ? 2 : 8;
    }
    for (r = 0; r < (reps < 1 ? 1 : reps); r++) {
        t0 = la_arch_now(cpu_clock);
        flops = f64 ? la_arch_fma_loop_f64(isa, iters) : la_arch_fma_loop_f32(isa, iters);
        dt = la_arch_now(cpu_clock) - t0;
        if (dt > 0 && flops / dt > best) {
            best = flops / dt;
        }
    }
    return best * 1e-9;
}
