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
#elif defined(_MSC_VER)
#define LA_RESTRICT __restrict
#define LA_UNUSED
#define LA_LIKELY(x) (x)
#else
#define LA_RESTRICT
#define LA_UNUSED
#define LA_LIKELY(x) (x)
#endif

/*
 * LA_TARGET_CLONES: compiler-made ISA clones of the hot loops that have no
 * hand-written path.  Defined by the arch layer (arch/x86/la_clones.h: GCC's
 * target_clones, one clone per x86-64 level picked by an ifunc at load time);
 * empty in generic builds and with compilers that lack it.
 */
#if defined(LA_ARCH_X86)
#include "arch/x86/la_clones.h"
#endif
#ifndef LA_TARGET_CLONES
#define LA_TARGET_CLONES
#endif

/* Cooperative cancellation: kernels poll a flag between chunks / row blocks
 * (NULL: never cancelled) and return LA_ERR_INTERRUPTED when it is set. */
#define LA_CANCELLED(flag) ((flag) != NULL && *(flag) != 0)

/* Progress: kernels add the tokens of each block they finish to a counter
 * (NULL: not counted) that a watcher thread reads while the call runs.  One
 * relaxed atomic add per block of tokens; the count is a display, never used
 * to decide anything. */
#if defined(__GNUC__) || defined(__clang__)
#define LA_TICK(counter, n)                                                       \
    do {                                                                          \
        if ((counter) != NULL) {                                                  \
            __atomic_fetch_add((counter), (long long)(n), __ATOMIC_RELAXED);      \
        }                                                                         \
    } while (0)
#else
#define LA_TICK(counter, n)                                                       \
    do {                                                                          \
        if ((counter) != NULL) {                                                  \
            *(counter) += (long long)(n);                                         \
        }                                                                         \
    } while (0)
#endif

/* Log-decays below this are clamped (docs/design/family.md §2.3). */
#define LA_DECAY_FLOOR (-1000.0)

/* Bytes rounded up to a cache line, for carving scratch out of one block. */
#define LA_ALIGN_BYTES(n) ((((size_t)(n)) + 63u) & ~(size_t)63u)

#endif
