/*
 * la_mem_pass.c -- times one in-place pass over a buffer: every float32 read
 * and written once (x <- a x + b), the loop compiled for the CPU's widest
 * vectors (target clones).  A decoding step reads and writes its whole state
 * once per call, so the pass over a buffer of the state's size, repeated
 * while the buffer stays in the caches as a decoded state does, is the floor
 * that step is judged against (docs/design/performance.md §4).
 */
#include <stdlib.h>
#include <string.h>

#include "la_common.h"
#include "arch/la_arch.h"

static volatile float la_mem_sink;

LA_TARGET_CLONES static void
la_mem_pass_f32(float *LA_RESTRICT x, size_t n, float a, float b)
{
    size_t i;
    for (i = 0; i < n; i++) {
        x[i] = a * x[i] + b;
    }
}

/* `passes` passes over x[0..n); the seconds they took. */
static double
la_mem_passes(float *x, size_t n, int64_t passes, int cpu_clock)
{
    const double t0 = la_arch_now(cpu_clock);
    int64_t p;
    for (p = 0; p < passes; p++) {
        /* a = 1 - 2^-23 and b = 2^-24 keep every value near 1 (no denormals) */
        la_mem_pass_f32(x, n, 0.99999988f, 5.9604645e-8f);
    }
    return la_arch_now(cpu_clock) - t0;
}

double
la_mem_pass(size_t nbytes, double min_seconds, int reps, int cpu_clock)
{
    const size_t n = nbytes / sizeof(float);
    int64_t passes = 1;
    double best = 0, dt;
    char *raw;
    float *x;
    size_t i;
    int r;
    if (n == 0) {
        return 0;
    }
    raw = (char *)malloc(n * sizeof(float) + 64);
    if (raw == NULL) {
        return -1;
    }
    x = (float *)(void *)(raw + (64 - (size_t)((uintptr_t)raw & 63u)) % 64);
    for (i = 0; i < n; i++) {
        x[i] = 1.0f;
    }
    /* grow the repetition until one timed run lasts min_seconds (the first
     * runs bring the buffer into the caches and warm the core) */
    for (;;) {
        dt = la_mem_passes(x, n, passes, cpu_clock);
        if (dt >= min_seconds || passes >= ((int64_t)1 << 30)) {
            break;
        }
        passes *= dt > 0 && min_seconds / dt < 16 ? 2 : 8;
    }
    for (r = 0; r < (reps < 1 ? 1 : reps); r++) {
        dt = la_mem_passes(x, n, passes, cpu_clock) / (double)passes;
        if (dt > 0 && (best == 0 || dt < best)) {
            best = dt;
        }
    }
    la_mem_sink = x[n - 1];
    free(raw);
    return best;
}
