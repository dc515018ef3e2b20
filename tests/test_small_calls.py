"""Repeated small ``la.causal`` calls: the plans that serve them (``_api._PLANS``).

A call with the kind, options, dtypes and shapes of an earlier successful call is served
by the kind's plan (everything that depends only on those resolved once).  Checked here:
plan-served calls agree with ``la.reference`` (outputs, and states by resuming from
them), every check whose outcome depends on the values still runs (with the full path's
message), options of equal value but another type are not confused, a plan holds no
input array, and the calls a plan must not serve (another thread count, keys and values
one array or not, a fresh seed) take the full path.

Also: every plan gives the bits of the full path (``out=``, which no plan serves) on
each ISA path, the fused RFA plan included; a decay of another real float dtype than
float64 (float32 as fla passes it) takes the fast paths of ``la.causal``, ``la.step``
and ``la.Decoder.step`` with the float64 values' bits and errors, as does ``la.step``'s
per-token decay with its length-1 time axis ``(..., 1)``.
"""

from __future__ import annotations

import contextlib
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


# ------------------------------------------------ decays of other float dtypes --
#
# The full path converts a caller's decay with np.asarray(decay, dtype=np.float64); the
# fast paths (la.causal's plans, la.step's and la.Decoder's one-token entry) convert a
# real floating decay the same way once, up front.  So a float32 (float16, big-endian
# float64) decay gives, bit for bit, what its float64 values give, and so does la.step's
# per-token decay with its length-1 time axis (..., 1); a bad value raises the float64
# decay's error.  Each case is compared with the full path (out= or check_finite=True,
# which no plan serves) and with the reference.

DECAY_DTYPES = [np.float32, np.float16, np.dtype(">f8")]


def _decay_calls(rng, dtype, kind, per_token):
    q, k, v = (rng.standard_normal((3, 16, 8)).astype(dtype) for _ in range(3))
    shape = (3, 16) if per_token else (3,)
    g = -np.abs(0.3 * rng.standard_normal(shape))
    return q, k, v, g


@pytest.mark.parametrize("gdtype", DECAY_DTYPES, ids=lambda d: np.dtype(d).str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind,per_token", [("mamba2", True), ("retnet", False),
                                            ("lightning", True), ("linear", True),
                                            ("elu", False), ("transnormer", True)])
def test_causal_float_decays_bit_identical(rng, kind, per_token, dtype, gdtype):
    q, k, v, g64 = _decay_calls(rng, dtype, kind, per_token)
    g = g64.astype(gdtype)
    g64 = np.asarray(g, dtype=np.float64)  # the values the full path sees
    keep = [x.copy() for x in (q, k, v, g)]
    full = np.empty_like(v)
    la.causal(q, k, v, kind, decay=g64, out=full)  # out=: the full path
    o0, s0 = la.causal(q, k, v, kind, decay=g64, out=np.empty_like(v), return_state=True)
    for i in range(4):  # 1st call: the full path; 2nd: makes the plan; 3rd+: plan served
        np.testing.assert_array_equal(la.causal(q, k, v, kind, decay=g), full,
                                      err_msg=f"{kind} call {i}")
        o, s = la.causal(q, k, v, kind, decay=g, return_state=True)
        np.testing.assert_array_equal(o, o0)
        np.testing.assert_array_equal(s.S, s0.S)
        assert s.t == s0.t and s.kind == s0.kind
    assert _plan_of(q, k, v, kind) is not None and _plan_of(q, k, v, kind)[0] is not _api._no_plan
    # the plan served float32 and float64 decays alike
    np.testing.assert_array_equal(la.causal(q, k, v, kind, decay=g64), full)
    assert_close(full, _ref(q, k, v, kind, decay=g64), tolerance(dtype))
    for a, b in zip((q, k, v, g), keep):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_causal_python_float_decay(rng):
    q, k, v = (rng.standard_normal((1, 6, 4)) for _ in range(3))
    full = la.causal(q, k, v, "retnet", decay=np.array(-0.2), out=np.empty_like(v))
    for _ in range(3):
        np.testing.assert_array_equal(la.causal(q, k, v, "retnet", decay=-0.2), full)
        np.testing.assert_array_equal(la.causal(q, k, v, "retnet", decay=np.float32(-0.2)),
                                      la.causal(q, k, v, "retnet",
                                                decay=np.float64(np.float32(-0.2))))


@pytest.mark.parametrize("gdtype", [np.float32, np.float16], ids=lambda d: np.dtype(d).name)
def test_causal_bad_float_decays_raise_the_float64_errors(rng, gdtype):
    q, k, v, g = _decay_calls(rng, np.float32, "mamba2", True)
    g = g.astype(gdtype)
    for _ in range(3):
        la.causal(q, k, v, "mamba2", decay=g)  # a plan serves this key now
    for bad_value, at in ((np.nan, (1, 3)), (0.5, (2, 0)), (np.inf, (0, 15))):
        bad = g.copy()
        bad[at] = bad_value
        keep = bad.copy()
        with pytest.raises(ValueError) as want:
            la.causal(q, k, v, "mamba2", decay=bad.astype(np.float64))
        with pytest.raises(ValueError) as got:
            la.causal(q, k, v, "mamba2", decay=bad)
        assert str(got.value) == str(want.value)
        assert "decay" in str(got.value) and str(at) in str(got.value)
        np.testing.assert_array_equal(bad, keep)
    # per-head, through the value cache of retnet's plan
    q, k, v, g = _decay_calls(rng, np.float64, "retnet", False)
    for _ in range(3):
        la.causal(q, k, v, "retnet", decay=g.astype(gdtype))
    bad = np.array([-0.1, 0.25, -0.3], gdtype)
    with pytest.raises(ValueError) as want:
        la.causal(q, k, v, "retnet", decay=bad.astype(np.float64))
    with pytest.raises(ValueError) as got:
        la.causal(q, k, v, "retnet", decay=bad)
    assert str(got.value) == str(want.value)
    # not a real float: the full path's TypeError, as before
    with pytest.raises(TypeError, match="decay must be a float array, got dtype int64"):
        la.causal(q, k, v, "retnet", decay=np.array([-1, -2, -3]))
    with pytest.raises(TypeError, match="decay must be a float array, got dtype complex128"):
        la.causal(q, k, v, "retnet", decay=np.array([-1, -2, -3], complex))


def test_plans_do_not_leak_decay_values(rng):
    """A plan serves calls with other decay arrays of the same shape: each call's result
    is its own decay's, whatever came before (float32 and float64 interleaved)."""
    q, k, v, _ = _decay_calls(rng, np.float32, "mamba2", True)
    gs = [-np.abs(rng.standard_normal((3, 16))) * s for s in (0.1, 1.0, 3.0)]
    want = [la.causal(q, k, v, "mamba2", decay=g.astype(np.float32).astype(np.float64),
                      out=np.empty_like(v)) for g in gs]
    for rep in range(3):
        for g, w in zip(gs, want):
            g32 = g.astype(np.float32)
            np.testing.assert_array_equal(la.causal(q, k, v, "mamba2", decay=g32), w)
            g32[...] = 0.0  # a caller reusing its buffer: nothing kept from before
    # per head: the value cache keys by value, not by array
    q, k, v, _ = _decay_calls(rng, np.float64, "retnet", False)
    hs = [np.array([-0.1, -0.2, -0.3], np.float32), np.array([-0.3, -0.2, -0.1], np.float32)]
    want = [la.causal(q, k, v, "retnet", decay=h.astype(np.float64), out=np.empty_like(v))
            for h in hs]
    for rep in range(3):
        for h, w in zip(hs, want):
            buf = h.copy()
            np.testing.assert_array_equal(la.causal(q, k, v, "retnet", decay=buf), w)
            buf[...] = -5.0


def _stream(rng, bh, dtype, T=5):
    q, k, v = (rng.standard_normal((bh, T + 1, 8)).astype(dtype) for _ in range(3))
    g = -np.abs(0.3 * rng.standard_normal((bh, T + 1)))
    _, st = la.causal(q[:, :T], k[:, :T], v[:, :T], "mamba2", decay=g[:, :T],
                      return_state=True)
    return q[:, T], k[:, T], v[:, T], g[:, T], st


@contextlib.contextmanager
def _no_full_path(on=True):
    """Fail if la.step's full path runs (the fast paths under test must serve)."""
    if not on:
        yield
        return
    full = _api._causal

    def refuse(*a, **kw):
        raise AssertionError("la.step took its full path")
    _api._causal = refuse
    try:
        yield
    finally:
        _api._causal = full


_STEP_DECAYS = {
    "f32": lambda g: g.astype(np.float32),
    "f16": lambda g: g.astype(np.float16),
    "f64 (...,1)": lambda g: g[..., None].copy(),
    "f32 (...,1)": lambda g: g[..., None].astype(np.float32),
    "f64 (...,1) strided": lambda g: np.repeat(g[..., None], 2, axis=-1)[..., :1],
    "f64 list": lambda g: g.tolist(),
}


@pytest.mark.parametrize("form", sorted(_STEP_DECAYS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bh", [1, 4])
def test_step_float_decays_bit_identical(rng, form, dtype, bh):
    qt, kt, vt, g, st = _stream(rng, bh, dtype)
    d = _STEP_DECAYS[form](g)
    g64 = np.asarray(d, dtype=np.float64).reshape(g.shape)  # the values la.step sees
    keep = [x.copy() for x in (qt, kt, vt)] + [np.array(d, copy=True)]
    s_in = st.copy()
    # the full path (check_finite=True takes no fast path), copying and in place
    o_ref, s_ref = la.step(qt, kt, vt, st, decay=g64, check_finite=True)
    o_full, s_full = la.step(qt, kt, vt, st, decay=d, check_finite=True)
    np.testing.assert_array_equal(o_full, o_ref)
    np.testing.assert_array_equal(s_full.S, s_ref.S)
    dec = la.Decoder(state=st.copy())
    for i in range(3):  # the first call makes the fast path's plan, then it serves
        with _no_full_path(i > 0):
            o, s = la.step(qt, kt, vt, st, decay=d)
        np.testing.assert_array_equal(o, o_ref, err_msg=f"copying step {i}")
        np.testing.assert_array_equal(s.S, s_ref.S)
        assert s.t == s_ref.t
        s_ip = st.copy()
        with _no_full_path(i > 0):
            o, s = la.step(qt, kt, vt, s_ip, inplace=True, decay=d)
        assert s is s_ip
        np.testing.assert_array_equal(o, o_ref, err_msg=f"in-place step {i}")
        np.testing.assert_array_equal(s.S, s_ref.S)
        assert s.t == s_ref.t
    # a decoder's stream of three tokens, against la.step with float64 decays
    s64 = st.copy()
    for i in range(3):
        with _no_full_path():
            o = dec.step(qt, kt, vt, d)
        o64, _ = la.step(qt, kt, vt, s64, inplace=True, decay=g64, check_finite=True)
        np.testing.assert_array_equal(o, o64, err_msg=f"decoder step {i}")
    np.testing.assert_array_equal(dec.state.S, s64.S)
    assert dec.t == s64.t
    for a, b in zip((qt, kt, vt, d), keep):
        np.testing.assert_array_equal(np.asarray(a), b)
    np.testing.assert_array_equal(st.S, s_in.S)  # the copying steps' state is untouched
    assert st.t == s_in.t


@pytest.mark.parametrize("form", ["f32", "f64 (...,1)", "f32 (...,1)"])
def test_step_bad_float_decays_raise_the_float64_errors(rng, form):
    qt, kt, vt, g, st = _stream(rng, 3, np.float32)
    dec = la.Decoder(state=st.copy())
    for _ in range(2):  # plans made
        la.step(qt, kt, vt, st.copy(), inplace=True, decay=_STEP_DECAYS[form](g))
        la.step(qt, kt, vt, st, decay=_STEP_DECAYS[form](g))
        dec.step(qt, kt, vt, _STEP_DECAYS[form](g))
    for bad_value, at in ((np.nan, 1), (0.5, 2), (np.inf, 0)):
        bad = g.copy()
        bad[at] = bad_value
        d = _STEP_DECAYS[form](bad)
        keep = d.copy()
        with pytest.raises(ValueError) as want:
            la.step(qt, kt, vt, st.copy(), decay=np.asarray(d, np.float64), check_finite=True)
        assert "decay" in str(want.value)
        s_ip = st.copy()
        before = dec.state.S.copy(), dec.t
        for call, args, kw in ((la.step, (qt, kt, vt, st), {"decay": d}),
                               (la.step, (qt, kt, vt, s_ip), {"inplace": True, "decay": d}),
                               (dec.step, (qt, kt, vt, d), {})):
            with pytest.raises(ValueError) as got:
                call(*args, **kw)
            assert str(got.value) == str(want.value)
        np.testing.assert_array_equal(s_ip.S, st.S)  # a rejected step writes nothing
        assert s_ip.t == st.t
        np.testing.assert_array_equal(dec.state.S, before[0])
        assert dec.t == before[1]
        np.testing.assert_array_equal(d, keep)


# ------------------------------------------------------- plans against the full path --
#
# The plans of the random-feature and generic-operator kinds run fused or in-place
# forms of the same kernels: each planned call (the third and later) must give the bits
# of the full path (out=, which no plan serves) on every ISA path this CPU runs.

_ORDER = ("avx512", "avx2", "generic")


def _isa_paths():
    cpu = la.info()["simd_cpu"]
    return [isa for isa in _ORDER if _ORDER.index(isa) >= _ORDER.index(cpu)]


@pytest.fixture(params=_isa_paths())
def isa(request):
    from linattn import _tuning

    before = la.info()["simd"]
    _tuning.set_simd(request.param)
    yield request.param
    _tuning.set_simd(before)


def _full_and_planned(q, k, v, kind, **kw):
    """(the full path's output and state, the planned call's), after two calls that
    make the plan."""
    _api._PLANS.clear()
    o_first = la.causal(q, k, v, kind, **kw)  # a key seen the first time: the full path
    o_full = np.empty_like(o_first)
    _, s_full = la.causal(q, k, v, kind, out=o_full, return_state=True, **kw)
    np.testing.assert_array_equal(o_first, o_full)
    o_full2 = np.empty_like(o_full)
    la.causal(q, k, v, kind, out=o_full2, **kw)
    for _ in range(2):
        la.causal(q, k, v, kind, **kw)
        la.causal(q, k, v, kind, return_state=True, **kw)
    ent = _plan_of(q, k, v, kind)
    assert ent is not None and ent[0] is not _api._no_plan
    o = la.causal(q, k, v, kind, **kw)
    o2, s = la.causal(q, k, v, kind, return_state=True, **kw)
    np.testing.assert_array_equal(o_full, o_full2)
    return o_full, s_full, o, o2, s


def _assert_same_state(s, s_full):
    np.testing.assert_array_equal(s.S, s_full.S)
    if s_full.z is None:
        assert s.z is None
    else:
        np.testing.assert_array_equal(s.z, s_full.z)
    assert s.t == s_full.t and s.kind == s_full.kind
    assert sorted(s.extra) == sorted(s_full.extra)
    for name, x in s_full.extra.items():
        np.testing.assert_array_equal(s.extra[name], x)
        assert np.asarray(s.extra[name]).dtype == np.asarray(x).dtype
    assert s.S.flags.writeable and s.S.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,T,F", [((1,), 16, None), ((2, 3), 7, 6), ((2,), 1, 10),
                                       ((3,), 17, 16), ((1,), 0, 8)])
@pytest.mark.parametrize("opts", [{}, {"normalize": "none"}, {"normalize": "norm"},
                                  {"eps_mode": "add", "eps": 0.5}, {"scale": 0.7}],
                         ids=lambda o: ",".join(f"{n}={x}" for n, x in o.items()) or "defaults")
def test_rfa_plan_bits_equal_full_path(rng, isa, dtype, shape, T, F, opts):
    D = 64 if F is None else 5
    q = (0.5 * rng.standard_normal(shape + (T, D))).astype(dtype)
    k = (0.5 * rng.standard_normal(shape + (T, D))).astype(dtype)
    v = rng.standard_normal(shape + (T, D + 2)).astype(dtype)
    kw = dict(opts, seed=3)
    if F is not None:
        kw["num_features"] = F
    keep = [x.copy() for x in (q, k, v)]
    o_full, s_full, o, o2, s = _full_and_planned(q, k, v, "rfa", **kw)
    np.testing.assert_array_equal(o, o_full)
    np.testing.assert_array_equal(o2, o_full)
    _assert_same_state(s, s_full)
    assert o.dtype == dtype and o.flags.c_contiguous
    if T and dtype is np.float64:  # (few float32 features: denominators near 0)
        assert_close(o, _ref(q, k, v, "rfa", **kw), tolerance(dtype))
    # the planned state resumes like the full path's
    o3 = la.causal(q, k, v, "rfa", initial_state=s, **kw)
    np.testing.assert_array_equal(o3, la.causal(q, k, v, "rfa", initial_state=s_full, **kw))
    for a, b in zip((q, k, v), keep):
        np.testing.assert_array_equal(a, b)


def test_rfa_plan_broadcast_keys_and_threads(rng):
    q = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    k = rng.standard_normal((2, 1, 9, 8)).astype(np.float32)
    v = rng.standard_normal((2, 1, 9, 8)).astype(np.float32)
    old = la.get_num_threads()
    try:
        for n in (1, 2):
            la.set_num_threads(n)
            o_full, s_full, o, _, s = _full_and_planned(q, k, v, "rfa", seed=1,
                                                        num_features=12)
            np.testing.assert_array_equal(o, o_full)
            _assert_same_state(s, s_full)
            assert o.shape == (2, 4, 9, 8) and s.S.shape == (2, 4, 12, 8)
    finally:
        la.set_num_threads(old)


def test_rfa_plan_states_are_not_shared(rng):
    """Each planned call fills a new state: a returned state is never written again."""
    q, k, v = (rng.standard_normal((1, 5, 4)) for _ in range(3))
    states = [la.causal(q, k, v, "rfa", seed=2, return_state=True)[1] for _ in range(4)]
    keep = states[2].S.copy()
    for _ in range(3):
        la.causal(q * 2, k, v, "rfa", seed=2, return_state=True)
        la.causal(q * 2, k, v, "rfa", seed=2)
    np.testing.assert_array_equal(states[2].S, keep)
    assert states[2].S is not states[3].S


_GENERIC_CASES = {
    "linear": {}, "elu": {}, "relu": {"normalize": "div"}, "lightning": {},
    "retnet": {"normalize": "norm"}, "transnormer": {}, "cosformer": {"horizon": 128},
    "mamba2": {"decay": "per-token"}, "linear+decay": {"decay": "per-head"},
    "elu+decay": {"decay": "per-token", "eps_mode": "add"},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,T,D", [((1,), 16, 64), ((2, 3), 7, 5), ((2,), 1, 8),
                                       ((3,), 33, 16), ((1,), 0, 4)])
@pytest.mark.parametrize("case", sorted(_GENERIC_CASES))
def test_generic_plans_bits_equal_full_path(rng, isa, dtype, shape, T, D, case):
    kind = case.split("+")[0]
    kw = dict(_GENERIC_CASES[case])
    q = (0.5 * rng.standard_normal(shape + (T, D))).astype(dtype)
    k = (0.5 * rng.standard_normal(shape + (T, D))).astype(dtype)
    v = rng.standard_normal(shape + (T, D + 1)).astype(dtype)
    if kw.get("decay") == "per-token":
        kw["decay"] = -np.abs(0.2 * rng.standard_normal(shape + (T,)))
    elif kw.get("decay") == "per-head":
        kw["decay"] = -np.abs(0.2 * rng.standard_normal(shape[-1:]))
    o_full, s_full, o, o2, s = _full_and_planned(q, k, v, kind, **kw)
    np.testing.assert_array_equal(o, o_full)
    np.testing.assert_array_equal(o2, o_full)
    _assert_same_state(s, s_full)
    # the planned state resumes like the full path's (the stream's plan)
    for _ in range(3):
        o3 = la.causal(q, k, v, kind, initial_state=s, **kw)
    np.testing.assert_array_equal(o3, la.causal(q, k, v, kind, initial_state=s_full,
                                                out=np.empty_like(o3), **kw))


@pytest.mark.parametrize("kind", ["mamba2", "linear"])
def test_per_token_decay_widening_the_batch(rng, kind):
    """A per-token decay may broadcast the inputs' batch (1 -> 3): the planned call's
    output and state have the widened batch, as the full path's."""
    q, k, v = (rng.standard_normal((1, 6, 4)) for _ in range(3))
    g = -np.abs(rng.standard_normal((3, 6)))
    o_full, s_full = la.causal(q, k, v, kind, decay=g, return_state=True)  # a new key
    o_first = la.causal(q, k, v, kind, decay=g)
    for _ in range(3):
        o = la.causal(q, k, v, kind, decay=g)
        o2, s = la.causal(q, k, v, kind, decay=g, return_state=True)
    assert _plan_of(q, k, v, kind)[0] is not _api._no_plan
    np.testing.assert_array_equal(o2, o_full)
    np.testing.assert_array_equal(o_first, o_full)
    assert o.shape == (3, 6, 4) and s.S.shape == (3, 4, 4)
    np.testing.assert_array_equal(o, o_full)
    _assert_same_state(s, s_full)


def test_planned_states_are_not_shared(rng):
    q, k, v = (rng.standard_normal((2, 5, 4)) for _ in range(3))
    states = [la.causal(q, k, v, "elu", return_state=True)[1] for _ in range(4)]
    keep = states[2].S.copy(), states[2].z.copy()
    for _ in range(3):
        la.causal(2 * q, k, v, "elu", return_state=True)
        la.causal(2 * q, k, v, "elu")
    np.testing.assert_array_equal(states[2].S, keep[0])
    np.testing.assert_array_equal(states[2].z, keep[1])
    assert states[2].S is not states[3].S


@pytest.mark.parametrize("form", ["(1, H)", "(B, 1)", "(1, H, 1)", "(B, H, 1) f16"])
def test_step_broadcasting_per_token_decays(rng, form):
    """A per-token decay that broadcasts to the state's batch takes the one-token entry
    (which broadcasts it in C) with la.step's values."""
    B, H, D = 2, 3, 4
    q, k, v = (rng.standard_normal((B, H, 6, D)) for _ in range(3))
    g = -np.abs(rng.standard_normal((B, H, 6)))
    _, st = la.causal(q[..., :5, :], k[..., :5, :], v[..., :5, :], "mamba2",
                      decay=g[..., :5], return_state=True)
    qt, kt, vt = q[..., 5, :], k[..., 5, :], v[..., 5, :]
    d = {"(1, H)": g[:1, :, 5], "(B, 1)": g[:, :1, 5], "(1, H, 1)": g[:1, :, 5:],
         "(B, H, 1) f16": g[:, :, 5:].astype(np.float16)}[form]
    o_ref, s_ref = la.step(qt, kt, vt, st, decay=d, check_finite=True)
    for i in range(3):
        with _no_full_path(i > 0):
            o, s = la.step(qt, kt, vt, st, decay=d)
        np.testing.assert_array_equal(o, o_ref)
        np.testing.assert_array_equal(s.S, s_ref.S)
        s_ip = st.copy()
        with _no_full_path(i > 0):
            o, _ = la.step(qt, kt, vt, s_ip, inplace=True, decay=d)
        np.testing.assert_array_equal(o, o_ref)
        np.testing.assert_array_equal(s_ip.S, s_ref.S)
    dec = la.Decoder(state=st.copy())
    with _no_full_path():
        np.testing.assert_array_equal(dec.step(qt, kt, vt, d), o_ref)


def test_step_decays_the_fast_path_must_not_take(rng):
    """A per-head decay (fewer axes than the batch) stays la.step's: mamba2 rejects it,
    the per-head kinds run it."""
    q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))
    g = -np.abs(rng.standard_normal((2, 3, 6)))
    _, st = la.causal(q[..., :5, :], k[..., :5, :], v[..., :5, :], "mamba2",
                      decay=g[..., :5], return_state=True)
    qt, kt, vt = q[..., 5, :], k[..., 5, :], v[..., 5, :]
    for _ in range(2):
        la.step(qt, kt, vt, st.copy(), inplace=True, decay=g[..., 5])
    for d in (g[0, :, 5], g[0, :, 5].astype(np.float32)):
        with pytest.raises(ValueError, match="kind 'mamba2' needs a per-token decay"):
            la.step(qt, kt, vt, st.copy(), inplace=True, decay=d)
        with pytest.raises(ValueError, match="kind 'mamba2' needs a per-token decay"):
            la.step(qt, kt, vt, st, decay=d)
    _, sr = la.causal(q[..., :5, :], k[..., :5, :], v[..., :5, :], "retnet",
                      decay=g[0, :, 0], return_state=True)
    o_ref, _ = la.step(qt, kt, vt, sr, decay=g[0, :, 5], check_finite=True)
    for _ in range(3):
        o, _ = la.step(qt, kt, vt, sr, decay=g[0, :, 5])
        np.testing.assert_array_equal(o, o_ref)


def test_step_one_dimensional_token_scalar_decay(rng):
    """q_t (D,) with a 0-d per-token decay (q_t's shape without its last axis): the full
    path takes it as the fast path does (mamba2 included)."""
    st = la.State.zeros("mamba2", (), 4, 4)
    q, k, v = (rng.standard_normal(4) for _ in range(3))
    o_full, s_full = la.step(q, k, v, st, decay=np.array(-0.1), check_finite=True)
    o, s = la.step(q, k, v, st, decay=np.array(-0.1))
    np.testing.assert_array_equal(o, o_full)
    np.testing.assert_array_equal(s.S, s_full.S)
    np.testing.assert_array_equal(o, la.step(q, k, v, st, decay=-0.1, check_finite=True)[0])
    with pytest.raises(ValueError, match=r"decay is a log-decay and must be <= 0, got 0.5"):
        la.step(q, k, v, st, decay=np.float32(0.5))


def test_stream_of_small_calls_with_float32_decay(rng):
    """Chunks of a stream resumed from the state, float32 decays: plan-served (from the
    third chunk) and bit-identical to the float64 decays' stream."""
    q, k, v = (rng.standard_normal((2, 40, 8)).astype(np.float32) for _ in range(3))
    g = (-np.abs(0.3 * rng.standard_normal((2, 40)))).astype(np.float32)
    s32 = s64 = None
    for t0 in range(0, 40, 8):
        sl = slice(t0, t0 + 8)
        o32, s32 = la.causal(q[:, sl], k[:, sl], v[:, sl], "mamba2", decay=g[:, sl],
                             initial_state=s32, return_state=True)
        o64, s64 = la.causal(q[:, sl], k[:, sl], v[:, sl], "mamba2",
                             decay=g[:, sl].astype(np.float64), initial_state=s64,
                             return_state=True)
        np.testing.assert_array_equal(o32, o64)
        np.testing.assert_array_equal(s32.S, s64.S)
    assert any(key[0] == "mamba2" and key[-1] is not None and ent is not None
               and ent[0] is not _api._no_plan for key, ent in _api._PLANS.items())
    assert_close(o32, _ref(q, k, v, "mamba2", decay=g.astype(np.float64))[:, 32:],
                 tolerance(np.float32))
