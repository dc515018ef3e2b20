"""Backward of ``"cosformer"`` (docs/design/grad.md §3): the generic operator's
backward on the cosFormer features, then the re-weighting's map backward

    dx = s [s x > 0] (dphi_sin sin(theta_i) + dphi_cos cos(theta_i))

per position ``i`` (1-based, ``state.t`` added when resuming).  The features are
recomputed in C from the inputs (``_core._cosformer_features``); the per-position weights
are the features of a row of ones.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _validate as val


def _features(x: np.ndarray, t0: int, M: float, scale: float) -> np.ndarray:
    y = _core._cosformer_features(x, np.int64(t0), float(M), float(scale))
    return y.reshape(y.shape[:-2] + (2 * y.shape[-1],))


def _map_backward(x: np.ndarray, dphi: np.ndarray, W: np.ndarray, scale: float):
    D = x.shape[-1]
    return (scale * (x > 0)) * (dphi[..., :D] * W[:, :D] + dphi[..., D:] * W[:, D:])


def context(q, k, v, spec: reg.KindSpec, *, scale, normalize, eps, horizon, t0: int,
            layout: str, causal: bool) -> dict:
    """What the backward needs: features (fresh arrays), per-position weights and the
    hooks that map the operator's gradients back to ``q``, ``k`` (and the layout)."""
    qa, ka, va = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    dims = val.qkv_dims(qa, ka, va, layout, causal)
    _, comp = val.compute_dtype(qa, ka, va)
    normalize = spec.normalize if normalize is None else normalize
    eps = (1e-8 if normalize == "norm" else spec.eps) if eps is None else float(eps)
    scale = spec.default_scale(dims.D) if scale is None else float(scale)
    if horizon is not None:
        M = int(horizon)
    else:
        M = max(dims.T, 1) if causal else max(dims.T, dims.S, 1)

    def td(x):
        return np.swapaxes(x, -3, -2) if layout == "bthd" else x

    return {
        "spec": spec, "qa": qa, "ka": ka, "va": va, "dims": dims, "comp": comp,
        "normalize": normalize, "eps": eps, "eps_mode": spec.eps_mode, "scale": scale,
        "M": M, "t0": t0, "td": td, "div": normalize == "div",
        "out_shape": dims.out_shape(dims.E),
        "q_shape": qa.shape, "k_shape": ka.shape, "v_shape": va.shape,
        "q_dtype": qa.dtype, "k_dtype": ka.dtype, "v_dtype": va.dtype,
    }


def finish(c: dict, comp: np.dtype) -> dict:
    """Fill in the operator inputs (features) and the hooks, in the compute dtype."""
    td, D, scale = c["td"], c["dims"].D, c["scale"]
    qx = td(c["qa"]).astype(comp, copy=False)
    kx = td(c["ka"]).astype(comp, copy=False)
    t0, M = c["t0"], c["M"]
    fq = _features(qx, t0, M, scale)
    fk = _features(kx, t0, M, 1.0)
    Wq = _features(np.ones((qx.shape[-2], D), comp), t0, M, 1.0)
    Wk = Wq if kx.shape[-2] == qx.shape[-2] else \
        _features(np.ones((kx.shape[-2], D), comp), t0, M, 1.0)

    def post(dfq, dfk, dv):
        return (td(_map_backward(qx, dfq, Wq, scale)), td(_map_backward(kx, dfk, Wk, 1.0)),
                td(dv))

    c.update(q=fq, k=fk, v=td(c["va"]).astype(comp, copy=False), comp=comp, post=post,
             pre_do=td, axes={}, scale=1.0, F=2 * D, E=c["dims"].E, batch=c["dims"].batch,
             flags_maps=reg.FMAP_IDENTITY | (reg.FMAP_IDENTITY << 4))
    return c
