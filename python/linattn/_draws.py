"""Random draws made in Python (``numpy.random.default_rng``) and passed to C as arrays.

Other kinds add their own draws here (``random_features``, ``decay_slopes``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def lavo_bases(r: int, d: int, seed: int | None = 0) -> np.ndarray:
    """An ``(r, d)`` float64 matrix with orthonormal rows, for ``kind="lavo"``'s ``bases=``.

    [L] (lavo.md section 3, a library choice): draw an ``r x d`` standard Gaussian matrix
    with ``numpy.random.default_rng(seed)`` and orthonormalise its rows by modified
    Gram-Schmidt applied twice; a row whose norm after projection falls below
    ``1e-6 * sqrt(d)`` is redrawn (from the same generator).  Whether the paper learns its
    bases, keeps them fixed or shares them across heads is unverified.  ``r = 0`` gives a
    ``(0, d)`` matrix (memory disabled).
    """
    for name, x in (("r", r), ("d", d)):
        if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {x!r}")
    r, d = int(r), int(d)
    if r > d:
        raise ValueError(f"r must be <= d: at most d = {d} orthonormal rows exist, got r = {r}")
    rng = np.random.default_rng(0 if seed is None else seed)
    B = rng.standard_normal((r, d))
    tol = 1e-6 * math.sqrt(max(d, 1))
    i = 0
    while i < r:
        x = B[i]
        for _ in range(2):
            x = x - B[:i].T @ (B[:i] @ x)
        n = float(np.linalg.norm(x))
        if n < tol:
            B[i] = rng.standard_normal(d)
            continue
        B[i] = x / n
        i += 1
    return B


def lara_noise(batch: tuple, proposals: int, R: int, d: int, antithetic: bool,
               seed: int | None) -> np.ndarray:
    """LARA proposal noise ``(..., proposals * R, d)`` (lara.md section 6).

    One ``numpy.random.default_rng(seed)`` draw over the broadcast batch shape; rows are
    proposal-major (row ``c * R + rho``).  Antithetic: ``(..., proposals, R/2, d)`` draws
    ``eps``, rows ``2i`` and ``2i + 1`` of each proposal get ``eps`` and ``-eps``.
    """
    rng = np.random.default_rng(0 if seed is None else seed)
    if antithetic:
        e = rng.standard_normal(tuple(batch) + (proposals, R // 2, 1, d))
        e = np.concatenate([e, -e], axis=-2)
        return e.reshape(tuple(batch) + (proposals * R, d))
    return rng.standard_normal(tuple(batch) + (proposals * R, d))


def ra_draws(batch: tuple, N: int, S: int, d: int, need_uniforms: bool, need_noise: bool,
             seed: int | None):
    """RA draws (lara.md section 6): uniforms ``(..., N, S)`` in (0, 1), then Gaussian
    noise ``(..., N, S, d)``, from one ``default_rng(seed)``; each only when needed."""
    rng = np.random.default_rng(0 if seed is None else seed)
    u = rng.random(tuple(batch) + (N, S)) if need_uniforms else None
    z = rng.standard_normal(tuple(batch) + (N, S, d)) if need_noise else None
    return u, z
