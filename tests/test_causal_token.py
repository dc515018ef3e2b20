"""The causal C entry (``_core._causal_token``) behind la.causal's plans in the recurrent
form (the small calls).

It runs the ``_causal_recurrent`` gufunc's kernel on every (batch, head) item without
NumPy's gufunc dispatch, so a planned call must give the bits of the full path (``out=``,
which no plan serves, runs the gufunc after every check) for every kind whose plan ends
in the generic operator, both dtypes, any length, odd and unequal widths, strided and
Fortran-ordered inputs, with and without an initial state, per-head and per-token
decays, on every ISA path.  The entry itself checks every operand before anything runs:
a wrong call raises, naming the argument, and writes nothing; a planned call it refuses
(a positive or NaN decay) takes the full path and gets that path's error.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import linattn as la
from linattn import _api, _bench, _core, _tuning
from test_step_token import CASES as STEP_CASES

B, H = 2, 3
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _fresh_plans():
    _api._PLANS.clear()
    yield
    _api._PLANS.clear()


@pytest.fixture
def calls(monkeypatch):
    """The number of calls of the C entry (the plans look it up when they are made)."""
    seen = []
    entry = _core._causal_token

    def spy(*args):
        seen.append(args[0].shape)
        return entry(*args)

    monkeypatch.setattr(_core, "_causal_token", spy)
    return seen


def _laid_out(x, how):
    """x as a C-contiguous array, a view with strided rows and columns, or Fortran-ordered."""
    if how == "strided":
        big = np.zeros(x.shape[:-2] + (2 * x.shape[-2], 3 * x.shape[-1]), x.dtype)
        big[..., ::2, ::3] = x
        return big[..., ::2, ::3]
    if how == "fortran":
        return np.asfortranarray(x)
    return np.ascontiguousarray(x)


def _inputs(rng, dtype, T, D, E, how, batch=(B, H)):
    q, k = ((0.5 * rng.standard_normal(batch + (T, D))).astype(dtype) for _ in range(2))
    v = rng.standard_normal(batch + (T, E)).astype(dtype)
    return tuple(_laid_out(x, how) for x in (q, k, v))


def _same_state(s, ref):
    assert s.t == ref.t and s.kind == ref.kind
    assert s.S.dtype == ref.S.dtype and s.S.flags.c_contiguous
    np.testing.assert_array_equal(s.S, ref.S)
    assert (s.z is None) == (ref.z is None)
    if ref.z is not None:
        np.testing.assert_array_equal(s.z, ref.z)


def _planned_and_full(q, k, v, kind, calls, **kw):
    """(planned o, planned state, full o, full state); asserts the planned calls ran the
    C entry."""
    for _ in range(2):  # noted, then planned (both the full path)
        la.causal(q, k, v, kind, return_state=True, **kw)
    before = len(calls)
    o, st = la.causal(q, k, v, kind, return_state=True, **kw)
    o1 = la.causal(q, k, v, kind, **kw)  # another key: noted, planned, served
    o1 = la.causal(q, k, v, kind, **kw)
    o1 = la.causal(q, k, v, kind, **kw)
    assert len(calls) - before == 2, "the planned calls did not take the C entry"
    o_full = np.empty_like(o)
    _, st_full = la.causal(q, k, v, kind, out=o_full, return_state=True, **kw)
    np.testing.assert_array_equal(o1, o)
    return o, st, o_full, st_full


# (kind, options, decay: None, "head" (H,) or "token" (B, H, T)): the one-token entry's
# cases, cosFormer's features, per-head decays
CASES = [(kind, opts, "token" if per_token else None) for kind, opts, per_token in STEP_CASES]
CASES += [("cosformer", {"horizon": 128}, None), ("elu", {"normalize": "none"}, "head"),
          ("retnet", {"normalize": "div"}, "head")]


def _decay(rng, how, T):
    if how == "head":
        return {"decay": -rng.uniform(0.0, 0.5, (H,))}
    if how == "token":
        return {"decay": -rng.uniform(0.0, 0.5, (B, H, T))}
    return {}


@pytest.mark.parametrize("kind,opts,dk", CASES,
                         ids=[f"{c[0]}-{','.join(c[1])}-{c[2]}" for c in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("T,mode", [(0, "auto"), (1, "auto"), (2, "auto"), (16, "auto"),
                                    (63, "recurrent"), (65, "recurrent")])
def test_planned_calls_are_the_full_path_bit_for_bit(rng, calls, kind, opts, dk, dtype, T,
                                                     mode):
    D, E = (6, 6) if kind == "transnormer" else (5, 7)
    q, k, v = _inputs(rng, dtype, T, D, E, "c")
    kw = dict(opts, mode=mode, **_decay(rng, dk, T))
    keep = [x.copy() for x in (q, k, v)]
    o, st, o_full, st_full = _planned_and_full(q, k, v, kind, calls, **kw)
    assert o.dtype == dtype and o.shape == (B, H, T, E) and o.flags.c_contiguous
    np.testing.assert_array_equal(o, o_full)
    _same_state(st, st_full)
    for a, b in zip((q, k, v), keep):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind,dk", [("elu", None), ("retnet", None), ("mamba2", "token"),
                                     ("elu", "head"), ("transnormer", None),
                                     ("cosformer", None)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("how", ["strided", "fortran"])
def test_strided_and_fortran_inputs(rng, calls, kind, dk, dtype, how):
    """Inputs with strided rows and columns, or Fortran-ordered (every stride
    reversed): the plan of C-ordered calls serves them, with the full path's bits."""
    T, D, E = 17, 9, 4
    kw = dict(_decay(rng, dk, T), **({"horizon": 64} if kind == "cosformer" else {}))
    q, k, v = _inputs(rng, dtype, T, D, E, "c")
    for _ in range(2):  # the plan, made from C-ordered inputs
        la.causal(q, k, v, kind, return_state=True, **kw)
    qs, ks, vs = _inputs(rng, dtype, T, D, E, how)
    assert not qs.flags.c_contiguous
    before = len(calls)
    o, st = la.causal(qs, ks, vs, kind, return_state=True, **kw)
    o2, st2 = la.causal(qs, ks, vs, kind, return_state=True, **kw)
    assert len(calls) - before == 2
    o_full = np.empty_like(o)
    _, st_full = la.causal(qs, ks, vs, kind, out=o_full, return_state=True, **kw)
    for got, s in ((o, st), (o2, st2)):
        np.testing.assert_array_equal(got, o_full)
        _same_state(s, st_full)


@pytest.mark.parametrize("kind,dk", [("linear", None), ("elu", "head"), ("retnet", None),
                                     ("mamba2", "token"), ("transnormer", None)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_resumed_calls(rng, calls, kind, dk, dtype):
    """With an initial state (the plan of resumed calls): the full path's bits, and the
    state passed in left as it was."""
    T, D, E = 16, 5, 8
    q, k, v = _inputs(rng, dtype, T, D, E, "c")
    kw = _decay(rng, dk, T)
    _, s0 = la.causal(q, k, v, kind, return_state=True, **kw)
    snap = s0.copy()
    o, st, o_full, st_full = _planned_and_full(q, k, v, kind, calls, initial_state=s0, **kw)
    np.testing.assert_array_equal(o, o_full)
    _same_state(st, st_full)
    _same_state(s0, snap)
    assert st.t == 2 * T


def test_every_isa_path(rng, calls):
    """The planned calls against the full path on each ISA path this CPU runs (the
    recurrent kernel's hand-written token loops differ per path)."""
    before = la.info()["simd"]
    paths = _bench.isa_paths("")[0]
    try:
        for isa in paths:
            _tuning.set_simd(isa)
            assert la.info()["simd"] == isa
            for dtype, (kind, dk), (T, D, E) in itertools.product(
                    DTYPES, (("elu", None), ("retnet", None), ("mamba2", "token"),
                             ("lightning", None)),
                    ((1, 64, 64), (16, 64, 64), (33, 5, 71), (65, 9, 130))):
                _api._PLANS.clear()
                q, k, v = _inputs(rng, dtype, T, D, E, "c")
                kw = dict(_decay(rng, dk, T), mode="recurrent")
                o, st, o_full, st_full = _planned_and_full(q, k, v, kind, calls, **kw)
                np.testing.assert_array_equal(o, o_full, err_msg=f"{isa} {kind} {T}")
                _same_state(st, st_full)
    finally:
        _tuning.set_simd(before)
    assert "generic" in paths


def test_threads_one_and_two_agree(rng, calls):
    """Items split over two threads give the bits of one thread (and of the full path)."""
    q, k, v = _inputs(rng, np.float32, 64, 64, 64, "c", batch=(4, 8))
    old = la.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            la.set_num_threads(n)
            _api._PLANS.clear()
            o, st, o_full, _ = _planned_and_full(q, k, v, "elu", calls,
                                                       mode="recurrent")
            np.testing.assert_array_equal(o, o_full)
            got.append((o, st))
    finally:
        la.set_num_threads(old)
    np.testing.assert_array_equal(got[0][0], got[1][0])
    _same_state(got[0][1], got[1][1])


# ------------------------------------------------------------------ the entry itself --

_FL = 0x111  # elu maps, div normaliser, clamp eps


def _entry_args(rng, dtype=np.float32, T=5, F=4, E=3, decay=True):
    q, k = (rng.standard_normal((B, H, T, F)).astype(dtype) for _ in range(2))
    v = rng.standard_normal((B, H, T, E)).astype(dtype)
    g = -rng.uniform(0, 1, (B, H, T)) if decay else None
    S0 = rng.standard_normal((B, H, F, E)).astype(dtype)
    z0 = np.abs(rng.standard_normal((B, H, F))).astype(dtype)
    return [q, k, v, g, S0, z0, 0.5, 1e-6, _FL]


def _gufunc(args):
    """The _causal_recurrent gufunc on the entry's arguments (g None: the zero decay
    without the decay flag)."""
    q, k, v, g, S0, z0, scale, eps, fl = args
    if g is None:
        g = np.zeros(q.shape[-2])
    else:
        fl |= 0x1000
    return _core._causal_recurrent(q, k, v, g, S0, z0, scale, eps, np.int64(fl),
                                   np.int64(64))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ["plain", "no-decay", "zero-state", "gqa", "decay-per-head",
                                  "decay-bcast", "state-bcast", "T0", "empty-batch",
                                  "no-batch", "norm-none", "rms"])
def test_entry_is_the_gufunc(rng, dtype, case):
    """The entry broadcasts the batch dimensions as the gufunc does (the plan's zero state
    without any, grouped keys, a per-head decay with a zero time stride) and returns its
    bits, its shapes and C-contiguous new arrays."""
    args = _entry_args(rng, dtype, decay=case != "no-decay")
    q, k, v, g, S0, z0 = args[:6]
    if case == "zero-state":
        args[4], args[5] = np.zeros(S0.shape[-2:], dtype), np.zeros(z0.shape[-1:], dtype)
    elif case == "gqa":
        args[1], args[2] = k[:, :1], v[:, :1]
    elif case == "decay-per-head":
        args[3] = np.broadcast_to(g[..., :1], g.shape)
    elif case == "decay-bcast":
        args[3] = g[:1]
    elif case == "state-bcast":
        args[4], args[5] = S0[:, :1], z0[:1]
    elif case == "T0":
        args[:4] = q[..., :0, :], k[..., :0, :], v[..., :0, :], g[..., :0]
    elif case == "empty-batch":
        args[:6] = (x[:0] for x in args[:6])
    elif case == "no-batch":
        args[:6] = (x[0, 0] for x in args[:6])
    elif case == "norm-none":
        args[8] = 0x011
    elif case == "rms":
        args[8] = 0x211
    keep = [None if x is None else x.copy() for x in args[:6]]
    got = _core._causal_token(*args)
    ref = _gufunc(args)
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        np.testing.assert_array_equal(a, b)
    for a, b in zip(args[:6], keep):
        if b is not None:
            np.testing.assert_array_equal(a, b)


def _put(i, x):
    return lambda a: a.__setitem__(i, x(a[i]) if callable(x) else x)


@pytest.mark.parametrize("bad,exc,match", [
    (_put(1, lambda k: k.astype(np.float64)), TypeError, "k must be an aligned native float32"),
    (_put(0, lambda q: q.astype(np.float16)), TypeError, "q must be float32 or float64"),
    (_put(1, lambda k: k[..., :3]), ValueError, r"k must have the core shape \(T, F\)"),
    (_put(2, lambda v: v[..., :4, :]), ValueError, r"v must have the core shape \(T, E\)"),
    (_put(4, lambda S: S[..., :3, :]), ValueError, r"S0 must have the core shape \(F, E\)"),
    (_put(5, lambda z: z[..., :2]), ValueError, r"z0 must have the core shape \(F,\)"),
    (_put(3, lambda g: g[..., :4]), ValueError, r"g must have the core shape \(T,\)"),
    (_put(3, lambda g: g.astype(np.float32)), TypeError, "g must be an aligned native float64"),
    (_put(4, lambda S: S[:, :2]), ValueError, "S0 has shape .* do not broadcast"),
    (_put(2, lambda v: np.zeros((4, 1, 5, 3), v.dtype)), ValueError, "v has shape"),
    (_put(0, lambda q: q.tolist()), TypeError, "q must be an ndarray"),
    (_put(5, None), TypeError, "z0 must be an ndarray"),
    (_put(4, lambda S: S[0, 0, 0]), ValueError, "S0 must have at least 2 dimensions"),
    (_put(6, "x"), TypeError, "must be real number"),
    (lambda a: a.pop(), TypeError, "9 arguments"),
    (_put(3, lambda g: np.where(np.arange(g.shape[-1]) == 3, 0.25, g)), ValueError,
     "g must be a log-decay <= 0 .*got 0.25"),
    (_put(3, lambda g: np.where(np.arange(g.shape[-1]) == 4, np.nan, g)), ValueError,
     "g must be a log-decay <= 0 .*got nan"),
])
def test_entry_rejects_without_writing(rng, bad, exc, match):
    """The entry checks its operands itself (the plans' calls pass checked ones, so these
    are the messages of a wrong internal call): an error naming the argument, and every
    array as it was."""
    args = _entry_args(rng)
    given = list(args[:6])
    keep = [x.copy() for x in given]
    bad(args)
    with pytest.raises(exc, match=match):
        _core._causal_token(*args)
    for a, b in zip(given, keep):  # the arrays passed (or sliced from) as they were
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad,match", [(0.5, "must be <= 0"), (np.nan, "must not contain NaN")])
def test_refused_decays_get_the_full_paths_error(rng, calls, bad, match):
    """A planned call whose per-token decay is positive or NaN: the C entry refuses it
    before writing, the full path raises its own error, and the plan serves the next
    good call."""
    T = 8
    q, k, v = _inputs(rng, np.float32, T, 4, 4, "c")
    g = -rng.uniform(0, 0.5, (B, H, T))
    _, s0 = la.causal(q, k, v, "mamba2", decay=g, return_state=True)
    snap = s0.copy()
    for _ in range(3):
        la.causal(q, k, v, "mamba2", decay=g, initial_state=s0)
    g_bad = g.copy()
    g_bad[1, 2, 5] = bad
    n = len(calls)
    with pytest.raises(ValueError, match=match):
        la.causal(q, k, v, "mamba2", decay=g_bad, initial_state=s0)
    assert len(calls) == n + 1  # the plan tried the entry, which refused
    _same_state(s0, snap)
    o = la.causal(q, k, v, "mamba2", decay=g, initial_state=s0)
    o_full = np.empty_like(o)
    la.causal(q, k, v, "mamba2", decay=g, initial_state=s0, out=o_full)
    np.testing.assert_array_equal(o, o_full)


def test_misaligned_inputs_take_the_full_path(rng, calls):
    """An input the entry refuses that is no error (a misaligned view): the full path
    computes it."""
    q, k, v = _inputs(rng, np.float32, 16, 8, 8, "c")
    for _ in range(3):
        la.causal(q, k, v, "elu")
    buf = np.zeros(q.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(q.shape)
    buf[...] = q
    assert not buf.flags.aligned
    o = la.causal(buf, k, v, "elu")
    o_full = np.empty_like(o)
    la.causal(q, k, v, "elu", out=o_full)
    np.testing.assert_array_equal(o, o_full)


@pytest.mark.parametrize("dk", [None, "token", "head"])
def test_a_state_that_widens_the_batch(rng, calls, dk):
    """An initial state with more batch dimensions than the inputs (the kernels broadcast
    them, and so does the entry): the planned calls give the full path's wider result."""
    T = 16
    q, k, v = _inputs(rng, np.float32, T, 8, 8, "c", batch=(H,))
    S = rng.standard_normal((B, H, 8, 8)).astype(np.float32)
    z = np.abs(rng.standard_normal((B, H, 8))).astype(np.float32)
    s0 = la.State(S, z, 4, "elu")
    kw = {"token": {"decay": -rng.uniform(0, 1, (H, T))},
          "head": {"decay": -rng.uniform(0, 1, (H,))}}.get(dk, {})
    o, st, o_full, st_full = _planned_and_full(q, k, v, "elu", calls, initial_state=s0, **kw)
    assert o.shape == (B, H, T, 8)
    np.testing.assert_array_equal(o, o_full)
    _same_state(st, st_full)
