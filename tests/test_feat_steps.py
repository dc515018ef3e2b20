"""The decoding paths of Performer, RFA and cosFormer (docs/design/kinds.md §4, 5, 8;
docs/design/performance.md §3): projections drawn once and handed to the kernels
transposed, Performer's recurrent form on the new state (token pairs), RFA's float32
sin/cos, and the fused one-call steps ``_rfa_step_inplace`` / ``_cosformer_step_inplace``
(the bits of the features gufuncs followed by ``_step_inplace``)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv
from linattn import _core, _draws
from linattn import _registry as reg
from linattn import features as _features
from linattn._call import flags
from linattn.kinds import cosformer as _cf

DTYPES = [np.float32, np.float64]
dt_id = lambda d: np.dtype(d).name  # noqa: E731


def _strided(x):
    """``x`` as a non-contiguous view with the same values (every other column of a
    wider array)."""
    big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    big[..., ::2] = x
    return big[..., ::2]


# ------------------------------------------------------------- projections --

def test_projection_drawn_once_and_read_only():
    W1, F1 = _draws.projection_for("performer", 16, None, None, 5)
    W2, F2 = _draws.projection_for("performer", 16, None, None, 5)
    assert W1 is W2 and F1 == F2 == 256
    assert not W1.flags.writeable
    np.testing.assert_array_equal(W1, la.random_features(16, 256, seed=5))
    R, F = _draws.projection_for("rfa", 16, 10, None, np.int64(5), dtype=np.float32)
    assert F == 10 and R.dtype == np.float32 and R.shape == (5, 16)
    assert R is _draws.projection_for("rfa", 16, 10, None, 5, dtype=np.float32)[0]
    np.testing.assert_array_equal(
        R, la.random_features(16, 5, kind="gaussian", seed=5).astype(np.float32))
    with pytest.raises(TypeError, match="seed must be an integer"):
        _draws.projection_for("rfa", 16, 10, None, 1.5)


def test_transposed_layout_same_values():
    W = la.random_features(8, 12, seed=1)
    Wt = _draws.transposed(W)
    assert Wt.shape == W.shape and Wt.strides[0] == Wt.itemsize
    np.testing.assert_array_equal(Wt, W)
    assert _draws.transposed(Wt) is Wt


@pytest.mark.parametrize("kind", ["performer", "rfa"])
@pytest.mark.parametrize("T", [1, 5])
def test_projection_layout_does_not_change_results(rng, kind, T):
    """A caller's projection in any layout (C, Fortran, a strided view) gives the results
    of the C-ordered one: in place (one axis contiguous) or copied, the same values."""
    rows = 12
    q, k, v = make_qkv(rng, batch=(2,), T=T, D=8, E=5)
    W = la.random_features(8, rows, seed=2)
    want = la.causal(q, k, v, kind, projection=W, mode="recurrent")
    for Wl in (np.asfortranarray(W), _strided(W), W.T.copy().T):
        got = la.causal(q, k, v, kind, projection=Wl, mode="recurrent")
        la.testing.assert_close(got, want, rtol=1e-12)


# ----------------------------------------------------------------- Performer --

@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("D,E,F", [(64, 64, None), (64, 64, 64), (7, 5, 9), (16, 33, 32)])
def test_performer_steps_match_a_causal_call(rng, dtype, D, E, F):
    """la.step one token at a time (in place and copying) against one la.causal call of
    every form and the float64 oracle."""
    T = 19
    q, k, v = make_qkv(rng, batch=(3,), T=T, D=D, E=E, dtype=dtype, scale=0.7)
    kw = {"seed": 4, "num_features": F}
    ref = la.reference.causal(q.astype(np.float64), k.astype(np.float64),
                              v.astype(np.float64), "performer", **kw)
    st = la.State.zeros("performer", (3,), D, E, dtype=dtype, **kw)
    st2 = st.copy()
    outs, outs2 = [], []
    for t in range(T):
        outs.append(la.step(q[:, t], k[:, t], v[:, t], st, inplace=True, **kw)[0])
        o2, st2 = la.step(q[:, t], k[:, t], v[:, t], st2, **kw)
        outs2.append(o2)
    steps = np.stack(outs, axis=-2)
    np.testing.assert_array_equal(np.stack(outs2, axis=-2), steps)
    np.testing.assert_array_equal(st2.S, st.S)
    assert_close(steps, ref, dtype)
    for mode in ("recurrent", "chunked", "parallel"):
        o, s1 = la.causal(q, k, v, "performer", mode=mode, return_state=True, **kw)
        assert_close(o, ref, dtype)
        assert_close(s1.S * np.exp(s1.extra["max"])[..., None, None],
                     st.S * np.exp(st.extra["max"])[..., None, None], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
def test_performer_recurrent_strided_inputs_and_state(rng, dtype):
    """Strided q, k, v and a new state with strided rows (the [S | z] buffer path) give the
    results of contiguous arrays; the token pair loop of the contiguous path agrees."""
    q, k, v = make_qkv(rng, batch=(2,), T=11, D=6, E=4, dtype=dtype)
    W = _draws.transposed(la.random_features(6, 8, seed=0).astype(dtype))
    F = 8
    S0 = rng.standard_normal((F, 4)).astype(dtype) * 0.1
    z0 = np.abs(rng.standard_normal(F)).astype(dtype)
    args = (S0, z0, np.float64(0.5), 0.4, 1e-6, np.int64(1 << 2), np.int64(4))
    o, S1, z1, mu1 = _core._performer_recurrent(q, k, v, W, *args)
    Sx = np.zeros((2, 4, F), dtype).swapaxes(-1, -2)  # rows of stride 1 element column
    o2 = np.empty_like(o)
    z2, m2 = np.empty_like(z1), np.empty_like(mu1)
    _core._performer_recurrent(_strided(q), _strided(k), _strided(v), W, *args,
                               out=(o2, Sx, z2, m2))
    la.testing.assert_close(o2, o, rtol=1e-5 if dtype == np.float32 else 1e-12)
    la.testing.assert_close(Sx, S1, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(m2, mu1)


def test_performer_empty_call_keeps_the_state(rng):
    W = _draws.transposed(la.random_features(4, 6, seed=0).astype(np.float32))
    S0 = rng.standard_normal((6, 3)).astype(np.float32)
    z0 = np.abs(rng.standard_normal(6)).astype(np.float32)
    e = np.zeros((0, 4), np.float32)
    o, S1, z1, mu1 = _core._performer_recurrent(e, e, np.zeros((0, 3), np.float32), W, S0,
                                                z0, np.float64(1.5), 0.5, 1e-6,
                                                np.int64(1 << 2), np.int64(4))
    assert o.shape == (0, 3)
    np.testing.assert_array_equal(S1, S0)
    np.testing.assert_array_equal(z1, z0)
    assert float(mu1) == 1.5


# ----------------------------------------------------------------------- RFA --

def test_rfa_float32_sincos_is_libm_rounded():
    """float32 features of one-hot inputs on power-of-two projection rows: u is exact,
    so every feature is sqrt(2/F) sin(u) / cos(u) rounded once (within 1 ulp of
    NumPy's float64 sin), over |u| from 1e-3 to 1e8 (the reduction and the libm
    fallback beyond 1e6)."""
    D, r = 3, 40
    W = np.zeros((r, D), np.float32)
    W[:, 0] = 2.0 ** np.arange(-17, 23, dtype=np.float32)
    a = np.float32([0.3, -1.7, 2.5, 9.0, -0.01])
    x = np.zeros((len(a), D), np.float32)
    x[:, 0] = a
    scale = 1e4
    c = (np.sqrt(scale) / (np.abs(a.astype(np.float64)) + 1e-3)).astype(np.float32)
    u = (c * a).astype(np.float64)[:, None] * W[:, 0].astype(np.float64)
    amp = np.sqrt(1.0 / r)
    want = np.concatenate([amp * np.sin(u), amp * np.cos(u)], axis=-1).astype(np.float32)
    for T in (1, len(a)):  # the one-token path and the block path
        got = np.concatenate([_features.rfa(x[i:i + T], W, scale) for i in
                              range(0, len(a), T)])
        np.testing.assert_array_max_ulp(got, want, maxulp=1)
    # non-finite inputs propagate as libm does
    y = _features.rfa(np.array([[np.nan, 0, 0]], np.float32), W, 1.0)
    assert np.isnan(y).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
def test_rfa_float32_features_within_tolerance(rng, dtype):
    x = rng.standard_normal((4, 33, 17)).astype(dtype)
    W = la.random_features(17, 24, kind="gaussian", seed=1)
    want = _features.rfa(x.astype(np.float64), W, 2.0)
    assert_close(_features.rfa(x, W.astype(dtype), 2.0), want, dtype)


def _rfa_separate(q, k, v, W, S, z, scale, eps, fl):
    fq = _features._rf_finish(_core._rfa_features(q, W, scale), S.dtype, False, None)
    fk = _features._rf_finish(_core._rfa_features(k, W, scale), S.dtype, False, None)
    g = np.zeros(q.shape[:-1])
    return _core._step_inplace(fq, fk, v, g, S, z, 1.0, eps, fl, np.int64(1))


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("T,D,E,rows", [(1, 64, 64, 32), (1, 64, 64, 64), (1, 7, 5, 5),
                                        (3, 9, 12, 8)])
@pytest.mark.parametrize("strided", [False, True])
def test_rfa_fused_step_bitwise(rng, dtype, T, D, E, rows, strided):
    q, k, v = make_qkv(rng, batch=(5,), T=T, D=D, E=E, dtype=dtype)
    W = la.random_features(D, rows, kind="gaussian", seed=3).astype(dtype)
    if strided:
        q, k, v, W = _strided(q), _strided(k), _strided(v), _draws.transposed(W)
    S = rng.standard_normal((5, 2 * rows, E)).astype(dtype)
    z = np.abs(rng.standard_normal((5, 2 * rows))).astype(dtype)
    S2, z2 = S.copy(), z.copy()
    for eps_mode in ("abs_clamp", "add"):
        fl = np.int64(flags(reg.FMAP_IDENTITY, reg.FMAP_IDENTITY, "div", eps_mode, False))
        o = _core._rfa_step_inplace(q, k, v, W, S, z, 1.5, 1e-3, fl)
        o2 = _rfa_separate(q, k, v, W, S2, z2, 1.5, 1e-3, fl)
        np.testing.assert_array_equal(o, o2)
        np.testing.assert_array_equal(S, S2)
        np.testing.assert_array_equal(z, z2)


def test_rfa_fused_step_rejects_a_state_of_another_width(rng):
    q, k, v = make_qkv(rng, batch=(2,), T=1, D=4, E=3, dtype=np.float32)
    W = la.random_features(4, 6, seed=0).astype(np.float32)
    S = np.zeros((2, 10, 3), np.float32)
    z = np.zeros((2, 10), np.float32)
    before = S.copy()
    with pytest.raises(ValueError, match="_rfa_step_inplace"):
        _core._rfa_step_inplace(q, k, v, W, S, z, 1.0, 1e-3, np.int64(1 << 8))
    np.testing.assert_array_equal(S, before)


@pytest.mark.parametrize("F", [None, 64])
def test_rfa_steps_match_a_causal_call(rng, F):
    T, D = 9, 16
    q, k, v = make_qkv(rng, batch=(2,), T=T, D=D, E=D, dtype=np.float32)
    kw = {"seed": 1, "num_features": F}
    st = la.State.zeros("rfa", (2,), D, D, dtype=np.float32, **kw)
    steps = np.stack([la.step(q[:, t], k[:, t], v[:, t], st, inplace=True, **kw)[0]
                      for t in range(T)], axis=-2)
    ref = la.reference.causal(q.astype(np.float64), k.astype(np.float64),
                              v.astype(np.float64), "rfa", **kw)
    assert_close(steps, ref, np.float32)
    assert_close(la.causal(q, k, v, "rfa", **kw), ref, np.float32)


# ----------------------------------------------------------------- cosFormer --

@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("T,D,E,t0", [(1, 64, 64, 0), (1, 64, 64, 77), (1, 7, 5, 3),
                                      (4, 9, 12, 10)])
@pytest.mark.parametrize("strided", [False, True])
def test_cosformer_fused_step_bitwise(rng, dtype, T, D, E, t0, strided):
    q, k, v = make_qkv(rng, batch=(4,), T=T, D=D, E=E, dtype=dtype)
    if strided:
        q, k, v = _strided(q), _strided(k), _strided(v)
    S = np.abs(rng.standard_normal((4, 2 * D, E))).astype(dtype)
    z = np.abs(rng.standard_normal((4, 2 * D))).astype(dtype)
    S2, z2 = S.copy(), z.copy()
    fl = np.int64(flags(reg.FMAP_IDENTITY, reg.FMAP_IDENTITY, "div", "clamp", False))
    o = _core._cosformer_step_inplace(q, k, v, S, z, np.int64(t0), 128.0, 0.3, 1e-6, fl)
    fq, fk = _cf.features(q, t0, 128.0, 0.3), _cf.features(k, t0, 128.0, 1.0)
    o2 = _core._step_inplace(fq, fk, v, np.zeros(q.shape[:-1]), S2, z2, 1.0, 1e-6, fl,
                             np.int64(1))
    np.testing.assert_array_equal(o, o2)
    np.testing.assert_array_equal(S, S2)
    np.testing.assert_array_equal(z, z2)


def test_cosformer_fused_step_rejects_a_state_of_another_width(rng):
    q, k, v = make_qkv(rng, batch=(2,), T=1, D=4, E=3, dtype=np.float32)
    S = np.zeros((2, 9, 3), np.float32)
    z = np.zeros((2, 9), np.float32)
    with pytest.raises(ValueError, match="_cosformer_step_inplace"):
        _core._cosformer_step_inplace(q, k, v, S, z, np.int64(0), 8.0, 1.0, 1e-6,
                                      np.int64(1 << 8))


@pytest.mark.parametrize("T", [1, 64, 65, 200])  # angles on the loop's stack up to 64 rows
def test_cosformer_features_every_length(rng, T):
    x = rng.standard_normal((2, T, 5))
    t0, M, scale = 7, 300.0, 0.5
    th = np.pi * (t0 + np.arange(T) + 1) / (2 * M)
    u = np.maximum(scale * x, 0)
    want = np.concatenate([u * np.sin(th)[:, None], u * np.cos(th)[:, None]], axis=-1)
    np.testing.assert_allclose(_cf.features(x, t0, M, scale), want, rtol=1e-14, atol=0)
    S = np.zeros((2, 10, 3))
    z = np.zeros((2, 10))
    v = rng.standard_normal((2, T, 3))
    fl = np.int64(flags(reg.FMAP_IDENTITY, reg.FMAP_IDENTITY, "div", "clamp", False))
    o = _core._cosformer_step_inplace(x, x, v, S, z, np.int64(t0), M, scale, 1e-6, fl)
    S2, z2 = np.zeros_like(S), np.zeros_like(z)
    fq, fk = _cf.features(x, t0, M, scale), _cf.features(x, t0, M, 1.0)
    o2 = _core._step_inplace(fq, fk, v, np.zeros((2, T)), S2, z2, 1.0, 1e-6, fl, np.int64(1))
    np.testing.assert_array_equal(o, o2)
    np.testing.assert_array_equal(S, S2)
