"""Honest randomness for the random-feature kinds: seed=None draws fresh entropy (as
la.random_features does), the seed drawn is kept in the returned state and reused on
resume, and one projection serves every head."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn.testing import assert_close


def _qkv(seed=0, shape=(2, 3, 8, 4)):
    r = np.random.default_rng(seed)
    return (0.5 * r.standard_normal(shape) for _ in range(3))


@pytest.mark.parametrize("kind", ["rfa", "performer"])
def test_seed_none_is_fresh_entropy_like_random_features(kind):
    q, k, v = _qkv()
    a = la.causal(q, k, v, kind, num_features=16)
    b = la.causal(q, k, v, kind, num_features=16)
    assert not np.array_equal(a, b)  # two fresh draws
    assert not np.array_equal(la.random_features(4, 8, seed=None),
                              la.random_features(4, 8, seed=None))
    np.testing.assert_array_equal(la.causal(q, k, v, kind, num_features=16, seed=7),
                                  la.causal(q, k, v, kind, num_features=16, seed=7))
    a = la.noncausal(q, k, v, kind, num_features=16)
    assert not np.array_equal(a, la.noncausal(q, k, v, kind, num_features=16))


@pytest.mark.parametrize("kind", ["rfa", "performer"])
def test_drawn_seed_is_kept_and_repeats_the_run(kind):
    q, k, v = _qkv(1)
    o, st = la.causal(q, k, v, kind, num_features=16, return_state=True)
    seed = int(st.extra["seed"])
    np.testing.assert_array_equal(la.causal(q, k, v, kind, num_features=16, seed=seed), o)
    # resuming without a seed reuses the state's: the stream equals one call
    o1, s1 = la.causal(q[..., :5, :], k[..., :5, :], v[..., :5, :], kind, num_features=16,
                       return_state=True)
    o2 = la.causal(q[..., 5:, :], k[..., 5:, :], v[..., 5:, :], kind, num_features=16,
                   initial_state=s1)
    full = la.causal(q, k, v, kind, num_features=16, seed=int(s1.extra["seed"]))
    assert_close(np.concatenate([o1, o2], -2), full, 1e-10)


def test_decoding_from_zeros_keeps_one_projection():
    q, k, v = _qkv(2)
    st = la.State.zeros("performer", (2, 3), 4, num_features=16)
    outs = []
    for t in range(8):
        o, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, num_features=16)
        outs.append(o)
    full = la.causal(q, k, v, "performer", num_features=16, seed=int(st.extra["seed"]))
    assert_close(np.stack(outs, -2), full, 1e-10)


def test_projection_is_shared_by_all_heads():
    """Heads with the same inputs give the same outputs: one projection for all heads."""
    q, k, v = _qkv(3, shape=(1, 1, 8, 4))
    rep = [np.repeat(x, 3, axis=1) for x in (q, k, v)]
    o = la.causal(*rep, "performer", num_features=16, seed=5)
    np.testing.assert_array_equal(o[:, 0], o[:, 1])
    np.testing.assert_array_equal(o[:, 0], o[:, 2])
    assert "every head" in la.causal.__doc__


def test_explicit_projection_keeps_no_seed():
    q, k, v = _qkv(4)
    W = la.random_features(4, 16, seed=1)
    _, st = la.causal(q, k, v, "performer", projection=W, return_state=True)
    assert "seed" not in st.extra
