"""``"transnormer"`` (Qin et al. 2022): NormAttention, and DiagAttention via ``diag_block=``.

NormAttention (default): ``o = norm(sum_s (phi(q~_t).phi(k_s)) v_s)`` with ``phi = elu+1``
(``variant="t2"``, default) or ``elu`` (``"t1"``), ``normalize="norm"`` (per-head
SimpleRMSNorm, eps 1e-8), run by the generic core (R/C/P, NC; ``decay=`` allowed).

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

from .. import _api, _core
from .. import _registry as reg
from .. import _validate as val
from ..state import State
from .cosformer import _out_td, _td
from .decay import _core_kw, generic_causal

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


def _diag_opts(spec, variant, normalize, eps, scale, D):
    if variant == "t1":
        normalize = "norm" if normalize is None else normalize
        val.choice("normalize", normalize, ("norm", "none"))
    elif normalize is not None:
        val.choice("normalize", normalize, reg.NORMALIZE)  # T2 softmax ignores it
    eps = 1e-8 if eps is None else val.nonneg_number("eps", eps)
    scale = reg.inv_sqrt(D) if scale is None else val.positive_number("scale", scale)
    flags = (int(variant == "t1") << 1) | ((2 if normalize == "norm" else 0) << 2)
    return scale, eps, flags


def _diag_causal(q, k, v, *, spec, w, variant, mode, scale, normalize, eps, initial_state,
                 return_state, layout, out):
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, layout, causal=True)
    val.choice("mode", mode, ("auto",) + spec.causal_modes)
    scale, eps, flags = _diag_opts(spec, variant, normalize, eps, scale, dims.D)
    lay = dims.layout
    q, k, v = (_td(x, lay).astype(comp, copy=False) for x in (q, k, v))
    t0 = 0
    kc = np.zeros((0, dims.D), comp)
    vc = np.zeros((0, dims.E), comp)
    if initial_state is not None:
        if not isinstance(initial_state, State):
            raise TypeError(f"initial_state must be a linattn.State (or None), got "
                            f"{type(initial_state).__name__}")
        if initial_state.kind != spec.name or "keys" not in initial_state.extra:
            raise ValueError(f"initial_state must come from kind 'transnormer' with "
                             f"diag_block (it holds no block cache); got kind "
                             f"{initial_state.kind!r} with extra {sorted(initial_state.extra)}")
        wb = int(np.asarray(initial_state.extra.get("diag_block", -1)))
        if wb != w:
            raise ValueError(f"diag_block={w} does not match initial_state.extra"
                             f"['diag_block']={wb}")
        t0 = int(initial_state.t)
        kc = np.asarray(initial_state.extra["keys"])
        vc = np.asarray(initial_state.extra["values"])
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
        kc, vc = kc.astype(comp, copy=False), vc.astype(comp, copy=False)
    if out is not None:
        out = val.out_array(out, dims.out_shape(dims.E), res, (q, k, v))
    ot = _out_td(out, lay)
    kernel_out = ot if (ot is not None and ot.dtype == comp) else None
    o = _core._diag_attention(q, k, v, kc, vc, np.int64(t0), np.int64(w), float(scale),
                              float(eps), np.int64(1 | flags), out=kernel_out)
    o = _api._finish_out(o, ot, res)
    o = out if out is not None else _td(o, lay)
    if not return_state:
        return o
    n_new = (t0 + dims.T) % w
    keys = _tail(kc, k, n_new, dims.batch)
    values = _tail(vc, v, n_new, dims.batch)
    return o, State(None, None, t0 + dims.T, spec.name,
                    {"keys": keys, "values": values, "diag_block": np.array(w, np.int64)})


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


def _causal(q, k, v, *, spec, options, decay, normalize, eps, scale, mode, initial_state,
            return_state, layout, out, **kw):
    variant = val.choice("variant", options["variant"], VARIANTS)
    w = _block(options["diag_block"])
    if w is None:
        return generic_causal(q, k, v, spec=spec, decay=decay, normalize=normalize, eps=eps,
                              scale=scale, mode=mode, initial_state=initial_state,
                              return_state=return_state, layout=layout, out=out,
                              fmap_q=VARIANTS[variant], fmap_k=VARIANTS[variant],
                              **_core_kw(kw))
    if decay is not None:
        raise TypeError("decay= applies to NormAttention only; DiagAttention (diag_block=) "
                        "does not accept it")
    return _diag_causal(q, k, v, spec=spec, w=w, variant=variant, mode=mode, scale=scale,
                        normalize=normalize, eps=eps, initial_state=initial_state,
                        return_state=return_state, layout=layout, out=out)


def _noncausal(q, k, v, *, spec, chunk_size, scale, normalize, eps, layout, out, options,
               **_):
    variant = val.choice("variant", options["variant"], VARIANTS)
    w = _block(options["diag_block"])
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, layout, causal=False)
    if w is None:
        normalize, eps, eps_mode = _api._norm_and_eps(spec, normalize, eps, None)
        scale = 1.0 if scale is None else val.positive_number("scale", scale)
        return _api.noncausal_core(q, k, v, fmap_q=VARIANTS[variant], fmap_k=VARIANTS[variant],
                                   scale=scale, normalize=normalize, eps=eps, eps_mode=eps_mode,
                                   chunk_size=chunk_size, layout=dims.layout, out=out,
                                   dims=dims, res=res, comp=comp)
    scale, eps, flags = _diag_opts(spec, variant, normalize, eps, scale, dims.D)
    lay = dims.layout
    q, k, v = (_td(x, lay).astype(comp, copy=False) for x in (q, k, v))
    if out is not None:
        out = val.out_array(out, dims.out_shape(dims.E), res, (q, k, v))
    ot = _out_td(out, lay)
    kernel_out = ot if (ot is not None and ot.dtype == comp) else None
    o = _core._diag_attention(q, k, v, np.zeros((0, dims.D), comp),
                              np.zeros((0, dims.E), comp), np.int64(0), np.int64(w),
                              float(scale), float(eps), np.int64(flags), out=kernel_out)
    o = _api._finish_out(o, ot, res)
    return out if out is not None else _td(o, lay)


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
    causal_impl=_causal, noncausal_impl=_noncausal,
))
