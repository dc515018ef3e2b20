"""``"cosformer"`` (Qin et al. 2022): ReLU features re-weighted by cos((pi/2)(i-j)/M).

Features ``[relu(q~) sin(theta_i); relu(q~) cos(theta_i)]`` (``2d`` wide, computed in C by
``_core._cosformer_features``) with ``theta_i = pi i / (2M)`` and 1-based absolute
positions ``i`` (``state.t`` added when resuming), then the generic operator with
identity maps and the div normaliser (``max(den, 1e-6)``), kinds.md section 8.

Horizon rules (kinds.md 8.2): non-causal default ``M = max(T, S)`` (the official code);
a single causal call without ``horizon`` uses ``M = T`` (official, but prefixes are then
not consistent); ``return_state``, ``initial_state`` and ``la.step`` need an explicit
``horizon`` and ``state.extra["horizon"]`` must match on resume.  Lags beyond ``M`` (which
would give negative weights) raise unless ``beyond_horizon="allow"``.
"""

from __future__ import annotations

import numpy as np

from .. import _api, _core
from .. import _registry as reg
from .. import _validate as val
from ..state import State

BEYOND = ("error", "allow")


def _td(x: np.ndarray, layout: str) -> np.ndarray:
    return np.swapaxes(x, -3, -2) if layout == "bthd" else x


def features(x: np.ndarray, t0: int, horizon: float, scale: float) -> np.ndarray:
    """``(..., T, D)`` -> ``(..., T, 2D)`` cosFormer features (C), positions
    ``t0 + 1 .. t0 + T``."""
    y = _core._cosformer_features(x, np.int64(t0), float(horizon), float(scale))
    return y.reshape(y.shape[:-2] + (2 * y.shape[-1],))


def _horizon(horizon, default: int) -> int:
    if horizon is None:
        return max(int(default), 1)
    return val.positive_int("horizon", horizon)


def _check_lag(max_lag: int, M: int, beyond: str, where: str) -> None:
    if beyond == "error" and max_lag > M:
        raise ValueError(f"horizon={M} is too small: {where} reach a lag of {max_lag} > "
                         f"horizon, where cosFormer weights cos((pi/2) lag/M) turn negative; "
                         f"pass horizon >= {max_lag} or beyond_horizon='allow'")


def _views(q, k, v, layout, causal):
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, layout, causal=causal)
    lay = dims.layout
    q, k, v = (_td(x, lay) for x in (q, k, v))
    return q, k, v, dims, res, comp


def _out_td(out, layout):
    if out is None or layout != "bthd" or not isinstance(out, np.ndarray) or out.ndim < 3:
        return out
    return np.swapaxes(out, -3, -2)


def _causal(q, k, v, *, spec, mode, chunk_size, scale, normalize, eps, decay, horizon,
            initial_state, return_state, layout, out, options, **_):
    beyond = val.choice("beyond_horizon", options["beyond_horizon"], BEYOND)
    q, k, v, dims, res, comp = _views(q, k, v, layout, causal=True)
    normalize, eps, eps_mode = _api._norm_and_eps(spec, normalize, eps, None)
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    val.choice("mode", mode, ("auto",) + spec.causal_modes)
    if initial_state is not None and not isinstance(initial_state, State):
        raise TypeError(f"initial_state must be a linattn.State (or None), got "
                        f"{type(initial_state).__name__}")
    if horizon is None and (initial_state is not None or return_state):
        raise ValueError("kind 'cosformer' needs an explicit horizon= when streaming "
                         "(initial_state, return_state or la.step): the weights depend on M, "
                         "so M must not change between calls")
    M = _horizon(horizon, dims.T)
    t0 = 0
    if initial_state is not None:
        t0 = int(initial_state.t)
        if initial_state.kind == spec.name:
            hs = initial_state.extra.get("horizon")
            if hs is not None and (np.asarray(hs).shape != ()
                                   or np.asarray(hs).dtype.kind not in "iuf"):
                raise ValueError(f"initial_state.extra['horizon'] must be a scalar integer, "
                                 f"got {np.asarray(hs).dtype} of shape {np.asarray(hs).shape}")
            if hs is None or int(np.asarray(hs)) != M:
                raise ValueError(f"horizon={M} does not match initial_state.extra['horizon']="
                                 f"{None if hs is None else int(np.asarray(hs))}: a cosFormer "
                                 f"stream must keep one horizon")
    _check_lag(t0 + dims.T - 1, M, beyond, f"positions 1..{t0 + dims.T}")
    fq = features(q.astype(comp, copy=False), t0, M, scale)
    fk = features(k.astype(comp, copy=False), t0, M, 1.0)
    fdims = val.Dims("...td", dims.T, dims.S, 2 * dims.D, dims.E, dims.batch)
    r = _api.linear_core(fq, fk, v, spec=spec, fmap_q=reg.FMAP_IDENTITY,
                         fmap_k=reg.FMAP_IDENTITY, scale=1.0, normalize=normalize, eps=eps,
                         eps_mode=eps_mode, decay=None, mode=mode, chunk_size=chunk_size,
                         initial_state=initial_state, return_state=bool(return_state),
                         layout="...td", out=_out_td(out, dims.layout), dims=fdims, res=res,
                         comp=comp, extra={"horizon": np.array(M, dtype=np.int64)})
    o, st = r if return_state else (r, None)
    o = out if out is not None else _td(o, dims.layout)
    return (o, st) if return_state else o


def _noncausal(q, k, v, *, spec, chunk_size, scale, normalize, eps, horizon, layout, out,
               options, **_):
    beyond = val.choice("beyond_horizon", options["beyond_horizon"], BEYOND)
    q, k, v, dims, res, comp = _views(q, k, v, layout, causal=False)
    normalize, eps, eps_mode = _api._norm_and_eps(spec, normalize, eps, None)
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    M = _horizon(horizon, max(dims.T, dims.S))
    _check_lag(max(dims.T, dims.S) - 1, M, beyond,
               f"query positions 1..{dims.T} and key positions 1..{dims.S}")
    fq = features(q.astype(comp, copy=False), 0, M, scale)
    fk = features(k.astype(comp, copy=False), 0, M, 1.0)
    fdims = val.Dims("...td", dims.T, dims.S, 2 * dims.D, dims.E, dims.batch)
    o = _api.noncausal_core(fq, fk, v, fmap_q=reg.FMAP_IDENTITY, fmap_k=reg.FMAP_IDENTITY,
                            scale=1.0, normalize=normalize, eps=eps, eps_mode=eps_mode,
                            chunk_size=chunk_size, layout="...td",
                            out=_out_td(out, dims.layout), dims=fdims, res=res, comp=comp)
    return out if out is not None else _td(o, dims.layout)


reg.register(reg.KindSpec(
    name="cosformer",
    doc="ReLU features re-weighted by cos((pi/2)(i-j)/M), 1-based absolute positions; causal "
        "needs horizon=M to stream (a single causal call without it uses M = T, the official "
        "code's choice, whose prefixes are not consistent); non-causal default M = max(T, S).",
    paper="Qin et al. 2022, cosFormer: Rethinking Softmax in Attention, arXiv:2202.08791",
    fmap_q=None, fmap_k=None, normalize="div", eps=1e-6, eps_mode="clamp",
    keywords=("horizon",), options={"beyond_horizon": "error"},
    causal_impl=_causal, noncausal_impl=_noncausal,
))
