"""Random draws, made in Python with ``numpy.random.default_rng(seed)`` and passed to C
as arrays (style.md 6), so kernels stay deterministic."""

from __future__ import annotations

import numbers

import numpy as np

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
    """A ``(m, d)`` random projection for ``"rfa"`` and ``"performer"`` (kinds.md 5.3).

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
    blocks = []
    for _ in range(-(-m // d)):
        Q, R = np.linalg.qr(rng.standard_normal((d, d)))
        Q = Q * np.where(np.diag(R) < 0, -1.0, 1.0)
        blocks.append(Q.T)
    W = np.concatenate(blocks, axis=0)[:m]
    if norms == "chi":
        lengths = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    else:
        lengths = np.full(m, np.sqrt(d))
    return (W * lengths[:, None]).astype(dt)


__all__ = ["random_features"]


def projection_for(kind: str, d: int, num_features, projection, seed, features: str = "positive",
                   dtype=np.float64) -> tuple[np.ndarray, int]:
    """The projection of a random-feature kind and its feature width ``F``.

    ``"rfa"`` and Performer ``"hyperbolic"`` have ``F = 2 * rows`` (even
    ``num_features``); Performer ``"positive"`` and ``"relu"`` have ``F = rows``.  Without
    ``projection`` the rows are drawn from ``seed`` (default 0): iid Gaussian for RFA
    (kinds.md 4.2), orthogonal with chi norms for Performer (5.3).
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
        draw = "gaussian" if kind == "rfa" else "orthogonal"
        return random_features(d, rows, kind=draw, seed=seed).astype(dtype, copy=False), F
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
