"""Oracle of ``la.selective_scan``: a straightforward NumPy loop over time (float64),
transcribing mamba_ssm's ``selective_scan_ref``."""

from __future__ import annotations

import numpy as np


def softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_state=False):
    f = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    u, delta, A, B, C, D, z, delta_bias = map(f, (u, delta, A, B, C, D, z, delta_bias))
    b, dim, L = u.shape
    N = A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = softplus(delta)

    def at(X, t):  # (b, dim, N) view of B or C at time t
        if X.ndim == 2:
            return np.broadcast_to(X, (b, dim, N))
        if X.ndim == 3:
            return np.broadcast_to(X[:, None, :, t], (b, dim, N))
        G = X.shape[1]
        return np.repeat(X[:, :, :, t], dim // G, axis=1)

    h = np.zeros((b, dim, N)) if initial_state is None else f(initial_state).copy()
    ys = np.zeros((b, dim, L))
    for t in range(L):
        dA = np.exp(delta[:, :, t, None] * A[None])
        h = dA * h + (delta[:, :, t] * u[:, :, t])[..., None] * at(B, t)
        ys[:, :, t] = np.sum(h * at(C, t), axis=-1)
    out = ys if D is None else ys + u * D[:, None]
    if z is not None:
        out = out * (z / (1 + np.exp(-z)))
    return (out, h) if return_state else out
