"""kind "mamba2" (docs/design/kinds.md §9): SSD as linear attention with q = C, k = B,
v = dt * x and the per-token decay dt * A."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close

MODES = ["recurrent", "chunked", "parallel"]


def ssd_inputs(rng, b=2, T=70, H=8, P=6, N=5, G=1, dtype=np.float64):
    x = rng.standard_normal((b, T, H, P))
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(0.5), (b, T, H)))
    A = -np.exp(np.log(rng.uniform(1, 16, H)))
    B = rng.standard_normal((b, T, G, N))
    C = rng.standard_normal((b, T, G, N))
    return [a.astype(dtype) for a in (x, dt)] + [A] + [a.astype(dtype) for a in (B, C)]


def to_linattn(x, dt, A, B, C):
    """Mamba layout -> linattn: q = C, k = B (b, G, 1, T, N), v = dt x (b, G, H/G, T, P),
    decay = dt A (b, G, H/G, T)."""
    b, T, H, P = x.shape
    G = B.shape[2]
    v = (dt[..., None] * x).transpose(0, 2, 1, 3).reshape(b, G, H // G, T, P)
    g = (dt * A).transpose(0, 2, 1).reshape(b, G, H // G, T)
    q = C.transpose(0, 2, 1, 3)[:, :, None]
    k = B.transpose(0, 2, 1, 3)[:, :, None]
    return q, k, v, g


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("G", [1, 2])
def test_direct_transcription(rng, mode, dtype, G):
    x, dt, A, B, C = ssd_inputs(rng, G=G, dtype=dtype)
    q, k, v, g = to_linattn(x, dt, A, B, C)
    o, st = la.causal(q, k, v, kind="mamba2", decay=g, mode=mode, chunk_size=16,
                      return_state=True)
    assert o.dtype == dtype
    y, h = la.reference.decay.mamba2_loop(x, dt, A, B, C)
    b, T, H, P = x.shape
    assert_close(o.reshape(b, H, T, P).transpose(0, 2, 1, 3), y, dtype)
    # state.S = H^T (N x P); Mamba's (P, N) state is its transpose
    assert_close(np.swapaxes(st.S, -1, -2).reshape(b, H, P, -1), h, dtype)
    assert_close(o, la.reference.causal(q, k, v, kind="mamba2", decay=g), dtype)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 100, 256, 1000])
def test_chunked_equals_recurrent(rng, chunk):
    q, k, v, g = to_linattn(*ssd_inputs(rng, T=300, H=4))
    rec = la.causal(q, k, v, kind="mamba2", decay=g, mode="recurrent")
    for mode in ("chunked", "parallel"):
        assert_close(la.causal(q, k, v, kind="mamba2", decay=g, mode=mode, chunk_size=chunk),
                     rec, np.float64)


def test_limits(rng):
    x, dt, A, B, C = ssd_inputs(rng, T=40, H=2)
    q, k, v, _ = to_linattn(x, dt, A, B, C)
    # dt -> 0: a -> 1 and the input term -> 0: the state is unchanged
    _, s0 = la.causal(q[..., :20, :], k[..., :20, :], v[..., :20, :], kind="mamba2",
                      decay=np.zeros(v.shape[:-1])[..., :20], return_state=True)
    tiny = 1e-12
    _, s1 = la.causal(q[..., 20:, :], k[..., 20:, :], tiny * v[..., 20:, :], kind="mamba2",
                      decay=tiny * np.full(v.shape[:-1], -1.0)[..., 20:], initial_state=s0,
                      return_state=True)
    la.testing.assert_close(s1.S, s0.S, rtol=1e-9)
    # dt |A| >> 1: memoryless, h_t = dt B x_t
    o = la.causal(q, k, v, kind="mamba2", decay=np.full(v.shape[:-1], -50.0), chunk_size=16)
    diag = np.sum(q * k, -1, keepdims=True) * v
    la.testing.assert_close(o, diag, rtol=1e-6)


@pytest.mark.parametrize("split", [1, 15, 16, 17, 33])
def test_split_and_resume(rng, split):
    q, k, v, g = to_linattn(*ssd_inputs(rng, T=60, H=4))
    full = la.causal(q, k, v, kind="mamba2", decay=g, chunk_size=16)
    sl = lambda a, s: a[..., s, :]  # noqa: E731
    o1, s1 = la.causal(sl(q, slice(0, split)), sl(k, slice(0, split)),
                       sl(v, slice(0, split)), kind="mamba2", decay=g[..., :split],
                       chunk_size=16, return_state=True)
    o2 = la.causal(sl(q, slice(split, None)), sl(k, slice(split, None)),
                   sl(v, slice(split, None)), kind="mamba2", decay=g[..., split:],
                   chunk_size=16, initial_state=s1)
    assert_close(np.concatenate([o1, o2], -2), full, np.float64)


def test_errors(rng):
    q, k, v, g = to_linattn(*ssd_inputs(rng, T=10, H=2))
    with pytest.raises(ValueError, match="requires decay"):
        la.causal(q, k, v, kind="mamba2")
    with pytest.raises(ValueError, match="per-token decay"):
        la.causal(q, k, v, kind="mamba2", decay=np.full((2, 1, 2), -0.1))
    with pytest.raises(ValueError, match="<= 0"):
        la.causal(q, k, v, kind="mamba2", decay=-g)
    with pytest.raises(ValueError, match="no non-causal form"):
        la.noncausal(q, k, v, kind="mamba2")
