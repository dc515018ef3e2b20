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


# ---------------------------------------------------------- random features --

PERFORMER_KINDS = {"positive": 0, "hyperbolic": 1, "relu": 2}
PERFORMER_SHIFTS = {None: 0, "row": 1, "global": 2}


def _rf_inputs(x, projection):
    x = val.array("x", x)
    W = val.array("projection", projection)
    if x.ndim < 1:
        raise ValueError("x must have at least 1 dimension (..., D), got a scalar")
    if W.ndim < 2 or W.shape[-1] != x.shape[-1] or W.shape[-2] < 1:
        raise ValueError(f"projection must have shape (rows, D={x.shape[-1]}) or "
                         f"(..., rows, {x.shape[-1]}), got {W.shape}")
    res, comp = val.compute_dtype(x, W)
    single = x.ndim == 1
    xc = x[None] if single else x
    return xc.astype(comp, copy=False), W.astype(comp, copy=False), res, single


def _rf_finish(y4, res, single, out):
    y = y4.reshape(y4.shape[:-2] + (y4.shape[-2] * y4.shape[-1],))
    if single:
        y = y[0]
    if out is not None:
        out = val.out_array(out, y.shape, res, ())
        np.copyto(out, y, casting="unsafe")
        return out
    return y if y.dtype == res else y.astype(res)


def rfa(x, projection, scale: float = 1.0, *, out=None):
    """RFA random Fourier features (docs/design/kinds.md §4.1), in C.

    ``x_hat = x / (|x| + 1e-3)``, ``u = sqrt(scale) W x_hat``,
    ``phi(x) = sqrt(2/F) [sin u ; cos u]`` with ``F = 2 * rows``, so that
    ``E[phi(x).phi(y)] = exp(-scale |x_hat - y_hat|^2 / 2)``.

    ``x (..., T, D)`` (or ``(..., D)``), ``projection (rows, D)`` or ``(..., rows, D)``
    (broadcast against ``x``'s leading dimensions) -> ``(..., T, 2 * rows)``.
    """
    scale = val.positive_number("scale", scale)
    xc, W, res, single = _rf_inputs(x, projection)
    return _rf_finish(_core._rfa_features(xc, W, scale), res, single, out)


def performer(x, projection, kind: str = "positive", scale: float | None = None, *,
              stabilize: str | None = None, eps: float = 0.0, log: bool = False, out=None):
    """Performer (FAVOR+) features (docs/design/kinds.md §5.1), in C.

    With ``x' = sqrt(scale) x`` (``scale`` default ``D**-0.5``), ``h = |x'|^2/2``,
    ``u = W x'`` (``W = projection``, ``rows x D``):

    - ``"positive"``: ``phi = rows^(-1/2) exp(u - h)``, ``F = rows``;
    - ``"hyperbolic"``: ``phi = (2 rows)^(-1/2) exp(-h) [exp(u); exp(-u)]``, ``F = 2 rows``;
    - ``"relu"``: ``phi = rows^(-1/2) ReLU(u) + 1e-3`` (not a softmax estimator).

    The exponentials are taken in the log domain, so nothing overflows:
    ``stabilize="row"`` returns ``c (exp(u - h - s_t) + eps)`` with ``s_t`` the row's
    maximum of ``u - h`` (the published query stabiliser), ``"global"`` the same with the
    maximum over the whole ``T x F`` slice (the published key stabiliser, which looks at
    every position); ``None`` returns the true features ``c exp(u - h) + c eps``.
    ``log=True`` returns the (shifted) log-features ``log c + u - h - s`` instead.
    ``x (..., T, D)`` -> ``(..., T, F)``.
    """
    if kind not in PERFORMER_KINDS:
        raise ValueError(f"kind must be one of {tuple(PERFORMER_KINDS)}, got {kind!r}")
    if stabilize not in PERFORMER_SHIFTS:
        raise ValueError(f"stabilize must be one of {tuple(PERFORMER_SHIFTS)}, got "
                         f"{stabilize!r}")
    eps = val.nonneg_number("eps", eps)
    xc, W, res, single = _rf_inputs(x, projection)
    d = xc.shape[-1]
    scale = (1.0 / np.sqrt(d) if d else 1.0) if scale is None else \
        val.positive_number("scale", scale)
    flags = PERFORMER_KINDS[kind] | (PERFORMER_SHIFTS[stabilize] << 2) | (int(bool(log)) << 4)
    g = _core._performer_features_2 if kind == "hyperbolic" else _core._performer_features_1
    return _rf_finish(g(xc, W, float(scale), eps, np.int64(flags)), res, single, out)


__all__ += ["performer", "rfa"]
