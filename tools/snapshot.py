"""Dump every kind x form x dtype on fixed inputs, or compare two dumps bit for bit.

A refactor that promises "results unchanged" runs this before and after::

    python tools/snapshot.py dump before.npz      # with the old build installed
    python tools/snapshot.py dump after.npz       # with the new build installed
    python tools/snapshot.py compare before.npz after.npz

``compare`` exits 1 and lists every entry whose bytes, shape or dtype differ (or that
exists on one side only).  Entries that raise are recorded with their message, so a
changed error is reported too.
"""

from __future__ import annotations

import sys

import numpy as np


def _inputs(dtype, T, D=5, E=3, B=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    q, k = (0.5 * rng.standard_normal(B + (T, D)) for _ in range(2))
    v = rng.standard_normal(B + (T, E))
    return [x.astype(dtype) for x in (q, k, v)]


def _kind_kwargs(kind, T, B=(2, 3)):
    """A valid call per kind: decays for the decay kinds, seeds for the random ones."""
    rng = np.random.default_rng(1)
    if kind == "mamba2":
        return {"decay": -np.abs(rng.standard_normal(B + (T,))) * 0.1}
    if kind in ("performer", "rfa", "lavo", "lara", "ra"):
        return {"seed": 3}
    if kind == "cosformer":
        return {"horizon": 4 * T + 8}
    return {}


def _cases():
    import linattn as la

    for kind, info in la.kinds().items():
        for dtype in (np.float32, np.float64):
            for T in (1, 33, 130):
                # LAVO rebuilds memory values through its bases: it needs E == D
                q, k, v = _inputs(dtype, T, E=5 if kind == "lavo" else 3)
                kw = _kind_kwargs(kind, T)
                name = f"{kind}/{np.dtype(dtype).name}/T{T}"
                for mode in info["causal"]:
                    yield f"{name}/causal-{mode}", lambda m=mode, kw=kw, q=q, k=k, v=v: \
                        la.causal(q, k, v, kind, mode=m, return_state=True, **kw)
                if info["causal"]:
                    yield f"{name}/causal-auto", lambda kw=kw, q=q, k=k, v=v: \
                        la.causal(q, k, v, kind, **kw)
                if info["noncausal"]:
                    nkw = {n: x for n, x in kw.items() if n != "decay"}
                    yield f"{name}/noncausal", lambda nkw=nkw, q=q, k=k, v=v: \
                        la.noncausal(q, k[..., : max(1, T - 3), :], v[..., : max(1, T - 3), :],
                                     kind, **nkw)
                if info["causal"] and T > 1:
                    def split(kw=kw, q=q, k=k, v=v, T=T):
                        h = T // 2
                        kw1 = {n: (x[..., :h] if n == "decay" else x) for n, x in kw.items()}
                        kw2 = {n: (x[..., h:] if n == "decay" else x) for n, x in kw.items()}
                        o1, st = la.causal(q[..., :h, :], k[..., :h, :], v[..., :h, :], kind,
                                           return_state=True, **kw1)
                        o2 = la.causal(q[..., h:, :], k[..., h:, :], v[..., h:, :], kind,
                                       initial_state=st, **kw2)
                        return o1, o2
                    yield f"{name}/split", split
                    def steps(kw=kw, q=q, k=k, v=v, T=T):
                        st, outs = None, []
                        for t in range(min(T, 5)):
                            kwt = {n: (x[..., t] if n == "decay" else x) for n, x in kw.items()}
                            o, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, kind,
                                            **kwt)
                            outs.append(o)
                        return tuple(outs)
                    yield f"{name}/step", steps
    for dtype in (np.float32, np.float64):
        for T in (1, 33, 130):
            q, k, v = _inputs(dtype, T)
            for causal in (True, False):
                yield f"softmax/{np.dtype(dtype).name}/T{T}/{causal}", \
                    lambda q=q, k=k, v=v, c=causal: la.softmax_attention(q, k, v, causal=c)
            rng = np.random.default_rng(2)
            Dm, N = 4, 3
            u = rng.standard_normal((2, Dm, T)).astype(dtype)
            delta = (0.5 * rng.random((2, Dm, T))).astype(dtype)
            A = -rng.random((Dm, N)).astype(dtype)
            Bm = rng.standard_normal((2, N, T)).astype(dtype)
            Cm = rng.standard_normal((2, N, T)).astype(dtype)
            Dv = rng.standard_normal(Dm).astype(dtype)
            z = rng.standard_normal((2, Dm, T)).astype(dtype)
            yield f"sscan/{np.dtype(dtype).name}/T{T}", \
                lambda u=u, d=delta, A=A, B=Bm, C=Cm, D=Dv, z=z: la.selective_scan(
                    u, d, A, B, C, D, z, delta_softplus=True, return_state=True)


def _flatten(name, result, out):
    if isinstance(result, np.ndarray):
        out[name] = result
    elif isinstance(result, (tuple, list)):
        for i, r in enumerate(result):
            _flatten(f"{name}[{i}]", r, out)
    elif hasattr(result, "S") and hasattr(result, "t"):  # a linattn.State
        for field in ("S", "z"):
            val = getattr(result, field)
            if val is not None:
                out[f"{name}.{field}"] = np.asarray(val)
        out[f"{name}.t"] = np.asarray(result.t)
        for key, val in sorted(getattr(result, "extra", {}).items()):
            if isinstance(val, np.ndarray) or np.isscalar(val):
                out[f"{name}.extra.{key}"] = np.asarray(val)
    elif result is None:
        pass
    else:
        out[name] = np.asarray(result)


def dump(path):
    out = {}
    for name, fn in _cases():
        try:
            _flatten(name, fn(), out)
        except Exception as exc:  # recorded: a changed error is a change
            out[f"{name}!error"] = np.asarray(f"{type(exc).__name__}: {exc}")
    np.savez(path, **out)
    print(f"{len(out)} arrays written to {path}")


def compare(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    bad = []
    for key in sorted(set(a.files) | set(b.files)):
        if key not in a.files or key not in b.files:
            bad.append(f"{key}: only in {'the second' if key not in a.files else 'the first'}")
            continue
        x, y = a[key], b[key]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            diff = ""
            if x.shape == y.shape and x.dtype.kind == "f" and y.dtype.kind == "f":
                diff = f", max |diff| {np.nanmax(np.abs(x.astype(float) - y.astype(float)))}"
            bad.append(f"{key}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}{diff}")
    print(f"{len(a.files)} vs {len(b.files)} entries; {len(bad)} differ")
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
