"""Tests driven by the kind registry (bottleneck's style): every registered kind, from
its ``example_kwargs``, in every mode and dtype.

A new kind is covered here by registering it with an ``example_kwargs``; nothing in
this file names a kind.  Checked for each kind: agreement with ``la.reference`` with
default arguments (so a default that drifts between the oracle and the kind fails),
inputs unmodified by a successful call, ``out=`` honoured (the same object, the same
values), ``layout="bthd"`` equal to the default layout, and the contract slots.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn import _registry as reg
from linattn.testing import assert_close, tolerance

KINDS = sorted(la.kinds())
DTYPES = [np.float32, np.float64]


def _forms(kind):
    spec = reg.get(kind)
    forms = [("causal", m) for m in ("auto",) + spec.causal_modes] if spec.causal_modes else []
    if spec.noncausal:
        forms.append(("noncausal", None))
    return forms


CASES = [(kind, entry, mode) for kind in KINDS for entry, mode in _forms(kind)]
IDS = [f"{k}-{e}-{m}" if m else f"{k}-{e}" for k, e, m in CASES]


def _split(ex):
    ex = dict(ex)
    return ex.pop("q"), ex.pop("k"), ex.pop("v"), ex


def _run(entry, mode, q, k, v, kind, **kw):
    if entry == "causal":
        return la.causal(q, k, v, kind, mode=mode, **kw)
    return la.noncausal(q, k, v, kind, **kw)


def _reference(entry, q, k, v, kind, **kw):
    f = la.reference.causal if entry == "causal" else la.reference.noncausal
    return f(q, k, v, kind=kind, **kw)


def _bthd(x):
    return np.ascontiguousarray(np.swapaxes(x, -3, -2))


@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind):
    spec = reg.get(kind)
    assert spec.forward is None or callable(spec.forward)
    for slot in ("backward", "transition", "combine", "read_out"):
        assert getattr(spec, slot) is None or callable(getattr(spec, slot)), slot
    assert spec.causal_modes or spec.noncausal, "a kind needs at least one form"
    ex = spec.example(0)
    assert {"q", "k", "v"} <= set(ex)
    assert set(ex) - {"q", "k", "v"} <= set(spec.options) | set(spec.keywords), \
        "example_kwargs may only use the kind's own options and keywords"


@pytest.mark.parametrize("kind", KINDS)
def test_filled_slots_work(kind):
    """The slots the gradient and block-scan modules fill: a backward gives the
    gradients la.kinds() promises, and transition + combine + read_out of two blocks
    equal one call."""
    spec = reg.get(kind)
    ex = spec.example(0, np.float64)
    q, k, v = ex.pop("q"), ex.pop("k"), ex.pop("v")
    info = la.kinds()[kind]
    assert (info["grad"] is None) == (spec.backward is None)
    assert info["block_scan"] == (spec.combine is not None)
    if spec.backward is not None:
        o, vjp = spec.backward(q, k, v, **ex)
        grads = vjp(np.ones_like(o))
        for name in ("q", "k", "v"):
            assert name in info["grad"]["wrt"] and grads[name].shape == locals()[name].shape
    if spec.combine is not None and spec.causal_modes and "decay" not in ex:
        T = q.shape[-2]
        h = T // 2
        first = spec.transition(q[..., :h, :], k[..., :h, :], v[..., :h, :], **ex)
        second = spec.transition(q[..., h:, :], k[..., h:, :], v[..., h:, :], start=h, **ex)
        whole, final = la.causal(q, k, v, kind, return_state=True, **ex)
        both = spec.combine(first, second)
        la.testing.assert_close(both.S, final.S)
        tail = spec.read_out(q[..., h:, :], k[..., h:, :], v[..., h:, :], first, **ex)
        la.testing.assert_close(tail, whole[..., h:, :])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind,entry,mode", CASES, ids=IDS)
def test_default_arguments_match_reference(kind, entry, mode, dtype):
    q, k, v, kw = _split(reg.get(kind).example(1, dtype))
    o = _run(entry, mode, q, k, v, kind, **kw)
    assert o.dtype == dtype and o.shape == q.shape[:-1] + (v.shape[-1],)
    ref = _reference(entry, q.astype(np.float64), k.astype(np.float64),
                     k.astype(np.float64) if v is k else v.astype(np.float64), kind, **kw)
    assert_close(o, ref, tolerance(dtype), err_msg=f"{kind} {entry} {mode}")


@pytest.mark.parametrize("kind,entry,mode", CASES, ids=IDS)
def test_inputs_unmodified(kind, entry, mode):
    q, k, v, kw = _split(reg.get(kind).example(2))
    saved = [x.copy() for x in (q, k, v)]
    saved_kw = {n: x.copy() for n, x in kw.items() if isinstance(x, np.ndarray)}
    _run(entry, mode, q, k, v, kind, **kw)
    for a, b in zip((q, k, v), saved):
        assert np.array_equal(a, b)
    for n, x in saved_kw.items():
        assert np.array_equal(kw[n], x), n


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind,entry,mode", CASES, ids=IDS)
def test_out_honoured(kind, entry, mode, dtype):
    q, k, v, kw = _split(reg.get(kind).example(3, dtype))
    o = _run(entry, mode, q, k, v, kind, **kw)
    out = np.full(o.shape, np.nan, dtype)
    r = _run(entry, mode, q, k, v, kind, out=out, **kw)
    assert r is out
    assert np.array_equal(out, o)


@pytest.mark.parametrize("kind,entry,mode", CASES, ids=IDS)
def test_bthd_layout_equal(kind, entry, mode):
    q, k, v, kw = _split(reg.get(kind).example(4))
    o = _run(entry, mode, q, k, v, kind, **kw)
    kb = _bthd(k)
    vb = kb if v is k else _bthd(v)
    kwb = dict(kw)
    if isinstance(kw.get("decay"), np.ndarray) and kw["decay"].ndim == q.ndim - 1:
        kwb["decay"] = np.ascontiguousarray(np.swapaxes(kw["decay"], -1, -2))  # (B, T, H)
    ob = _run(entry, mode, _bthd(q), kb, vb, kind, layout="bthd", **kwb)
    assert ob.shape == _bthd(o).shape
    assert np.array_equal(ob, _bthd(o))


@pytest.mark.parametrize("kind", [k for k in KINDS if reg.get(k).causal_modes])
def test_state_zeros_is_the_empty_stream(kind):
    """la.State.zeros then la.step equals one causal call, for every causal kind."""
    q, k, v, kw = _split(reg.get(kind).example(5))
    T = q.shape[-2]
    decay = kw.pop("decay", None)
    st = la.State.zeros(kind, q.shape[:-2], q.shape[-1], None if v is k else v.shape[-1],
                        **kw)
    assert st.t == 0 and st.kind == kind
    outs = []
    for t in range(T):
        step_kw = dict(kw)
        if decay is not None:
            step_kw["decay"] = decay[..., t]
        o, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, **step_kw)
        outs.append(o)
    full = la.causal(q, k, v, kind, mode="recurrent", decay=decay, **kw) if decay is not None \
        else la.causal(q, k, v, kind, mode="recurrent", **kw)
    assert st.t == T
    assert_close(np.stack(outs, -2), full, 1e-12)
