/*
 * la_test.h -- what the C tests share: pass/fail counters, a seeded uniform
 * generator, a tolerance check and NaN-filled scratch (a kernel that reads
 * scratch before writing it shows NaN in its results).  Each test is its own
 * executable, so the counters are per test.
 */
#ifndef LA_TEST_H
#define LA_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0, checks = 0;

/* Uniform in [-1, 1) from a 32-bit LCG; the same stream on every platform. */
static inline double
urand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((*s >> 8) & 0xffffff) / (double)0x1000000 * 2.0 - 1.0;
}

/* Count a check; report it when err is above tol (or NaN). */
static inline void
check(const char *what, double err, double tol)
{
    checks++;
    if (!(err <= tol)) {
        failures++;
        fprintf(stderr, "FAIL %s: error %.3e > %.1e\n", what, err, tol);
    }
}

/* malloc'd bytes, all ones: NaN read as double and as float. */
static inline void *
poisoned(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    memset(p, 0xff, bytes ? bytes : 1);
    return p;
}

#endif
