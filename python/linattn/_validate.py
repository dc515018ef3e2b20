"""Input checks shared by the entry points: every error before any kernel runs.

Messages name the argument, what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("...td", "bthd")
_INT_MAX = 2**31 - 1


def array(name: str, x: object) -> np.ndarray:
    """A float array in native byte order, or TypeError naming ``name``."""
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    dt = a.dtype
    if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
        raise TypeError(f"{name} must be a float32, float64 or float16 array, got dtype {dt}")
    if not dt.isnative:
        a = a.astype(dt.newbyteorder("="))
    return a


def compute_dtype(*arrays: np.ndarray) -> tuple[np.dtype, np.dtype]:
    """(result dtype, compute dtype): float16 results are computed in float32."""
    res = np.result_type(*arrays)
    comp = np.dtype(np.float32) if res == np.float16 else res
    return res, comp


def check_layout(layout: str | None) -> str:
    if layout is None:
        return "...td"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def td_views(q, k, v, layout: str | None):
    """``(layout, (q, k, v))`` with ``layout="bthd"`` arrays viewed as ``(..., H, T, D)``
    (no copies), for kinds whose kernels take the default layout only."""
    layout = check_layout(layout)
    if layout != "bthd":
        return layout, (q, k, v)
    out = []
    for name, a in zip(("q", "k", "v"), (q, k, v)):
        a = array(name, a)
        if a.ndim < 3:
            raise ValueError(f"{name} must have at least 3 dimensions (B, T, H, D) with "
                             f"layout='bthd', got shape {a.shape}")
        out.append(np.swapaxes(a, -3, -2))
    return layout, tuple(out)


@dataclass
class Dims:
    layout: str
    T: int
    S: int
    D: int
    E: int
    batch: tuple[int, ...]  # loop dimensions (bthd: leading dims + heads)

    @property
    def heads(self) -> int:
        return self.batch[-1] if self.batch else 1

    def out_shape(self, width: int, batch: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """The output's shape for ``width`` values per token, over ``batch`` (default the
        inputs' batch dimensions; a decay or an initial state may widen it)."""
        batch = self.batch if batch is None else batch
        if self.layout == "bthd":
            return batch[:-1] + (self.T, batch[-1], width)
        return batch + (self.T, width)


def _split(name: str, a: np.ndarray, layout: str) -> tuple[tuple[int, ...], int, int]:
    """(batch dims, time, features) of one input under ``layout``."""
    if layout == "bthd":
        if a.ndim < 3:
            raise ValueError(f"{name} must have at least 3 dimensions (B, T, H, D) with "
                             f"layout='bthd', got shape {a.shape}")
        return a.shape[:-3] + (a.shape[-2],), a.shape[-3], a.shape[-1]
    if a.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., T, D), got shape "
                         f"{a.shape}")
    return a.shape[:-2], a.shape[-2], a.shape[-1]


def qkv_dims(q: np.ndarray, k: np.ndarray, v: np.ndarray, layout: str, causal: bool) -> Dims:
    qb, T, D = _split("q", q, layout)
    kb, S, Dk = _split("k", k, layout)
    vb, Sv, E = _split("v", v, layout)
    if Dk != D:
        raise ValueError(f"k has {Dk} features but q has {D} (last axis)")
    if Sv != S:
        raise ValueError(f"v has {Sv} tokens but k has {S} (time axis)")
    if causal and S != T:
        raise ValueError(f"causal attention needs as many keys as queries: k has {S} tokens "
                         f"but q has {T}; use la.noncausal for cross-attention")
    try:
        batch = np.broadcast_shapes(qb, kb, vb)
    except ValueError:
        raise ValueError(f"batch dimensions of q {qb}, k {kb} and v {vb} do not broadcast "
                         f"(layout {layout!r}){_group_hint(qb, kb, layout)}") from None
    for n, size in (("D", D), ("E", E)):
        if size > _INT_MAX:
            raise ValueError(f"{n} = {size} exceeds the BLAS limit of {_INT_MAX}")
    return Dims(layout, T, S, D, E, tuple(batch))


def _group_hint(qb: tuple, kb: tuple, layout: str) -> str:
    """How to group the heads when q has a multiple of k's heads (grouped-query
    attention), else ``""``."""
    if len(qb) != len(kb) or not qb:
        return ""
    Hq, Hk = qb[-1], kb[-1]  # the head axis: last of the batch dimensions in both layouts
    if Hk <= 1 or Hq <= Hk or Hq % Hk:
        return ""
    G, R = Hk, Hq // Hk
    how = (f"q as (B, {G}, {R}, T, D) and k, v as (B, {G}, 1, T, D)")
    if layout == "bthd":
        how += (" in the default layout (from (B, T, H, D): x.swapaxes(1, 2), then "
                f"q.reshape(B, {G}, {R}, T, D) and k[:, :, None])")
    else:
        how += f" (q.reshape(B, {G}, {R}, T, D), k[:, :, None])"
    return (f"; q has {Hq} heads and k {Hk}: for grouped-query attention ({G} groups of {R} "
            f"query heads sharing one key head) pass {how}")


def first_index(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True of ``mask`` as plain ints (``()`` for a scalar)."""
    if mask.ndim == 0:
        return ()
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def unit_interval(name: str, a: np.ndarray) -> None:
    """Raise unless every value of ``a`` lies in [0, 1] (NaN fails), naming the first."""
    bad = ~((a >= 0) & (a <= 1))
    if bad.any():
        idx = first_index(bad)
        raise ValueError(f"{name} values must lie in [0, 1], got {float(a[idx])} at index {idx}")


def positive_number(name: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    xf = float(x)
    if not math.isfinite(xf) or xf <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {xf}")
    return xf


def nonneg_number(name: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    xf = float(x)
    if not (xf >= 0) or math.isinf(xf):
        raise ValueError(f"{name} must be finite and >= 0, got {xf}")
    return xf


def positive_int(name: str, x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    xi = int(x)
    if xi < 1:
        raise ValueError(f"{name} must be >= 1, got {xi}")
    if xi > _INT_MAX:
        raise ValueError(f"{name} must be <= {_INT_MAX}, got {xi}")
    return xi


def choice(name: str, x: object, allowed) -> str:
    if x not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {x!r}")
    return x  # type: ignore[return-value]


def decay(g: object, dims: Dims) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """Canonical float64 log-decay for the core gufunc.

    Returns (array with the time axis as a core axis, its gufunc axes, per_token).
    Per head: broadcastable to the batch dimensions.  Per token: exactly one
    more axis than the batch dimensions, the time axis of length T (in
    ``layout="bthd"`` that is fla's ``g`` of shape (B, T, H)).
    """
    if isinstance(g, np.ndarray) and g.dtype.kind != "f":
        raise TypeError(f"decay must be a float array, got dtype {g.dtype}")
    a = np.asarray(g, dtype=np.float64)
    nb = len(dims.batch)
    if np.isnan(a).any():
        idx = first_index(np.isnan(a))
        raise ValueError(f"decay must not contain NaN (first at index {idx})")
    if (a > 0).any():
        idx = first_index(a > 0)
        raise ValueError(f"decay is a log-decay and must be <= 0, got {float(a[idx])} at index "
                         f"{idx}; for a decay factor gamma in (0, 1] pass np.log(gamma)")
    if a.ndim == nb + 1 and nb >= 0:
        # per token
        if dims.layout == "bthd":
            if a.ndim < 2 or a.shape[-2] != dims.T:
                raise ValueError(f"per-token decay with layout='bthd' must have shape "
                                 f"(..., T={dims.T}, H), got {a.shape}")
            bshape = a.shape[:-2] + (a.shape[-1],)
            axes = (-2,)
        else:
            if a.shape[-1] != dims.T:
                hint = ""
                if a.ndim >= 2 and a.shape[-2] == dims.T:
                    hint = ("; a (B, T, H) decay is the layout='bthd' convention: pass "
                            "layout='bthd' with (B, T, H, D) inputs, or "
                            "np.swapaxes(decay, -1, -2)")
                raise ValueError(f"per-token decay must have shape (..., T={dims.T}) with one "
                                 f"more axis than the batch dimensions {dims.batch}, got "
                                 f"{a.shape}{hint}")
            bshape = a.shape[:-1]
            axes = (-1,)
        try:
            np.broadcast_shapes(bshape, dims.batch)
        except ValueError:
            raise ValueError(f"per-token decay of shape {a.shape} does not broadcast against "
                             f"the batch dimensions {dims.batch}") from None
        return a, axes, True
    if a.ndim > nb:
        raise ValueError(f"decay must be per head (broadcastable to the batch dimensions "
                         f"{dims.batch}) or per token (one more axis, of length T={dims.T}); "
                         f"got shape {a.shape}")
    try:
        np.broadcast_shapes(a.shape, dims.batch)
    except ValueError:
        raise ValueError(f"per-head decay of shape {a.shape} does not broadcast against the "
                         f"batch dimensions {dims.batch}") from None
    return np.broadcast_to(a[..., None], a.shape + (dims.T,)), (-1,), False


def out_array(out: object, shape: tuple[int, ...], dtype: np.dtype,
              inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    no_overlap(out, **dict(zip(("q", "k", "v"), inputs)))
    return out


def no_overlap(out: object, **inputs: object) -> None:
    """ValueError when ``out`` shares memory with one of the named input arrays."""
    if not isinstance(out, np.ndarray):
        return
    for name, a in inputs.items():
        if not isinstance(a, np.ndarray):
            continue
        try:
            overlap = np.shares_memory(out, a, max_work=10**6)
        except np.exceptions.TooHardError:
            overlap = np.may_share_memory(out, a)
        if overlap:
            raise ValueError(f"out overlaps the input {name}; pass a separate array")


def check_finite(**named: object) -> None:
    """``check_finite=True``: raise ValueError naming the first tensor (in argument order)
    that holds a NaN or an infinity, and the index of its first such element.

    Non-array and non-float arguments are skipped (their dtype errors come later, from
    :func:`array`); ``None`` is skipped.  Nothing is copied: the scan is read-only.
    """
    for name, x in named.items():
        if x is None:
            continue
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        finite = np.isfinite(a)
        if finite.all():
            continue
        bad = ~finite
        idx = np.unravel_index(int(np.argmax(bad)), a.shape) if a.ndim else ()
        idx = tuple(int(i) for i in idx)
        raise ValueError(f"{name} contains a non-finite value ({float(a[idx])}) at index {idx}; "
                         f"check_finite=True rejects NaN and Inf")
