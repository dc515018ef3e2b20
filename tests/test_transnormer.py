"""kind "transnormer" (docs/design/kinds.md §6): NormAttention (t2 / t1) and DiagAttention."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

MODES = ["recurrent", "chunked", "parallel"]
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["t2", "t1"])
@pytest.mark.parametrize("normalize", [None, "none"])
def test_norm_attention_parity(rng, mode, dtype, variant, normalize):
    q, k, v = make_qkv(rng, T=45, D=6, E=5, dtype=dtype, scale=0.5)
    o = la.causal(q, k, v, kind="transnormer", mode=mode, variant=variant,
                  normalize=normalize, chunk_size=16)
    assert o.dtype == dtype and np.isfinite(o).all()
    assert_close(o, la.reference.causal(q, k, v, kind="transnormer", variant=variant,
                                        normalize=normalize), dtype)


@pytest.mark.parametrize("chunk", [16, 64, 100])
def test_prenorm_numerators_agree(rng, chunk):
    q, k, v = make_qkv(rng, T=150, D=5, E=4, dtype=np.float32)
    rec = la.causal(q, k, v, kind="transnormer", normalize="none", mode="recurrent")
    for mode in ("chunked", "parallel"):
        la.testing.assert_close(la.causal(q, k, v, kind="transnormer", normalize="none",
                                          mode=mode, chunk_size=chunk), rec, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", ["t2", "t1"])
def test_norm_attention_noncausal_and_decay(rng, dtype, variant):
    q, k, v = make_qkv(rng, T=30, S=45, D=6, E=5, dtype=dtype)
    o = la.noncausal(q, k, v, kind="transnormer", variant=variant)
    assert_close(o, la.reference.noncausal(q, k, v, kind="transnormer", variant=variant), dtype)
    q, k, v = make_qkv(rng, T=30, D=6, E=5, dtype=dtype)
    g = -rng.uniform(0, 0.3, (2, 3, 30))
    o = la.causal(q, k, v, kind="transnormer", variant=variant, decay=g, chunk_size=8)
    assert_close(o, la.reference.causal(q, k, v, kind="transnormer", variant=variant,
                                        decay=g), dtype)


def test_norm_scale_invariance_at_feature_level(rng):
    q, k, v = make_qkv(rng, T=40, D=6, E=5)
    # well-conditioned: features away from 0 so that rms(num) >> eps / c
    fq, fk = la.features.elu(np.abs(q) + 0.5), la.features.elu(np.abs(k) + 0.5)
    base = la.causal(fq, fk, v, kind="linear", normalize="norm")
    for c in (1e-3, 1e3):
        la.testing.assert_close(la.causal(c * fq, fk, v, kind="linear", normalize="norm"),
                                base, rtol=1e-6)
    # with eps = 0 only rounding is left, whatever the features
    fq, fk = la.features.elu(q), la.features.elu(k)
    base = la.causal(fq, fk, v, kind="linear", normalize="norm", eps=0)
    for c in (1e-3, 1e3):
        la.testing.assert_close(la.causal(c * fq, fk, v, kind="linear", normalize="norm",
                                          eps=0), base, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["t2", "t1"])
@pytest.mark.parametrize("w,T", [(16, 45), (7, 7), (64, 30), (True, 130)])
def test_diag_parity(rng, mode, dtype, variant, w, T):
    q, k, v = make_qkv(rng, T=T, D=6, E=5, dtype=dtype)
    o = la.causal(q, k, v, kind="transnormer", diag_block=w, variant=variant, mode=mode)
    assert o.dtype == dtype and np.isfinite(o).all()
    assert_close(o, la.reference.causal(q, k, v, kind="transnormer", diag_block=w,
                                        variant=variant), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", ["t2", "t1"])
@pytest.mark.parametrize("T,S", [(40, 40), (30, 50), (50, 20)])
def test_diag_noncausal(rng, dtype, variant, T, S):
    q, k, v = make_qkv(rng, T=T, S=S, D=6, E=5, dtype=dtype)
    o = la.noncausal(q, k, v, kind="transnormer", diag_block=16, variant=variant)
    assert_close(o, la.reference.noncausal(q, k, v, kind="transnormer", diag_block=16,
                                           variant=variant), dtype)


def test_diag_explicit_softmax(rng):
    """T2 written out: causal softmax inside blocks of w absolute positions."""
    w, T = 8, 20
    q, k, v = make_qkv(rng, batch=(), T=T, D=4, E=3)
    o = la.causal(q, k, v, kind="transnormer", diag_block=w)
    ref = np.zeros_like(o)
    for t in range(T):
        s = np.arange((t // w) * w, t + 1)
        lo = q[t] @ k[s].T / 2.0
        p = np.exp(lo - lo.max())
        ref[t] = p @ v[s] / p.sum()
    assert_close(o, ref, np.float64)


@pytest.mark.parametrize("variant", ["t2", "t1"])
def test_diag_locality(rng, variant):
    w, T, s = 16, 64, 21
    q, k, v = make_qkv(rng, T=T, D=4, E=3)
    a = la.causal(q, k, v, kind="transnormer", diag_block=w, variant=variant)
    k2, v2 = k.copy(), v.copy()
    k2[..., s, :] += 1.0
    v2[..., s, :] -= 2.0
    b = la.causal(q, k2, v2, kind="transnormer", diag_block=w, variant=variant)
    t = np.arange(T)
    changed = (t // w == s // w) & (t >= s)
    assert (a[..., ~changed, :] == b[..., ~changed, :]).all()
    if variant == "t2":  # (T1's ReLU may zero a perturbed score)
        assert (np.abs(a - b)[..., changed, :].max(axis=-1) > 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", ["t2", "t1"])
@pytest.mark.parametrize("splits", [[1], [15, 16, 17], [5, 40], [31, 32, 64]])
def test_diag_streaming(rng, dtype, variant, splits):
    w, T = 16, 70
    q, k, v = make_qkv(rng, batch=(2, 3), T=T, D=4, E=3, dtype=dtype)
    k = k[:, :1]  # broadcast keys across heads
    full = la.causal(q, k, v, kind="transnormer", diag_block=w, variant=variant)
    edges = [0] + splits + [T]
    st, outs = None, []
    for a, b in zip(edges[:-1], edges[1:]):
        o, st = la.causal(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :],
                          kind="transnormer", diag_block=w, variant=variant,
                          initial_state=st, return_state=True)
        outs.append(o)
        assert st.t == b and st.S is None
        assert st.extra["keys"].shape == (2, 3, b % w, 4)
    assert_close(np.concatenate(outs, -2), full, dtype)
    st, outs = None, []
    for t in range(20):
        o, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, kind="transnormer",
                        diag_block=w, variant=variant)
        outs.append(o)
    assert_close(np.stack(outs, -2), full[..., :20, :], dtype)
    st2 = la.State.from_dict(st.to_dict())
    o1 = la.causal(q[..., 20:, :], k[..., 20:, :], v[..., 20:, :], kind="transnormer",
                   diag_block=w, variant=variant, initial_state=st2)
    assert_close(o1, full[..., 20:, :], dtype)


def test_diag_layout(rng):
    q, k, v = make_qkv(rng, T=40, D=4, E=3)
    o = la.causal(q, k, v, kind="transnormer", diag_block=8)
    ob = la.causal(*(np.swapaxes(x, 1, 2) for x in (q, k, v)), kind="transnormer",
                   diag_block=8, layout="bthd")
    assert_close(np.swapaxes(ob, 1, 2), o, np.float64)


def test_errors(rng):
    q, k, v = make_qkv(rng, T=20, D=4, E=3)
    with pytest.raises(TypeError, match="decay"):
        la.causal(q, k, v, kind="transnormer", diag_block=8, decay=np.zeros(3))
    with pytest.raises(ValueError, match="diag_block"):
        la.causal(q, k, v, kind="transnormer", diag_block=0)
    with pytest.raises(TypeError, match="diag_block"):
        la.causal(q, k, v, kind="transnormer", diag_block=2.5)
    with pytest.raises(ValueError, match="variant"):
        la.causal(q, k, v, kind="transnormer", variant="t3")
    with pytest.raises(ValueError, match="normalize"):
        la.causal(q, k, v, kind="transnormer", diag_block=8, variant="t1", normalize="div")
    _, s = la.causal(q, k, v, kind="transnormer", diag_block=8, return_state=True)
    with pytest.raises(ValueError, match="diag_block=16 does not match"):
        la.causal(q, k, v, kind="transnormer", diag_block=16, initial_state=s)
    _, sn = la.causal(q, k, v, kind="transnormer", return_state=True)
    with pytest.raises(ValueError, match="block cache"):
        la.causal(q, k, v, kind="transnormer", diag_block=8, initial_state=sn)
    with pytest.raises(TypeError, match="options"):
        la.causal(q, k, v, kind="transnormer", window=3)
