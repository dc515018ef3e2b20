"""Deterministic draws and parameter tables, made in Python and passed to C as arrays.

- ``decay_slopes``: the per-head log-decays of the Lightning / RetNet presets (kinds.md 7.2).
- ``lavo_bases``, ``lara_noise``, ``ra_draws``: LAVO's orthonormal bases and RA/LARA's
  noise, from ``numpy.random.default_rng(seed)`` in a documented order.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

DECAY_PRESETS = ("tnl", "fla", "retnet")


def _alibi_pow2(n: int) -> list[float]:
    # s_h = 2^(-8 (h+1) / n) for n a power of two
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def alibi_slopes(n: int) -> np.ndarray:
    """ALiBi slopes ``s_h`` for ``n`` heads (Press et al. 2022).

    A power of two uses ``s_h = 2^(-8(h+1)/n)``.  Otherwise, with ``p`` the largest
    power of two below ``n``: the ``p`` slopes of the rule for ``p``, then the slopes of
    the rule for ``2p`` at even indices ``0, 2, 4, ...``, the first ``n - p`` of them.
    """
    if n & (n - 1) == 0:
        return np.array(_alibi_pow2(n), dtype=np.float64)
    p = 2 ** int(math.floor(math.log2(n)))
    extra = alibi_slopes(2 * p)[0::2][: n - p]
    return np.concatenate([np.array(_alibi_pow2(p)), extra])


def _int(name: str, x: object, lo: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if int(x) < lo:
        raise ValueError(f"{name} must be >= {lo}, got {int(x)}")
    return int(x)


def decay_slopes(H: int, preset: str = "tnl", layer: int = 0, num_layers: int = 1) -> np.ndarray:
    """Per-head log-decays ``log lambda_h`` (``(H,)`` float64, ``<= 0``) of a preset.

    Parameters
    ----------
    H : int
        Number of heads.
    preset : {"tnl", "fla", "retnet"}
        ``"tnl"`` (lightning-attention's TransNormerLLM code, the ``"lightning"`` default):
        ``log lambda_h = -s_h (1 - l/(L-1) + 1e-5)`` with ALiBi slopes ``s_h`` (the term
        ``l/(L-1)`` is 0 when ``L = 1``).  ``"fla"`` (fla's ``chunk_lightning_attn``):
        ``log lambda_h = -(8/H)(1 - l/L) h`` (head 0 never decays).  ``"retnet"``
        (torchscale / fla ``retention``): ``lambda_h = 1 - 2^(-5-h)``; ``layer`` and
        ``num_layers`` are ignored.
    layer, num_layers : int
        Layer index ``l`` (``0 <= l < L``) and layer count ``L``.

    The two public Lightning formulas disagree; both are presets and ``decay=`` always
    overrides them (kinds.md section 7.2).
    """
    H = _int("H", H, 1)
    if preset not in DECAY_PRESETS:
        raise ValueError(f"preset must be one of {DECAY_PRESETS}, got {preset!r}")
    L = _int("num_layers", num_layers, 1)
    layer = _int("layer", layer, 0)
    if layer >= L:
        raise ValueError(f"layer must be < num_layers = {L}, got {layer}")
    h = np.arange(H, dtype=np.float64)
    if preset == "tnl":
        frac = 0.0 if L == 1 else layer / (L - 1)
        return -alibi_slopes(H) * (1.0 - frac + 1e-5)
    if preset == "fla":
        return -(8.0 / H) * (1.0 - layer / L) * h + 0.0  # no -0.0 for head 0
    return np.log1p(-(2.0 ** (-5.0 - h)))


__all__ = ["alibi_slopes", "decay_slopes"]



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
