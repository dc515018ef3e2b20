"""Backward of ``"transnormer"`` (docs/design/grad.md §3 "TransNormer").

NormAttention (the default) is the generic operator with ``normalize="norm"`` and the
variant's elementwise maps (``elu+1`` for ``"t2"``, ``elu`` for ``"t1"``): its backward is
the C operator backward (``grad/_linear.py``'s :class:`LinearVJP`), decay and initial state
included.

DiagAttention (``diag_block=w``) runs ``_core._diag_attention_bwd``
(``kernels/diag_bwd.h``): per block of ``w`` absolute positions it recomputes the scores
``Z = scale Q K^T`` on the block's mask and

    T2 (softmax):  P = softmax(Z)   dV = P^T dO   dZ = P o (dO V^T - (do_t . o_t) 1^T)
    T1 (ReLU):     R = relu(Z)      dnum = the norm's backward   dV = R^T dnum
                   dZ = (dnum V^T) o [Z > 0]
    both:          dQ = scale dZ K   dK = scale dZ^T Q

Nothing but references to the inputs is kept.  The streaming state of DiagAttention is its
block cache (``state.extra["keys"]``, ``["values"]``: the current block's earlier rows), so
``g["initial_state"]`` holds their cotangents in ``extra`` (``S`` and ``z`` are None) and
``dstate`` may carry cotangents of the returned state's cache (``la.State`` with those
extras, or ``{"keys": ..., "values": ...}``); they flow to the rows of ``k``, ``v`` (or of
the incoming cache) the cache copied.  ``scale``, ``eps``, ``variant`` and ``diag_block``
get no gradient.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _tuning
from .. import _validate as val
from ..state import State
from ._cotangent import inputs, sum_to

_VARIANTS = {"t2": reg.FMAP_ELU1, "t1": reg.FMAP_ELU}
_DIAG_DEFAULT = 64


def _block(diag_block) -> int | None:
    if diag_block is None or diag_block is False:
        return None
    if diag_block is True:
        return _DIAG_DEFAULT
    return int(diag_block)


def _options(kind_options: dict) -> tuple[str, int | None]:
    spec = reg.get("transnormer")
    opts = {**spec.options, **kind_options}
    return opts["variant"], _block(opts["diag_block"])


# ---------------------------------------------------------------- NormAttention --

def _norm_causal(q, k, v, *, variant, scale, normalize, eps, decay, initial_state,
                 chunk_size, layout, backward):
    """A :class:`LinearVJP` for NormAttention (the generic operator's backward)."""
    from ._linear import LinearVJP, _context, decay_and_state

    spec = reg.get("transnormer")
    ctx = _context(q, k, v, spec, {}, layout, scale, normalize, eps, causal=True)
    dims, comp = ctx["dims"], ctx["comp"]
    F, E, T = dims.D, dims.E, dims.T
    g, g_axes, decayed, S0, z0, comp = decay_and_state(ctx, decay, decay, initial_state,
                                                       F, E, comp)
    for name in ("q", "k", "v"):
        ctx[name] = ctx[name].astype(comp, copy=False)
    chunk = _tuning.default_chunk(F) if chunk_size is None else int(chunk_size)
    form = backward or ("chunked" if T >= 2 * chunk else "recurrent")
    if form == "parallel":
        form, chunk = "chunked", max(T, 1)
    fm = _VARIANTS[variant]
    flags = (fm | (fm << 4) | (reg.NORMALIZE[ctx["normalize"]] << 8)
             | (reg.EPS_MODES[ctx["eps_mode"]] << 10) | (int(decayed) << 12))
    axes: dict = {}
    if dims.layout == "bthd":
        t3 = (-3, -1)
        axes = {"axes": [t3, t3, t3, g_axes, (-2, -1), (-1,), t3, (-2, -1), (-1,),
                         (), (), (), (), t3, t3, t3, g_axes, (-2, -1), (-1,)]}
    ctx.update(g=g, S0=S0, z0=z0, flags=flags, chunk=chunk, form=form, axes=axes,
               batch=dims.batch, F=F, E=E)
    return LinearVJP("transnormer", True, ctx)


def _norm_noncausal(q, k, v, *, variant, scale, normalize, eps, chunk_size, layout):
    from ._linear import LinearVJP, _context

    spec = reg.get("transnormer")
    ctx = _context(q, k, v, spec, {}, layout, scale, normalize, eps, causal=False)
    for name in ("q", "k", "v"):
        ctx[name] = ctx[name].astype(ctx["comp"], copy=False)
    fm = _VARIANTS[variant]
    t3 = (-3, -1)
    axes = {"axes": [t3] * 4 + [()] * 4 + [t3] * 3} if ctx["dims"].layout == "bthd" else {}
    flags = (fm | (fm << 4) | (reg.NORMALIZE[ctx["normalize"]] << 8)
             | (reg.EPS_MODES[ctx["eps_mode"]] << 10))
    ctx.update(flags=flags, chunk=256 if chunk_size is None else int(chunk_size), axes=axes)
    return LinearVJP("transnormer", False, ctx)


# ---------------------------------------------------------------- DiagAttention --

def _cache_cotangent(dstate, name: str, rows: int, width: int):
    """The cotangent of the returned state's ``extra[name]`` (None when not given)."""
    if dstate is None:
        return None
    if isinstance(dstate, State):
        if dstate.S is not None or dstate.z is not None:
            raise ValueError("dstate of a DiagAttention state holds its block cache only "
                             "(extra['keys'], extra['values']); S and z must be None")
        x = dstate.extra.get(name)
    elif isinstance(dstate, dict):
        bad = [k for k in dstate if k not in ("keys", "values")]
        if bad:
            raise ValueError(f"dstate dict of a DiagAttention state may hold 'keys' and "
                             f"'values' only, got keys {bad}")
        x = dstate.get(name)
    else:
        raise TypeError(f"dstate must be None, a linattn.State or a dict with 'keys' / "
                        f"'values', got {type(dstate).__name__}")
    if x is None:
        return None
    a = val.array(f"dstate.extra[{name!r}]", x)
    if a.ndim < 2 or a.shape[-2:] != (rows, width):
        raise ValueError(f"dstate.extra[{name!r}] must have core shape ({rows}, {width}) "
                         f"(the returned state's cache), got {a.shape}")
    return a.astype(np.float64, copy=False)


class DiagVJP:
    """``vjp(do, dstate=None)`` for DiagAttention (``kind="transnormer"``,
    ``diag_block=w``); see grad/_transnormer.py."""

    nondiff: tuple[str, ...] = ()

    def __init__(self, ctx: dict, causal: bool) -> None:
        self._c = ctx
        self.causal = causal
        self.kind = "transnormer"

    def __repr__(self) -> str:
        return (f"<linattn {'' if self.causal else 'non'}causal_vjp backward of kind "
                f"'transnormer' (DiagAttention)>")

    def __call__(self, do, dstate=None) -> dict[str, Any]:
        from ._linear import _cotangent

        c = self._c
        comp, td = c["comp"], c["td"]
        doc = td(_cotangent("do", do, c["out_shape"], comp))
        if not self.causal and dstate is not None:
            raise TypeError("dstate applies to causal_vjp only (noncausal has no state)")
        dq, dk, dv, dkc, dvc = _core._diag_attention_bwd(
            c["q"], c["k"], c["v"], c["kc"], c["vc"], doc, np.int64(c["w"]),
            float(c["scale"]), float(c["eps"]), np.int64(c["flags"]))
        if self.causal:
            T, cn, w = c["q"].shape[-2], c["kc"].shape[-2], c["w"]
            n_new = (cn + T) % w  # rows of the returned cache: the last of [kc; k]
            for name, dx, dxc, width in (("keys", dk, dkc, c["D"]),
                                         ("values", dv, dvc, c["E"])):
                ds = _cache_cotangent(dstate, name, n_new, width)
                if ds is None or n_new == 0:
                    continue
                ds = ds.astype(comp)
                from_x = min(n_new, T)
                dx[..., T - from_x:, :] += ds[..., n_new - from_x:, :]
                if n_new > T:
                    dxc[..., cn - (n_new - T):, :] += ds[..., :n_new - T, :]
        out = {"q": _as(td(dq), c["q_shape"], c["q_dtype"]),
               "k": _as(td(dk), c["k_shape"], c["k_dtype"]),
               "v": _as(td(dv), c["v_shape"], c["v_dtype"])}
        if self.causal:
            out["decay"] = None
            out["initial_state"] = None
            st = c["state"]
            if st is not None:
                kc0, vc0 = st.extra["keys"], st.extra["values"]
                extra = {"keys": _as(dkc, np.shape(kc0), np.asarray(kc0).dtype),
                         "values": _as(dvc, np.shape(vc0), np.asarray(vc0).dtype)}
                out["initial_state"] = State(None, None, st.t, st.kind, extra)
        return out


def _as(x: np.ndarray, shape, dtype) -> np.ndarray:
    return np.ascontiguousarray(sum_to(x, tuple(shape)).astype(dtype, copy=False))


def _diag_ctx(q, k, v, *, w, variant, scale, normalize, eps, initial_state, layout,
              causal: bool) -> dict:
    spec = reg.get("transnormer")
    lay, qa, ka, va, qt, kt, vt, dims, outer, comp = inputs(q, k, v, layout, causal)
    # as the forward (kinds/transnormer.py): T2 ignores normalize unless given
    norm = normalize if normalize is not None else (spec.normalize if variant == "t1"
                                                    else None)
    if eps is None:
        eps = 1e-8 if (normalize or spec.normalize) == "norm" else spec.eps
    scale = reg.inv_sqrt(dims.D) if scale is None else float(scale)
    flags = int(causal) | (int(variant == "t1") << 1) | ((2 if norm == "norm" else 0) << 2)
    if causal and initial_state is not None:
        kc = np.asarray(initial_state.extra["keys"]).astype(comp, copy=False)
        vc = np.asarray(initial_state.extra["values"]).astype(comp, copy=False)
    else:
        kc, vc = np.zeros((0, dims.D), comp), np.zeros((0, dims.E), comp)
    return {"q": qt.astype(comp, copy=False), "k": kt.astype(comp, copy=False),
            "v": vt.astype(comp, copy=False), "kc": kc, "vc": vc, "w": w, "scale": scale,
            "eps": float(eps), "flags": flags, "comp": comp, "D": dims.D, "E": dims.E,
            "state": initial_state if causal else None,
            "out_shape": outer.out_shape(dims.E),
            "td": (lambda x: np.swapaxes(x, -3, -2)) if lay == "bthd" else (lambda x: x),
            "q_shape": qa.shape, "k_shape": ka.shape, "v_shape": va.shape,
            "q_dtype": qa.dtype, "k_dtype": ka.dtype, "v_dtype": va.dtype}


# ----------------------------------------------------------------- entry points --

def causal_vjp(q, k, v, kind: str = "transnormer", *, mode: str = "auto",
               chunk_size: int | None = None, scale: float | None = None,
               normalize: str | None = None, eps: float | None = None, decay=None,
               initial_state: State | None = None, return_state: bool = False,
               layout: str = "...td", check_finite: bool = False,
               backward: str | None = None, **kind_options):
    """``la.causal_vjp`` for ``kind="transnormer"`` (NormAttention or DiagAttention)."""
    from .._api import causal

    if "out" in kind_options:
        raise TypeError("causal_vjp() does not take out=")
    if backward is not None:
        val.choice("backward", backward, ("chunked", "recurrent", "parallel"))
    result = causal(q, k, v, kind, mode=mode, chunk_size=chunk_size, scale=scale,
                    normalize=normalize, eps=eps, decay=decay, initial_state=initial_state,
                    return_state=return_state, layout=layout, check_finite=check_finite,
                    **kind_options)
    variant, w = _options(kind_options)
    if w is None:
        vjp = _norm_causal(q, k, v, variant=variant, scale=scale,
                           normalize=normalize, eps=eps, decay=decay,
                           initial_state=initial_state, chunk_size=chunk_size,
                           layout=layout, backward=backward)
    else:
        vjp = DiagVJP(_diag_ctx(q, k, v, w=w, variant=variant, scale=scale,
                                normalize=normalize, eps=eps, initial_state=initial_state,
                                layout=layout, causal=True), True)
    return result, vjp


def noncausal_vjp(q, k, v, kind: str = "transnormer", *, chunk_size: int | None = None,
                  scale: float | None = None, normalize: str | None = None,
                  eps: float | None = None, layout: str = "...td",
                  check_finite: bool = False, **kind_options):
    """``la.noncausal_vjp`` for ``kind="transnormer"`` (cross-attention too)."""
    from .._api import noncausal

    if "out" in kind_options:
        raise TypeError("noncausal_vjp() does not take out=")
    o = noncausal(q, k, v, kind, chunk_size=chunk_size, scale=scale, normalize=normalize,
                  eps=eps, layout=layout, check_finite=check_finite, **kind_options)
    variant, w = _options(kind_options)
    if w is None:
        return o, _norm_noncausal(q, k, v, variant=variant, scale=scale, normalize=normalize,
                                  eps=eps, chunk_size=chunk_size, layout=layout)
    return o, DiagVJP(_diag_ctx(q, k, v, w=w, variant=variant, scale=scale,
                                normalize=normalize, eps=eps, initial_state=None,
                                layout=layout, causal=False), False)


def attach() -> None:
    """``la.kinds()["transnormer"]["grad"]``: what the backward differentiates."""
    slot = functools.partial(causal_vjp, kind="transnormer")
    slot.wrt = ("q", "k", "v", "decay", "initial_state")
    slot.nondiff = ()
    reg.attach("transnormer", backward=slot)
