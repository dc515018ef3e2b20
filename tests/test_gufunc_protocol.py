"""The NumPy protocol: broadcasting, layouts, strides, out=, inputs never modified."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

MODES = ["recurrent", "chunked", "parallel"]


@pytest.mark.parametrize("mode", MODES)
def test_bthd_equals_default_layout(rng, mode):
    q, k, v = make_qkv(rng, T=50, D=6, E=5)
    g = -rng.uniform(0, 0.3, (2, 3, 50))
    a, sa = la.causal(q, k, v, mode=mode, decay=g, chunk_size=16, return_state=True)
    qt, kt, vt = (np.swapaxes(x, 1, 2) for x in (q, k, v))
    assert qt.base is not None  # views, not copies
    b, sb = la.causal(qt, kt, vt, mode=mode, decay=np.swapaxes(g, 1, 2), chunk_size=16,
                      layout="bthd", return_state=True)
    assert b.shape == (2, 50, 3, 5)
    assert_close(np.swapaxes(b, 1, 2), a, np.float64)
    assert_close(sb.S, sa.S, np.float64)
    # per-head decay in bthd: (H,) broadcasts over batch
    gh = -rng.uniform(0, 0.3, (3,))
    c = la.causal(qt, kt, vt, mode=mode, decay=gh, layout="bthd")
    assert_close(np.swapaxes(c, 1, 2), la.causal(q, k, v, mode=mode, decay=gh), np.float64)


def test_bthd_noncausal_and_softmax(rng):
    q, k, v = make_qkv(rng, T=20, S=30, D=6, E=5)
    qt, kt, vt = (np.swapaxes(x, 1, 2) for x in (q, k, v))
    assert_close(np.swapaxes(la.noncausal(qt, kt, vt, layout="bthd"), 1, 2),
                 la.noncausal(q, k, v), np.float64)
    assert_close(np.swapaxes(la.softmax_attention(qt, kt, vt, causal=False, layout="bthd"), 1, 2),
                 la.softmax_attention(q, k, v, causal=False), np.float64)


@pytest.mark.parametrize("mode", MODES)
def test_strides(rng, mode):
    q, k, v = make_qkv(rng, batch=(4, 3), T=40, D=6, E=5)
    ref = la.causal(q, k, v, mode=mode, chunk_size=16)
    # sliced heads, negative strides, Fortran order
    sl = (slice(None, None, 2),)
    assert_close(la.causal(q[sl], k[sl], v[sl], mode=mode, chunk_size=16), ref[sl], np.float64)
    qf, kf, vf = (np.asfortranarray(x) for x in (q, k, v))
    assert_close(la.causal(qf, kf, vf, mode=mode, chunk_size=16), ref, np.float64)
    rev = (Ellipsis, slice(None, None, -1))
    o = la.causal(q[rev], k[rev], v, mode=mode, chunk_size=16)
    assert_close(o, la.causal(q[rev].copy(), k[rev].copy(), v, mode=mode, chunk_size=16),
                 np.float64)
    # byte-swapped input
    qs = q.astype(q.dtype.newbyteorder(">"))
    assert_close(la.causal(qs, k, v, mode=mode, chunk_size=16), ref, np.float64)


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_kv_across_heads(rng, mode):
    q, _, _ = make_qkv(rng, T=30, D=6, E=5)
    k = rng.standard_normal((2, 1, 30, 6))
    v = rng.standard_normal((2, 1, 30, 5))
    o = la.causal(q, k, v, mode=mode)
    kb, vb = np.broadcast_to(k, (2, 3, 30, 6)).copy(), np.broadcast_to(v, (2, 3, 30, 5)).copy()
    assert_close(o, la.causal(q, kb, vb, mode=mode), np.float64)


def test_out_returns_same_object_and_strided_out(rng):
    q, k, v = make_qkv(rng, T=30, D=6, E=5)
    buf = np.zeros((2, 3, 30, 10))
    out = buf[..., ::2]
    r = la.causal(q, k, v, out=out)
    assert r is out
    assert_close(out, la.causal(q, k, v), np.float64)
    assert np.all(buf[..., 1::2] == 0)
    out16 = np.zeros((2, 3, 30, 5), np.float16)
    r = la.causal(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), out=out16)
    assert r is out16 and np.isfinite(out16).all() and np.any(out16 != 0)


@pytest.mark.parametrize("entry", ["causal", "noncausal", "softmax"])
def test_inputs_never_modified(rng, entry):
    q, k, v = make_qkv(rng, T=40, D=6, E=5)
    before = [x.copy() for x in (q, k, v)]
    if entry == "causal":
        for mode in MODES:
            g = -np.ones((2, 3, 40)) * 0.1
            gb = g.copy()
            _, st = la.causal(q, k, v, mode=mode, decay=g, return_state=True)
            s_before = (st.S.copy(), st.z.copy())
            la.causal(q, k, v, mode=mode, decay=g, initial_state=st)
            assert np.array_equal(st.S, s_before[0]) and np.array_equal(st.z, s_before[1])
            assert np.array_equal(g, gb)
    elif entry == "noncausal":
        la.noncausal(q, k, v)
    else:
        la.softmax_attention(q, k, v)
    for b, a in zip(before, (q, k, v)):
        assert np.array_equal(b, a)


def test_empty_batch_and_features(rng):
    q = np.zeros((0, 5, 4))
    assert la.causal(q, q, np.zeros((0, 5, 3))).shape == (0, 5, 3)
    z = np.zeros((2, 5, 0))
    o = la.causal(z, z, np.ones((2, 5, 3)), kind="linear")
    assert o.shape == (2, 5, 3) and np.all(o == 0)
    o = la.causal(np.ones((2, 5, 3)), np.ones((2, 5, 3)), z)
    assert o.shape == (2, 5, 0)


def test_state_roundtrip_pickle_and_savez(rng, tmp_path):
    import pickle

    q, k, v = make_qkv(rng, T=20, D=4, E=3)
    _, st = la.causal(q[..., :10, :], k[..., :10, :], v[..., :10, :], return_state=True)
    st2 = pickle.loads(pickle.dumps(st))
    np.savez(tmp_path / "s.npz", **st.to_dict())
    with np.load(tmp_path / "s.npz") as f:
        st3 = la.State.from_dict(f)
    want = la.causal(q[..., 10:, :], k[..., 10:, :], v[..., 10:, :], initial_state=st)
    for s in (st2, st3, st.copy()):
        assert s.t == 10 and s.kind == "elu"
        got = la.causal(q[..., 10:, :], k[..., 10:, :], v[..., 10:, :], initial_state=s)
        assert np.array_equal(got, want)
