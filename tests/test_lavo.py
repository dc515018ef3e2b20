"""kind="lavo" (docs/design/lavo.md): parity with the NumPy oracle in every form and dtype,
the worked examples 1-4 and invariants 1-8 of its §12, streaming, non-causal and errors."""

from __future__ import annotations

import time

import numpy as np
import pytest

import linattn as la
from conftest import assert_close

MODES = ["recurrent", "chunked", "parallel"]
DTYPES = [np.float32, np.float64]
X1 = np.array([[1, 0], [0, 2], [2, -1.0]])
Q1 = np.array([[1, 0], [1, 1], [0, 2.0]])
X4 = np.vstack([X1, [1, 1]])
Q4 = np.vstack([Q1, [1, -1]])


def rand_inputs(rng, batch=(2, 3), T=20, d=8, dtype=np.float64):
    q = rng.standard_normal(batch + (T, d)).astype(dtype)
    x = rng.standard_normal(batch + (T, d)).astype(dtype)
    return q, x


def ortho(rng, r, d, batch=()):
    a = rng.standard_normal(batch + (d, d))
    qm, _ = np.linalg.qr(a)
    return np.swapaxes(qm, -1, -2)[..., :r, :]


# ---------------------------------------------------------------- worked examples --

def test_example1_and_2():
    o = la.causal(Q1, X1, X1, kind="lavo", bases=np.eye(2), window=1, scale=1.0)
    np.testing.assert_allclose(o, [[0.844638, 0], [0.070122, 1.488287],
                                   [0.412145, 0.166688]], atol=1e-6)
    B2 = np.array([[1, 1], [-1, 1]]) / np.sqrt(2)
    o = la.causal(Q1, X1, X1, kind="lavo", bases=B2, window=1, scale=1.0)
    np.testing.assert_allclose(o, [[0.725931, 0], [0.241732, 1.428773],
                                   [0.668762, 0.500321]], atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_example3_biases(mode):
    o = la.causal(Q1, X1, X1, kind="lavo", bases=np.eye(2), window=2, scale=2 ** -0.5,
                  position_bias=[0.5, -0.5], memory_bias=[0.1, -0.2], mode=mode, chunk_size=2)
    np.testing.assert_allclose(o, [[0.872152, 0], [0.179357, 1.353687],
                                   [0.145787, 1.571915]], atol=1e-6)


EX4 = {
    ("sliding", "all", 2): [(0.844638, 0), (0.244753, 1.208787), (0.022029, 1.902009),
                            (1.797981, -0.769439)],
    ("sliding", "before_local", 2): [(1, 0), (0.268941, 1.462117), (0.022397, 1.922339),
                                     (1.817816, -0.810213)],
    ("block", "before_local", 2): [(1, 0), (0.268941, 1.462117), (0.090408, 0.850937),
                                   (1.817816, -0.810213)],
    ("block", "all", 2): [(0.844638, 0), (0.244753, 1.208787), (0.412145, 0.166688),
                          (1.797981, -0.769439)],
    ("sliding", "all", 0): [(0.731059, 0), (0.188770, 0.622459), (0.339244, 0.220252),
                            (0.817574, 0.091213)],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(EX4), ids=lambda c: "-".join(map(str, c)))
def test_example4_switches(case, mode):
    wm, ms, w = case
    o = la.causal(Q4, X4, X4, kind="lavo", bases=np.eye(2), window=w, scale=1.0,
                  window_mode=wm, memory_scope=ms, mode=mode, chunk_size=3)
    np.testing.assert_allclose(o, EX4[case], atol=1e-6)
    ref = la.reference.causal(Q4, X4, X4, kind="lavo", bases=np.eye(2), window=w, scale=1.0,
                              window_mode=wm, memory_scope=ms)
    np.testing.assert_allclose(ref, EX4[case], atol=1e-6)


# ------------------------------------------------------------------ parity --

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wm,ms", [("sliding", "all"), ("sliding", "before_local"),
                                   ("block", "all"), ("block", "before_local")])
@pytest.mark.parametrize("T", [1, 7, 8, 9, 37])
def test_parity(rng, dtype, mode, wm, ms, T):
    q, x = rand_inputs(rng, T=T, d=7, dtype=dtype)
    B = ortho(rng, 5, 7, (3,))  # per head, broadcast over batch
    kw = dict(bases=B, window=4, position_bias=rng.standard_normal(4),
              memory_bias=rng.standard_normal((2, 3, 5)), window_mode=wm, memory_scope=ms)
    o = la.causal(q, x, x, kind="lavo", mode=mode, chunk_size=8, **kw)
    assert o.dtype == dtype and o.shape == q.shape
    assert_close(o, la.reference.causal(q, x, x, kind="lavo", **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
def test_separate_values_and_layout(rng, dtype, mode):
    q, x = rand_inputs(rng, T=19, d=6, dtype=dtype)
    v = rng.standard_normal(x.shape).astype(dtype)
    B = ortho(rng, 4, 6)
    kw = dict(bases=B, window=5, memory_scope="before_local")
    o = la.causal(q, x, v, kind="lavo", mode=mode, chunk_size=4, **kw)
    assert_close(o, la.reference.causal(q, x, v, kind="lavo", **kw), dtype)
    sw = lambda a: np.ascontiguousarray(np.swapaxes(a, -3, -2))  # noqa: E731
    ob = la.causal(sw(q), sw(x), sw(v), kind="lavo", mode=mode, chunk_size=4,
                   layout="bthd", **kw)
    assert_close(ob, sw(o), dtype)
    # strided (non-contiguous) inputs equal their contiguous copies
    o2 = la.causal(q[..., ::-1, :][..., ::-1, :], x, v, kind="lavo", mode=mode,
                   chunk_size=4, **kw)
    assert_close(o2, o, dtype)


def test_default_bases_and_scale(rng):
    q, x = rand_inputs(rng, T=12, d=8)
    o = la.causal(q, x, x, kind="lavo", seed=3)
    ref = la.reference.causal(q, x, x, kind="lavo", bases=la.lavo_bases(8, 8, seed=3),
                              window=64)
    assert_close(o, ref, np.float64)
    B = la.lavo_bases(16, 40, seed=5)
    assert B.shape == (16, 40)
    np.testing.assert_allclose(B @ B.T, np.eye(16), atol=1e-12)
    assert la.lavo_bases(0, 4).shape == (0, 4)


def test_float16(rng):
    q, x = rand_inputs(rng, T=10, d=4, dtype=np.float16)
    o = la.causal(q, x, x, kind="lavo", bases=np.eye(4)[:2], window=3)
    assert o.dtype == np.float16
    ref = la.causal(q.astype(np.float32), x.astype(np.float32), x.astype(np.float32),
                    kind="lavo", bases=np.eye(4)[:2], window=3)
    la.testing.assert_close(o, ref, rtol=1e-3)


# ----------------------------------------------------- invariants 1-8 --

@pytest.mark.parametrize("ms", ["all", "before_local"])
@pytest.mark.parametrize("wm", ["sliding", "block"])
@pytest.mark.parametrize("sep", [False, True])
def test_inv1_streaming_equals_chunked(rng, wm, ms, sep):
    n, d = 11, 4
    q, x = rand_inputs(rng, batch=(2,), T=n, d=d)
    v = rng.standard_normal(x.shape) if sep else x
    kw = dict(bases=ortho(rng, 3, d), window=3, position_bias=rng.standard_normal(3),
              memory_bias=rng.standard_normal(3), window_mode=wm, memory_scope=ms)
    full = la.causal(q, x, v, kind="lavo", mode="chunked", chunk_size=4, **kw)
    for piece in (1, 2, 3, 5, 11):
        st, outs = None, []
        for s in range(0, n, piece):
            sl = slice(s, s + piece)
            o, st = la.causal(q[:, sl], x[:, sl], v[:, sl] if sep else x[:, sl], kind="lavo",
                              initial_state=st, return_state=True, mode="chunked", **kw)
            outs.append(o)
        np.testing.assert_allclose(np.concatenate(outs, -2), full, rtol=0, atol=1e-13)
        assert st.t == n and st.S is None and st.z is None
    # token by token with la.step
    st, outs = None, []
    for t in range(n):
        o, st = la.step(q[:, t], x[:, t], v[:, t], st, kind="lavo", **kw)
        outs.append(o)
    np.testing.assert_allclose(np.stack(outs, -2), full, rtol=0, atol=1e-13)
    assert sorted(st.extra) == sorted(["sums", "ring_k", "fill"] +
                                      (["value_sums", "ring_v"] if sep else []))
    st2 = la.State.from_dict(st.to_dict())
    assert st2.t == st.t and np.array_equal(st2.extra["ring_k"], st.extra["ring_k"])


@pytest.mark.parametrize("mode", MODES)
def test_inv2_reduction_to_softmax(rng, mode):
    q, x = rand_inputs(rng, T=17, d=5)
    B0 = np.zeros((0, 5))
    o = la.causal(q, x, x, kind="lavo", bases=B0, window=17, scale=0.7, mode=mode,
                  chunk_size=4)
    assert_close(o, la.softmax_attention(q, x, x, causal=True, scale=0.7), np.float64)
    o2 = la.causal(q, x, x, kind="lavo", bases=ortho(rng, 3, 5), window=20, scale=0.7,
                   memory_bias=np.full(3, -np.inf), mode=mode, chunk_size=4)
    assert_close(o2, o, np.float64)


def test_inv3_sign_flip_and_permutation(rng):
    q, x = rand_inputs(rng, T=15, d=6)
    B = ortho(rng, 4, 6)
    mb = rng.standard_normal(4)
    kw = dict(window=3, position_bias=rng.standard_normal(3))
    o = la.causal(q, x, x, kind="lavo", bases=B, memory_bias=mb, **kw)
    flip = np.array([1, -1, 1, -1])[:, None]
    np.testing.assert_allclose(la.causal(q, x, x, kind="lavo", bases=B * flip,
                                         memory_bias=mb, **kw), o, atol=1e-13)
    perm = rng.permutation(4)
    np.testing.assert_allclose(la.causal(q, x, x, kind="lavo", bases=B[perm],
                                         memory_bias=mb[perm], **kw), o, atol=1e-13)


def test_inv4_rotation_equivariance(rng):
    q, x = rand_inputs(rng, T=15, d=6)
    B = ortho(rng, 4, 6)
    R = ortho(rng, 6, 6)
    o = la.causal(q, x, x, kind="lavo", bases=B, window=4)
    o_r = la.causal(q @ R.T, x @ R.T, x @ R.T, kind="lavo", bases=B @ R.T, window=4)
    np.testing.assert_allclose(o_r, o @ R.T, atol=1e-13)


def test_inv5_constant_input_long_stream():
    d, w, n = 4, 8, 200_000
    rng = np.random.default_rng(0)
    qv, xv = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    q = np.broadcast_to(qv, (n, d))
    x = np.broadcast_to(xv, (n, d))
    o = la.causal(q, x, x, kind="lavo", bases=la.lavo_bases(3, d), window=w)
    assert np.all(np.isfinite(o))
    np.testing.assert_allclose(o[w - 1:], np.broadcast_to(o[w - 1], o[w - 1:].shape),
                               rtol=2e-6, atol=2e-6)


def test_inv6_uniform_query(rng):
    d, w, n = 4, 3, 10
    x = rng.standard_normal((n, d))
    q = np.zeros((n, d))
    o = la.causal(q, x, x, kind="lavo", bases=ortho(rng, d, d), window=w)
    for t in range(1, n + 1):
        W = x[max(0, t - w):t]
        exp = (x[:t].mean(0) + W.sum(0)) / (d + len(W))
        np.testing.assert_allclose(o[t - 1], exp, atol=1e-13)


def test_inv7_memory_only_one_slot(rng):
    b = np.array([[1, 1]]) / np.sqrt(2)
    for qq in (Q1, rng.standard_normal((3, 2))):
        o = la.causal(qq, X1, X1, kind="lavo", bases=b, window=0)
        np.testing.assert_allclose(o, [[0.5, 0.5], [0.75, 0.75], [2 / 3, 2 / 3]], atol=1e-12)


def test_inv8_shift_invariance(rng):
    q, x = rand_inputs(rng, T=12, d=5)
    B = ortho(rng, 3, 5)
    pb, mb = rng.standard_normal(4), rng.standard_normal(3)
    o = la.causal(q, x, x, kind="lavo", bases=B, window=4, position_bias=pb, memory_bias=mb)
    o2 = la.causal(q, x, x, kind="lavo", bases=B, window=4, position_bias=pb + 3.7,
                   memory_bias=mb + 3.7)
    np.testing.assert_allclose(o2, o, atol=1e-13)


def test_prefix_consistency(rng):
    q, x = rand_inputs(rng, T=30, d=5)
    kw = dict(bases=ortho(rng, 3, 5), window=4)
    o = la.causal(q, x, x, kind="lavo", mode="recurrent", **kw)
    x2 = x.copy()
    x2[..., 20:, :] += 1
    o2 = la.causal(q, x2, x2, kind="lavo", mode="recurrent", **kw)
    assert np.array_equal(o[..., :20, :], o2[..., :20, :])


# ---------------------------------------------------------------- streaming --

def test_streaming_131072_float32():
    rng = np.random.default_rng(7)
    n, d, r, w = 131072, 8, 4, 8
    q = rng.standard_normal((n, d)).astype(np.float32)
    x = rng.standard_normal((n, d)).astype(np.float32)
    kw = dict(bases=la.lavo_bases(r, d), window=w)
    t0 = time.perf_counter()
    full = la.causal(q, x, x, kind="lavo", **kw)
    st, outs, sizes = None, [], set()
    s = 0
    for piece in [1, 2, 3, 4097, 5, 60000] * 8:
        if s >= n:
            break
        o, st = la.causal(q[s:s + piece], x[s:s + piece], x[s:s + piece], kind="lavo",
                          initial_state=st, return_state=True, **kw)
        outs.append(o)
        s += piece
        sizes.add(sum(np.asarray(a).nbytes for a in st.extra.values()))
    if s < n:
        o, st = la.causal(q[s:], x[s:], x[s:], kind="lavo", initial_state=st,
                          return_state=True, **kw)
        outs.append(o)
    la.testing.assert_close(np.concatenate(outs), full, rtol=1e-5)
    assert st.t == n and len(sizes) == 1
    assert time.perf_counter() - t0 < 10


# ---------------------------------------------------------------- non-causal --

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ms", ["all", "before_local"])
def test_noncausal_self(rng, dtype, ms):
    q, x = rand_inputs(rng, T=13, d=6, dtype=dtype)
    v = rng.standard_normal(x.shape).astype(dtype)
    kw = dict(bases=ortho(rng, 4, 6), window=3, position_bias=rng.standard_normal(7),
              memory_bias=rng.standard_normal(4), memory_scope=ms)
    for vv in (x, v):
        o = la.noncausal(q, x, vv, kind="lavo", **kw)
        assert_close(o, la.reference.noncausal(q, x, vv, kind="lavo", **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_noncausal_cross(rng, dtype):
    q = rng.standard_normal((2, 9, 6)).astype(dtype)
    x = rng.standard_normal((2, 14, 6)).astype(dtype)
    B = ortho(rng, 5, 6)
    o = la.noncausal(q, x, x, kind="lavo", bases=B)
    assert o.shape == (2, 9, 6)
    assert_close(o, la.reference.noncausal(q, x, x, kind="lavo", bases=B), dtype)
    # keys permuted jointly: unchanged
    p = rng.permutation(14)
    assert_close(la.noncausal(q, x[:, p], x[:, p], kind="lavo", bases=B), o, dtype)


# ---------------------------------------------------------------- errors --

def test_errors(rng):
    q, x = rand_inputs(rng, batch=(), T=6, d=4)
    v3 = rng.standard_normal((6, 3))
    with pytest.raises(ValueError, match="bases"):
        la.causal(q, x, x, kind="lavo", bases=np.ones((5, 4)))  # r > D
    with pytest.raises(ValueError, match="bases"):
        la.causal(q, x, x, kind="lavo", bases=np.ones((2, 4)))  # not orthonormal
    with pytest.raises(ValueError, match="bases"):
        la.causal(q, x, x, kind="lavo", bases=(np.eye(4)[:2] * 1.001).astype(np.float32))
    with pytest.raises(ValueError, match="bases"):
        la.causal(q, x, x, kind="lavo", bases=np.eye(3))
    with pytest.raises(ValueError, match="window"):
        la.causal(q, x, x, kind="lavo", window=-1)
    with pytest.raises(ValueError, match="E == d"):
        la.causal(q, x, v3, kind="lavo")
    with pytest.raises(ValueError, match="window"):
        la.noncausal(q, x[:5], x[:5], kind="lavo", window=2)
    with pytest.raises(ValueError, match="position_bias"):
        la.causal(q, x, x, kind="lavo", window=3, position_bias=np.zeros(4))
    with pytest.raises(ValueError, match="memory_bias"):
        la.causal(q, x, x, kind="lavo", bases=np.eye(4)[:2], memory_bias=np.zeros(3))
    with pytest.raises(ValueError, match="window_mode"):
        la.causal(q, x, x, kind="lavo", window_mode="dilated")
    with pytest.raises(ValueError, match="combine"):
        la.causal(q, x, x, kind="lavo", combine="sum")
    with pytest.raises(ValueError, match="branch"):
        la.causal(q, x, x, kind="lavo", bases=np.zeros((0, 4)), window=0)
    for kw in (dict(normalize="div"), dict(eps=1e-6), dict(decay=-0.1), dict(horizon=4)):
        with pytest.raises(TypeError):
            la.causal(q, x, x, kind="lavo", **kw)
    with pytest.raises(TypeError, match="valid|options"):
        la.causal(q, x, x, kind="lavo", landmarks=3)
    _, st = la.causal(q, x, x, kind="lavo", window=3, return_state=True)
    with pytest.raises(ValueError, match="ring_k"):
        la.causal(q, x, x, kind="lavo", window=4, initial_state=st)


def test_auto_takes_recurrent_below_the_measured_crossover():
    """mode="auto" runs the recurrent form for 2 <= T < 24 and the chunked form from
    T = 24 (the crossover measured in kinds/lavo.py), and the two give the same
    outputs to the family's tolerance."""
    import types

    from linattn import _registry
    from linattn.kinds import lavo

    spec = _registry.lookup("lavo")

    assert lavo.LAVO_CHUNKED_FROM == 24
    for T, want in ((2, "recurrent"), (23, "recurrent"), (24, "chunked"), (200, "chunked")):
        call = types.SimpleNamespace(mode="auto", spec=spec)
        assert lavo._pick_mode(call, T, 64) == want
    for T, mode in ((2, "recurrent"), (40, "chunked")):
        call = types.SimpleNamespace(mode=mode, spec=spec)
        assert lavo._pick_mode(call, T, 64) == mode
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 23, 16)) for _ in range(3))
    o = la.causal(q, k, v, kind="lavo", seed=1)
    assert_close(o, la.causal(q, k, v, kind="lavo", seed=1, mode="chunked"), np.float64)
    assert np.array_equal(o, la.causal(q, k, v, kind="lavo", seed=1, mode="recurrent"))
