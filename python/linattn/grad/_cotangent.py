"""Helpers shared by the ``*_vjp`` modules: cotangent checks and broadcast reduction."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _validate as val


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


class Inputs(NamedTuple):
    """What a kind's gradient context reads from ``q, k, v``: the layout as given
    (``lay``), the arrays as given (``qa, ka, va``: their shapes and dtypes are the
    cotangents' contract), views in the default layout (``qt, kt, vt``), their dims in
    that layout (``dims``), the output dims in the caller's layout (``outer``) and the
    compute dtype."""
    lay: str
    qa: np.ndarray
    ka: np.ndarray
    va: np.ndarray
    qt: np.ndarray
    kt: np.ndarray
    vt: np.ndarray
    dims: val.Dims
    outer: val.Dims
    comp: np.dtype


def inputs(q, k, v, layout, causal: bool) -> Inputs:
    """Validate ``q, k, v`` as the forward does and return their :class:`Inputs`."""
    lay, (qv, kv, vv) = val.td_views(q, k, v, val.check_layout(layout))
    qa, ka, va = val.array("q", q), val.array("k", k), val.array("v", v)
    qt, kt, vt = val.array("q", qv), val.array("k", kv), val.array("v", vv)
    dims = val.qkv_dims(qt, kt, vt, "...td", causal)
    outer = val.qkv_dims(qa, ka, va, lay, causal)
    _, comp = val.compute_dtype(qt, kt, vt)
    return Inputs(lay, qa, ka, va, qt, kt, vt, dims, outer, comp)
