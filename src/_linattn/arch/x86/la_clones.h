/*
 * la_clones.h -- LA_TARGET_CLONES for x86 builds (included by la_common.h):
 * GCC compiles a clone per x86-64 level and an ifunc resolver picks one when
 * the library loads, so one build runs on any x86-64 and uses AVX-512 where
 * the CPU has it.  Only GCC on Linux (ifuncs), and not under AddressSanitizer
 * (its resolvers run before ASan is up); elsewhere the loops compile once for
 * the baseline target.
 */
#ifndef LA_CLONES_H
#define LA_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
#define LA_TARGET_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

#endif
