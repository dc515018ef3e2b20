"""``"transnormer"`` (Qin et al. 2022): NormAttention, and DiagAttention via ``diag_block=``.

NormAttention (default): ``o = norm(sum_s (phi(q~_t).phi(k_s)) v_s)`` with ``phi = elu+1``
(``variant="t2"``, default) or ``elu`` (``"t1"``), ``normalize="norm"`` (per-head
SimpleRMSNorm, eps 1e-8), run by the generic operator (R/C/P, NC; ``decay=`` allowed).

DiagAttention (``diag_block=w``; ``True`` means the paper's ``w = 64``): attention only
inside non-overlapping blocks of ``w`` absolute positions, causal inside the block in
``la.causal``, full in ``la.noncausal``; T2 softmax of ``scale q.k`` (``normalize``
ignored), T1 ReLU of the scores then the norm; ``scale`` default ``d^(-1/2)``.  Computed
block-wise in C (``_core._diag_attention``); every causal ``mode`` runs that kernel.
Streaming keeps the current block's keys and values in ``state.extra`` (``"keys"``,
``"values"``, ``(..., t mod w, D|E)``) and ``state.S`` is None.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _validate as val
from .._call import Call, elementwise_forward, elementwise_plan
from ..state import State

VARIANTS = {"t2": reg.FMAP_ELU1, "t1": reg.FMAP_ELU}
DIAG_DEFAULT = 64


def _block(diag_block) -> int | None:
    if diag_block is None or diag_block is False:
        return None
    if diag_block is True:
        return DIAG_DEFAULT
    if not isinstance(diag_block, numbers.Integral):
        raise TypeError(f"diag_block must be None, True (w = {DIAG_DEFAULT}) or an integer "
                        f"block size, got {type(diag_block).__name__}")
    return val.positive_int("diag_block", diag_block)


def _block_cache(call: Call, w: int):
    """``(t0, keys, values)`` of the carried block cache (empty without a state)."""
    dims, comp, st = call.dims, call.comp, call.initial_state
    if st is None:
        return 0, np.zeros((0, dims.D), comp), np.zeros((0, dims.E), comp)
    if "keys" not in st.extra:
        raise ValueError(f"initial_state must come from kind 'transnormer' with diag_block "
                         f"(it holds no block cache); got extra {sorted(st.extra)}")
    wb = int(np.asarray(st.extra.get("diag_block", -1)))
    if wb != w:
        raise ValueError(f"diag_block={w} does not match initial_state.extra['diag_block']={wb}")
    t0 = int(st.t)
    kc, vc = np.asarray(st.extra["keys"]), np.asarray(st.extra["values"])
    c = t0 % w
    if kc.ndim < 2 or kc.shape[-2:] != (c, dims.D) or vc.shape[-2:] != (c, dims.E):
        raise ValueError(f"initial_state block cache must hold t mod w = {c} rows: keys "
                         f"(..., {c}, {dims.D}), values (..., {c}, {dims.E}); got "
                         f"{kc.shape} and {vc.shape}")
    try:
        np.broadcast_shapes(kc.shape[:-2], vc.shape[:-2], dims.batch)
    except ValueError:
        raise ValueError(f"initial_state block cache batch dimensions {kc.shape[:-2]} do "
                         f"not broadcast against the inputs' {dims.batch}") from None
    return t0, kc.astype(comp, copy=False), vc.astype(comp, copy=False)


def _diag(call: Call, w: int, variant: str):
    """DiagAttention, causal (with its block cache) or not."""
    if variant == "t1":
        val.choice("normalize", call.normalize, ("norm", "none"))
    # T2's softmax ignores normalize: the flag follows what the caller passed
    normalize = call.normalize if variant == "t1" or "normalize" in call.given else None
    scale = call.scale if "scale" in call.given else reg.inv_sqrt(call.dims.D)
    fl = (int(variant == "t1") << 1) | ((2 if normalize == "norm" else 0) << 2)
    dims, comp = call.dims, call.comp
    q, k, v = (x.astype(comp, copy=False) for x in (call.q, call.k, call.v))
    t0, kc, vc = _block_cache(call, w) if call.causal else \
        (0, np.zeros((0, dims.D), comp), np.zeros((0, dims.E), comp))
    o = _core._diag_attention(q, k, v, kc, vc, np.int64(t0), np.int64(w), float(scale),
                              float(call.eps), np.int64(int(call.causal) | fl),
                              out=call.kernel_out())
    if not call.return_state:
        return call.finish(o)
    n_new = (t0 + dims.T) % w
    extra = {"keys": _tail(kc, k, n_new, dims.batch), "values": _tail(vc, v, n_new, dims.batch),
             "diag_block": np.array(w, np.int64)}
    return call.finish(o, State(None, None, t0 + dims.T, call.spec.name, extra))


def _tail(cache: np.ndarray, x: np.ndarray, n: int, batch: tuple) -> np.ndarray:
    """The last ``n`` rows of ``[cache; x]`` along time, broadcast to ``batch``."""
    T = x.shape[-2]
    if n <= T:
        part = x[..., T - n:, :]
        return np.ascontiguousarray(np.broadcast_to(part, batch + part.shape[-2:]))
    c = cache[..., cache.shape[-2] - (n - T):, :]
    shp = batch
    return np.concatenate([np.broadcast_to(c, shp + c.shape[-2:]),
                           np.broadcast_to(x, shp + x.shape[-2:])], axis=-2)


def forward(call: Call, options: dict):
    variant = val.choice("variant", options["variant"], VARIANTS)
    w = _block(options["diag_block"])
    if w is None:
        return elementwise_forward(call, options, fmap_q=VARIANTS[variant],
                                   fmap_k=VARIANTS[variant])
    if call.decay is not None:
        raise TypeError("decay= applies to NormAttention only; DiagAttention (diag_block=) "
                        "does not accept it")
    return _diag(call, w, variant)


def plan(call: Call, options: dict):
    """NormAttention's plan of repeated calls (linattn._call.linear_causal_plan); none
    for DiagAttention."""
    if _block(options["diag_block"]) is not None:
        return None
    fmap = VARIANTS[options["variant"]]
    return elementwise_plan(call, options, fmap_q=fmap, fmap_k=fmap)


reg.register(reg.KindSpec(
    name="transnormer",
    doc="NormAttention: elu+1 (variant='t2') or elu ('t1') features, output RMS-normalised per "
        "head (eps 1e-8), no denominator.  diag_block=w (True: 64) switches to DiagAttention: "
        "block-local softmax (t2) or ReLU+norm (t1) in blocks of w absolute positions, scale "
        "d^(-1/2).",
    paper="Qin et al. 2022, The Devil in Linear Transformer (TransNormer), arXiv:2210.10340",
    fmap_q=reg.FMAP_ELU1, fmap_k=reg.FMAP_ELU1, normalize="norm", eps=1e-8,
    eps_mode="abs_clamp", scale_doc="1 on q (NormAttention); d^(-1/2) on q (DiagAttention)",
    options={"variant": "t2", "diag_block": None},
    forward=forward, plan=plan,
))
