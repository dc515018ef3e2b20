"""Deterministic draws and parameter tables, made in Python and passed to C as arrays.

- ``random_features``: Performer / RFA projections (orthogonal or Gaussian,
  docs/design/kinds.md §5.3).
- ``decay_slopes``: the per-head log-decays of the Lightning / RetNet presets
  (docs/design/kinds.md §7.2).
- ``lavo_bases``, ``lara_noise``, ``ra_draws``: LAVO's orthonormal bases and RA/LARA's
  noise, from ``numpy.random.default_rng(seed)`` in a documented order.
"""

from __future__ import annotations

import functools
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
    overrides them (docs/design/kinds.md §7.2).
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

    [L] (docs/design/lavo.md §3, a library choice): draw an ``r x d`` standard Gaussian matrix
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
    """LARA proposal noise ``(..., proposals * R, d)`` (docs/design/lara.md §6).

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
    """RA draws (docs/design/lara.md §6): uniforms ``(..., N, S)`` in (0, 1), then Gaussian
    noise ``(..., N, S, d)``, from one ``default_rng(seed)``; each only when needed."""
    rng = np.random.default_rng(0 if seed is None else seed)
    u = rng.random(tuple(batch) + (N, S)) if need_uniforms else None
    z = rng.standard_normal(tuple(batch) + (N, S, d)) if need_noise else None
    return u, z


RF_KINDS = ("orthogonal", "gaussian")
RF_NORMS = ("chi", "sqrt_d")


def _count(name: str, x: object, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if int(x) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(x)}")
    return int(x)


def random_features(d: int, m: int, kind: str = "orthogonal", seed: int | None = 0,
                    dtype=np.float64, norms: str = "chi") -> np.ndarray:
    """A ``(m, d)`` random projection for ``"rfa"`` and ``"performer"``
    (docs/design/kinds.md §5.3).

    Parameters
    ----------
    d : int
        Input features (columns).
    m : int
        Rows (random features / frequencies).
    kind : {"orthogonal", "gaussian"}
        ``"orthogonal"``: orthogonal random features.  Rows come in blocks of ``d``: each
        block is ``Q^T`` of the QR factorisation of a ``d x d`` standard normal matrix
        (signs fixed so that ``diag(R) > 0``, i.e. Haar-distributed), the last block
        truncated to the remaining rows.  ``"gaussian"``: iid ``N(0, 1)`` entries.
    seed : int or None
        Seed of ``numpy.random.default_rng``; the same seed gives the same matrix.
        Draw order: the blocks (or the Gaussian matrix), then the row norms.
    dtype : float32 or float64
    norms : {"chi", "sqrt_d"}
        Orthogonal rows are rescaled to an independent ``chi_d`` length (the norm of a
        fresh ``N(0, I_d)`` vector, so every row is marginally ``N(0, I_d)``) or all to
        ``sqrt(d)`` (the paper's regularised variant).  Gaussian rows keep their own
        length under ``"chi"`` and are rescaled to ``sqrt(d)`` under ``"sqrt_d"``.
    """
    d = _count("d", d, 1)
    m = _count("m", m, 1)
    if kind not in RF_KINDS:
        raise ValueError(f"kind must be one of {RF_KINDS}, got {kind!r}")
    if norms not in RF_NORMS:
        raise ValueError(f"norms must be one of {RF_NORMS}, got {norms!r}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        W = rng.standard_normal((m, d))
        if norms == "sqrt_d":
            W *= np.sqrt(d) / np.linalg.norm(W, axis=1, keepdims=True)
        return W.astype(dt)
    W = np.empty((m, d))  # absurd sizes raise MemoryError here, before any draw loop
    for i in range(0, m, d):
        Q, R = np.linalg.qr(rng.standard_normal((d, d)))
        Q = Q * np.where(np.diag(R) < 0, -1.0, 1.0)
        W[i:i + d] = Q.T[:m - i]
    if norms == "chi":
        lengths = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    else:
        lengths = np.full(m, np.sqrt(d))
    return (W * lengths[:, None]).astype(dt)


__all__ = ["random_features"]


@functools.lru_cache(maxsize=64)
def drawn(d: int, rows: int, draw: str, seed: int, dtype: np.dtype) -> np.ndarray:
    """``random_features(d, rows, draw, seed)`` in ``dtype``, drawn once per arguments and
    kept read-only: every path of the random-feature kinds (the calls, their plans, the
    decoding steps, the gradients, the state algebra, the Dask front end) asks for the
    projection at each call."""
    W = random_features(d, rows, kind=draw, seed=seed).astype(dtype, copy=False)
    W.flags.writeable = False
    return W


def transposed(W: np.ndarray) -> np.ndarray:
    """``W`` (..., rows, d) as a view of its transpose's contiguous copy (the same
    values; row stride 1).  The one-token kernels read such a projection's columns in
    place and the block kernels use it in their products without copying it per
    (batch, head) slice."""
    if W.ndim == 2 and W.strides[0] == W.itemsize:
        return W
    Wt = np.ascontiguousarray(np.swapaxes(W, -1, -2))
    Wt.flags.writeable = False
    return np.swapaxes(Wt, -1, -2)


def projection_for(kind: str, d: int, num_features, projection, seed, features: str = "positive",
                   dtype=np.float64) -> tuple[np.ndarray, int]:
    """The projection of a random-feature kind and its feature width ``F``.

    ``"rfa"`` and Performer ``"hyperbolic"`` have ``F = 2 * rows`` (even
    ``num_features``); Performer ``"positive"`` and ``"relu"`` have ``F = rows``.  Without
    ``projection`` the rows are drawn from ``seed`` (None here means 0, as in the oracle;
    ``la.causal`` / ``la.noncausal`` resolve ``seed=None`` to fresh entropy first): iid
    Gaussian for RFA (docs/design/kinds.md §4.2), orthogonal with chi norms for Performer
    (docs/design/kinds.md §5.3).
    """
    paired = kind == "rfa" or features == "hyperbolic"
    what = "kind 'rfa' (sin and cos halves)" if kind == "rfa" else \
        "features='hyperbolic' (exp(u) and exp(-u) halves)"
    if num_features is not None:
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
            raise TypeError(f"num_features must be an integer, got "
                            f"{type(num_features).__name__}")
        if int(num_features) < 1:
            raise ValueError(f"num_features must be >= 1, got {int(num_features)}")
        num_features = int(num_features)
        if paired and num_features % 2:
            raise ValueError(f"num_features must be even for {what}, got {num_features}")
    if projection is None:
        F = num_features if num_features is not None else (128 if kind == "rfa" else 256)
        rows = F // 2 if paired else F
        if seed is None:
            seed = 0
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        draw = "gaussian" if kind == "rfa" else "orthogonal"
        return drawn(d, rows, draw, int(seed), np.dtype(dtype)), F
    if seed is not None:
        raise TypeError("pass either projection= or seed=, not both")
    W = projection if isinstance(projection, np.ndarray) else np.asarray(projection)
    if W.dtype.kind != "f":
        raise TypeError(f"projection must be a float array, got dtype {W.dtype}")
    if W.ndim < 2 or W.shape[-1] != d or W.shape[-2] < 1:
        raise ValueError(f"projection must have shape (rows, D={d}) or (..., rows, {d}) with "
                         f"rows >= 1, got {W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("projection must be finite")
    rows = W.shape[-2]
    F = 2 * rows if paired else rows
    if num_features is not None and num_features != F:
        raise ValueError(f"num_features={num_features} does not match projection with "
                         f"{rows} rows (F = {F} for {kind!r})")
    return W.astype(dtype, copy=False), F


def fingerprint(W: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint of a projection (its float64 values and shape)."""
    import hashlib

    a = np.ascontiguousarray(W, dtype=np.float64)
    h = hashlib.blake2b(repr(a.shape).encode() + a.tobytes(), digest_size=8)
    return np.array(int.from_bytes(h.digest(), "little"), dtype=np.uint64)
