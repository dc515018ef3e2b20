#include "arch/la_tuning.h"

#include <string.h>

#include "arch/la_arch.h"
#include "la_cpu.h"

static const la_tuning la_tuning_rows[LA_ISA_COUNT] = {
    /* generic: no register tiles */
    {.chunk = 64, .chunk_narrow = 32, .narrow_f = 32, .recurrent_max_e = 64,
     .seq_min_chunks = 4, .seq_window = 64, .min_work_per_thread = 1048576,
     .tiles_max_dim = 0, .token_pairs = 0},
    /* avx2 */
    {.chunk = 32, .chunk_narrow = 32, .narrow_f = 32, .recurrent_max_e = 64,
     .seq_min_chunks = 8, .seq_window = 64, .min_work_per_thread = 1048576,
     .tiles_max_dim = 256, .token_pairs = 1},
    /* avx512 */
    {.chunk = 64, .chunk_narrow = 32, .narrow_f = 32, .recurrent_max_e = 64,
     .seq_min_chunks = 4, .seq_window = 64, .min_work_per_thread = 1048576,
     .tiles_max_dim = 256, .token_pairs = 1},
};

const char *const la_tuning_names[] = {
#define LA_TUNING_NAME(name) #name,
    LA_TUNING_FIELDS(LA_TUNING_NAME)
#undef LA_TUNING_NAME
    NULL};

#define LA_NFIELDS (sizeof(la_tuning) / sizeof(la_index))

/* -1: not overridden */
static volatile la_index la_tuning_over[LA_NFIELDS] = {
#define LA_TUNING_UNSET(name) -1,
    LA_TUNING_FIELDS(LA_TUNING_UNSET)
#undef LA_TUNING_UNSET
};

const la_tuning *
la_tuning_defaults(int isa)
{
    return &la_tuning_rows[isa < 0 || isa >= LA_ISA_COUNT ? LA_ISA_GENERIC : isa];
}

la_tuning
la_tuning_active(void)
{
    la_tuning t = *la_tuning_defaults(la_cpu_isa());
    la_index *f = (la_index *)&t;
    size_t i;
    for (i = 0; i < LA_NFIELDS; i++) {
        if (la_tuning_over[i] >= 0) {
            f[i] = la_tuning_over[i];
        }
    }
    return t;
}

la_index
la_tuning_tiles_max_dim(void)
{
    const size_t i = offsetof(la_tuning, tiles_max_dim) / sizeof(la_index);
    return la_tuning_over[i] >= 0 ? la_tuning_over[i]
                                  : la_tuning_defaults(la_cpu_isa())->tiles_max_dim;
}

int
la_tuning_set(const char *name, la_index value)
{
    size_t i;
    for (i = 0; i < LA_NFIELDS; i++) {
        if (strcmp(la_tuning_names[i], name) == 0) {
            la_tuning_over[i] = value < 0 ? -1 : value;
            return 1;
        }
    }
    return 0;
}
