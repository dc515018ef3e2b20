"""Repeated small ``la.causal`` calls: the plans that serve them (``_api._PLANS``).

A call with the kind, options, dtypes and shapes of an earlier successful call is served
by the kind's plan (everything that depends only on those resolved once).  Checked here:
plan-served calls agree with ``la.reference`` (outputs, and states by resuming from
them), every check whose outcome depends on the values still runs (with the full path's
message), options of equal value but another type are not confused, a plan holds no
input array, and the calls a plan must not serve (another thread count, keys and values
one array or not, a fresh seed) take the full path.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import linattn as la
from linattn import _api
from linattn import _registry as reg
from linattn.testing import assert_close, tolerance

CAUSAL_KINDS = [k for k in sorted(la.kinds()) if reg.get(k).causal_modes]
DTYPES = [np.float32, np.float64]


def _split(ex):
    """q, k, v and the options of an example call; an array option (LAVO's bases, an
    option that is not planned) is dropped where it equals the kind's default."""
    ex = dict(ex)
    if "bases" in ex:  # LAVO's default bases; the oracle takes them explicitly (_ref)
        np.testing.assert_array_equal(ex.pop("bases"), _lavo_bases(ex["q"].shape[-1]))
    return ex.pop("q"), ex.pop("k"), ex.pop("v"), ex


def _lavo_bases(d):
    return la.lavo_bases(min(d, 64), d, seed=0)


def _ref(q, k, v, kind, **kw):
    f64 = [x.astype(np.float64) for x in (q, k)]
    v64 = f64[1] if v is k else v.astype(np.float64)
    if kind == "lavo":
        kw.setdefault("bases", _lavo_bases(q.shape[-1]))
    return la.reference.causal(f64[0], f64[1], v64, kind=kind, **kw)


def _plan_of(q, k, v, kind, **kw):
    """The stored plan entry of a call like this one (None when there is none)."""
    for key, ent in _api._PLANS.items():
        if key[0] == kind and key[2:5] == (q.shape, k.shape, v.shape) and key[5] == q.dtype \
                and key[6] == (k is v):
            return ent
    return None


@pytest.fixture(autouse=True)
def _fresh_plans():
    _api._PLANS.clear()
    yield
    _api._PLANS.clear()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_repeated_calls_match_reference(kind, dtype):
    q, k, v, kw = _split(reg.get(kind).example(3, dtype))
    ref = _ref(q, k, v, kind, **kw)
    for i in range(4):  # noted, planned, then served by the plan
        o = la.causal(q, k, v, kind, **kw)
        assert o.dtype == dtype
        assert_close(o, ref, tolerance(dtype), err_msg=f"{kind} call {i}")
        ent = _plan_of(q, k, v, kind)
        assert (ent is None) if i == 0 else (ent is not None and ent[0] is not _api._no_plan), \
            f"{kind}: the example call was not planned"


@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_plan_states_resume(kind):
    """The state a plan returns carries the stream: resuming from it (the full path)
    gives the reference of the whole sequence."""
    q, k, v, kw = _split(reg.get(kind).example(4, np.float64))
    T, h = q.shape[-2], q.shape[-2] // 2
    full = _ref(q, k, v, kind, **kw)
    first = {n: (x[..., :h] if n == "decay" else x) for n, x in kw.items()}
    second = {n: (x[..., h:] if n == "decay" else x) for n, x in kw.items()}
    q1, k1 = q[..., :h, :].copy(), k[..., :h, :].copy()
    v1 = k1 if v is k else v[..., :h, :].copy()
    states = []
    for _ in range(4):  # the full path twice, then the plan twice
        o1, st = la.causal(q1, k1, v1, kind, return_state=True, **first)
        assert_close(o1, full[..., :h, :], tolerance(np.float64))
        states.append(st)
    assert _plan_of(q1, k1, v1, kind)[0] is not _api._no_plan
    assert states[2] is not states[3] and states[2].extra is not states[3].extra
    assert states[2].S is None or not np.shares_memory(states[2].S, states[3].S)
    assert states[3].t == h and states[3].kind == kind
    assert sorted(states[3].extra) == sorted(states[0].extra)
    q2, k2 = q[..., h:, :], k[..., h:, :]
    v2 = k2 if v is k else v[..., h:, :]
    o2 = la.causal(q2, k2, v2, kind, initial_state=states[3], **second)
    assert_close(o2, full[..., h:, :], tolerance(np.float64), err_msg=kind)
    assert T > h


def test_per_token_decay_checked_every_call(rng):
    q, k, v = (rng.standard_normal((2, 5, 4)).astype(np.float32) for _ in range(3))
    g = -np.abs(rng.standard_normal((2, 5)))
    for _ in range(3):
        la.causal(q, k, v, "mamba2", decay=g)
    bad = g.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"decay must not contain NaN \(first at index "
                                         r"\(1, 3\)\)"):
        la.causal(q, k, v, "mamba2", decay=bad)
    bad[1, 3] = 0.5
    with pytest.raises(ValueError, match=r"decay is a log-decay and must be <= 0, got 0.5 "
                                         r"at index \(1, 3\)"):
        la.causal(q, k, v, "mamba2", decay=bad)
    o = la.causal(q, k, v, "mamba2", decay=g)  # and the plan still serves good values
    assert_close(o, _ref(q, k, v, "mamba2", decay=g), tolerance(np.float32))


@pytest.mark.parametrize("kind", ["retnet", "lightning", "elu"])
def test_per_head_decay_checked_every_call(rng, kind):
    q, k, v = (rng.standard_normal((3, 6, 4)) for _ in range(3))
    g = np.array([-0.1, -0.2, -0.3])
    for _ in range(3):
        o = la.causal(q, k, v, kind, decay=g)
    assert_close(o, _ref(q, k, v, kind, decay=g), tolerance(np.float64))
    g2 = np.array([-0.5, -0.05, 0.0])  # new values: checked, then served
    for _ in range(2):
        o = la.causal(q, k, v, kind, decay=g2)
    assert_close(o, _ref(q, k, v, kind, decay=g2), tolerance(np.float64))
    with pytest.raises(ValueError, match=r"decay is a log-decay and must be <= 0, got 0.25 "
                                         r"at index \(1,\)"):
        la.causal(q, k, v, kind, decay=np.array([-0.1, 0.25, -0.3]))
    with pytest.raises(ValueError, match=r"decay must not contain NaN \(first at index "
                                         r"\(2,\)\)"):
        la.causal(q, k, v, kind, decay=np.array([-0.1, -0.2, np.nan]))


def test_equal_options_of_other_types_are_checked(rng):
    q, k, v = (rng.standard_normal((1, 4, 3)) for _ in range(3))
    for _ in range(2):
        la.causal(q, k, v, "elu", scale=1, chunk_size=2)
    with pytest.raises(TypeError, match="scale must be a real number, got bool"):
        la.causal(q, k, v, "elu", scale=True, chunk_size=2)
    with pytest.raises(TypeError, match="chunk_size must be an integer, got float"):
        la.causal(q, k, v, "elu", scale=1, chunk_size=2.0)
    for _ in range(2):
        la.causal(q, k, v, "lightning", layer=1, num_layers=2)
    with pytest.raises(TypeError, match="layer must be an integer, got bool"):
        la.causal(q, k, v, "lightning", layer=True, num_layers=2)


def test_errors_after_planned_calls_unchanged(rng):
    """Calls that differ from a planned one in what the plan resolved raise as before."""
    q, k, v = (rng.standard_normal((2, 4, 3)).astype(np.float32) for _ in range(3))
    for _ in range(2):
        la.causal(q, k, v, "elu")
    with pytest.raises(ValueError, match="mode must be one of"):
        la.causal(q, k, v, "elu", mode="fast")
    with pytest.raises(TypeError, match="that kind 'elu' does not accept"):
        la.causal(q, k, v, "elu", slopes="tnl")
    with pytest.raises(ValueError, match="causal attention needs as many keys as queries"):
        la.causal(q, k[:, :3], v[:, :3], "elu")
    with pytest.raises(TypeError, match="q must be a float32, float64 or float16 array"):
        la.causal(q.astype(np.int32), k, v, "elu")
    with pytest.raises(ValueError, match="q contains a non-finite value"):
        bad = q.copy()
        bad[0, 1, 2] = np.inf
        la.causal(bad, k, v, "elu", check_finite=True)


def test_plans_hold_no_input(rng):
    inputs = [rng.standard_normal((2, 5, 4)).astype(np.float32) for _ in range(3)]
    g = -np.abs(rng.standard_normal((2, 5)))
    refs = [sys.getrefcount(a) for a in inputs + [g]]
    for kind in CAUSAL_KINDS:
        kw = {"decay": g} if kind == "mamba2" else {"seed": 0} if kind in ("rfa", "performer") \
            else {"horizon": 16} if kind == "cosformer" else {}
        for _ in range(3):
            la.causal(*inputs, kind, **kw)
            la.causal(*inputs, kind, return_state=True, **kw)
    assert [sys.getrefcount(a) for a in inputs + [g]] == refs


def test_thread_count_is_part_of_the_plan(rng):
    q, k, v = (rng.standard_normal((1, 40, 8)).astype(np.float32) for _ in range(3))
    ref = _ref(q, k, v, "elu")
    old = la.get_num_threads()
    try:
        for n in (1, 2, 1):
            la.set_num_threads(n)
            for _ in range(2):
                assert_close(la.causal(q, k, v, "elu", chunk_size=4), ref,
                             tolerance(np.float32))
            assert _plan_of(q, k, v, "elu")[2] == la.get_num_threads()
    finally:
        la.set_num_threads(old)


def test_lavo_keys_equal_values_or_not(rng):
    """A LAVO plan made for keys that are the values declines separate values of the same
    shape (and the other way round): they are another computation."""
    q, k = (rng.standard_normal((1, 6, 4)) for _ in range(2))
    kv = k.copy()
    shared = [la.causal(q, k, k[...], "lavo", window=2) for _ in range(3)]  # one memory
    apart = [la.causal(q, k, kv, "lavo", window=2) for _ in range(3)]
    assert_close(shared[2], _ref(q, k, k, "lavo", window=2), tolerance(np.float64))
    assert_close(apart[2], _ref(q, k, kv, "lavo", window=2), tolerance(np.float64))
    again = la.causal(q, k, k[...], "lavo", window=2)
    np.testing.assert_array_equal(again, shared[0])


def test_fresh_seed_is_not_planned(rng):
    """``seed=None`` draws a new projection per call: never served by a plan."""
    q, k, v = (rng.standard_normal((1, 4, 4)) for _ in range(3))
    outs = [la.causal(q, k, v, "rfa", num_features=8) for _ in range(3)]
    assert not np.array_equal(outs[1], outs[2])
    assert _plan_of(q, k, v, "rfa")[0] is _api._no_plan


def test_unplanned_arguments_still_work(rng):
    """out=, initial_state=, layout='bthd', float16 and non-array inputs take the full
    path."""
    q, k, v = (rng.standard_normal((2, 5, 4)) for _ in range(3))
    ref = _ref(q, k, v, "elu")
    out = np.empty_like(q)
    for _ in range(2):
        assert la.causal(q, k, v, "elu", out=out) is out
        assert_close(out, ref, tolerance(np.float64))
        o16 = la.causal(*(x.astype(np.float16) for x in (q, k, v)), "elu")
        assert o16.dtype == np.float16
        assert_close(la.causal(q.tolist(), k, v, "elu"), ref, tolerance(np.float64))
        ob = la.causal(*(np.swapaxes(x, 0, 1) for x in (q, k, v)), "elu", layout="bthd")
        assert_close(np.swapaxes(ob, 0, 1), ref, tolerance(np.float64))
    assert not _api._PLANS


def test_wide_per_head_decay_checked_every_call(rng):
    """A per-head decay too large for the value cache (more than 256 heads) is checked by
    its values at every call."""
    q, k, v = (rng.standard_normal((300, 3, 2)) for _ in range(3))
    g = -np.abs(rng.standard_normal(300))
    for _ in range(3):
        o = la.causal(q, k, v, "linear", decay=g)
    assert _plan_of(q, k, v, "linear")[0] is not _api._no_plan
    assert_close(o, _ref(q, k, v, "linear", decay=g), tolerance(np.float64))
    bad = g.copy()
    bad[299] = 1.0
    with pytest.raises(ValueError, match=r"must be <= 0, got 1.0 at index \(299,\)"):
        la.causal(q, k, v, "linear", decay=bad)
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"decay must not contain NaN \(first at index "
                                         r"\(7,\)\)"):
        la.causal(q, k, v, "linear", decay=bad)


STREAM_KINDS = ["linear", "elu", "relu", "lightning", "retnet", "mamba2", "transnormer"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_of_small_calls_matches_reference(kind, dtype, rng):
    """Chunks of 4 tokens, each resumed from the last state: the plan serves the calls
    after the first two, and the stream equals the reference of the whole sequence."""
    B, T, D, c = 2, 24, 5, 4
    q, k, v = (rng.standard_normal((B, T, D)).astype(dtype) for _ in range(3))
    kw = {"decay": -np.abs(rng.standard_normal((B, T)))} if kind == "mamba2" else {}
    ref = _ref(q, k, v, kind, **kw)
    st, outs = None, []
    for i in range(T // c):
        part = {n: x[..., i * c:(i + 1) * c] for n, x in kw.items()}
        o, st = la.causal(q[:, i * c:(i + 1) * c], k[:, i * c:(i + 1) * c],
                          v[:, i * c:(i + 1) * c], kind, initial_state=st, return_state=True,
                          **part)
        outs.append(o)
    assert st.t == T
    assert_close(np.concatenate(outs, axis=1), ref, tolerance(dtype), err_msg=kind)
    planned = [ent for key, ent in _api._PLANS.items() if key[-1] is not None]
    assert planned and all(ent[0] is not _api._no_plan for ent in planned), kind


def test_stream_state_checks_every_call(rng):
    q, k, v = (rng.standard_normal((2, 3, 4)) for _ in range(3))
    st = la.causal(q, k, v, "elu", return_state=True)[1]
    for _ in range(3):
        o, st2 = la.causal(q, k, v, "elu", initial_state=st, return_state=True)
    assert st2.t == 6 and st.t == 3
    st.t = -1
    with pytest.raises(ValueError, match=r"initial_state.t must be >= 0, got -1"):
        la.causal(q, k, v, "elu", initial_state=st)
    st.t = 3
    st.kind = "relu"
    with pytest.raises(ValueError, match="initial_state comes from kind 'relu', not 'elu'"):
        la.causal(q, k, v, "elu", initial_state=st)
    st.kind = "elu"
    st.z = None
    with pytest.raises(ValueError, match="initial_state has no denominator state z"):
        la.causal(q, k, v, "elu", initial_state=st)


def test_float64_state_with_float32_inputs(rng):
    """A float64 state keeps the computation in float64 (the full path: not planned)."""
    q, k, v = (rng.standard_normal((2, 6, 4)) for _ in range(3))
    st = la.causal(q[:, :3], k[:, :3], v[:, :3], "elu", return_state=True)[1]
    q32, k32, v32 = (x[:, 3:].astype(np.float32) for x in (q, k, v))
    for _ in range(3):
        o, st2 = la.causal(q32, k32, v32, "elu", initial_state=st, return_state=True)
        assert o.dtype == np.float32 and st2.S.dtype == np.float64
    assert_close(o, _ref(q, k, v, "elu")[:, 3:], tolerance(np.float32))
