"""The glue's scalar rule: every outer-loop item of a private gufunc is computed with its
own options (scale, eps, flags, chunk, t0, horizon, ...).  ``_causal_recurrent(...,
scale=np.array([1.0, 2.0]))`` used to take item 0's scale for both items; now each item
equals the call made for it alone.  0-d *data* operands (Performer's running maximum) are
read per item too."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn import _core

T, F, E = 9, 4, 3


def _causal_args(rng, n=2, dtype=np.float64):
    q, k = (rng.standard_normal((n, T, F)).astype(dtype) for _ in range(2))
    v = rng.standard_normal((n, T, E)).astype(dtype)
    g = -rng.uniform(0.0, 0.3, (n, T))
    S0 = rng.standard_normal((n, F, E)).astype(dtype)
    z0 = np.abs(rng.standard_normal((n, F))).astype(dtype)
    return [q, k, v, g, S0, z0]


def _item(args, i, n):
    return [a[i] if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == n else a
            for a in args]


def _assert_per_item(fn, args, n=2):
    both = fn(*args)
    both = both if isinstance(both, tuple) else (both,)
    for i in range(n):
        one = fn(*_item(args, i, n))
        one = one if isinstance(one, tuple) else (one,)
        for a, b in zip(both, one):
            assert np.array_equal(a[i], b), (fn.__name__, i)


@pytest.mark.parametrize("fn", ["_causal_recurrent", "_causal_chunked", "_causal_parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_per_item(fn, dtype):
    """The case from the issue: scale=[1, 2] used 1.0 for both items."""
    args = _causal_args(np.random.default_rng(0), dtype=dtype)
    call = getattr(_core, fn)
    full = args + [np.array([1.0, 2.0]), 0.0, np.int64(0), np.int64(4)]
    _assert_per_item(call, full)
    # and item 1 really used 2.0: it differs from the scale-1 result
    o2 = call(*args, np.array([1.0, 2.0]), 0.0, np.int64(0), np.int64(4))[0]
    o1 = call(*args, 1.0, 0.0, np.int64(0), np.int64(4))[0]
    assert np.array_equal(o2[0], o1[0]) and not np.array_equal(o2[1], o1[1])


@pytest.mark.parametrize("opt", ["eps", "flags", "chunk", "all"])
def test_every_option_per_item(opt):
    args = _causal_args(np.random.default_rng(1))
    div_elu = np.int64(1 | 1 << 4 | 1 << 8 | 1 << 12)  # elu maps, div, decayed
    opts = {"scale": 0.7, "eps": 1e-6, "flags": div_elu, "chunk": np.int64(4)}
    vary = {"eps": np.array([1e-6, 0.5]), "flags": np.array([div_elu, 0], np.int64),
            "chunk": np.array([4, 3], np.int64), "scale": np.array([0.7, 1.3])}
    for name in (vary if opt == "all" else [opt]):
        opts[name] = vary[name]
    _assert_per_item(_core._causal_chunked, args + list(opts.values()))


def test_runs_of_equal_options():
    """Options varying along the loop in runs: each run is computed with its own."""
    rng = np.random.default_rng(2)
    n = 7
    q, k, v = (rng.standard_normal((n, T, F)) for _ in range(3))
    scale = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 3.0])
    both = _core._noncausal(q, k, v, scale, 0.0, np.int64(0), np.int64(4))
    for i in range(n):
        one = _core._noncausal(q[i], k[i], v[i], scale[i], 0.0, np.int64(0), np.int64(4))
        assert np.array_equal(both[i], one)


def test_uniform_option_array_equals_scalar():
    args = _causal_args(np.random.default_rng(3))
    a = _core._causal_chunked(*args, 0.5, 0.0, np.int64(0), np.int64(4))
    b = _core._causal_chunked(*args, np.array([0.5, 0.5]), np.zeros(2),
                              np.zeros(2, np.int64), np.full(2, 4, np.int64))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_other_glue_files_follow_the_same_rule():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3))
    W = rng.standard_normal((4, 3))
    _assert_per_item(_core._cosformer_features, [x, np.array([0, 3], np.int64),
                                                 np.array([16.0, 9.0]), np.array([1.0, 0.5])])
    _assert_per_item(_core._rfa_features, [x, W, np.array([1.0, 2.0])])
    _assert_per_item(_core._performer_features_2,
                     [x, W, np.array([1.0, 0.3]), 0.0, np.array([1, 5], np.int64)])
    _assert_per_item(_core._featmap, [x, np.array([[1.0], [2.0]]), np.array([[1], [2]])])
    _assert_per_item(_core._featmap, [x[0], np.array([1.0, 2.0, 0.5, 1.0, 3.0]),
                                      np.int64(1)], n=5)
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    _assert_per_item(_core._softmax, [q, k, v, np.array([1.0, 0.2]), np.array([0, 1])])
    _assert_per_item(_core._noncausal, [q, k, v, np.array([1.0, 3.0]), 0.0, np.int64(0),
                                        np.int64(4)])


def test_zero_d_data_operands_are_read_per_item():
    """Performer's mu0 (a state) differs per item, and each item uses its own."""
    rng = np.random.default_rng(5)
    n, t, d, e, m = 2, 6, 3, 2, 4
    q, k = (rng.standard_normal((n, t, d)) for _ in range(2))
    v = rng.standard_normal((n, t, e))
    W = rng.standard_normal((m, d))
    S0 = np.abs(rng.standard_normal((n, m, e)))
    z0 = np.abs(rng.standard_normal((n, m))) + 1.0
    _assert_per_item(_core._performer_recurrent,
                     [q, k, v, W, S0, z0, np.array([0.0, 0.7]), 1.0, 1e-6, np.int64(0),
                      np.int64(4)])


def test_failure_in_a_later_run_raises():
    """A run that fails (here: an invalid Performer feature kind) raises for the call."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    W = rng.standard_normal((4, 3))
    out = np.full((2, 5, 3), 7.0)
    with pytest.raises(ValueError, match="_performer_noncausal"):
        _core._performer_noncausal(q, k, v, W, 1.0, 0.0, np.array([0, 3], np.int64),
                                   np.int64(4), out=out)
    assert np.all(out[1] == 7.0)  # the failing run wrote nothing


def test_public_api_unaffected():
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 3, 9, 4)) for _ in range(3))
    la.testing.assert_close(la.causal(q, k, v, scale=0.5, mode="chunked", chunk_size=4),
                            la.reference.causal(q, k, v, scale=0.5), rtol=1e-10)
