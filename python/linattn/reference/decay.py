"""Oracles of ``"lightning"``, ``"retnet"`` and ``"mamba2"`` (docs/design/kinds.md §7 and
§9): quadratic with explicit weight matrices, float64."""

from __future__ import annotations

import numpy as np

from .linear import DECAY_FLOOR, decay_weights, finish


def head_decay_matrix(log_lambda, T: int) -> np.ndarray:
    """``W[..., t, s] = lambda^(t - s)`` for ``s <= t``, 0 above (``log_lambda (...)``)."""
    g = np.maximum(np.asarray(log_lambda, np.float64), DECAY_FLOOR)[..., None, None]
    lag = np.arange(T)[:, None] - np.arange(T)[None, :]
    mask = lag >= 0
    return np.where(mask, np.exp(g * np.where(mask, lag, 0)), 0.0)


def attention(q, k, v, *, log_lambda=None, g=None, scale: float = 1.0,
              normalize: str = "none", eps: float = 1e-8):
    """``o_t = sum_{s<=t} w(t,s) (scale q_t . k_s) v_s`` with ``w = lambda^(t-s)`` (per head
    ``log_lambda``, broadcastable to the batch dims) or ``exp(G_t - G_s)`` (per-token ``g``,
    ``(..., T)``)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    T = q.shape[-2]
    if g is not None:
        W, _ = decay_weights(g, T)
    elif log_lambda is not None:
        W = head_decay_matrix(log_lambda, T)
    else:
        W = np.tril(np.ones((T, T)))
    A = W * ((scale * q) @ np.swapaxes(k, -1, -2))
    num = A @ v
    return finish(num, A.sum(-1), normalize, eps, "abs_clamp")


def mamba2_loop(x, dt, A, B, C, D=None):
    """Literal Mamba-2 recurrence (docs/design/kinds.md §9.1), Mamba's own layout:
    ``x (b, T, H, P)``, ``dt (b, T, H)``, ``A (H,)``, ``B, C (b, T, G, N)`` with heads split
    evenly over groups.  Returns ``y (b, T, H, P)`` and the state ``(b, H, P, N)``."""
    x, dt, A, B, C = (np.asarray(a, np.float64) for a in (x, dt, A, B, C))
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    h = np.zeros((b, H, P, N))
    y = np.zeros_like(x)
    grp = np.arange(H) // (H // G)
    for t in range(T):
        a = np.exp(dt[:, t] * A)                                    # (b, H)
        Bt, Ct = B[:, t, grp], C[:, t, grp]                         # (b, H, N)
        h = a[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bt[:, :, None]
        y[:, t] = np.einsum("bhpn,bhn->bhp", h, Ct)
        if D is not None:
            y[:, t] += np.asarray(D)[:, None] * x[:, t]
    return y, h


def _decay_args(q, kind, decay, slopes="tnl", layer=0, num_layers=1):
    from .._draws import decay_slopes

    q = np.asarray(q)
    if decay is not None:
        g = np.asarray(decay, np.float64)
        if g.ndim == q.ndim - 1:  # per token (..., T)
            return {"g": g}
        return {"log_lambda": g}
    if kind == "mamba2":
        raise ValueError("mamba2 needs decay=")
    H = q.shape[-3] if q.ndim >= 3 else 1
    preset = "retnet" if kind == "retnet" else slopes
    lam = decay_slopes(H, preset, layer, num_layers)
    return {"log_lambda": lam if q.ndim >= 3 else lam[0]}


def causal_api(q, k, v, kind="lightning", *, scale=None, normalize=None, eps=None,
               decay=None, slopes="tnl", layer=0, num_layers=1, **_ignored):
    """``la.reference.causal`` for ``"lightning"``, ``"retnet"``, ``"mamba2"`` (default
    layout; per-head decays broadcast over the batch dims)."""
    if scale is None:
        scale = np.asarray(q).shape[-1] ** -0.5 if kind == "retnet" else 1.0
    kw = _decay_args(q, kind, decay, slopes, layer, num_layers)
    return attention(q, k, v, scale=scale, normalize="none" if normalize is None else normalize,
                     eps=1e-8 if eps is None else eps, **kw)
