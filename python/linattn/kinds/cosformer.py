"""``"cosformer"`` (Qin et al. 2022): ReLU features re-weighted by cos((pi/2)(i-j)/M).

Features ``[relu(q~) sin(theta_i); relu(q~) cos(theta_i)]`` (``2d`` wide, computed in C by
``_core._cosformer_features``) with ``theta_i = pi i / (2M)`` and 1-based absolute
positions ``i`` (``state.t`` added when resuming), then the generic operator with
identity maps and the div normaliser (``max(den, 1e-6)``), docs/design/kinds.md §8.

Horizon rules (docs/design/kinds.md §8.2): non-causal default ``M = max(T, S)`` (the official
code); a single causal call without ``horizon`` uses ``M = T`` (official, but prefixes are then
not consistent); ``return_state``, ``initial_state`` and ``la.step`` need an explicit
``horizon`` and ``state.extra["horizon"]`` must match on resume. Lags beyond ``M`` (which would
give negative weights) raise unless ``beyond_horizon="allow"``.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _validate as val
from .._call import Call, linear_causal, linear_causal_plan, linear_noncausal

BEYOND = ("error", "allow")


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


def _resume_t0(call: Call, M: int) -> int:
    st = call.initial_state
    if st is None:
        return 0
    hs = st.extra.get("horizon")
    if hs is not None and (np.asarray(hs).shape != () or np.asarray(hs).dtype.kind not in "iuf"):
        raise ValueError(f"initial_state.extra['horizon'] must be a scalar integer, got "
                         f"{np.asarray(hs).dtype} of shape {np.asarray(hs).shape}")
    if hs is None or int(np.asarray(hs)) != M:
        raise ValueError(f"horizon={M} does not match initial_state.extra['horizon']="
                         f"{None if hs is None else int(np.asarray(hs))}: a cosFormer "
                         f"stream must keep one horizon")
    return int(st.t)


def forward(call: Call, options: dict):
    beyond = val.choice("beyond_horizon", options["beyond_horizon"], BEYOND)
    dims, comp = call.dims, call.comp
    if call.causal:
        if call.horizon is None and (call.initial_state is not None or call.return_state):
            raise ValueError("kind 'cosformer' needs an explicit horizon= when streaming "
                             "(initial_state, return_state or la.step): the weights depend "
                             "on M, so M must not change between calls")
        M = _horizon(call.horizon, dims.T)
        t0 = _resume_t0(call, M)
        _check_lag(t0 + dims.T - 1, M, beyond, f"positions 1..{t0 + dims.T}")
    else:
        M = _horizon(call.horizon, max(dims.T, dims.S))
        t0 = 0
        _check_lag(max(dims.T, dims.S) - 1, M, beyond,
                   f"query positions 1..{dims.T} and key positions 1..{dims.S}")
    fq = features(call.q.astype(comp, copy=False), t0, M, call.scale)
    fk = features(call.k.astype(comp, copy=False), t0, M, 1.0)
    if not call.causal:
        return call.finish(linear_noncausal(call, fq, fk, call.v))
    o, st = linear_causal(call, fq, fk, call.v, extra={"horizon": np.array(M, dtype=np.int64)})
    return call.finish(o, st)


def plan(call: Call, options: dict):
    """The causal plan of repeated calls without a state (linattn._call.linear_causal_plan):
    positions 1..T, the horizon resolved once."""
    if not call.causal or call.initial_state is not None:
        return None
    M = _horizon(call.horizon, call.dims.T)
    t0 = np.array(0, dtype=np.int64)
    Mf, scale, one = np.array(float(M)), np.array(float(call.scale)), np.array(1.0)
    cf = _core._cosformer_features
    D = call.dims.D

    def feats(q, k):
        fq, fk = cf(q, t0, Mf, scale), cf(k, t0, Mf, one)
        return fq.reshape(fq.shape[:-2] + (2 * D,)), fk.reshape(fk.shape[:-2] + (2 * D,))

    return linear_causal_plan(call, 2 * D, feats=feats,
                              extra=lambda: {"horizon": np.array(M, dtype=np.int64)})


reg.register(reg.KindSpec(
    name="cosformer",
    doc="ReLU features re-weighted by cos((pi/2)(i-j)/M), 1-based absolute positions; causal "
        "needs horizon=M to stream (a single causal call without it uses M = T, the official "
        "code's choice, whose prefixes are not consistent); non-causal default M = max(T, S).",
    paper="Qin et al. 2022, cosFormer: Rethinking Softmax in Attention, arXiv:2202.08791",
    fmap_q=None, fmap_k=None, normalize="div", eps=1e-6, eps_mode="clamp",
    keywords=("horizon",), options={"beyond_horizon": "error"},
    forward=forward, plan=plan, example_kwargs={"horizon": 64},
))
