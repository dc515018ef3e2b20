/*
 * la_common.h -- shared types of the pure-C layer (no Python.h, no NumPy).
 */
#ifndef LA_COMMON_H
#define LA_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef int64_t la_index;

typedef enum {
    LA_OK = 0,
    LA_ERR_NOMEM = 1,
    LA_ERR_SHAPE = 2,
    LA_ERR_VALUE = 3,
    LA_ERR_BLAS = 4,
    LA_ERR_INTERRUPTED = 5
} la_status;

#if defined(__GNUC__) || defined(__clang__)
#define LA_RESTRICT __restrict__
#define LA_UNUSED __attribute__((unused))
#define LA_LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define LA_RESTRICT
#define LA_UNUSED
#define LA_LIKELY(x) (x)
#endif

/*
 * Run-time ISA dispatch for the hot loops that do not go through BLAS: GCC
 * compiles a clone per level and an ifunc resolver picks one at load time, so
 * one build runs on any x86-64 and uses AVX-512 where the CPU has it.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
#define LA_TARGET_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LA_TARGET_CLONES
#endif

/* Cooperative cancellation: kernels poll a flag between chunks / row blocks
 * (NULL: never cancelled) and return LA_ERR_INTERRUPTED when it is set. */
#define LA_CANCELLED(flag) ((flag) != NULL && *(flag) != 0)

/* Log-decays below this are clamped (family.md section 2.3). */
#define LA_DECAY_FLOOR (-1000.0)

/* Bytes rounded up to a cache line, for carving scratch out of one block. */
#define LA_ALIGN_BYTES(n) ((((size_t)(n)) + 63u) & ~(size_t)63u)

#endif
