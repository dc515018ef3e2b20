"""Pure-NumPy oracle of the generic operator (docs/design/family.md §2), quadratic.

Everything is computed in float64 from the definition: explicit feature maps,
an explicit ``T x S`` weight matrix built from differences of cumulative
log-decays, and the guard/norm rules of docs/design/family.md §8.
"""

from __future__ import annotations

import numpy as np

DECAY_FLOOR = -1000.0


def phi(x: np.ndarray, fmap: str, scale: float = 1.0) -> np.ndarray:
    """The elementwise feature maps of docs/design/family.md §2.2, applied to ``scale * x``."""
    u = scale * np.asarray(x, dtype=np.float64)
    if fmap == "identity":
        return u
    if fmap == "elu1":
        return np.where(u > 0, u + 1.0, np.exp(np.minimum(u, 0.0)))
    if fmap == "elu":
        return np.where(u > 0, u, np.expm1(np.minimum(u, 0.0)))
    if fmap == "relu":
        return np.maximum(u, 0.0)
    raise ValueError(f"unknown feature map {fmap!r}")


def guard(den: np.ndarray, eps: float, eps_mode: str) -> np.ndarray:
    if eps_mode == "add":
        return den + eps
    if eps_mode == "clamp":
        return np.where(den < eps, eps, den)
    if eps_mode == "abs_clamp":
        a = np.abs(den)
        return np.where(a < eps, eps, a)
    raise ValueError(f"unknown eps_mode {eps_mode!r}")


def finish(num: np.ndarray, den: np.ndarray | None, normalize: str, eps: float,
           eps_mode: str) -> np.ndarray:
    if normalize == "div":
        return num / guard(den, eps, eps_mode)[..., None]
    if normalize == "norm":
        rms = np.sqrt(np.mean(num * num, axis=-1, keepdims=True))
        return num / (rms + eps)
    return num


def decay_weights(g: np.ndarray | None, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, e) with ``W[..., t, s] = exp(G_t - G_s)`` for ``s <= t`` (0 above) and
    ``e[..., t] = exp(G_t)`` (the weight of a carried state); ``g`` is ``(..., T)``."""
    if g is None:
        W = np.tril(np.ones((T, T)))
        return W, np.ones(T)
    g = np.maximum(np.asarray(g, dtype=np.float64), DECAY_FLOOR)
    G = np.cumsum(g, axis=-1)
    diff = G[..., :, None] - G[..., None, :]
    mask = np.tril(np.ones((T, T), dtype=bool))
    W = np.where(mask, np.exp(np.where(mask, diff, 0.0)), 0.0)
    return W, np.exp(G)


def causal(fq: np.ndarray, fk: np.ndarray, v: np.ndarray, *, g: np.ndarray | None = None,
           normalize: str = "div", eps: float = 1e-6, eps_mode: str = "add",
           S0: np.ndarray | None = None, z0: np.ndarray | None = None):
    """Causal operator on features ``fq, fk (..., T, F)``, ``v (..., T, E)``.

    ``g``: per-token log-decay ``(..., T)`` or None.  Returns ``(o, S_T, z_T)``.
    """
    fq = np.asarray(fq, dtype=np.float64)
    fk = np.asarray(fk, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    T = fq.shape[-2]
    W, eG = decay_weights(g, T)
    A = W * (fq @ np.swapaxes(fk, -1, -2))
    num = A @ v
    den = A.sum(axis=-1)
    if S0 is not None:
        num = num + eG[..., :, None] * (fq @ np.asarray(S0, dtype=np.float64))
    if z0 is not None:
        den = den + eG * (fq @ np.asarray(z0, dtype=np.float64)[..., :, None])[..., 0]
    o = finish(num, den, normalize, eps, eps_mode)
    # final state: sum_s exp(G_last - G_s) fk_s v_s^T (+ exp(G_last) S0)
    if T:
        wl = W[..., -1, :]
        S = np.swapaxes(fk * wl[..., :, None], -1, -2) @ v
        z = (fk * wl[..., :, None]).sum(axis=-2)
        el = eG[..., -1]
    else:
        S = np.zeros(fk.shape[:-2] + (fk.shape[-1], v.shape[-1]))
        z = np.zeros(fk.shape[:-2] + (fk.shape[-1],))
        el = np.ones(())
    if S0 is not None:
        S = S + np.asarray(el)[..., None, None] * S0
    if z0 is not None:
        z = z + np.asarray(el)[..., None] * z0
    return o, S, z


def noncausal(fq, fk, v, *, normalize: str = "div", eps: float = 1e-6,
              eps_mode: str = "add") -> np.ndarray:
    """Non-causal operator (cross-attention allowed): quadratic form."""
    fq = np.asarray(fq, dtype=np.float64)
    fk = np.asarray(fk, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    A = fq @ np.swapaxes(fk, -1, -2)
    return finish(A @ v, A.sum(axis=-1), normalize, eps, eps_mode)


def softmax_attention(q, k, v, causal: bool = True, scale: float | None = None) -> np.ndarray:
    """Exact softmax attention in float64."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    logits = scale * (q @ np.swapaxes(k, -1, -2))
    if causal:
        T, S = logits.shape[-2:]
        logits = np.where(np.tril(np.ones((T, S), dtype=bool)), logits, -np.inf)
    logits = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def cumsum_causal(fq, fk, v):
    """The naive NumPy form users write: cumsum of outer products (O(T F E) memory)."""
    fq = np.asarray(fq)
    S = np.cumsum(fk[..., :, :, None] * v[..., :, None, :], axis=-3)
    return np.einsum("...tf,...tfe->...te", fq, S)
