"""Helpers shared by the ``*_vjp`` modules: cotangent checks and broadcast reduction."""

from __future__ import annotations

import numpy as np


def sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``g`` summed over the axes along which an input of ``shape`` was broadcast
    (leading axes first, then size-1 axes; a fixed order, so deterministic)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes).reshape(shape)


def cotangent(name: str, x, shape: tuple[int, ...], what: str, dtype) -> np.ndarray:
    """A cotangent as an array of ``dtype`` with exactly ``shape`` (ValueError naming it)."""
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real floating-point array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of {what}, {tuple(shape)}, "
                         f"got {a.shape}")
    return a.astype(dtype, copy=False)


def as_dtype_of(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    return g if g.dtype == like.dtype else g.astype(like.dtype)
