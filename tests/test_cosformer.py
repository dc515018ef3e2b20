"""kind "cosformer" (docs/design/kinds.md §8): decomposition, horizon rules, absolute positions."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

MODES = ["recurrent", "chunked", "parallel"]
DTYPES = [np.float32, np.float64]


def direct(q, k, v, M, causal, t0=0, eps=1e-6):
    """Quadratic form with explicit cos((pi/2)(i-j)/M) weights, written from the paper."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    T, S = q.shape[-2], k.shape[-2]
    i = t0 + np.arange(1, T + 1)[:, None]
    j = t0 + np.arange(1, S + 1)[None, :]
    W = np.cos(np.pi / 2 * (i - j) / M)
    if causal:
        W = W * (j <= i)
    A = np.einsum("...td,...sd->...ts", np.maximum(q, 0), np.maximum(k, 0)) * W
    return (A @ v) / np.maximum(A.sum(-1, keepdims=True), eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("horizon", [None, 70, 512])
@pytest.mark.parametrize("T", [1, 31, 33, 65])
def test_parity_causal(rng, mode, dtype, horizon, T):
    q, k, v = make_qkv(rng, T=T, D=5, E=4, dtype=dtype)
    o = la.causal(q, k, v, kind="cosformer", mode=mode, horizon=horizon, chunk_size=32)
    assert o.dtype == dtype and o.shape == (2, 3, T, 4)
    assert_close(o, la.reference.causal(q, k, v, kind="cosformer", horizon=horizon), dtype)
    assert_close(o, direct(q, k, v, horizon or T, True), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("T,S,horizon", [(40, 40, None), (30, 50, None), (50, 20, None),
                                         (20, 20, 100)])
def test_parity_noncausal(rng, dtype, T, S, horizon):
    q, k, v = make_qkv(rng, T=T, S=S, D=6, E=3, dtype=dtype)
    o = la.noncausal(q, k, v, kind="cosformer", horizon=horizon, chunk_size=16)
    assert_close(o, la.reference.noncausal(q, k, v, kind="cosformer", horizon=horizon), dtype)
    assert_close(o, direct(q, k, v, horizon or max(T, S), False), dtype)


def test_weight_table_m512():
    lags = np.array([0, 256, 511, 512, 600, 1024])
    w = la.reference.cosformer.weights(lags + 1, np.ones(1), 512)[:, 0]
    np.testing.assert_allclose(w, [1, 0.7071, 0.0031, 0, -0.2667, -1], atol=5e-5)
    # the same weights come out of the C features: phi(i).phi(j) for unit relu inputs
    x = np.ones((1, 1))
    from linattn.kinds.cosformer import features
    fi = [features(x, int(lag), 512, 1.0)[0] for lag in lags]
    f1 = features(x, 0, 512, 1.0)[0]
    np.testing.assert_allclose([a @ f1 for a in fi], w, atol=1e-12)


def test_weight_table_through_the_kernel():
    """The weight between position 1 and position 1 + lag, read off the causal output."""
    M = 512
    for lag, w in [(256, 0.7071), (511, 0.0031)]:
        T = lag + 1
        q = np.zeros((T, 1)); q[-1] = 1
        k = np.zeros((T, 1)); k[0] = 1; k[-1] = 1
        v = np.zeros((T, 2)); v[0, 0] = 1; v[-1, 1] = 1
        o = la.causal(q, k, v, kind="cosformer", horizon=M, normalize="none")
        np.testing.assert_allclose(o[-1], [w, 1.0], atol=5e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", [1, 15, 16, 17, 50])
def test_streaming_equals_one_call(rng, mode, dtype, split):
    M = 200
    q, k, v = make_qkv(rng, T=80, D=4, E=3, dtype=dtype)
    full, st = la.causal(q, k, v, kind="cosformer", horizon=M, mode=mode, chunk_size=16,
                         return_state=True)
    o1, s1 = la.causal(q[..., :split, :], k[..., :split, :], v[..., :split, :],
                       kind="cosformer", horizon=M, mode=mode, chunk_size=16,
                       return_state=True)
    o2, s2 = la.causal(q[..., split:, :], k[..., split:, :], v[..., split:, :],
                       kind="cosformer", horizon=M, mode=mode, chunk_size=16,
                       initial_state=s1, return_state=True)
    assert int(s2.extra["horizon"]) == M and s2.t == 80 and s2.S.shape == (2, 3, 8, 3)
    assert_close(np.concatenate([o1, o2], -2), full, dtype)
    assert_close(s2.S, st.S, dtype)
    assert_close(s2.z, st.z, dtype)
    assert_close(full, direct(q, k, v, M, True), dtype)


def test_step_and_prefix_consistency(rng):
    M = 128
    q, k, v = make_qkv(rng, T=60, D=4, E=3)
    full = la.causal(q, k, v, kind="cosformer", horizon=M, chunk_size=16)
    s, outs = None, []
    for t in range(60):
        o_t, s = la.step(q[..., t, :], k[..., t, :], v[..., t, :], s, kind="cosformer",
                         horizon=M)
        outs.append(o_t)
    assert_close(np.stack(outs, -2), full, np.float64)
    # changing tokens after s leaves outputs at <= s unchanged
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    q2[..., 40:, :] += 3; k2[..., 40:, :] -= 1; v2[..., 40:, :] *= 2
    for mode in MODES:
        a = la.causal(q, k, v, kind="cosformer", horizon=M, mode=mode, chunk_size=16)
        b = la.causal(q2, k2, v2, kind="cosformer", horizon=M, mode=mode, chunk_size=16)
        if mode == "recurrent":
            np.testing.assert_array_equal(a[..., :40, :], b[..., :40, :])
        else:
            la.testing.assert_close(a[..., :40, :], b[..., :40, :], rtol=1e-13)


def test_official_m_equals_n_is_not_prefix_consistent(rng):
    """Regression pin: with M = N of each call (official code), the first 100 outputs of a
    100-token call differ from the same positions inside a 300-token call."""
    q, k, v = make_qkv(rng, batch=(), T=300, D=32, E=8)
    a = la.causal(q[:100], k[:100], v[:100], kind="cosformer")
    b = la.causal(q, k, v, kind="cosformer")[:100]
    rel = np.abs(a - b).max() / np.abs(b).max()
    assert 1e-3 < rel < 0.5
    fixed = [la.causal(q[:n], k[:n], v[:n], kind="cosformer", horizon=300)[:100]
             for n in (100, 300)]
    la.testing.assert_close(fixed[0], fixed[1], rtol=1e-13)


def test_global_positions_chunked(rng):
    q, k, v = make_qkv(rng, T=200, D=4, E=3)
    rec = la.causal(q, k, v, kind="cosformer", horizon=256, mode="recurrent")
    chk = la.causal(q, k, v, kind="cosformer", horizon=256, mode="chunked", chunk_size=64)
    assert_close(chk, rec, np.float64)
    # negative control: a chunk-local position index gives a different answer
    bad = la.reference.cosformer.attention(q, k, v, causal=True, horizon=256, chunk_local=64)
    assert la.testing.relative_rms(bad, rec) > 1e-3


def test_layout_dtype16_and_out(rng):
    q, k, v = make_qkv(rng, batch=(2, 3), T=30, D=4, E=5)
    o = la.causal(q, k, v, kind="cosformer", horizon=40)
    qb, kb, vb = (np.swapaxes(x, 1, 2) for x in (q, k, v))
    ob = la.causal(qb, kb, vb, kind="cosformer", horizon=40, layout="bthd")
    assert_close(np.swapaxes(ob, 1, 2), o, np.float64)
    out = np.empty_like(vb)
    r = la.causal(qb, kb, vb, kind="cosformer", horizon=40, layout="bthd", out=out)
    assert r is out
    assert_close(out, ob, np.float64)
    onc = la.noncausal(qb, kb, vb, kind="cosformer", layout="bthd")
    assert_close(np.swapaxes(onc, 1, 2), la.noncausal(q, k, v, kind="cosformer"), np.float64)
    o16 = la.causal(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16),
                    kind="cosformer", horizon=40)
    assert o16.dtype == np.float16
    ref = la.causal(*(x.astype(np.float16).astype(np.float32) for x in (q, k, v)),
                    kind="cosformer", horizon=40)
    la.testing.assert_close(o16, ref, rtol=1e-3)


def test_beyond_horizon(rng):
    q, k, v = make_qkv(rng, T=50, D=4, E=3)
    with pytest.raises(ValueError, match="horizon=30 is too small"):
        la.causal(q, k, v, kind="cosformer", horizon=30)
    la.causal(q, k, v, kind="cosformer", horizon=49)  # lag 49 == M is fine
    o = la.causal(q, k, v, kind="cosformer", horizon=30, beyond_horizon="allow")
    assert_close(o, direct(q, k, v, 30, True), np.float64)
    with pytest.raises(ValueError, match="too small"):
        la.noncausal(q, k, v, kind="cosformer", horizon=10)
    _, s = la.causal(q, k, v, kind="cosformer", horizon=60, return_state=True)
    with pytest.raises(ValueError, match="too small"):
        la.causal(q[..., :20, :], k[..., :20, :], v[..., :20, :], kind="cosformer",
                  horizon=60, initial_state=s)
    with pytest.raises(ValueError, match="beyond_horizon"):
        la.causal(q, k, v, kind="cosformer", beyond_horizon="clip")


def test_streaming_needs_horizon(rng):
    q, k, v = make_qkv(rng, T=10, D=4, E=3)
    with pytest.raises(ValueError, match="explicit horizon"):
        la.causal(q, k, v, kind="cosformer", return_state=True)
    _, s = la.causal(q, k, v, kind="cosformer", horizon=64, return_state=True)
    with pytest.raises(ValueError, match="explicit horizon"):
        la.causal(q, k, v, kind="cosformer", initial_state=s)
    with pytest.raises(ValueError, match="does not match"):
        la.causal(q, k, v, kind="cosformer", initial_state=s, horizon=65)
    with pytest.raises(ValueError, match="explicit horizon"):
        la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None, kind="cosformer")
    with pytest.raises(TypeError, match="decay"):
        la.causal(q, k, v, kind="cosformer", decay=np.zeros(3))
    with pytest.raises(ValueError, match="horizon"):
        la.causal(q, k, v, kind="cosformer", horizon=0)
    with pytest.raises(ValueError, match="k has 5 features but q has 4"):
        la.causal(q, np.zeros((2, 3, 10, 5)), v, kind="cosformer")
