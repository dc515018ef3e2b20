"""``la.features``: feature maps as NumPy gufunc-like calls running in C.

Each takes ``x (..., D)`` (any leading dimensions, any strides) and returns the
features ``(..., F)`` in the input's float dtype (float16 computed in float32).
"""

from __future__ import annotations

import numpy as np

from . import _core
from . import _registry as reg
from . import _validate as val


def _elementwise(x, fmap: int, scale: float, out=None):
    x = val.array("x", x)
    res = x.dtype
    xc = x.astype(np.float32, copy=False) if res == np.float16 else x
    if out is not None:
        out = val.out_array(out, x.shape, res, ())
    y = _core._featmap(xc, float(scale), np.int64(fmap),
                       out=out if (out is not None and out.dtype == xc.dtype) else None)
    if out is not None and y is not out:
        np.copyto(out, y, casting="unsafe")
        return out
    return y if y.dtype == res else y.astype(res)


def identity(x, scale: float = 1.0, *, out=None):
    """``phi(x) = scale * x`` (kinds ``"linear"``, ``"lightning"``, ``"retnet"``, ``"mamba2"``)."""
    return _elementwise(x, reg.FMAP_IDENTITY, val.positive_number("scale", scale), out)


def elu1(x, scale: float = 1.0, *, out=None):
    """``phi(x) = elu(scale * x) + 1`` (Katharopoulos et al. 2020; TransNormer T2)."""
    return _elementwise(x, reg.FMAP_ELU1, val.positive_number("scale", scale), out)


def elu(x, scale: float = 1.0, *, out=None):
    """``phi(x) = elu(scale * x)``, signed (TransNormer T1)."""
    return _elementwise(x, reg.FMAP_ELU, val.positive_number("scale", scale), out)


def relu(x, scale: float = 1.0, *, out=None):
    """``phi(x) = max(scale * x, 0)``."""
    return _elementwise(x, reg.FMAP_RELU, val.positive_number("scale", scale), out)


__all__ = ["identity", "elu1", "elu", "relu"]
