#include <math.h>
#include <stdint.h>
#include <string.h>

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
/*
 * sin and cos of one double x with |x| <= LA_SINCOS_MAX (finite), written so
 * that GCC vectorises a loop calling it (no branch, no libm call): n = x 2/pi
 * rounded by the shifter (the quadrant in the low bits of its mantissa), the
 * fdlibm three-part Cody-Waite reduction r = x - n pi/2 (exact products for
 * |n| < 2^20), then fdlibm's kernel polynomials for sin and cos on
 * [-pi/4, pi/4] (about 1 ulp of a double).  The float32 random features
 * round these to float32: libm's values but for the rare double that rounds
 * the other way.  Other x (large, infinite, NaN): the caller uses libm.
 */
#define LA_SINCOS_MAX 1.0e6
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void
la_sincos_red(double x, double *sn, double *cs)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double j = x * 6.36619772367581382433e-01 + shifter;
    const double n = j - shifter;
    double r, z, ps, pc, sr, cr, hz, w;
    uint64_t bits;
    memcpy(&bits, &j, sizeof(bits));
    r = x - n * 1.57079632673412561417e+00;
    r = r - n * 6.07710050630396597660e-11;
    r = r - n * 2.02226624871116645580e-21;
    z = r * r;
    ps = 8.33333333332248946124e-03 +
         z * (-1.98412698298579493134e-04 +
              z * (2.75573137070700676789e-06 +
                   z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)));
    sr = r + (r * z) * (-1.66666666666666324348e-01 + z * ps);
    pc = z * (4.16666666666666019037e-02 +
              z * (-1.38888888888741095749e-03 +
                   z * (2.48015872894767294178e-05 +
                        z * (-2.75573143513906633035e-07 +
                             z * (2.08757232129817482790e-09 +
                                  z * -1.13596475577881948265e-11)))));
    hz = 0.5 * z;
    w = 1.0 - hz;
    cr = w + (((1.0 - w) - hz) + z * pc);
    {
        const uint64_t q = bits & 3u;
        const double s0 = (q & 1u) ? cr : sr, c0 = (q & 1u) ? sr : cr;
        *sn = (q & 2u) ? -s0 : s0;
        *cs = ((q + 1u) & 2u) ? -c0 : c0;
    }
}

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
#define LA_RF_FAST_SINCOS 1
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
#undef LA_RF_FAST_SINCOS
#include "dtype/la_undef.h"
#include "dtype/la_f64.h"
#define LA_FMAP_ELU_HAND(fmap, scale, x, n, y) 0
#define LA_RF_FAST_SINCOS 0
#define LA_FMAP_ELU1_AT(u) ((u) > 0 ? (u) + 1.0 : la_exp_f64((u) > 0 ? 0.0 : (u)))
#define LA_FMAP_ELU_AT(u) ((u) > 0 ? (u) : la_exp_f64((u) > 0 ? 0.0 : (u)) - 1.0)
#include "featmap_impl.h"
#undef LA_FMAP_ELU1_AT
#undef LA_FMAP_ELU_AT
#undef LA_FMAP_ELU_HAND
#undef LA_RF_FAST_SINCOS
#include "dtype/la_undef.h"
