"""Oracle of ``"cosformer"`` (docs/design/kinds.md §8.1): the quadratic "left product"
with an explicit ``cos((pi/2)(i - j)/M)`` weight matrix, 1-based absolute positions,
float64."""

from __future__ import annotations

import numpy as np

from .linear import guard


def weights(qpos: np.ndarray, kpos: np.ndarray, horizon: float) -> np.ndarray:
    """``W[i, j] = cos((pi/2)(i - j)/M)`` for 1-based positions."""
    lag = np.asarray(qpos, np.float64)[:, None] - np.asarray(kpos, np.float64)[None, :]
    return np.cos(0.5 * np.pi * lag / float(horizon))


def attention(q, k, v, *, causal: bool, horizon=None, t0: int = 0, scale: float = 1.0,
              normalize: str = "div", eps: float = 1e-6, eps_mode: str = "clamp",
              chunk_local: int | None = None):
    """``o_i = sum_j relu(q~_i).relu(k_j) cos((pi/2)(i-j)/M) v_j / max(sum_j ..., eps)``.

    ``chunk_local=C`` is the negative control of docs/design/kinds.md §8.4 test 4:
    positions restart at every chunk of ``C`` tokens (wrong; the library must not do this).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    T, S = q.shape[-2], k.shape[-2]
    M = (max(T, S) if not causal else T) if horizon is None else horizon
    qpos = t0 + np.arange(1, T + 1)
    kpos = t0 + np.arange(1, S + 1)
    if chunk_local:
        qpos = (np.arange(T) % chunk_local) + 1
        kpos = (np.arange(S) % chunk_local) + 1
    A = np.maximum(scale * q, 0) @ np.swapaxes(np.maximum(k, 0), -1, -2)
    A = A * weights(qpos, kpos, M)
    if causal:
        A = A * np.tril(np.ones((T, S)))
    num = A @ v
    if normalize == "div":
        return num / guard(A.sum(-1), eps, eps_mode)[..., None]
    if normalize == "norm":
        return num / (np.sqrt(np.mean(num * num, -1, keepdims=True)) + eps)
    return num


def causal_api(q, k, v, kind="cosformer", *, scale=None, normalize=None, eps=None,
               horizon=None, t0: int = 0, **_ignored):
    """``la.reference.causal(..., kind="cosformer")`` (default layout)."""
    return attention(q, k, v, causal=True, horizon=horizon, t0=t0,
                     scale=1.0 if scale is None else scale,
                     normalize="div" if normalize is None else normalize,
                     eps=(1e-8 if normalize == "norm" else 1e-6) if eps is None else eps)


def noncausal_api(q, k, v, kind="cosformer", *, scale=None, normalize=None, eps=None,
                  horizon=None, **_ignored):
    return attention(q, k, v, causal=False, horizon=horizon,
                     scale=1.0 if scale is None else scale,
                     normalize="div" if normalize is None else normalize,
                     eps=(1e-8 if normalize == "norm" else 1e-6) if eps is None else eps)
