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
