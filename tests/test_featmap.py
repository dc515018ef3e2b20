"""kernels/featmap: the elementwise maps in C against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la


@pytest.mark.parametrize("name", ["identity", "elu1", "elu", "relu"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_featmap(rng, name, dtype):
    x = rng.standard_normal((3, 7, 9)).astype(dtype)
    y = getattr(la.features, name)(x, scale=0.7)
    assert y.dtype == dtype and y.shape == x.shape
    want = la.reference.linear.phi(x.astype(np.float64), name, 0.7)
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    la.testing.assert_close(y, want, rtol=tol)
    # strided input
    xs = x[:, ::2, ::-1]
    la.testing.assert_close(getattr(la.features, name)(xs, 0.7),
                            la.reference.linear.phi(xs.astype(np.float64), name, 0.7), rtol=tol)


def test_featmap_out_and_errors(rng):
    x = rng.standard_normal((4, 5))
    out = np.empty_like(x)
    assert la.features.elu1(x, out=out) is out
    with pytest.raises(TypeError, match="x must be a float32"):
        la.features.relu(np.ones(3, dtype=int))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        la.features.relu(x, scale=0)


# ---- the float32 elu maps' exp (reduced range, selects for the rest of the line) --

def _ulps32(y, want64):
    """|y - want| in float32 ulps of the correctly rounded value."""
    w32 = want64.astype(np.float32)
    return np.abs(y.astype(np.float64) - want64) / np.spacing(np.abs(w32)).astype(np.float64)


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 33, 100_003])
def test_elu1_float32_exp_within_2_ulp(n):
    """exp(u) on [-87.33, 0] (the normal results) within 2 ulp of the float64 value, at
    every row length (vector bodies and remainders)."""
    u = -np.linspace(0.0, 87.33, n, dtype=np.float64).astype(np.float32)
    y = la.features.elu1(u, scale=1.0)
    assert y.dtype == np.float32
    assert _ulps32(y, np.exp(u.astype(np.float64))).max() <= 2.0
    # elu = exp(u) - 1: absolute error within 2 ulp of 1
    ye = la.features.elu(u, scale=1.0)
    assert np.abs(ye.astype(np.float64) - np.expm1(u.astype(np.float64))).max() <= 2.0 * 2.0**-23


def test_elu_float32_underflow_edge():
    """Below the smallest normal result (u < -87.33654) exp flushes to 0: elu1 0, elu -1;
    just above it the result is normal and accurate."""
    lo = np.float32(-87.33654)
    u = np.concatenate([np.linspace(-104.0, -88.0, 301), [-87.5, -87.34, -87.3366, -200.0,
                                                          -1e30, -3.4e38]]).astype(np.float32)
    y1 = la.features.elu1(u, scale=1.0)
    assert np.all(y1 >= 0) and np.all(y1 <= np.finfo(np.float32).tiny)
    assert np.all(y1[u < lo] == 0)
    assert np.all(la.features.elu(u, scale=1.0)[u < lo] == -1)
    above = np.nextafter(lo, np.float32(0)) + np.float32([0, 1e-6, 1e-4, 0.01, 0.3])
    ya = la.features.elu1(above.astype(np.float32), scale=1.0)
    assert np.all(ya >= np.finfo(np.float32).tiny)
    assert _ulps32(ya, np.exp(above.astype(np.float64))).max() <= 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_maps_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0, 1e30, -1e30],
                 dtype=dtype)
    y1 = la.features.elu1(x, scale=1.0)
    y = la.features.elu(x, scale=1.0)
    assert np.isnan(y1[0]) and np.isnan(y[0])
    np.testing.assert_array_equal(y1[1:6], np.array([np.inf, 0, 1, 1, 1], dtype))
    np.testing.assert_array_equal(y[1:6], np.array([np.inf, -1, 0, 0, 1e-30], dtype))
    assert y1[6] == 1 and abs(y[6]) <= 1e-29  # exp(-1e-30) - 1 rounds to 0 or -1e-30
    assert y1[7] == 4 and y[7] == 3 and y1[9] == np.asarray(1e30, dtype) + 1
    want = {np.float32: 1e-6, np.float64: 1e-15}[dtype]
    assert abs(y1[8] / np.exp(-3.0) - 1) <= want and abs((y[8] + 1) / np.exp(-3.0) - 1) <= 2 * want
    assert y1[10] == 0 and y[10] == -1


@pytest.mark.parametrize("name", ["elu1", "elu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_maps_strided_rows_same_bits(rng, name, dtype):
    """A strided row (gathered in blocks) gives the contiguous row's bits."""
    x = (3 * rng.standard_normal((5, 300, 2))).astype(dtype)
    f = getattr(la.features, name)
    np.testing.assert_array_equal(f(x[..., 0], scale=0.7),
                                  f(np.ascontiguousarray(x[..., 0]), scale=0.7))


def test_elu1_float64_exp_accuracy(rng):
    """float64 keeps its full-precision exp (a few 1e-16 relative)."""
    u = -rng.uniform(0, 700, 20_000)
    y = la.features.elu1(u, scale=1.0)
    assert np.max(np.abs(y / np.exp(u) - 1)) <= 1e-15


@pytest.mark.skipif(la.info()["simd_cpu"] != "avx512", reason="no AVX-512 here")
@pytest.mark.parametrize("name", ["elu1", "elu"])
def test_elu_float32_hand_map_same_bits_as_the_loop(name):
    """The AVX-512 path maps dense float32 elu1 / elu rows with a hand-written loop; the
    other paths run the compiled loop: the same bits on a spread of every float32 bit
    pattern (every 1021st: all exponents, both signs), the underflow edge -88..-104,
    subnormals, signed zeros, infinities, quiet and signaling NaNs, at lengths covering
    the 16-lane body and each remainder, with scale 1 and another scale."""
    from linattn import _tuning

    spread = np.arange(0, 1 << 32, 1021, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edge = np.linspace(-104.0, -86.0, 4001, dtype=np.float32)
    special = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0xFFA00000, 0x7F800000, 0xFF800000,
                        0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x3F800000,
                        0xC2AEAC50, 0xC2AEAC4F, 0xC2AEAC51], dtype=np.uint32).view(np.float32)
    x = np.concatenate([special, edge, spread])
    f = getattr(la.features, name)
    before = la.info()["simd"]
    got = {}
    try:
        for isa in ("avx512", "avx2", "generic"):
            _tuning.set_simd(isa)
            ys = [f(x, scale=s).view(np.uint32) for s in (1.0, 0.37)]
            ys += [f(x[:n], scale=1.0).view(np.uint32) for n in range(1, 35)]
            got[isa] = ys
    finally:
        _tuning.set_simd(before)
    for isa in ("avx2", "generic"):
        for a, b in zip(got["avx512"], got[isa]):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: avx512 vs {isa}")
