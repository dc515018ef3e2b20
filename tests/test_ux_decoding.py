"""Decoding from nothing: la.State.zeros, la.step from state=None (also in place), the
kind taken from the state, and mamba2's per-token decay shaped like q_t."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn.testing import assert_close


def _qkv(seed=0, shape=(2, 3, 9, 4)):
    r = np.random.default_rng(seed)
    return (r.standard_normal(shape) for _ in range(3))


def test_state_zeros_structure():
    st = la.State.zeros("elu", (2, 3), 4, 5)
    assert st.kind == "elu" and st.t == 0
    assert st.S.shape == (2, 3, 4, 5) and st.z.shape == (2, 3, 4) and not st.S.any()
    assert la.State.zeros("retnet", (2,), 4).z is None  # no denominator
    assert la.State.zeros("elu", 3, 4, dtype=np.float32).S.dtype == np.float32
    c = la.State.zeros("cosformer", (2,), 4, horizon=32)
    assert c.S.shape == (2, 8, 4) and int(c.extra["horizon"]) == 32
    with pytest.raises(ValueError, match="horizon"):
        la.State.zeros("cosformer", (2,), 4)
    with pytest.raises(ValueError, match="did you mean 'relu'"):
        la.State.zeros("relus", (2,), 4)


def test_inplace_decoding_from_an_empty_state():
    q, k, v = _qkv()
    full = la.causal(q, k, v, "elu")
    st = la.State.zeros("elu", (2, 3), 4)
    S = st.S
    outs = []
    for t in range(q.shape[-2]):
        o, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, inplace=True)
        outs.append(o)
    assert st.S is S  # updated where it is
    assert_close(np.stack(outs, -2), full, 1e-12)


def test_step_from_none_inplace_starts_a_state():
    q, k, v = _qkv()
    o, st = la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None, kind="elu", inplace=True)
    assert isinstance(st, la.State) and st.t == 1
    o2, st2 = la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], st, inplace=True)
    assert st2 is st and st.t == 2
    assert_close(np.stack([o, o2], -2), la.causal(q[..., :2, :], k[..., :2, :], v[..., :2, :]),
                 1e-12)


def test_step_takes_the_kind_from_the_state():
    q, k, v = _qkv()
    _, st = la.causal(q[..., :5, :], k[..., :5, :], v[..., :5, :], "retnet", return_state=True)
    o, st = la.step(q[..., 5, :], k[..., 5, :], v[..., 5, :], st)  # no kind=
    assert st.kind == "retnet"
    ref = la.causal(q[..., :6, :], k[..., :6, :], v[..., :6, :], "retnet")[..., 5, :]
    assert_close(o, ref, 1e-12)
    with pytest.raises(ValueError, match="state comes from kind 'retnet', not 'elu'"):
        la.step(q[..., 6, :], k[..., 6, :], v[..., 6, :], st, kind="elu")


@pytest.mark.parametrize("inplace", [False, True])
def test_mamba2_step_decay_shaped_like_q_t(inplace):
    q, k, v = _qkv()
    g = -0.2 * np.abs(np.random.default_rng(3).standard_normal((2, 3, 9)))
    full = la.causal(q, k, v, "mamba2", decay=g)
    st = la.State.zeros("mamba2", (2, 3), 4)
    outs = []
    for t in range(9):
        o, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, decay=g[..., t],
                        inplace=inplace)
        outs.append(o)
    assert_close(np.stack(outs, -2), full, 1e-12)


@pytest.mark.parametrize("kind", ["lightning", "retnet", "mamba2", "cosformer", "rfa"])
def test_inplace_step_updates_the_arrays_of_every_generic_kind(kind):
    """Kinds that end in the generic operator update state.S where it is, as elu does."""
    q, k, v = _qkv(4)
    kw = {"cosformer": {"horizon": 32}, "rfa": {"seed": 1, "num_features": 8}}.get(kind, {})
    g = -0.1 * np.ones((2, 3, 9)) if kind == "mamba2" else None
    st = la.State.zeros(kind, (2, 3), 4, **kw)
    S = st.S
    outs = []
    for t in range(9):
        step_kw = dict(kw, decay=g[..., t]) if g is not None else kw
        o, st2 = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, inplace=True, **step_kw)
        assert st2 is st and st.S is S
        outs.append(o)
    full = la.causal(q, k, v, kind, decay=g, **kw) if g is not None else \
        la.causal(q, k, v, kind, **kw)
    assert_close(np.stack(outs, -2), full, 1e-12)
