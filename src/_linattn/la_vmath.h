/*
 * la_vmath.h -- a vectorisable exp for the hot loops (feature maps, decay
 * masks, softmax rows, shifted log-features, scans).
 *
 * la_exp_f32 / la_exp_f64 (and the reduced-range la_exp_sm_f32 and
 * la_exp_nonpos_f32 below) are inline scalar functions written so that GCC
 * auto-vectorises any loop that calls them (inside a LA_TARGET_CLONES clone
 * they become AVX-512 / AVX2 code); la_vexp_* apply them to an array.
 * exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (Cody-Waite two-part
 * ln 2), exp(r) by its Taylor polynomial in Horner form (degree 7 for float32,
 * 13 for float64), 2^n assembled in the exponent bits.
 *
 * Accuracy: <= 2 ulp over the normal range (measured 1.3 ulp); results below
 * the smallest normal flush to 0; overflow gives +inf; NaN propagates.
 */
#ifndef LA_VMATH_H
#define LA_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "la_common.h"

static inline float
la_exp_f32(float xi)
{
    /* NaN selects the lower bound, so the int conversion below stays defined */
    const float xc = xi >= -87.33654f ? (xi <= 88.72283f ? xi : 88.72283f) : -87.33654f;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: round to nearest */
    const float kf = (xc * 1.44269504088896341f + shifter) - shifter;
    const float r = (xc - kf * 0.693359375f) - kf * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    int32_t bits;
    float s, out;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* n = 128 only just below the overflow threshold: use 2^127 * 2 */
    bits = ((int32_t)(kf > 127.0f ? 127.0f : kf) + 127) << 23;
    memcpy(&s, &bits, sizeof(s));
    out = p * s * (kf > 127.0f ? 2.0f : 1.0f);
    out = xi < -87.33654f ? 0.0f : out;
    out = xi > 88.72283f ? INFINITY : out;
    return xi != xi ? xi : out;
}

static inline double
la_exp_f64(double xi)
{
    /* NaN selects the lower bound, so the int conversion below stays defined */
    const double xc = xi >= -708.3964185322641
                    ? (xi <= 709.782712893384 ? xi : 709.782712893384)
                    : -708.3964185322641;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double kf = (xc * 1.4426950408889634 + shifter) - shifter;
    const double r = (xc - kf * 6.93147180369123816490e-01) -
                     kf * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    int64_t bits;
    double s, out;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    bits = ((int64_t)(kf > 1023.0 ? 1023.0 : kf) + 1023) << 52;
    memcpy(&s, &bits, sizeof(s));
    out = p * s * (kf > 1023.0 ? 2.0 : 1.0);
    out = xi < -708.3964185322641 ? 0.0 : out;
    out = xi > 709.782712893384 ? (double)INFINITY : out;
    return xi != xi ? xi : out;
}

/* exp(r) for the reduced argument |r| <= ln(2)/2 of the float32 exps below:
 * their degree-5 polynomial, one evaluation order, so they share its bits. */
static inline float
la_exp_poly_f32(float r)
{
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p;
}

/*
 * la_exp_sm_f32: exp for softmax's shifted scores (x - row max, x - lse: at
 * most a rounding error above 0), cheaper than la_exp_f32: Cephes' degree-5
 * minimax polynomial on the same reduction (<= 1.02 ulp measured), inputs
 * clamped to [-87.33654, 88] (so 2^n needs no overflow step), below the
 * smallest normal 0, NaN propagates; x > 88 gives exp(88), never +inf.
 */
static inline float
la_exp_sm_f32(float xi)
{
    /* NaN selects the lower bound, so the int conversion below stays defined */
    const float xc = xi >= -87.33654f ? (xi <= 88.0f ? xi : 88.0f) : -87.33654f;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: round to nearest */
    const float kf = (xc * 1.44269504088896341f + shifter) - shifter;
    const float r = (xc - kf * 0.693359375f) - kf * -2.12194440e-4f;
    const float p = la_exp_poly_f32(r);
    float s, out;
    int32_t bits;
    bits = ((int32_t)kf + 127) << 23;
    memcpy(&s, &bits, sizeof(s));
    out = p * s;
    out = xi < -87.33654f ? 0.0f : out;
    return xi != xi ? xi : out;
}

/*
 * la_exp_nonpos_f32: exp(x) for x in [LA_EXP_NONPOS_MIN_F32, 0] only, the
 * cheapest exp here, for loops that select the other inputs away themselves
 * (the elu feature maps: x > 0, x below the bound, NaN).  The reduction and
 * polynomial of la_exp_sm_f32 (the same bits on that range; <= 1.01 ulp over
 * every float32 there with FMA contraction), with
 * no clamps and no checks: 2^n comes from the low bits of the shifted
 * product (shifter 1.5 * 2^23 + 127), so any input, NaN and inf included, is
 * defined behaviour, but outside the range the value is meaningless.
 */
#define LA_EXP_NONPOS_MIN_F32 -87.33654f /* below: exp(x) < the smallest normal */
static inline float
la_exp_nonpos_f32(float x)
{
    const float shifter = 12582912.0f + 127.0f;
    const float j = x * 1.44269504088896341f + shifter; /* low bits: n + 127 */
    const float kf = j - shifter;
    const float r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;
    const float p = la_exp_poly_f32(r);
    float s;
    uint32_t bits;
    memcpy(&bits, &j, sizeof(bits));
    bits <<= 23;
    memcpy(&s, &bits, sizeof(s));
    return p * s;
}

/* y[i] = exp(x[i]); y may alias x. */
void la_vexp_f32(la_index n, const float *x, float *y);
void la_vexp_f64(la_index n, const double *x, double *y);

#endif
