"""Numerical robustness (docs/design/family.md §8-10): a long undecayed float32
stream within docs/design/family.md's bound, denominators near zero following the eps policy,
extreme decays and large-norm inputs staying finite for every kind that applies."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la

DECAY_KINDS = ["elu", "linear", "relu", "lightning", "retnet", "mamba2", "transnormer"]
MODES = ["recurrent", "chunked", "parallel"]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_long_undecayed_stream_float32():
    """T = 10^6, elu, D = E = 8, one head: float32 within 1e-5 sqrt(T / 65536) of float64,
    and within 1e-5 with a float64 initial_state (docs/design/family.md §9-10)."""
    T, D = 10**6, 8
    r = np.random.default_rng(5)
    q, k, v = (r.standard_normal((1, T, D)).astype(np.float32) for _ in range(3))
    ref = la.causal(*(x.astype(np.float64) for x in (q, k, v)), mode="chunked")
    bound = 1e-5 * np.sqrt(T / 65536)
    for mode in ("recurrent", "chunked"):
        o = la.causal(q, k, v, mode=mode)
        assert o.dtype == np.float32 and np.isfinite(o).all()
        assert _rel(o, ref) <= bound, mode
    st64 = la.State(np.zeros((1, D, D)), np.zeros((1, D)), 0, "elu")
    o = la.causal(q, k, v, mode="chunked", initial_state=st64)
    assert o.dtype == np.float32 and _rel(o, ref) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_all_negative_keys_guarded(mode, dtype):
    """den = 0 exactly: the 'add' rule gives num / (0 + eps) = 0, finite; eps = 0 gives the
    documented unguarded 0/0 = NaN."""
    r = np.random.default_rng(1)
    q = np.abs(r.standard_normal((2, 40, 4))).astype(dtype)
    k = -np.abs(r.standard_normal((2, 40, 4))).astype(dtype) - 0.1
    v = r.standard_normal((2, 40, 3)).astype(dtype)
    o = la.causal(q, k, v, "relu", mode=mode, chunk_size=16)
    assert np.isfinite(o).all() and not o.any()
    assert np.isfinite(la.noncausal(q, k, v, "relu")).all()
    assert np.isnan(la.causal(q, k, v, "relu", mode=mode, chunk_size=16, eps=0.0)).all()


@pytest.mark.parametrize("mode", MODES)
def test_signed_features_abs_clamp(mode):
    """rfa's signed features can cancel the denominator: abs_clamp keeps |den| >= eps."""
    r = np.random.default_rng(2)
    q = r.standard_normal((2, 64, 4))
    k = np.concatenate([q[:, :32], -q[:, :32]], axis=1)  # antipodal keys
    v = r.standard_normal((2, 64, 3))
    for eps in (1e-3, 1e-6):
        o = la.causal(q, k, v, "rfa", mode=mode, chunk_size=16, num_features=16, eps=eps)
        assert np.isfinite(o).all()
        assert np.abs(o).max() <= np.abs(v).max() * 64 * 2 / eps
    assert np.isfinite(la.noncausal(q, k, v, "rfa", num_features=16)).all()
    # identity features (linear kind, div): q . k = 0 exactly at orthogonal pairs
    qo = np.zeros((1, 8, 2))
    qo[..., 0] = 1
    ko = np.zeros((1, 8, 2))
    ko[..., 1] = 1
    o = la.causal(qo, ko, v[:1, :8], "linear", normalize="div", mode=mode)
    assert np.isfinite(o).all() and not o.any()


@pytest.mark.parametrize("g", [-30.0, -np.inf, -1e30])
@pytest.mark.parametrize("kind", DECAY_KINDS)
def test_extreme_decay_finite(kind, g):
    """Per-token log-decay -30, -inf, -1e30: finite in every mode; with -30 (or below) at
    every step only the diagonal survives (docs/design/family.md §10 test 4)."""
    r = np.random.default_rng(3)
    q, k = (r.standard_normal((2, 2, 70, 4)) for _ in range(2))
    v = r.standard_normal((2, 2, 70, 4))
    dec = np.full((2, 2, 70), g)
    outs = [la.causal(q, k, v, kind, mode=m, chunk_size=64, decay=dec) for m in MODES]
    for o in outs:
        assert np.isfinite(o).all(), kind
        la.testing.assert_close(o, outs[0], rtol=1e-10)
    if kind == "elu":
        la.testing.assert_close(outs[0], v, rtol=1e-6)  # div mode: o_t = v_t


@pytest.mark.parametrize("g", [-30.0, -np.inf, -1e30])
def test_extreme_decay_per_head_and_gate(g):
    r = np.random.default_rng(4)
    q, k, v = (r.standard_normal((2, 3, 50, 4)) for _ in range(3))
    for m in MODES:
        o = la.causal(q, k, v, "retnet", mode=m, chunk_size=16, decay=np.full((2, 3), g))
        assert np.isfinite(o).all()
    gate = np.full((2, 3, 50), 0.0)  # g = 0: log g = -inf, a reset every token
    for m in ("recurrent", "chunked"):
        o = la.causal(q, k, v, "rfa", mode=m, chunk_size=16, num_features=8, gate=gate)
        assert np.isfinite(o).all()


def _large_inputs(dtype, E=None):
    r = np.random.default_rng(6)
    x = r.standard_normal((3, 2, 40, 4))
    x *= 50 / np.linalg.norm(x, axis=-1, keepdims=True)  # |x| = 50
    q, k = x.astype(dtype), np.roll(x, 1, axis=-2).astype(dtype)
    v = r.standard_normal((3, 2, 40, 4 if E is None else E)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("kind", sorted(la.kinds()))
def test_large_norm_inputs_finite(kind):
    """|q| = |k| = 50 float32: every form of every kind stays finite (exponential kinds
    work in the log domain / with running maxima)."""
    q, k, v = _large_inputs(np.float32)
    d = la.kinds()[kind]
    kw = {"cosformer": {"horizon": 64}, "performer": {"num_features": 16},
          "rfa": {"num_features": 16}, "mamba2": {"decay": np.full((3, 2, 40), -0.1)},
          "lara": {"landmarks": 8}}.get(kind, {})
    for m in d["causal"]:
        o = la.causal(q, k, v, kind, mode=m, chunk_size=16, **kw)
        assert np.isfinite(o).all(), (kind, m)
    if d["noncausal"]:
        nkw = {n: x for n, x in kw.items() if n != "decay"}
        assert np.isfinite(la.noncausal(q, k, v, kind, **nkw)).all(), kind
    assert np.isfinite(la.softmax_attention(q, k, v)).all()
