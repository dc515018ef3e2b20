/*
 * la_tuning.h -- the one table of CPU tuning knobs, per ISA path.  C reads it
 * here; Python reads the same rows through _core.tuning_table() for the
 * mode="auto" rule (python/linattn/_tuning.py), whose text in la.kinds() is
 * generated from these numbers.  la.tune() measures the knobs on the running
 * CPU and overrides them per process (la_tuning_set); without a tuning cache
 * the rows below apply, for the path la_cpu_isa() picked.
 *
 * The avx512 row was measured on a Zen 5 core (docs/design/performance.md
 * §1-2); the avx2 and generic rows keep its crossovers until measured on such
 * CPUs, but the generic path has no register tiles (BLAS does every product),
 * and the avx2 row's chunk is 32: the AVX2 tiles (half the AVX-512 width) ran
 * the chunked form 9 % faster at C = 32 than at 64 (float32 elu, D = E = 64,
 * forced AVX2 on a Xeon family 6 model 207, CPU time), the quadratic
 * in-chunk products being half as large; seq_min_chunks 8 keeps the sequence
 * split's threshold in tokens.
 */
#ifndef LA_TUNING_H
#define LA_TUNING_H

#include "la_common.h"

#define LA_TUNING_FIELDS(X)                                                    \
    /* default chunk size; chunk_narrow when the feature width F <= narrow_f */ \
    X(chunk)                                                                   \
    X(chunk_narrow)                                                            \
    X(narrow_f)                                                                \
    /* widest values (E) for which the recurrent form beats the chunked one */ \
    X(recurrent_max_e)                                                         \
    /* sequence split when slices < threads and T >= seq_min_chunks * chunk  \
     * * threads; seq_window: the most chunks in flight between pass 1 and   \
     * pass 2 (ring slots of entering state, kept keys and [V | 1] rows,      \
     * 56 KiB each at E = F = 64, float32; the glue caps the ring at 1 MiB) */\
    X(seq_min_chunks)                                                          \
    X(seq_window)                                                              \
    /* flops per worker below which a call uses fewer threads */               \
    X(min_work_per_thread)                                                     \
    /* products with every dimension <= this run on the register tiles, the   \
     * others (and all of them at 0) on BLAS */                                \
    X(tiles_max_dim)                                                           \
    /* 1: the recurrent loop takes two tokens per pass over the state where   \
     * the path has a pair loop (same results, fewer loads and stores) */      \
    X(token_pairs)

typedef struct {
#define LA_TUNING_MEMBER(name) la_index name;
    LA_TUNING_FIELDS(LA_TUNING_MEMBER)
#undef LA_TUNING_MEMBER
} la_tuning;

/* The documented defaults of one ISA path (LA_ISA_* of arch/la_arch.h). */
const la_tuning *la_tuning_defaults(int isa);

/* The values in force: the active path's defaults, with la_tuning_set's
 * overrides on top. */
la_tuning la_tuning_active(void);

/* The tile limit in force (hot: read on every chunk-sized product). */
la_index la_tuning_tiles_max_dim(void);

/* Override one knob for this process (value < 0 removes the override);
 * returns 0 for an unknown name. */
int la_tuning_set(const char *name, la_index value);

/* Field names, in table order, NULL-terminated. */
extern const char *const la_tuning_names[];

#endif
