"""``la.reference``: pure-NumPy oracles for every kind and form (float64, quadratic).

These mirror the public API (``reference.causal(q, k, v, kind=...)``) and are what the
test suite compares the C kernels against.  They are slow by design: clarity first.
"""

from __future__ import annotations

import numpy as np

from . import cosformer, decay, lara, lavo, linear, randomfeatures, sscan, transnormer
from .linear import softmax_attention
from .sscan import selective_scan

# kinds whose oracle lives in its own module: kind -> (causal, noncausal or None)
_ORACLES = {
    "cosformer": (cosformer.causal_api, cosformer.noncausal_api),
    "transnormer": (transnormer.causal_api, transnormer.noncausal_api),
    "lightning": (decay.causal_api, None),
    "retnet": (decay.causal_api, None),
    "mamba2": (decay.causal_api, None),
}

# kind -> (query map, key map) for the elementwise kinds
_MAPS = {"linear": ("identity", "identity"), "elu": ("elu1", "elu1"),
         "relu": ("relu", "relu")}
_DEFAULTS = {  # normalize, eps, eps_mode, scale
    "linear": ("none", 1e-6, "abs_clamp", 1.0),
    "elu": ("div", 1e-6, "add", 1.0),
    "relu": ("div", 1e-6, "add", 1.0),
}

# kinds with their own oracle module: kind -> function
_OTHER_CAUSAL = {"lavo": lavo.causal}
_OTHER_NONCAUSAL = {"lavo": lavo.noncausal, "lara": lara.noncausal_lara,
                    "ra": lara.noncausal_ra}


def _resolve(kind, normalize, eps, eps_mode, scale):
    """Maps and defaults of an elementwise kind (docs/design/kinds.md §0)."""
    nq, default_eps, default_mode, default_scale = _DEFAULTS[kind]
    normalize = nq if normalize is None else normalize
    if eps is None:
        eps = 1e-8 if normalize == "norm" else default_eps
    eps_mode = default_mode if eps_mode is None else eps_mode
    scale = default_scale if scale is None else scale
    return (*_MAPS[kind], normalize, eps, eps_mode, scale)


def _bthd_in(x, layout):
    return np.swapaxes(np.asarray(x), -3, -2) if layout == "bthd" else np.asarray(x)


def _bthd_decay(decay, q, layout):
    """A per-token ``(B, T, H)`` decay of ``layout="bthd"`` as ``(B, H, T)``."""
    if decay is None or layout != "bthd":
        return decay
    g = np.asarray(decay)
    return np.swapaxes(g, -1, -2) if g.ndim == np.ndim(q) - 1 else g


def _per_token_decay(decay, q_batch: tuple, T: int, layout: str):
    if decay is None:
        return None
    g = np.asarray(decay, dtype=np.float64)
    nb = len(q_batch)
    if g.ndim == nb + 1:
        return np.swapaxes(g, -1, -2) if layout == "bthd" else g
    return np.broadcast_to(g[..., None], g.shape + (T,))


def causal(q, k, v, kind: str = "elu", *, scale=None, normalize=None, eps=None,
           decay=None, initial_state=None, return_state=False, layout="...td",
           eps_mode=None, **_ignored):
    """Oracle of ``la.causal`` (every mode gives this)."""
    if kind in _ORACLES:
        o = _ORACLES[kind][0](*(_bthd_in(x, layout) for x in (q, k, v)), kind=kind,
                              scale=scale, normalize=normalize, eps=eps,
                              decay=_bthd_decay(decay, q, layout), **_ignored)
        return np.swapaxes(o, -3, -2) if layout == "bthd" else o
    if kind in _OTHER_CAUSAL:
        return _OTHER_CAUSAL[kind](q, k, v, scale=scale, layout=layout, **_ignored)
    if kind in randomfeatures.KINDS:
        return randomfeatures.causal(q, k, v, kind, scale=scale, normalize=normalize, eps=eps,
                                     initial_state=initial_state, return_state=return_state,
                                     layout=layout, eps_mode=eps_mode, **_ignored)
    mq, mk, normalize, eps, eps_mode, scale = _resolve(kind, normalize, eps, eps_mode, scale)
    q, k, v = (_bthd_in(x, layout) for x in (q, k, v))
    fq = linear.phi(q, mq, scale)
    fk = linear.phi(k, mk)
    g = _per_token_decay(decay, np.broadcast_shapes(q.shape[:-2], k.shape[:-2],
                                                    v.shape[:-2]), q.shape[-2], layout)
    S0 = z0 = None
    if initial_state is not None:
        S0 = initial_state.S
        z0 = initial_state.z
    o, S, z = linear.causal(fq, fk, v, g=g, normalize=normalize, eps=eps, eps_mode=eps_mode,
                            S0=S0, z0=z0)
    if layout == "bthd":
        o = np.swapaxes(o, -3, -2)
    if return_state:
        return o, S, (z if normalize == "div" else None)
    return o


def noncausal(q, k, v, kind: str = "elu", *, scale=None, normalize=None, eps=None,
              layout="...td", eps_mode=None, **_ignored):
    """Oracle of ``la.noncausal``."""
    if kind in _ORACLES and _ORACLES[kind][1] is not None:
        o = _ORACLES[kind][1](*(_bthd_in(x, layout) for x in (q, k, v)), kind=kind,
                              scale=scale, normalize=normalize, eps=eps, **_ignored)
        return np.swapaxes(o, -3, -2) if layout == "bthd" else o
    if kind in _OTHER_NONCAUSAL:
        return _OTHER_NONCAUSAL[kind](q, k, v, scale=scale, layout=layout, **_ignored)
    if kind in randomfeatures.KINDS:
        return randomfeatures.noncausal(q, k, v, kind, scale=scale, normalize=normalize,
                                        eps=eps, layout=layout, eps_mode=eps_mode, **_ignored)
    mq, mk, normalize, eps, eps_mode, scale = _resolve(kind, normalize, eps, eps_mode, scale)
    q, k, v = (_bthd_in(x, layout) for x in (q, k, v))
    o = linear.noncausal(linear.phi(q, mq, scale), linear.phi(k, mk), v,
                         normalize=normalize, eps=eps, eps_mode=eps_mode)
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o


__all__ = ["causal", "cosformer", "decay", "lara", "lavo", "linear", "noncausal",
           "randomfeatures", "selective_scan", "softmax_attention", "sscan", "transnormer"]
