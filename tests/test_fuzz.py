"""Property-based fuzzing of shapes, strides, dtypes, modes, chunk sizes, split
points and kinds: forms agree, split-and-resume agrees, finite bounded inputs give finite
outputs, strided views equal contiguous copies.

Profiles: ``ci`` (default; fixed seed, ``derandomize=True``, 2,600 examples per test,
10,400 in all, well under 3 minutes on 2 cores) and ``dev`` (``HYPOTHESIS_PROFILE=dev``,
25,000 per test, random).  The number of generated cases run is reported at the end of
the session (conftest.py).
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import linattn as la
from conftest import COUNTS

_HC = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=2600, derandomize=True, deadline=None,
                          suppress_health_check=_HC, database=None, print_blob=True)
settings.register_profile("dev", max_examples=25000, deadline=None,
                          suppress_health_check=_HC)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Kinds on the generic causal operator (every causal mode), with options that keep the
# denominator well conditioned so that forms agree to a relative tolerance.
CAUSAL_KINDS = {
    "elu": {}, "linear": {}, "relu": {"normalize": "none"}, "lightning": {}, "retnet": {},
    "mamba2": {}, "transnormer": {}, "cosformer": {"horizon": 128},
    "performer": {"num_features": 8, "seed": 0},
    "rfa": {"num_features": 8, "normalize": "none", "seed": 0},
}
NONCAUSAL_KINDS = ["elu", "linear", "relu", "transnormer", "cosformer", "performer", "rfa",
                   "lavo", "lara", "ra"]
TOL = {np.float32: 2e-4, np.float64: 1e-9}


def _count():
    COUNTS["fuzz cases"] = COUNTS.get("fuzz cases", 0) + 1


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape
    n = np.linalg.norm(b)
    return np.linalg.norm(a - b) / (n if n > 0 else 1.0)


@st.composite
def views(draw, shape, dtype, lo=-1.5, hi=1.5):
    """An array of ``shape`` as a contiguous, sliced, transposed-back or reversed view."""
    seed = draw(st.integers(0, 2**16))
    r = np.random.default_rng(seed)
    how = draw(st.sampled_from(["c", "slice", "fortran", "reverse"]))
    if how == "slice":
        base = r.uniform(lo, hi, shape[:-1] + (2 * shape[-1],)).astype(dtype)
        return base[..., ::2]
    a = r.uniform(lo, hi, shape).astype(dtype)
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "reverse":
        return np.ascontiguousarray(a[..., ::-1, ::-1])[..., ::-1, ::-1]
    return a


@st.composite
def causal_case(draw):
    kind = draw(st.sampled_from(sorted(CAUSAL_KINDS)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    Bh = draw(st.sampled_from([(), (1,), (2,), (2, 2)]))
    T = draw(st.integers(1, 24))
    D = draw(st.integers(1, 6))
    E = draw(st.integers(1, 6))
    q = draw(views(Bh + (T, D), dtype))
    k = draw(views(Bh + (T, D), dtype))
    v = draw(views(Bh + (T, E), dtype))
    kw = dict(CAUSAL_KINDS[kind])
    if kind in ("mamba2",) or (kind in ("elu", "linear") and draw(st.booleans())):
        kw["decay"] = -np.random.default_rng(T).uniform(0, 1, Bh + (T,))
    chunk = draw(st.integers(1, 30))
    return kind, q, k, v, kw, chunk


@settings(PROFILE)
@given(causal_case(), st.sampled_from(["chunked", "parallel"]))
def test_forms_agree(case, mode):
    _count()
    kind, q, k, v, kw, chunk = case
    a = la.causal(q, k, v, kind, mode="recurrent", **kw)
    b = la.causal(q, k, v, kind, mode=mode, chunk_size=chunk, **kw)
    assert a.dtype == q.dtype and a.shape == q.shape[:-1] + v.shape[-1:]
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert rel_err(b, a) <= TOL[q.dtype.type], (kind, mode, chunk)
    # strided views equal their contiguous copies
    c = la.causal(*(np.ascontiguousarray(x) for x in (q, k, v)), kind, mode=mode,
                  chunk_size=chunk, **kw)
    assert rel_err(c, b) <= TOL[q.dtype.type]


@settings(PROFILE)
@given(causal_case(), st.data())
def test_split_and_resume(case, data):
    _count()
    kind, q, k, v, kw, chunk = case
    T = q.shape[-2]
    split = data.draw(st.integers(0, T))
    mode = data.draw(st.sampled_from(["auto", "recurrent", "chunked"]))
    full, s_full = la.causal(q, k, v, kind, mode=mode, chunk_size=chunk,
                             return_state=True, **kw)
    kw1, kw2 = dict(kw), dict(kw)
    if "decay" in kw:
        kw1["decay"], kw2["decay"] = kw["decay"][..., :split], kw["decay"][..., split:]
    o1, s1 = la.causal(q[..., :split, :], k[..., :split, :], v[..., :split, :], kind,
                       mode=mode, chunk_size=chunk, return_state=True, **kw1)
    o2, s2 = la.causal(q[..., split:, :], k[..., split:, :], v[..., split:, :], kind,
                       mode=mode, chunk_size=chunk, initial_state=s1, return_state=True,
                       **kw2)
    assert s2.t == T == s_full.t
    assert type(s2) is type(s_full) and sorted(s2.extra) == sorted(s_full.extra)
    o = np.concatenate([o1, o2], axis=-2)
    assert rel_err(o, full) <= 10 * TOL[q.dtype.type], (kind, mode, split, chunk)


@st.composite
def noncausal_case(draw):
    kind = draw(st.sampled_from(NONCAUSAL_KINDS))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    Bh = draw(st.sampled_from([(), (1,), (2,), (2, 2)]))
    T = draw(st.integers(1, 16))
    S = draw(st.integers(1, 16))
    D = draw(st.integers(1, 6))
    E = D if kind == "lavo" else draw(st.integers(1, 6))
    q = draw(views(Bh + (T, D), dtype))
    k = draw(views(Bh + (S, D), dtype))
    v = draw(views(Bh + (S, E), dtype))
    kw = {"cosformer": {"horizon": 64}, "performer": {"num_features": 8, "seed": 0},
          "rfa": {"num_features": 8, "seed": 0},
          "lavo": {"window": 0} if S != T else {}}.get(kind, {})
    return kind, q, k, v, kw


@settings(PROFILE)
@given(noncausal_case(), st.integers(1, 20))
def test_noncausal_finite_and_chunk_invariant(case, chunk):
    """Finite bounded inputs give finite outputs of the input dtype; chunk_size (the key
    blocking) changes nothing beyond rounding."""
    _count()
    kind, q, k, v, kw = case
    a = la.noncausal(q, k, v, kind, **kw)
    assert a.dtype == np.result_type(q, k, v) and a.shape == q.shape[:-1] + v.shape[-1:]
    assert np.isfinite(a).all(), kind
    if kind in ("elu", "linear", "transnormer", "cosformer", "performer"):
        b = la.noncausal(q, k, v, kind, chunk_size=chunk, **kw)
        tol = 2e-3 if q.dtype == np.float16 else TOL[np.dtype(q.dtype).type]
        assert rel_err(b, a) <= tol


@settings(PROFILE)
@given(st.sampled_from(sorted(k for k, d in la.kinds().items() if d["causal"])),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 12), st.integers(1, 5),
       st.booleans(), st.integers(0, 2**16))
def test_causal_every_kind_finite_and_bthd(kind, dtype, T, D, bthd, seed):
    """Every causal kind, T including 0: finite bounded inputs give finite outputs, and
    ``layout="bthd"`` equals the default layout."""
    _count()
    r = np.random.default_rng(seed)
    B, H = 2, 2
    q, k, v = (r.uniform(-2, 2, (B, H, T, D)).astype(dtype) for _ in range(3))
    kw = {"cosformer": {"horizon": 32}, "mamba2": {"decay": -r.uniform(0, 2, (B, H, T))},
          "performer": {"num_features": 6, "seed": 0}, "rfa": {"num_features": 6, "seed": 0},
          "transnormer": {"diag_block": int(r.integers(1, 5))} if seed % 2 else {}}.get(kind, {})
    o = la.causal(q, k, v, kind, **kw)
    assert o.shape == (B, H, T, D) and o.dtype == dtype
    assert np.isfinite(o).all(), kind
    if bthd:
        kb = dict(kw)
        if "decay" in kb:
            kb["decay"] = np.swapaxes(kb["decay"], -1, -2)
        ob = la.causal(*(np.swapaxes(x, 1, 2) for x in (q, k, v)), kind, layout="bthd", **kb)
        assert rel_err(np.swapaxes(ob, 1, 2), o) <= TOL[np.dtype(dtype).type]
