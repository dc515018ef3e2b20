"""Shared cases for the block-state algebra and linattn.dask tests: one entry per causal
kind and per option set whose state algebra differs."""

from __future__ import annotations

import numpy as np

import linattn as la

# (kind, options); "decay"/"gate" values name a generator below; "shared" = values are keys
CASES = [
    ("linear", {}),
    ("elu", {}),
    ("elu", {"decay": "per_token"}),
    ("elu", {"decay": "per_head"}),
    ("relu", {}),
    ("lightning", {}),
    ("retnet", {}),
    ("mamba2", {"decay": "per_token"}),
    ("rfa", {"num_features": 16, "seed": 0}),
    ("rfa", {"num_features": 16, "seed": 0, "gate": "gate"}),
    ("performer", {"num_features": 16, "seed": 0}),
    ("performer", {"num_features": 16, "seed": 0, "features": "hyperbolic"}),
    ("performer", {"num_features": 16, "seed": 0, "features": "relu"}),
    ("transnormer", {}),
    ("transnormer", {"variant": "t1", "decay": "per_head"}),
    ("transnormer", {"diag_block": 8}),
    ("cosformer", {"horizon": 256}),
    ("lavo", {"window": 5, "shared": True}),
    ("lavo", {"window": 5, "window_mode": "block", "shared": True}),
    ("lavo", {"window": 6}),
    ("lavo", {"window": 5, "memory_scope": "before_local", "shared": True}),
]
SEQUENTIAL_CASES = [
    ("performer", {"num_features": 16, "seed": 0, "stabilizer": "global"}),
]
NONCAUSAL_CASES = [
    ("linear", {}), ("elu", {}), ("relu", {}), ("transnormer", {}),
    ("rfa", {"num_features": 16, "seed": 0}), ("cosformer", {}),
    ("performer", {"num_features": 16, "seed": 0}),
    ("performer", {"num_features": 16, "seed": 0, "features": "hyperbolic"}),
    ("performer", {"num_features": 16, "seed": 0, "features": "relu"}),
    ("performer", {"num_features": 16, "seed": 0, "stabilizer": "global"}),
    ("lavo", {"shared": True, "window": 4}), ("transnormer", {"diag_block": 8}),
    ("lara", {}), ("ra", {}),
]
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def case_id(case) -> str:
    kind, opts = case
    return kind + "".join(f"-{k}={v}" for k, v in opts.items() if k != "shared")


def make(kind, opts, rng, batch=(1, 2), T=40, D=8, E=None, dtype=np.float64,
         layout="...td", S=None):
    """(q, k, v, options) with arrays in ``layout``; time-indexed options are arrays."""
    opts = dict(opts)
    shared = opts.pop("shared", False)
    E = D if kind == "lavo" else (D + 3 if E is None else E)
    S = T if S is None else S
    q = (0.5 * rng.standard_normal(batch + (T, D))).astype(dtype)
    k = (0.5 * rng.standard_normal(batch + (S, D))).astype(dtype)
    v = k if shared else rng.standard_normal(batch + (S, E)).astype(dtype)
    if opts.get("decay") == "per_token":
        opts["decay"] = -rng.uniform(0.0, 0.3, batch + (T,))
    elif opts.get("decay") == "per_head":
        opts["decay"] = -rng.uniform(0.01, 0.2, batch)
    if opts.get("gate") == "gate":
        opts["gate"] = rng.uniform(0.5, 1.0, batch + (T,))
    if layout == "bthd":
        q, k = q.swapaxes(-3, -2), k.swapaxes(-3, -2)
        v = k if shared else v.swapaxes(-3, -2)
        for n in ("decay", "gate"):
            if isinstance(opts.get(n), np.ndarray) and opts[n].ndim == len(batch) + 1:
                opts[n] = opts[n].swapaxes(-1, -2)
    return q, k, v, opts


def time_slice(opts, a, b, layout="...td", nb=2):
    """Options restricted to tokens a..b (per-token decay and gate)."""
    out = dict(opts)
    for n in ("decay", "gate"):
        x = opts.get(n)
        if isinstance(x, np.ndarray) and x.ndim == nb + 1:
            out[n] = x[..., a:b, :] if layout == "bthd" else x[..., a:b]
    return out


def tslice(x, a, b, layout="...td"):
    return x[..., a:b, :, :] if layout == "bthd" else x[..., a:b, :]


def assert_states_close(actual, desired, dtype):
    """Every array of two states agrees (the scan's ``log_decay`` aside)."""
    assert actual.kind == desired.kind and actual.t == desired.t, (actual, desired)
    tol = TOL[np.dtype(dtype)]
    for name in ("S", "z"):
        a, d = getattr(actual, name), getattr(desired, name)
        assert (a is None) == (d is None), name
        if d is not None:
            assert a.shape == d.shape, (name, a.shape, d.shape)
            la.testing.assert_close(a, d, rtol=tol)
    # "seed": linattn.dask passes the drawn projection, whose fingerprint is compared
    ex_a = {n: x for n, x in actual.extra.items() if n not in ("log_decay", "seed")}
    ex_d = {n: x for n, x in desired.extra.items() if n not in ("log_decay", "seed")}
    assert sorted(ex_a) == sorted(ex_d), (sorted(ex_a), sorted(ex_d))
    for n, d in ex_d.items():
        a, d = np.asarray(ex_a[n]), np.asarray(d)
        assert a.shape == d.shape, (n, a.shape, d.shape)
        if d.dtype.kind == "f" and d.size:
            if np.isfinite(d).all():
                la.testing.assert_close(a, d, rtol=tol, atol=tol)
            else:
                np.testing.assert_array_equal(a, d)
        else:
            np.testing.assert_array_equal(a, d)
