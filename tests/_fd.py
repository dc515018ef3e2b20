"""Finite differences and the error measure the gradient tests share
(docs/design/grad.md §5: float64 central differences, relative RMS)."""

from __future__ import annotations

import numpy as np

H_FD = 1e-6  # the central-difference step (float64)


def rel(a, b, floor=0.0):
    """Relative RMS error of ``a`` against ``b``; ``floor`` bounds the denominator from
    below (finite differences carry ~1e-10 absolute noise, so a gradient that is ~0 by
    symmetry is compared absolutely).  ``a`` must be finite."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert np.isfinite(a).all()
    nb = max(np.linalg.norm(b), floor)
    return np.linalg.norm(a - b) / (nb if nb > 0 else 1.0)


def fd_directional(f, x, direction):
    """The derivative of scalar ``f`` at ``x`` along ``direction``."""
    return (f(x + H_FD * direction) - f(x - H_FD * direction)) / (2 * H_FD)


def fd_elementwise(f, x):
    """The gradient of scalar ``f`` at ``x``, one central difference per element."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += H_FD
        xm[i] -= H_FD
        g[i] = (f(xp) - f(xm)) / (2 * H_FD)
    return g
