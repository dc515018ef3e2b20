"""kernels/softmax: exact softmax attention against the NumPy oracle."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 200])
def test_softmax_parity(rng, dtype, causal, T):
    q, k, v = make_qkv(rng, T=T, D=16, E=9, dtype=dtype)
    o = la.softmax_attention(q, k, v, causal=causal)
    assert o.dtype == dtype
    assert_close(o, la.reference.softmax_attention(q, k, v, causal=causal), dtype)


def test_softmax_cross_attention_and_scale(rng):
    q, k, v = make_qkv(rng, T=10, S=33, D=8, E=4)
    o = la.softmax_attention(q, k, v, causal=False, scale=0.3)
    assert_close(o, la.reference.softmax_attention(q, k, v, causal=False, scale=0.3), np.float64)
    with pytest.raises(ValueError, match="causal attention needs as many keys"):
        la.softmax_attention(q, k, v, causal=True)


def test_softmax_large_logits_finite(rng):
    q, k, v = make_qkv(rng, T=50, D=8, E=4, dtype=np.float32, scale=100.0)
    assert np.isfinite(la.softmax_attention(q, k, v)).all()


# The kernel works in tiles of 64 queries x 256 keys: lengths around both, several key
# tiles (the running maximum rescales earlier tiles), odd head sizes, cross attention
# longer than a tile.
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T", [255, 256, 257, 600])
def test_softmax_tile_edges(rng, dtype, causal, T):
    q, k, v = make_qkv(rng, batch=(2,), T=T, D=7, E=5, dtype=dtype)
    o = la.softmax_attention(q, k, v, causal=causal)
    assert_close(o, la.reference.softmax_attention(q, k, v, causal=causal), dtype)


@pytest.mark.parametrize("T, S", [(3, 700), (300, 5), (65, 257)])
def test_softmax_cross_attention_tiles(rng, T, S):
    q, k, v = make_qkv(rng, batch=(2,), T=T, S=S, D=9, E=4)
    o = la.softmax_attention(q, k, v, causal=False, scale=0.4)
    assert_close(o, la.reference.softmax_attention(q, k, v, causal=False, scale=0.4),
                 np.float64)


def test_softmax_growing_maximum_across_key_tiles(rng):
    """Scores that grow along the keys: each key tile raises the row maximum, so every
    earlier tile's partial output is rescaled (float64 stays at ~1e-12)."""
    T, D = 600, 4
    q = np.ones((1, T, D))
    k = np.linspace(0.0, 3.0, T)[None, :, None] * np.ones((1, T, D))
    v = rng.standard_normal((1, T, 3))
    for causal in (True, False):
        want = la.reference.softmax_attention(q, k, v, causal=causal, scale=2.0)
        got = la.softmax_attention(q, k, v, causal=causal, scale=2.0)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_softmax_same_for_every_thread_count(rng):
    """One slice is split over query blocks when there are more threads than slices;
    each block is computed the same way whatever the split."""
    q, k, v = make_qkv(rng, batch=(1,), T=700, D=16, E=8, dtype=np.float32)
    prev = la.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            la.set_num_threads(n)
            outs.append(la.softmax_attention(q, k, v))
    finally:
        la.set_num_threads(prev)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
