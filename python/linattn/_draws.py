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
