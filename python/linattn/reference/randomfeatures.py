"""Pure-NumPy oracles for ``"rfa"`` and ``"performer"`` (docs/design/kinds.md §4 and §5), float64.

Features are formed exactly from their definitions (no stabiliser shift: the prefix-safe
stabiliser is exact, so its oracle is the unshifted computation with the guard on the
true denominator); the published ``stabilizer="global"`` form is reproduced as written
(``eps`` inside the features, one key maximum over the call).
"""

from __future__ import annotations

import numpy as np

from .. import _draws
from . import linear

KINDS = ("rfa", "performer")


def rfa_features(x, W, scale: float = 1.0) -> np.ndarray:
    """``sqrt(2/F) [sin u; cos u]``, ``u = sqrt(scale) W x / (|x| + 1e-3)``."""
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    xh = x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-3)
    u = np.sqrt(scale) * xh @ np.swapaxes(W, -1, -2)
    F = 2 * W.shape[-2]
    return np.sqrt(2.0 / F) * np.concatenate([np.sin(u), np.cos(u)], axis=-1)


def performer_log_features(x, W, kind: str = "positive", scale: float = 1.0) -> np.ndarray:
    """``log c + u - h`` (and ``log c - u - h`` for hyperbolic)."""
    x = np.sqrt(scale) * np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    u = x @ np.swapaxes(W, -1, -2)
    h = 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    if kind == "hyperbolic":
        return np.concatenate([u - h, -u - h], axis=-1) - 0.5 * np.log(2 * W.shape[-2])
    return u - h - 0.5 * np.log(W.shape[-2])


def performer_features(x, W, kind: str = "positive", scale: float = 1.0) -> np.ndarray:
    """The true features (docs/design/kinds.md §5.1), unshifted."""
    if kind == "relu":
        u = (np.sqrt(scale) * np.asarray(x, dtype=np.float64)) @ \
            np.swapaxes(np.asarray(W, dtype=np.float64), -1, -2)
        return np.maximum(u, 0.0) / np.sqrt(W.shape[-2]) + 1e-3
    return np.exp(performer_log_features(x, W, kind, scale))


def published_features(q, k, W, kind: str, scale: float, eps: float):
    """performer-pytorch's ``softmax_kernel`` (= google-research's FAVOR+): x' = sqrt(scale) x,
    u = W x', h = |x'|^2 / 2; queries c (exp(u - h - max_i u_i) + eps), keys
    c (exp(u - h - max_{s,i} u_{s,i}) + eps) over every key of the (batch, head) slice."""
    def parts(x):
        xs = np.sqrt(scale) * np.asarray(x, dtype=np.float64)
        u = xs @ np.swapaxes(np.asarray(W, dtype=np.float64), -1, -2)
        if kind == "hyperbolic":
            u = np.concatenate([u, -u], axis=-1)
        return u, 0.5 * (xs * xs).sum(axis=-1, keepdims=True)

    uq, hq = parts(q)
    uk, hk = parts(k)
    c = 1.0 / np.sqrt(uq.shape[-1])
    fq = c * (np.exp(uq - hq - uq.max(axis=-1, keepdims=True)) + eps)
    fk = c * (np.exp(uk - hk - uk.max(axis=(-2, -1), keepdims=True)) + eps)
    return fq, fk


def _td(x, layout):
    return np.swapaxes(np.asarray(x), -3, -2) if layout == "bthd" else np.asarray(x)


def _maps(q, k, kind, *, projection, num_features, seed, scale, features, stabilizer, eps):
    d = np.shape(q)[-1]
    W, _ = _draws.projection_for(kind, d, num_features, projection, seed, features)
    if kind == "rfa":
        scale = 1.0 if scale is None else scale
        return rfa_features(q, W, scale), rfa_features(k, W, scale)
    scale = d ** -0.5 if scale is None else scale
    if stabilizer == "global" and features != "relu":
        return published_features(q, k, W, features, scale, eps)
    return performer_features(q, W, features, scale), performer_features(k, W, features, scale)


def _defaults(kind, normalize, eps, eps_mode, stabilizer, features):
    normalize = "div" if normalize is None else normalize
    if kind == "rfa":
        eps = (1e-8 if normalize == "norm" else 1e-3) if eps is None else eps
        return normalize, eps, eps_mode or "abs_clamp", eps
    eps = (1e-8 if normalize == "norm" else 1e-6) if eps is None else eps
    if stabilizer == "global" and features != "relu":
        return normalize, 0.0, "add", eps  # eps inside the features, no guard
    return normalize, eps, "add", eps


def causal(q, k, v, kind: str = "performer", *, scale=None, normalize=None, eps=None,
           num_features=None, projection=None, seed=None, features="positive",
           stabilizer="prefix", gate=None, initial_state=None, return_state=False,
           layout="...td", eps_mode=None, **_ignored):
    """Oracle of ``la.causal`` for ``"rfa"`` (with ``gate=``) and ``"performer"``.

    ``initial_state`` may be a ``la.State`` from the library (Performer's state is put
    back on the true scale ``exp(extra['max'])``).  With ``return_state=True`` returns
    ``(o, S, z)`` on the true scale.
    """
    q, k, v = (_td(x, layout) for x in (q, k, v))
    normalize, guard, eps_mode, feat_eps = _defaults(kind, normalize, eps, eps_mode,
                                                     stabilizer, features)
    fq, fk = _maps(q, k, kind, projection=projection, num_features=num_features, seed=seed,
                   scale=scale, features=features, stabilizer=stabilizer, eps=feat_eps)
    g = None
    if gate is not None:
        gg = np.asarray(gate, dtype=np.float64)
        if layout == "bthd":
            gg = np.swapaxes(gg, -1, -2)
        fk = fk * (1.0 - gg)[..., None]
        with np.errstate(divide="ignore"):
            g = np.log(gg)
    S0 = z0 = None
    if initial_state is not None:
        S0, z0 = initial_state.S, initial_state.z
        if kind == "performer" and "max" in initial_state.extra and stabilizer == "prefix":
            sc = np.exp(np.asarray(initial_state.extra["max"], dtype=np.float64))
            S0 = np.asarray(S0, np.float64) * sc[..., None, None]
            z0 = None if z0 is None else np.asarray(z0, np.float64) * sc[..., None]
    o, S, z = linear.causal(fq, fk, v, g=g, normalize=normalize, eps=guard, eps_mode=eps_mode,
                            S0=S0, z0=z0)
    o = np.swapaxes(o, -3, -2) if layout == "bthd" else o
    if return_state:
        return o, S, (z if normalize == "div" else None)
    return o


def noncausal(q, k, v, kind: str = "performer", *, scale=None, normalize=None, eps=None,
              num_features=None, projection=None, seed=None, features="positive",
              stabilizer="prefix", layout="...td", eps_mode=None, **_ignored):
    """Oracle of ``la.noncausal`` for ``"rfa"`` and ``"performer"``."""
    q, k, v = (_td(x, layout) for x in (q, k, v))
    normalize, guard, eps_mode, feat_eps = _defaults(kind, normalize, eps, eps_mode,
                                                     stabilizer, features)
    fq, fk = _maps(q, k, kind, projection=projection, num_features=num_features, seed=seed,
                   scale=scale, features=features, stabilizer=stabilizer, eps=feat_eps)
    o = linear.noncausal(fq, fk, v, normalize=normalize, eps=guard, eps_mode=eps_mode)
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o


__all__ = ["causal", "noncausal", "performer_features", "performer_log_features",
           "published_features", "rfa_features"]
