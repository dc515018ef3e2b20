#include <math.h>

#include "featmap.h"
#include "arch/la_arch.h"
#include "la_cpu.h"
#include "la_util.h"
#include "la_vmath.h"

#define LA_FMAP_BLOCK 256

size_t
la_rf_work_size(la_index t, la_index d, la_index r, size_t itemsize)
{
    const size_t B = (size_t)la_block_rows(LA_RF_BLOCK, t);
    size_t n = 0;
    n += LA_ALIGN_BYTES((size_t)(r * d) * itemsize);
    n += LA_ALIGN_BYTES(B * (size_t)d * itemsize);
    n += LA_ALIGN_BYTES(B * (size_t)r * itemsize);
    n += LA_ALIGN_BYTES(B * 2 * (size_t)r * itemsize);
    n += LA_ALIGN_BYTES(B * sizeof(double));
    return n + 64;
}

/*
 * phi(u) of elu1 / elu at one point.  float32: the exp only on
 * [LA_EXP_NONPOS_MIN_F32, 0], where la_exp_nonpos_f32 holds (<= ~1 ulp,
 * cheaper than la_exp_f32: no clamps, the loop's selects do their work);
 * below it exp(u) is under the smallest normal and flushes to 0, as
 * la_exp_f32 does; NaN fails `u <= 0` and comes out of the linear branch.
 * float64: la_exp_f64 of min(u, 0), as before.
 */
#include "dtype/la_f32.h"
/*
 * The active path's hand-written map of a dense elu1 / elu row (the same bits
 * as the loop below): 1 when it ran, 0 when the path has none.  Only where
 * that loop is itself compiled per x86-64 level with FMA (the target clones
 * of arch/x86/la_clones.h, the same condition): elsewhere (clang, MSVC,
 * macOS, AddressSanitizer) the loop is baseline code without FMA, and the
 * hand map would give the AVX-512 path bits of its own.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
static int
la_fmap_elu_hand_f32(int fmap, float scale, const float *x, la_index n, float *y)
{
    const la_elu_f32 fn = la_arch_elu_f32(la_cpu_isa());
    if (fn == NULL) {
        return 0;
    }
    fn(fmap == LA_FMAP_ELU1, scale, x, n, y);
    return 1;
}
#define LA_FMAP_ELU_HAND la_fmap_elu_hand_f32
#else
#define LA_FMAP_ELU_HAND(fmap, scale, x, n, y) 0
#endif
#define LA_FMAP_ELU1_AT(u)                                                         \
    ((u) <= 0 ? ((u) >= LA_EXP_NONPOS_MIN_F32 ? la_exp_nonpos_f32(u) : 0.0f)      \
              : (u) + 1.0f)
#define LA_FMAP_ELU_AT(u)                                                          \
    ((u) <= 0 ? ((u) >= LA_EXP_NONPOS_MIN_F32 ? la_exp_nonpos_f32(u) - 1.0f : -1.0f) \
              : (u))
#include "featmap_impl.h"
#undef LA_FMAP_ELU1_AT
#undef LA_FMAP_ELU_AT
#undef LA_FMAP_ELU_HAND
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#define LA_FMAP_ELU_HAND(fmap, scale, x, n, y) 0
#define LA_FMAP_ELU1_AT(u) ((u) > 0 ? (u) + 1.0 : la_exp_f64((u) > 0 ? 0.0 : (u)))
#define LA_FMAP_ELU_AT(u) ((u) > 0 ? (u) : la_exp_f64((u) > 0 ? 0.0 : (u)) - 1.0)
#include "featmap_impl.h"
#undef LA_FMAP_ELU1_AT
#undef LA_FMAP_ELU_AT
#undef LA_FMAP_ELU_HAND
#include "dtype/la_undef.h"
