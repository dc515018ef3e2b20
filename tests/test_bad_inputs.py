"""Bad-input battery: every public function, every argument.

Cases come from tables: for each entry point and kind, a list of mutations of one
argument.  Each case asserts the exception type, that the message names the argument, and
that no input, ``out=`` or state array changed.  Cases that could crash the interpreter
(huge broadcast shapes, absurd sizes, corrupted states fed to kernels) run in a
subprocess, so a segfault fails a test instead of killing pytest.  The number of bad
inputs tried is reported at the end of the session (conftest.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import linattn as la
from conftest import COUNTS

T, D, E, B = 6, 4, 4, 2
KINDS = la.kinds()
CAUSAL = sorted(k for k, d in KINDS.items() if d["causal"])
NONCAUSAL = sorted(k for k, d in KINDS.items() if d["noncausal"])
DTYPES = {"int64": np.int64, "complex128": np.complex128, "object": object, "bool": bool}


def _rng():
    return np.random.default_rng(7)


def base_qkv():
    r = _rng()
    return (r.standard_normal((B, T, D)), r.standard_normal((B, T, D)),
            r.standard_normal((B, T, E)))


def base_kwargs(kind, entry):
    kw = {}
    if kind == "mamba2":
        kw["decay"] = np.full((B, T) if entry != "step" else (B, 1), -0.1)
    if kind == "cosformer" and entry != "noncausal":
        kw["horizon"] = 64  # streaming needs a fixed horizon
    return kw


def arrays_in(obj, acc=None):
    """Every ndarray reachable from args / kwargs / states (for the no-change check)."""
    acc = [] if acc is None else acc
    if isinstance(obj, np.ndarray):
        acc.append(obj)
    elif isinstance(obj, la.State):
        for a in (obj.S, obj.z, *obj.extra.values()):
            arrays_in(a, acc)
    elif isinstance(obj, dict):
        for a in obj.values():
            arrays_in(a, acc)
    elif isinstance(obj, (list, tuple)):
        for a in obj:
            arrays_in(a, acc)
    return acc


def expect_error(fn, args, kwargs, exc, name):
    """Call, and return a failure string (or None): wrong/no exception, message not
    naming ``name``, or an input / out= / state changed."""
    COUNTS["bad inputs"] = COUNTS.get("bad inputs", 0) + 1
    arrs = arrays_in((args, kwargs))
    before = [(a, a.copy()) for a in arrs]
    try:
        fn(*args, **kwargs)
    except exc as e:
        msg = str(e)
        if name and not re.search(name, msg):
            return f"message does not name {name!r}: {type(e).__name__}: {msg}"
    except Exception as e:  # noqa: BLE001
        return f"expected {exc}, got {type(e).__name__}: {e}"
    else:
        return f"expected {exc}, no exception"
    for a, b in before:
        if a.dtype == object:
            same = a.shape == b.shape and all(x is y or x == y for x, y in
                                              zip(a.ravel(), b.ravel()))
        else:
            same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        if not same:
            return "an input, out= or state array was modified"
    return None


def run_table(fn, cases):
    fails = []
    for cid, args, kwargs, exc, name in cases:
        f = expect_error(fn, args, kwargs, exc, name)
        if f:
            fails.append(f"{cid}: {f}")
    assert not fails, "\n".join(fails)


# ------------------------------------------------------------------ tables --

def qkv_mutations(names=("q", "k", "v"), step=False):
    """(id, index of the argument, function building the bad value, exc, name regex)."""
    out = []
    for i, n in enumerate(names):
        out.append((f"{n}-scalar", i, lambda a: a.reshape(-1)[0], ValueError, n))
        if not step:
            out.append((f"{n}-rank1", i, lambda a: a.reshape(-1), ValueError, n))
        for dn, dt in DTYPES.items():
            out.append((f"{n}-{dn}", i, lambda a, dt=dt: (a > 0).astype(dt), TypeError, n))
        out.append((f"{n}-str", i, lambda a: np.full(a.shape, "x"), TypeError, n))
        out.append((f"{n}-list-of-str", i, lambda a: [["x"]], TypeError, n))
    # mismatched sizes (messages name both sides; the regex needs the mutated one)
    out.append(("k-features", 1, lambda a: a[..., :3], ValueError, r"\bk\b"))
    out.append(("v-features-vs-k", 2, lambda a: a[..., :3], None, None))  # E != D: legal
    if not step:
        out.append(("v-tokens", 2, lambda a: a[..., :5, :], ValueError, r"\bv\b"))
        out.append(("k-batch", 1, lambda a: np.concatenate([a, a, a]), ValueError,
                    r"batch|broadcast"))
    else:
        out.append(("k-batch", 1, lambda a: np.concatenate([a, a, a]), ValueError,
                    r"batch|broadcast"))
    return [m for m in out if m[3] is not None]


SCALAR_OPTIONS = [
    ("chunk_size", 0, ValueError), ("chunk_size", -1, ValueError),
    ("chunk_size", 2.5, TypeError), ("chunk_size", True, TypeError),
    ("chunk_size", "8", TypeError), ("chunk_size", 2**40, ValueError),
    ("scale", 0.0, ValueError), ("scale", -1.0, ValueError), ("scale", np.nan, ValueError),
    ("scale", np.inf, ValueError), ("scale", "a", TypeError), ("scale", True, TypeError),
    ("scale", np.ones(2), TypeError),
    ("eps", -1.0, ValueError), ("eps", np.nan, ValueError), ("eps", np.inf, ValueError),
    ("eps", "a", TypeError),
    ("normalize", "softmax", ValueError), ("normalize", 3, ValueError),
    ("layout", "bhtd", ValueError), ("layout", 5, ValueError),
]
CAUSAL_ONLY = [("mode", "fast", ValueError), ("mode", None, ValueError)]


def kind_specific(kind, entry):
    """Per-kind option cases: (keyword, value, exc, name regex)."""
    causal = entry != "noncausal"
    c = []
    keywords = KINDS[kind]["keywords"]
    for kw, val in (("decay", -0.1), ("num_features", 8), ("projection", np.ones((4, D))),
                    ("seed", 1), ("horizon", 8)):
        if kw not in keywords and not (kw == "decay" and not causal):
            c.append((kw, val, TypeError, kw))
    if not causal:
        c.append(("decay", -0.1, TypeError, "decay"))
    c.append(("bogus_option", 1, TypeError, "bogus_option"))
    if "decay" in keywords and causal and kind != "rfa":  # rfa: decay= -> use gate=
        tb = 1 if entry == "step" else T
        c += [("decay", 0.5, ValueError, "decay"), ("decay", np.nan, ValueError, "decay"),
              ("decay", np.full((B, tb + 1), -0.1), ValueError, "decay"),
              ("decay", np.full((3,), -0.1), ValueError, "decay"),
              ("decay", np.zeros((B, tb), np.int64), TypeError, "decay"),
              ("decay", np.full((B, tb, 2, 2), -0.1), ValueError, "decay")]
    if kind in ("rfa", "performer"):
        c += [("num_features", 0, ValueError, "num_features"),
              ("num_features", -2, ValueError, "num_features"),
              ("num_features", 2.5, TypeError, "num_features"),
              ("projection", np.ones((4, D + 1)), ValueError, "projection"),
              ("projection", np.ones((0, D)), ValueError, "projection"),
              ("projection", np.ones(D), ValueError, "projection"),
              ("projection", np.ones((4, D), np.int64), TypeError, "projection"),
              ("projection", np.full((4, D), np.nan), ValueError, "projection"),
              ("seed", "x", TypeError, "seed")]
    if kind == "rfa":
        c += [("num_features", 3, ValueError, "num_features")]
        if causal:
            c += [("gate", np.full((B, 1 if entry == "step" else T), 1.5), ValueError, "gate"),
                  ("gate", np.full((B, 99), 0.5), ValueError, "gate")]
    if kind == "performer":
        c += [("features", "x", ValueError, "features"),
              ("stabilizer", "x", ValueError, "stabilizer")]
    if kind == "cosformer":
        c += [("horizon", 0, ValueError, "horizon"), ("horizon", -5, ValueError, "horizon"),
              ("horizon", 2.5, TypeError, "horizon"),
              ("beyond_horizon", "x", ValueError, "beyond_horizon")]
        if entry != "step":
            c += [("horizon", 2, ValueError, "horizon")]
    if kind == "lavo":
        c += [("window", -1, ValueError, "window"), ("window", 2.5, TypeError, "window"),
              ("bases", np.ones((2, D + 1)), ValueError, "bases"),
              ("bases", np.ones((2, D)), ValueError, "bases"),
              ("bases", np.ones((D + 1, D)), ValueError, "bases"),
              ("window_mode", "x", ValueError, "window_mode"),
              ("memory_scope", "x", ValueError, "memory_scope"),
              ("combine", "sum", ValueError, "combine"),
              ("position_bias", np.ones(3), ValueError, "position_bias")]
    if kind == "lara":
        c += [("landmarks", 0, ValueError, "landmarks"),
              ("landmarks", -1, ValueError, "landmarks"),
              ("landmarks", 10**9, ValueError, "landmarks"),
              ("landmarks", 2.5, TypeError, "landmarks"),
              ("alpha", "x", ValueError, "alpha"),
              ("samples_per_proposal", 0, ValueError, "samples_per_proposal"),
              ("noise_std", -1.0, ValueError, "noise_std")]
    if kind == "ra":
        c += [("samples", 0, ValueError, "samples"), ("component", "x", ValueError, "component"),
              ("noise_std", 0.0, ValueError, "noise_std")]
    if kind == "transnormer":
        c += [("variant", "t3", ValueError, "variant"),
              ("diag_block", 0, ValueError, "diag_block"),
              ("diag_block", -4, ValueError, "diag_block"),
              ("diag_block", 2.5, TypeError, "diag_block")]
    return c


def other_state(kind):
    """A valid state of another kind (elu, or linear when kind is elu)."""
    other = "linear" if kind == "elu" else "elu"
    q, k, v = base_qkv()
    return la.causal(q, k, v, other, return_state=True)[1]


def own_state(kind, dtype=np.float64):
    q, k, v = (x.astype(dtype) for x in base_qkv())
    kw = base_kwargs(kind, "causal")
    if kind == "cosformer":
        kw["horizon"] = 64
    return la.causal(q, k, v, kind, return_state=True, **kw)[1]


def corrupted_states(kind):
    """States a user could build by hand or load from a damaged file."""
    st = own_state(kind)
    out = [("state-other-kind", other_state(kind), ValueError, r"kind|initial_state|state")]
    out.append(("state-not-a-State", {"S": np.zeros((D, E))}, TypeError, "initial_state"))
    s = st.copy()
    s.t = -1
    out.append(("state-negative-t", s, ValueError, r"\bt\b"))
    if st.S is not None:
        for cid, S in (("S-int", st.S.astype(np.int64)), ("S-shape", st.S[..., :2, :]),
                       ("S-1d", st.S.reshape(-1)), ("S-batch", np.concatenate([st.S] * 3)),
                       ("S-None", None), ("S-list", st.S.tolist())):
            s = st.copy()
            s.S = S
            exc = TypeError if cid == "S-int" else ValueError
            out.append((f"state-{cid}", s, exc, r"initial_state|\bS\b"))
    if st.z is not None:
        for cid, z in (("z-shape", st.z[..., :2]), ("z-None", None),
                       ("z-dtype", st.z.astype(np.float32))):
            s = st.copy()
            s.z = z
            out.append((f"state-{cid}", s, ValueError, r"initial_state|\bz\b"))
    for key in st.extra:
        if key == "fill":
            continue  # informational (LAVO's ring fill), never read on resume
        s = st.copy()
        del s.extra[key]
        if key not in ("fingerprint", "stabilizer"):  # optional: unchecked when absent
            out.append((f"state-missing-extra-{key}", s, ValueError,
                        rf"initial_state|{key}|extra"))
        s = st.copy()
        s.extra[key] = np.zeros((7, 5, 3))
        out.append((f"state-bad-extra-{key}", s, ValueError, rf"initial_state|{key}|extra"))
    return out


def out_cases(shape, dtype=np.float64, alias=None):
    ro = np.zeros(shape, dtype)
    ro.flags.writeable = False
    c = [("out-shape", np.zeros(shape[:-1] + (shape[-1] + 1,), dtype), ValueError, "out"),
         ("out-dtype", np.zeros(shape, np.float32), TypeError, "out"),
         ("out-int", np.zeros(shape, np.int64), TypeError, "out"),
         ("out-readonly", ro, ValueError, "out"),
         ("out-list", np.zeros(shape).tolist(), TypeError, "out")]
    if alias is not None:
        c.append(("out-aliases-input", alias, ValueError, r"out"))
    return c


def entry_cases(kind, entry):
    """All bad calls of one kind through one entry point."""
    q, k, v = base_qkv()
    step = entry == "step"
    if step:
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
        names = ("q_t", "k_t", "v_t")
    else:
        names = ("q", "k", "v")
    kw0 = base_kwargs(kind, entry)
    cases = []
    for cid, i, make, exc, name in qkv_mutations(names, step):
        args = [q, k, v]
        args[i] = make(args[i])
        cases.append((cid, tuple(args), dict(kw0), exc, name))
    if not step:
        if entry == "causal":
            cases.append(("q-tokens", (q[:, :5], k, v), dict(kw0), ValueError, r"\bq\b"))
    opts = SCALAR_OPTIONS + (CAUSAL_ONLY if entry == "causal" else [])
    for kw, val, exc in opts:
        if step and kw == "layout":
            continue
        if kind in ("lara", "ra") and kw in ("normalize", "eps"):
            exc = TypeError  # not applicable to these kinds
        if kind == "lavo" and kw in ("normalize", "eps"):
            exc = TypeError
        cases.append((f"{kw}={val!r}", (q, k, v), {**kw0, kw: val}, exc, kw))
    for kw, val, exc, name in kind_specific(kind, entry):
        cases.append((f"{kw}={type(val).__name__}", (q, k, v), {**kw0, kw: val}, exc, name))
    cases.append(("kind-unknown", (q, k, v), {**kw0, "kind": "nope"}, ValueError, "kind"))
    cases.append(("kind-int", (q, k, v), {**kw0, "kind": 3}, ValueError, "kind"))
    if not step:
        shape = (B, T, E)
        for cid, o, exc, name in out_cases(shape, alias=q):
            cases.append((cid, (q, k, v), {**kw0, "out": o}, exc, name))
    if entry == "causal" or step:
        for cid, st, exc, name in corrupted_states(kind):
            if step:  # la.step names its argument state, not initial_state
                cases.append((cid, (q, k, v, st), dict(kw0), exc,
                              name.replace("initial_state", r"\bstate\b")))
            else:
                cases.append((cid, (q, k, v), {**kw0, "initial_state": st}, exc, name))
    return cases


def call(entry, kind):
    f = {"causal": la.causal, "noncausal": la.noncausal, "step": la.step}[entry]

    def fn(*args, **kwargs):
        kw = dict(kwargs)
        kd = kw.pop("kind", kind)
        if entry == "step":
            a = list(args) + [None] * (4 - len(args))
            return f(*a[:4], kd, **kw)
        return f(*args, kd, **kw)
    return fn


@pytest.mark.parametrize("kind", CAUSAL)
@pytest.mark.parametrize("entry", ["causal", "step"])
def test_bad_causal_and_step(kind, entry):
    run_table(call(entry, kind), entry_cases(kind, entry))


@pytest.mark.parametrize("kind", NONCAUSAL)
def test_bad_noncausal(kind):
    run_table(call("noncausal", kind), entry_cases(kind, "noncausal"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_wrong_entry_for_kind(kind):
    q, k, v = base_qkv()
    cases = []
    if kind not in CAUSAL:
        cases.append(("causal", la.causal, ValueError))
        cases.append(("step", lambda *a, **k: la.step(a[0][:, 0], a[1][:, 0], a[2][:, 0],
                                                      None, a[3]), ValueError))
    if kind not in NONCAUSAL:
        cases.append(("noncausal", la.noncausal, ValueError))
    for cid, f, exc in cases:
        err = expect_error(f, (q, k, v, kind), {}, exc, "causal|non-causal")
        assert err is None, f"{kind} {cid}: {err}"


def test_bad_softmax_attention():
    q, k, v = base_qkv()
    cases = []
    for cid, i, make, exc, name in qkv_mutations():
        args = [q, k, v]
        args[i] = make(args[i])
        cases.append((cid, tuple(args), {}, exc, name))
    cases.append(("causal-S!=T", (q, k[:, :5], v[:, :5]), {"causal": True}, ValueError,
                  r"\bq\b|tokens"))
    for kw, val, exc in SCALAR_OPTIONS:
        if kw in ("scale", "layout"):
            cases.append((f"{kw}={val!r}", (q, k, v), {kw: val}, exc, kw))
    for cid, o, exc, name in out_cases((B, T, E), alias=v):
        cases.append((cid, (q, k, v), {"out": o}, exc, name))
    cases.append(("bogus", (q, k, v), {"bogus": 1}, TypeError, "bogus"))
    run_table(la.softmax_attention, cases)


def sscan_inputs():
    r = _rng()
    Bb, Dc, L, N = 2, 4, 5, 3
    return dict(u=r.standard_normal((Bb, Dc, L)), delta=r.random((Bb, Dc, L)),
                A=-r.random((Dc, N)), B=r.standard_normal((Bb, N, L)),
                C=r.standard_normal((Bb, N, L)), D=r.standard_normal(Dc),
                z=r.standard_normal((Bb, Dc, L)), delta_bias=r.standard_normal(Dc),
                initial_state=r.standard_normal((Bb, Dc, N)))


def test_bad_selective_scan():
    good = sscan_inputs()
    cases = []
    for name, a in good.items():
        for dn, dt in DTYPES.items():
            exc = TypeError
            cases.append((f"{name}-{dn}", (), {**good, name: (a > 0).astype(dt)}, exc, name))
        cases.append((f"{name}-rank", (), {**good, name: a[..., None]}, ValueError, name))
        cases.append((f"{name}-scalar", (), {**good, name: a.reshape(-1)[0]}, ValueError,
                      name))
        if a.ndim >= 1:
            cases.append((f"{name}-size", (), {**good, name: a[..., :1]}, ValueError,
                          {"u": r"\bu\b|delta", "A": r"\bA\b|initial_state"}.get(name, name)))
    cases.append(("A-positive", (), {**good, "A": -good["A"]}, ValueError, r"\bA\b"))
    cases.append(("A-nan", (), {**good, "A": np.full_like(good["A"], np.nan)}, ValueError,
                  r"\bA\b"))
    cases.append(("B-groups", (), {**good, "B": np.ones((2, 3, 3, 5))}, ValueError, r"\bB\b"))
    cases.append(("C-groups0", (), {**good, "C": np.ones((2, 0, 3, 5))}, ValueError, r"\bC\b"))
    cases.append(("finite", (), {**good, "check_finite": True,
                                 "z": np.full_like(good["z"], np.inf)}, ValueError, r"\bz\b"))
    run_table(lambda **kw: la.selective_scan(**kw), cases)


def test_bad_features():
    x = _rng().standard_normal((B, T, D))
    W = la.random_features(D, 4)
    cases = []
    for fname in ("identity", "elu1", "elu", "relu"):
        f = getattr(la.features, fname)
        for dn, dt in DTYPES.items():
            cases.append((f, f"{fname}-{dn}", ((x > 0).astype(dt),), {}, TypeError, r"\bx\b"))
        for s, exc in ((0.0, ValueError), (-1.0, ValueError), (np.nan, ValueError),
                       ("a", TypeError)):
            cases.append((f, f"{fname}-scale={s}", (x,), {"scale": s}, exc, "scale"))
        for cid, o, exc, name in out_cases(x.shape):
            cases.append((f, f"{fname}-{cid}", (x,), {"out": o}, exc, name))
        # elementwise maps allow out=x (in place, as NumPy ufuncs do) and stay exact
        y = x.copy()
        assert f(y, out=y) is y and np.array_equal(y, f(x))
    for fname in ("rfa", "performer"):
        f = getattr(la.features, fname)
        for dn, dt in DTYPES.items():
            cases.append((f, f"{fname}-x-{dn}", ((x > 0).astype(dt), W), {}, TypeError, r"\bx\b"))
            cases.append((f, f"{fname}-W-{dn}", (x, (W > 0).astype(dt)), {}, TypeError,
                          "projection"))
        cases.append((f, f"{fname}-W-cols", (x, W[:, :3]), {}, ValueError, "projection"))
        cases.append((f, f"{fname}-W-1d", (x, W[0]), {}, ValueError, "projection"))
        cases.append((f, f"{fname}-W-rows0", (x, W[:0]), {}, ValueError, "projection"))
        cases.append((f, f"{fname}-x-scalar", (x.reshape(-1)[0], W), {}, ValueError, r"\bx\b"))
        cases.append((f, f"{fname}-scale", (x, W), {"scale": -1.0}, ValueError, "scale"))
        for cid, o, exc, name in out_cases((B, T, 8 if fname == "rfa" else 4), alias=None):
            cases.append((f, f"{fname}-{cid}", (x, W), {"out": o}, exc, name))
    f = la.features.performer
    cases += [(f, "perf-kind", (x, W), {"kind": "x"}, ValueError, "kind"),
              (f, "perf-stabilize", (x, W), {"stabilize": "x"}, ValueError, "stabilize"),
              (f, "perf-eps", (x, W), {"eps": -1.0}, ValueError, "eps")]
    fails = []
    for fn, cid, args, kw, exc, name in cases:
        err = expect_error(fn, args, kw, exc, name)
        if err:
            fails.append(f"{cid}: {err}")
    assert not fails, "\n".join(fails)


def test_bad_draws_and_helpers():
    q, k, v = base_qkv()
    cases = [
        (la.random_features, (0, 4), {}, ValueError, r"\bd\b"),
        (la.random_features, (-1, 4), {}, ValueError, r"\bd\b"),
        (la.random_features, (2.5, 4), {}, TypeError, r"\bd\b"),
        (la.random_features, (4, 0), {}, ValueError, r"\bm\b"),
        (la.random_features, (4, -3), {}, ValueError, r"\bm\b"),
        (la.random_features, (4, "3"), {}, TypeError, r"\bm\b"),
        (la.random_features, (4, 4), {"kind": "x"}, ValueError, "kind"),
        (la.random_features, (4, 4), {"norms": "x"}, ValueError, "norms"),
        (la.random_features, (4, 4), {"dtype": np.int32}, TypeError, "dtype"),
        (la.random_features, (4, 4), {"seed": "x"}, TypeError, "seed"),
        (la.random_features, (4, 4), {"seed": 1.5}, TypeError, "seed"),
        (la.decay_slopes, (0,), {}, ValueError, r"\bH\b"),
        (la.decay_slopes, (-2,), {}, ValueError, r"\bH\b"),
        (la.decay_slopes, (2.5,), {}, TypeError, r"\bH\b"),
        (la.decay_slopes, (4, "x"), {}, ValueError, "preset"),
        (la.decay_slopes, (4,), {"layer": 3, "num_layers": 2}, ValueError, "layer"),
        (la.decay_slopes, (4,), {"layer": -1}, ValueError, "layer"),
        (la.decay_slopes, (4,), {"num_layers": 0}, ValueError, "num_layers"),
        (la.lavo_bases, (-1, 4), {}, ValueError, r"\br\b"),
        (la.lavo_bases, (2, -4), {}, ValueError, r"\bd\b"),
        (la.lavo_bases, (5, 4), {}, ValueError, r"\br\b"),
        (la.lavo_bases, (2.5, 4), {}, ValueError, r"\br\b"),
        (la.approximation_error, (q, k, v), {"kind": "elu"}, ValueError, "kind"),
        (la.approximation_error, (q, k, v), {"projection": np.ones((4, D))}, TypeError,
         "projection"),
        (la.approximation_error, (q.astype(np.int64), k, v), {"num_features": (4,)},
         TypeError, r"\bq\b"),
        (la.approximation_error, (q, k, v), {"num_features": (0,)}, ValueError,
         "num_features"),
        (la.approximation_error, (q, k[..., :3], v), {"num_features": (4,)}, ValueError,
         r"\bk\b"),
        (la.set_num_threads, (-1,), {}, ValueError, r"\bn\b"),
        (la.set_num_threads, (2.5,), {}, ValueError, r"\bn\b"),
        (la.set_num_threads, ("2",), {}, ValueError, r"\bn\b"),
        (la.set_num_threads, (True,), {}, ValueError, r"\bn\b"),
    ]
    fails = []
    n0 = la.get_num_threads()
    for i, (fn, args, kw, exc, name) in enumerate(cases):
        err = expect_error(fn, args, kw, exc, name)
        if err:
            fails.append(f"{fn.__name__}#{i} {args[:2] if fn is not la.approximation_error else ''}"
                         f" {kw}: {err}")
    assert la.get_num_threads() == n0
    assert not fails, "\n".join(fails)


def test_bad_state_dicts():
    st = own_state("elu").to_dict()
    bad = []
    for key in ("kind", "t"):
        d = dict(st)
        del d[key]
        bad.append((f"missing-{key}", d, ValueError, key))
    bad += [
        ("t-negative", {**st, "t": np.array(-3)}, ValueError, r"\bt\b"),
        ("t-text", {**st, "t": np.array("abc")}, ValueError, r"\bt\b"),
        ("t-array", {**st, "t": np.arange(3)}, ValueError, r"\bt\b"),
        ("S-int", {**st, "S": st["S"].astype(np.int64)}, ValueError, r"\bS\b"),
        ("S-complex", {**st, "S": st["S"].astype(complex)}, ValueError, r"\bS\b"),
        ("S-object", {**st, "S": st["S"].astype(object)}, ValueError, r"\bS\b"),
        ("S-1d", {**st, "S": st["S"].reshape(-1)}, ValueError, r"\bS\b"),
        ("z-shape", {**st, "z": st["z"][..., :2]}, ValueError, r"\bz\b"),
        ("z-int", {**st, "z": st["z"].astype(np.int32)}, ValueError, r"\bz\b"),
        ("not-a-mapping", [1, 2, 3], ValueError, r"kind"),
        ("none", None, ValueError, r"kind"),
    ]
    fails = []
    for cid, d, exc, name in bad:
        err = expect_error(la.State.from_dict, (d,), {}, exc, name)
        if err:
            fails.append(f"{cid}: {err}")
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("kind", CAUSAL)
def test_loaded_state_from_dict_checked_on_resume(kind):
    """A dict that loads (valid on its own) but does not fit the call raises on resume."""
    st = own_state(kind)
    d = st.to_dict()
    q, k, v = base_qkv()
    kw = base_kwargs(kind, "causal")
    if kind == "cosformer":
        kw["horizon"] = 64
    cases = []
    if "S" in d:
        cases.append(("S-other-F", {**d, "S": np.zeros((B, D + 1, E)),
                                    **({"z": np.zeros((B, D + 1))} if "z" in d else {})}))
    cases.append(("other-kind", {**d, "kind": np.array("relu" if kind != "relu" else "elu")}))
    for cid, dd in cases:
        s = la.State.from_dict(dd)
        err = expect_error(la.causal, (q, k, v, kind), {**kw, "initial_state": s}, ValueError,
                           r"initial_state|kind|\bS\b|state")
        assert err is None, f"{kind} {cid}: {err}"


def test_check_finite_names_tensor_and_index():
    q, k, v = base_qkv()
    cases = []
    for i, n in enumerate("qkv"):
        for bad in (np.nan, np.inf, -np.inf):
            args = [q.copy(), k.copy(), v.copy()]
            args[i][1, 2, 3] = bad
            for kind in ("elu", "cosformer", "performer", "lavo", "transnormer"):
                cases.append((la.causal, tuple(args), {"kind": kind, "check_finite": True},
                              rf"\b{n}\b.*\(1, 2, 3\)"))
            for kind in ("elu", "rfa", "lara", "ra"):
                cases.append((la.noncausal, tuple(args), {"kind": kind, "check_finite": True},
                              rf"\b{n}\b.*\(1, 2, 3\)"))
            cases.append((la.softmax_attention, tuple(args), {"check_finite": True},
                          rf"\b{n}\b.*\(1, 2, 3\)"))
            cases.append((la.step, (args[0][:, 2], args[1][:, 2], args[2][:, 2]),
                          {"check_finite": True}, rf"\b{n}_t\b.*\(1, 3\)"))
    fails = []
    for fn, args, kw, name in cases:
        err = expect_error(fn, args, kw, ValueError, name)
        if err:
            fails.append(f"{fn.__name__} {kw}: {err}")
    assert not fails, "\n".join(fails)
    # default: NaN propagates, no error
    k2 = k.copy()
    k2[0, 1, 0] = np.nan  # a key reaches every later output of its sequence
    o = la.causal(q, k2, v, mode="recurrent")
    assert np.isnan(o[0, 1:]).all() and np.isfinite(o[1]).all() and np.isfinite(o[0, 0]).all()


def test_zero_size_dims_never_crash():
    """Empty sizes are no-ops (docs/design/style.md §8) or a ValueError naming the size, never a
    crash."""
    COUNTS["bad inputs"] = COUNTS.get("bad inputs", 0)
    shapes = [((B, 0, D), (B, 0, D), (B, 0, E)), ((0, T, D), (0, T, D), (0, T, E)),
              ((B, T, 0), (B, T, 0), (B, T, E)), ((B, T, D), (B, T, D), (B, T, 0))]
    fails = []
    for qs, ks, vs in shapes:
        q, k, v = np.ones(qs), np.ones(ks), np.ones(vs)
        for entry, kinds in (("causal", CAUSAL), ("noncausal", NONCAUSAL)):
            for kind in kinds:
                COUNTS["bad inputs"] += 1
                kw = {}
                if kind == "mamba2":
                    kw["decay"] = np.zeros(qs[:-1])
                try:
                    o = getattr(la, entry)(q, k, v, kind, **kw)
                except (ValueError, TypeError) as e:
                    if not re.search(r"\bq\b|\bk\b|\bv\b|\bD\b|\bE\b|\bd\b|\bT\b|token|feature",
                                     str(e)):
                        fails.append(f"{entry} {kind} {qs} {vs}: unnamed: {e}")
                    continue
                except Exception as e:  # noqa: BLE001
                    fails.append(f"{entry} {kind} {qs} {vs}: {type(e).__name__}: {e}")
                    continue
                if o.shape != qs[:-1] + vs[-1:]:
                    fails.append(f"{entry} {kind} {qs}: shape {o.shape}")
    assert not fails, "\n".join(fails)


# -------------------------------------------------- crash-prone, in a subprocess --

_PRELUDE = """
import sys, numpy as np, linattn as la
n_ok = 0
def case(cid, fn, allowed=(MemoryError, ValueError)):
    global n_ok
    print("CASE", cid, flush=True)
    try:
        fn()
    except allowed as e:
        print("RAISED", type(e).__name__, str(e)[:200], flush=True)
        n_ok += 1
    except Exception as e:
        print("WRONG", cid, type(e).__name__, str(e)[:200], flush=True)
    else:
        print("NORAISE", cid, flush=True)
r = np.random.default_rng(0)
x = r.standard_normal((1, 6, 4))
"""

HUGE_SCRIPTS = {
    "broadcast-qkv": """
big = (2**40, 6, 4)
for kind in sorted(la.kinds()):
    d = la.kinds()[kind]
    kw = {"decay": np.broadcast_to(np.float64(-0.1), (2**40, 6))} if kind == "mamba2" else {}
    if d["causal"]:
        case(f"causal-{kind}", lambda: la.causal(np.broadcast_to(x, big), x, x, kind, **kw))
        case(f"causal-k-{kind}", lambda: la.causal(x, np.broadcast_to(x, big), x, kind, **kw))
    if d["noncausal"]:
        case(f"noncausal-{kind}", lambda: la.noncausal(np.broadcast_to(x, big), x, x, kind))
case("softmax", lambda: la.softmax_attention(np.broadcast_to(x, big), x, x))
case("softmax-T", lambda: la.softmax_attention(np.broadcast_to(x[:, :1], (1, 2**31, 4)),
                                                np.broadcast_to(x[:, :1], (1, 2**31, 4)),
                                                np.broadcast_to(x[:, :1], (1, 2**31, 4))))
case("causal-T", lambda: la.causal(*(np.broadcast_to(x[:, :1], (1, 2**40, 4)),) * 3))
case("noncausal-D", lambda: la.noncausal(*(np.broadcast_to(x[:, :, :1], (1, 6, 2**33)),) * 3))
case("noncausal-ST", lambda: la.noncausal(np.broadcast_to(x[:, :1], (1, 2**35, 4)),
                                          np.broadcast_to(x[:, :1], (1, 2**35, 4)),
                                          np.broadcast_to(x[:, :1], (1, 2**35, 4))))
for f in ("identity", "elu1", "elu", "relu"):
    case(f"features-{f}", lambda: getattr(la.features, f)(np.broadcast_to(x, big)))
W = la.random_features(4, 4)
case("features-rfa", lambda: la.features.rfa(np.broadcast_to(x, big), W))
case("features-performer", lambda: la.features.performer(np.broadcast_to(x, big), W))
u = np.broadcast_to(np.float64(1.0), (2**20, 2**20, 4))
case("sscan", lambda: la.selective_scan(u, u, -np.ones((2**20, 2)), np.ones((2**20, 2)),
                                        np.ones((2**20, 2))))
print("DONE", n_ok)
""",
    "absurd-sizes": """
for kind in ("rfa", "performer"):
    case(f"{kind}-num_features", lambda: la.noncausal(x, x, x, kind, num_features=2**40))
    case(f"{kind}-num_features-c", lambda: la.causal(x, x, x, kind, num_features=2**40))
case("chunk_size-max", lambda: (la.causal(x, x, x, chunk_size=2**31 - 1, mode="chunked"),
                                la.noncausal(x, x, x, chunk_size=2**31 - 1),
                                la.causal(x, x, x, "performer", chunk_size=2**31 - 1,
                                          mode="chunked"),
                                la.noncausal(x, x, x, "performer", chunk_size=2**31 - 1),
                                la.causal(x, x, x, "lavo", chunk_size=2**31 - 1),
                                la.noncausal(x, x, x, "lavo", chunk_size=2**31 - 1),
                                (_ for _ in ()).throw(ValueError("all ran"))))
case("lavo-window", lambda: la.causal(x, x, x, "lavo", window=2**40))
case("lavo-window-31", lambda: la.causal(x, x, x, "lavo", window=2**31 + 5))
case("cosformer-horizon", lambda: (la.causal(x, x, x, "cosformer", horizon=2**62),
                                   (_ for _ in ()).throw(ValueError("ran"))))
case("cosformer-horizon-huge", lambda: la.causal(x, x, x, "cosformer", horizon=2**80))
case("lara-landmarks", lambda: la.noncausal(x, x, x, "lara", landmarks=2**40))
case("lara-samples", lambda: la.noncausal(x, x, x, "lara", samples_per_proposal=2**40))
case("ra-samples", lambda: la.noncausal(x, x, x, "ra", samples=2**40))
case("diag_block", lambda: (la.causal(x, x, x, "transnormer", diag_block=2**40),
                            (_ for _ in ()).throw(ValueError("ran"))))
case("random_features-m", lambda: la.random_features(4, 2**40))
case("random_features-d", lambda: la.random_features(2**40, 4))
case("lavo_bases", lambda: la.lavo_bases(2**40, 2**40))
case("decay_slopes", lambda: la.decay_slopes(2**40))
case("threads", lambda: (la.set_num_threads(2**40), la.causal(x, x, x),
                         (_ for _ in ()).throw(ValueError("ran"))), (ValueError, OverflowError))
la.set_num_threads(0)
print("DONE", n_ok)
""",
    "corrupted-states": """
def st(kind, **kw):
    return la.causal(x, x, x, kind, return_state=True, **kw)[1]
kinds = {"elu": {}, "linear": {}, "performer": {}, "rfa": {}, "cosformer": {"horizon": 64},
         "lavo": {}, "transnormer": {"diag_block": 4}, "lightning": {}}
for kind, kw in kinds.items():
    s0 = st(kind, **kw)
    for key in list(s0.extra) + ["S", "z"]:
        for cid, val in (("empty", np.zeros((0,))), ("huge-bcast",
                         np.broadcast_to(np.float64(0), (2**40, 3, 3))),
                         ("nan", np.full((1, 4, 4), np.nan)), ("int", np.ones((1, 4, 4), int)),
                         ("scalar", np.float64(3.0)), ("str", np.array("x")),
                         ("f32", np.ones((1, 4, 4), np.float32))):
            s = s0.copy()
            if key in ("S", "z"):
                if getattr(s0, key) is None:
                    continue
                setattr(s, key, val)
            else:
                s.extra[key] = val
            case(f"{kind}-{key}-{cid}",
                 lambda: (la.causal(x, x, x, kind, initial_state=s, **kw),
                          (_ for _ in ()).throw(ValueError("accepted"))),
                 (ValueError, TypeError, MemoryError))
    s = s0.copy(); s.t = 2**62
    case(f"{kind}-t-huge", lambda: (la.causal(x, x, x, kind, initial_state=s, **kw),
                                    (_ for _ in ()).throw(ValueError("ran"))),
         (ValueError, TypeError, MemoryError))
print("DONE", n_ok)
""",
}


@pytest.mark.parametrize("name", sorted(HUGE_SCRIPTS))
def test_crash_prone_in_subprocess(name):
    code = textwrap.dedent(_PRELUDE) + textwrap.dedent(HUGE_SCRIPTS[name])
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=240, env={**__import__("os").environ, "LINATTN_NUM_THREADS": "1"})
    lines = p.stdout.splitlines()
    ncase = sum(1 for ln in lines if ln.startswith("CASE"))
    COUNTS["bad inputs"] = COUNTS.get("bad inputs", 0) + ncase
    last = [ln for ln in lines if ln.startswith("CASE")][-1:] or ["(none)"]
    assert p.returncode == 0, (f"subprocess died with code {p.returncode} at {last[0]}\n"
                               f"{p.stderr[-2000:]}")
    bad = [ln for ln in lines if ln.startswith(("WRONG", "NORAISE"))]
    assert not bad, "\n".join(bad)
    assert lines[-1].startswith("DONE")
