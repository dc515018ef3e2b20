"""NumPy oracle for LAVO-R v1 (docs/design/lavo.md §4-6 and §8), computed row by row from the
definitions: quadratic in clarity, float64, no shared code with the C kernels."""

from __future__ import annotations

import numpy as np


def _window_start(t: int, w: int, mode: str) -> int:
    if w == 0:
        return t + 1
    if mode == "block":
        return ((t - 1) // w) * w + 1
    return max(1, t - w + 1)


def _memory_count(t: int, w: int, mode: str, scope: str) -> int:
    if scope == "before_local" and w > 0:
        return _window_start(t, w, mode) - 1
    return t


def _softmax_parts(logits: np.ndarray) -> np.ndarray:
    m = np.max(logits)
    e = np.exp(logits - m)
    return e / e.sum()


def _one_causal(q, x, v, B, w, pb, mb, tau, mode, scope):
    T = q.shape[0]
    r = B.shape[0]
    C = x @ B.T
    CV = v @ B.T if v is not None else C
    vals = x if v is None else v
    o = np.zeros((T, vals.shape[1]))
    for t in range(1, T + 1):
        lo = _window_start(t, w, mode)
        m = _memory_count(t, w, mode, scope)
        parts = []
        if m > 0 and r > 0:
            h = C[:m].sum(0) / m
            hv = CV[:m].sum(0) / m
            a = tau * h * (B @ q[t - 1]) + mb
            parts.append(a)
        js = np.arange(lo, t + 1)
        if len(js):
            parts.append(tau * (x[js - 1] @ q[t - 1]) + pb[t - js])
        p = _softmax_parts(np.concatenate(parts))
        out = np.zeros(vals.shape[1])
        n_mem = 0
        if m > 0 and r > 0:
            n_mem = r
            out += (p[:r] * hv) @ B
        out += p[n_mem:] @ vals[js - 1] if len(js) else 0
        o[t - 1] = out
    return o


def _one_noncausal(q, x, v, B, w, pb, mb, tau, scope):
    T, S = q.shape[0], x.shape[0]
    r = B.shape[0]
    C = x @ B.T
    CV = v @ B.T if v is not None else C
    vals = x if v is None else v
    o = np.zeros((T, vals.shape[1]))
    for i in range(T):
        js = np.arange(max(0, i - w), min(S - 1, i + w) + 1) if w > 0 else np.arange(0)
        mem = np.ones(S, bool)
        if scope == "before_local" and w > 0:
            mem[js] = False
        parts = []
        if r > 0 and mem.any():
            h = C[mem].mean(0)
            hv = CV[mem].mean(0)
            parts.append(tau * h * (B @ q[i]) + mb)
        if len(js):
            parts.append(tau * (x[js] @ q[i]) + pb[i - js + w])
        p = _softmax_parts(np.concatenate(parts))
        out = np.zeros(vals.shape[1])
        n_mem = 0
        if r > 0 and mem.any():
            n_mem = r
            out += (p[:r] * hv) @ B
        if len(js):
            out += p[n_mem:] @ vals[js]
        o[i] = out
    return o


def _prep(q, k, v, bases, layout):
    sw = (lambda a: np.swapaxes(np.asarray(a, np.float64), -3, -2)) if layout == "bthd" \
        else (lambda a: np.asarray(a, np.float64))
    separate = v is not None and v is not k
    q, k = sw(q), sw(k)
    v = sw(v) if separate else None
    B = np.asarray(bases, np.float64)
    return q, k, v, B


def causal(q, k, v=None, *, bases, window=64, position_bias=None, memory_bias=None,
           scale=None, window_mode="sliding", memory_scope="all", layout="...td", **_ignored):
    """Causal LAVO-R v1; ``v=None`` or ``v is k`` means keys = values (the paper's form)."""
    q, k, v, B = _prep(q, k, v, bases, layout)
    d, r, w = q.shape[-1], B.shape[-2], int(window)
    tau = d ** -0.5 if scale is None else float(scale)
    pb = np.zeros(w) if position_bias is None else np.asarray(position_bias, np.float64)
    mb = np.zeros(r) if memory_bias is None else np.asarray(memory_bias, np.float64)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2],
                                () if v is None else v.shape[:-2], B.shape[:-2],
                                pb.shape[:-1], mb.shape[:-1])
    E = d if v is None else v.shape[-1]
    o = np.zeros(batch + (q.shape[-2], E))
    for idx in np.ndindex(*batch):
        def g(a, nd=2):
            return np.broadcast_to(a, batch + a.shape[-nd:])[idx]
        o[idx] = _one_causal(g(q), g(k), None if v is None else g(v), g(B), w, g(pb, 1),
                             g(mb, 1), tau, window_mode, memory_scope)
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o


def noncausal(q, k, v=None, *, bases, window=None, position_bias=None, memory_bias=None,
              scale=None, memory_scope="all", layout="...td", **_ignored):
    """Non-causal LAVO (docs/design/lavo.md §8): symmetric window ``|t - j| <= w``, ``pb`` of
    length ``2w + 1`` indexed by ``t - j + w``; cross-attention (``S != T``) needs ``w = 0``."""
    q, k, v, B = _prep(q, k, v, bases, layout)
    T, S = q.shape[-2], k.shape[-2]
    if window is None:
        window = 64 if S == T else 0
    d, r, w = q.shape[-1], B.shape[-2], int(window)
    tau = d ** -0.5 if scale is None else float(scale)
    pb = np.zeros(2 * w + 1) if position_bias is None else np.asarray(position_bias,
                                                                       np.float64)
    mb = np.zeros(r) if memory_bias is None else np.asarray(memory_bias, np.float64)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2],
                                () if v is None else v.shape[:-2], B.shape[:-2],
                                pb.shape[:-1], mb.shape[:-1])
    E = d if v is None else v.shape[-1]
    o = np.zeros(batch + (T, E))
    for idx in np.ndindex(*batch):
        def g(a, nd=2):
            return np.broadcast_to(a, batch + a.shape[-nd:])[idx]
        o[idx] = _one_noncausal(g(q), g(k), None if v is None else g(v), g(B), w, g(pb, 1),
                                g(mb, 1), tau, memory_scope)
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o
