"""Vector-Jacobian products of the generic operator (docs/design/grad.md §1, §2).

The forward is the public entry point itself (``la.causal`` / ``la.noncausal``), so the
first element returned is bit-identical to it.  The backward runs in C
(``_core._causal_bwd_chunked``, ``_causal_bwd_recurrent``, ``_noncausal_bwd``): it
recomputes the feature maps, the state entering every chunk and each chunk's ``Q K^T``
from the saved inputs, so nothing of size ``T x F x E`` is ever held.

Residuals: references to ``q``, ``k``, ``v``, ``decay`` and ``initial_state`` (the caller's
arrays when they are already in the compute dtype), never the returned output.

Kinds: the elementwise ones (``linear``, ``elu``, ``relu``), the decayed ones on the same
operator (``lightning``, ``retnet``, ``mamba2``), and the feature kinds whose map backward
lives in ``grad/_cosformer.py``, ``grad/_performer.py`` and ``grad/_rfa.py``.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _tuning
from .. import _validate as val
from .._draws import decay_slopes
from ..state import State
from . import _cosformer, _performer, _rfa

# Kinds with their own Python front end whose maths is still the generic operator.
_DECAY_KINDS = ("lightning", "retnet", "mamba2")
# Kinds with their own feature maps whose backward is implemented (grad/_<kind>.py).
_FEATURE_KINDS = ("cosformer", "performer", "rfa")
_ELEMENTWISE = frozenset(reg.FMAP_NAMES.values())


def _in_scope(spec: reg.KindSpec) -> bool:
    if spec.name in _DECAY_KINDS or spec.name in _FEATURE_KINDS:
        return True
    return (spec.causal_impl is None and spec.noncausal_impl is None
            and spec.fmap_q in _ELEMENTWISE and spec.fmap_k in _ELEMENTWISE
            and spec.normalize in reg.NORMALIZE)


def grad_kinds() -> tuple[str, ...]:
    """Kinds whose ``*_vjp`` is implemented (the others raise NotImplementedError)."""
    return tuple(sorted(n for n in reg.kinds() if _in_scope(reg.get(n))))


def _spec_for(kind: str, entry: str) -> reg.KindSpec:
    spec = reg.get(kind)
    if not _in_scope(spec):
        from . import grad_kinds as every  # the generic ones and those with their own module

        raise NotImplementedError(
            f"{entry}: kind {kind!r} has no backward yet; kinds with gradients: "
            f"{list(every())}")
    return spec


def _heads_of(q: np.ndarray, layout: str) -> int:
    if layout == "bthd":
        return q.shape[-2]
    return q.shape[-3] if q.ndim >= 3 else 1


def _preset_decay(spec: reg.KindSpec, opts: dict, q: np.ndarray, layout: str):
    """The per-head decay "lightning" / "retnet" use when ``decay=None`` (a constant:
    it gets no gradient)."""
    if spec.name == "lightning":
        preset = {"preset": opts["slopes"], "layer": opts["layer"],
                  "num_layers": opts["num_layers"]}
    elif spec.name == "retnet":
        preset = {"preset": "retnet"}
    else:
        return None
    H = _heads_of(q, layout)
    g = decay_slopes(max(H, 1), **preset)[:H]
    return g if q.ndim >= 3 else g[0]


def _sum_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to ``shape`` (fixed order: deterministic)."""
    if x.shape == tuple(shape):
        return x
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def _grad_as(x: np.ndarray, like_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    x = _sum_to(x, like_shape)
    return np.ascontiguousarray(x.astype(dtype, copy=False)).reshape(like_shape)


def _cotangent(name: str, x: Any, shape: tuple[int, ...], comp: np.dtype) -> np.ndarray:
    if x is None:
        raise TypeError(f"{name} must be an array of shape {shape}, got None")
    a = val.array(name, x)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have the output's shape {tuple(shape)}, got {a.shape}")
    return a.astype(comp, copy=False)


def _state_cotangent(dstate: Any, batch: tuple[int, ...], F: int, E: int, div: bool,
                     comp: np.dtype):
    """(dS, dz) arrays (zeros where missing) from None, a State or a dict."""
    zero_S = np.zeros((F, E), comp)
    zero_z = np.zeros((F,), comp)
    if dstate is None:
        return zero_S, zero_z
    if isinstance(dstate, State):
        S, z = dstate.S, dstate.z
    elif isinstance(dstate, dict):
        bad = [k for k in dstate if k not in ("S", "z")]
        if bad:
            raise ValueError(f"dstate dict may hold 'S' and 'z' only, got keys {bad}")
        S, z = dstate.get("S"), dstate.get("z")
    else:
        raise TypeError(f"dstate must be None, a linattn.State or a dict with 'S' / 'z', got "
                        f"{type(dstate).__name__}")
    out = []
    for name, arr, core in (("S", S, (F, E)), ("z", z, (F,))):
        if arr is None or (name == "z" and not div):
            out.append(zero_S if name == "S" else zero_z)
            continue
        a = val.array(f"dstate.{name}", arr)
        if a.shape[a.ndim - len(core):] != core or a.ndim < len(core):
            raise ValueError(f"dstate.{name} must have core shape {core}, got {a.shape}")
        try:
            np.broadcast_shapes(a.shape[:a.ndim - len(core)], batch)
        except ValueError:
            raise ValueError(f"dstate.{name} batch dimensions {a.shape[:-len(core)]} do not "
                             f"broadcast against the inputs' {batch}") from None
        out.append(a.astype(comp, copy=False))
    return out[0], out[1]


class _GradBuffers:
    """Output arrays of the backward gufuncs, reused once nothing refers to them.

    A fresh array of several MiB costs the first touch of its pages (the OS zeroes
    them: 10-20 % of the chunked backward at T = 8192), and glibc hands such blocks
    back to the system when they are freed, so every call paid it again.  The pool
    keeps the last ``KEEP`` large arrays it handed out and reuses one only when its
    reference count shows the pool's own references alone: a gradient the caller
    still holds (or a view of it, or a torch tensor made from it, which all refer to
    it) is never written.  At most ``KEEP`` arrays and ``MAX_BYTES`` stay allocated
    after the caller has dropped them."""

    MIN_BYTES = 1 << 20
    MAX_BYTES = 1 << 30
    KEEP = 6

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bufs: list[np.ndarray] = []
        # The count a buffer nobody else holds shows in _take (CPython versions differ
        # in what sys.getrefcount sees), measured through the same code path.
        self._free_refs = -1
        self._bufs.append(np.empty(1))
        self._free_refs = self._refs(0)
        self._bufs.clear()

    def _refs(self, i: int) -> int:
        b = self._bufs[i]
        return sys.getrefcount(b)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """An uninitialised array (the kernels write every element), or None: small
        ones are left to the gufunc."""
        if int(np.prod(shape)) * dtype.itemsize < self.MIN_BYTES:
            return None
        with self._lock:
            for i in range(len(self._bufs)):
                b = self._bufs[i]
                if b.shape == shape and b.dtype == dtype:
                    del b  # only the list's reference may remain for _refs to count
                    if self._refs(i) == self._free_refs:
                        b = self._bufs.pop(i)
                        break
            else:
                b = np.empty(shape, dtype)
            self._bufs.append(b)
            del self._bufs[:-self.KEEP]
            while sum(x.nbytes for x in self._bufs) > self.MAX_BYTES:
                del self._bufs[0]
        return b


_BUFFERS = _GradBuffers()


def _grad_outs(c: dict, batch_of: tuple, n_small: int) -> dict:
    """``out=`` for the backward gufunc: pooled dq, dk, dv (layout "...td" only: the
    other layouts let the gufunc allocate), None for the ``n_small`` other outputs."""
    if c["axes"]:
        return {}
    batch = np.broadcast_shapes(*(x.shape[:x.ndim - nd] for x, nd in batch_of))
    big = tuple(_BUFFERS.empty(batch + c[n].shape[-2:], c[n].dtype) for n in "qkv")
    return {"out": big + (None,) * n_small}


class LinearVJP:
    """``vjp(do, dstate=None) -> dict`` of gradients; pure in its cotangents,
    callable repeatedly and from any thread.  ``nondiff``: array arguments that got
    no gradient (none for the elementwise kinds)."""

    nondiff: tuple[str, ...] = ()

    def __init__(self, kind: str, causal: bool, ctx: dict) -> None:
        self.kind = kind
        self.causal = causal
        self._c = ctx

    def __repr__(self) -> str:
        entry = "causal_vjp" if self.causal else "noncausal_vjp"
        return f"<linattn {entry} backward of kind {self.kind!r}>"

    def __call__(self, do, dstate=None) -> dict[str, Any]:
        c = self._c
        comp = c["comp"]
        doc = _cotangent("do", do, c["out_shape"], comp)
        if c.get("pre_do") is not None:
            doc = c["pre_do"](doc)
        flags = np.int64(c["flags"])
        post = c.get("post") or (lambda dq, dk, dv: (dq, dk, dv))
        if not self.causal:
            if dstate is not None:
                raise TypeError("dstate applies to causal_vjp only (noncausal has no state)")
            outs = _grad_outs(c, ((c["q"], 2), (c["k"], 2), (c["v"], 2), (doc, 2)), 0)
            dq, dk, dv = post(*_core._noncausal_bwd(c["q"], c["k"], c["v"], doc, c["scale"],
                                                    c["eps"], flags, np.int64(c["chunk"]),
                                                    **c["axes"], **outs))
            return {"q": _grad_as(dq, c["q_shape"], c["q_dtype"]),
                    "k": _grad_as(dk, c["k_shape"], c["k_dtype"]),
                    "v": _grad_as(dv, c["v_shape"], c["v_dtype"])}
        dS, dz = _state_cotangent(dstate, c["batch"], c["F"], c["E"], c["div"], comp)
        fn = _core._causal_bwd_chunked if c["form"] == "chunked" else \
            _core._causal_bwd_recurrent
        outs = _grad_outs(c, ((c["q"], 2), (c["k"], 2), (c["v"], 2), (c["g"], 1),
                              (c["S0"], 2), (c["z0"], 1), (doc, 2), (dS, 2), (dz, 1)), 3)
        dq, dk, dv, dg, dS0, dz0 = fn(c["q"], c["k"], c["v"], c["g"], c["S0"], c["z0"], doc,
                                      dS, dz, c["scale"], c["eps"], flags,
                                      np.int64(c["chunk"]), **c["axes"], **outs)
        dq, dk, dv = post(dq, dk, dv)
        g: dict[str, Any] = {
            "q": _grad_as(dq, c["q_shape"], c["q_dtype"]),
            "k": _grad_as(dk, c["k_shape"], c["k_dtype"]),
            "v": _grad_as(dv, c["v_shape"], c["v_dtype"]),
            "decay": None,
            "initial_state": None,
        }
        if c["decay_shape"] is not None:
            if not c["per_token"]:
                dg = dg.sum(axis=-1)  # a per-head decay: the per-token gradient summed
            g["decay"] = _grad_as(dg, c["decay_shape"], c["decay_dtype"])
        st = c["state"]
        if st is not None:
            dS0 = _grad_as(dS0, st.S.shape, st.S.dtype)
            dz0 = _grad_as(dz0, st.z.shape, st.z.dtype) if c["div"] else None
            g["initial_state"] = State(dS0, dz0, st.t, st.kind)
        return g


def decay_and_state(ctx: dict, decay, given, initial_state, F: int, E: int, comp):
    """The log-decay and the entering state of a causal backward, recorded in ``ctx``:
    ``(g, g_axes, decayed, S0, z0, comp)``.  ``decay`` is what the kernels use (the
    caller's or a preset), ``given`` the caller's (None: a constant, no gradient); a
    float64 initial state makes the computation float64."""
    dims, div = ctx["dims"], ctx["div"]
    ctx["decay_shape"] = None
    ctx["per_token"] = False
    if decay is None:
        g, g_axes, decayed = np.zeros((dims.T,), np.float64), (-1,), False
    else:
        g, g_axes, per_token = val.decay(decay, dims)
        decayed = True
        if given is not None:
            ctx["decay_shape"] = np.shape(given)
            dt = getattr(given, "dtype", None)
            ctx["decay_dtype"] = dt if dt is not None and dt.kind == "f" else np.float64
            ctx["per_token"] = per_token
    ctx["state"] = initial_state
    if initial_state is not None:
        S0 = initial_state.S
        if S0.dtype == np.float64:
            comp = np.dtype(np.float64)
        z0 = initial_state.z if div else None
        S0 = S0.astype(comp, copy=False)
        z0 = np.zeros(S0.shape[:-1], comp) if z0 is None else z0.astype(comp, copy=False)
    else:
        S0, z0 = np.zeros((F, E), comp), np.zeros((F,), comp)
    ctx["comp"] = comp
    return g, g_axes, decayed, S0, z0, comp


def causal_vjp(q, k, v, kind: str = "elu", *, mode: str = "auto",
               chunk_size: int | None = None, scale: float | None = None,
               normalize: str | None = None, eps: float | None = None, decay=None,
               num_features: int | None = None, projection=None, seed: int | None = None,
               horizon: int | None = None, initial_state: State | None = None,
               return_state: bool = False, layout: str = "...td",
               check_finite: bool = False, backward: str | None = None, **kind_options):
    """``la.causal`` and its vector-Jacobian product.

    Returns ``(result, vjp)``: ``result`` is exactly what ``la.causal`` returns for these
    arguments (``o``, or ``(o, state)`` with ``return_state=True``); ``vjp(do,
    dstate=None)`` returns ``{"q", "k", "v", "decay", "initial_state"}``, the gradients
    of ``<do, o> + <dstate.S, state.S> + <dstate.z, state.z>``, each with its input's
    shape and dtype (broadcast inputs summed back), None where the input was not given.
    ``dstate`` is None (zero), a ``la.State`` or ``{"S": ..., "z": ...}``;
    ``g["initial_state"]`` is a ``la.State`` holding the cotangents of ``S`` and ``z``
    (pass it as the previous piece's ``dstate``).  ``decay`` gets the gradient with
    respect to the log-decay as passed (summed over ``t`` for a per-head decay; 0 where it
    is below -1000); presets (``decay=None``) are constants.  ``scale`` and ``eps`` get
    none.

    ``backward``: ``"chunked"`` (default from ``T >= 2 * chunk_size``), ``"recurrent"``
    (the default below) or ``"parallel"`` (the quadratic form: one chunk).

    Residuals: the backward keeps references to ``q``, ``k``, ``v``, ``decay`` and
    ``initial_state`` (no copy when they are already in the compute dtype): editing them
    in place before calling ``vjp`` gives wrong gradients.  The returned output is not
    kept: editing it is safe.  Kinds without a backward raise NotImplementedError.
    """
    spec = _spec_for(kind, "causal_vjp")
    if "out" in kind_options:
        raise TypeError("causal_vjp() does not take out=")
    if backward is not None:
        val.choice("backward", backward, ("chunked", "recurrent", "parallel"))
    if spec.name == "performer":
        _performer.check_supported({**spec.options, **kind_options})
    from .._api import causal

    result = causal(q, k, v, kind, mode=mode, chunk_size=chunk_size, scale=scale,
                    normalize=normalize, eps=eps, decay=decay, num_features=num_features,
                    projection=projection, seed=seed, horizon=horizon,
                    initial_state=initial_state, return_state=return_state, layout=layout,
                    check_finite=check_finite, **kind_options)
    if spec.name == "performer":
        ctx = _performer.context(q, k, v, spec, scale=scale, normalize=normalize, eps=eps,
                                 num_features=num_features, projection=projection, seed=seed,
                                 options={**spec.options, **kind_options},
                                 initial_state=initial_state, chunk_size=chunk_size,
                                 layout=layout, causal=True)
        return result, _performer.PerformerVJP(ctx, True)
    if spec.name == "rfa":
        ctx = _rfa.context(q, k, v, spec, scale=scale, normalize=normalize, eps=eps,
                           num_features=num_features, projection=projection, seed=seed,
                           options={**spec.options, **kind_options},
                           initial_state=initial_state, chunk_size=chunk_size,
                           backward=backward, layout=layout, causal=True)
        return result, _rfa.RfaVJP(ctx, True)
    cos = spec.name == "cosformer"
    if cos:
        ctx = _cosformer.context(q, k, v, spec, scale=scale, normalize=normalize, eps=eps,
                                 horizon=horizon, layout=layout, causal=True,
                                 t0=0 if initial_state is None else int(initial_state.t))
        ctx["opts"] = {}
    else:
        ctx = _context(q, k, v, spec, kind_options, layout, scale, normalize, eps,
                       causal=True)
    dims, comp = ctx["dims"], ctx["comp"]
    F, E, T = dims.D * (2 if cos else 1), dims.E, dims.T
    # decay: the caller's (differentiable) or the kind's preset (a constant)
    given = decay
    if decay is None:
        decay = _preset_decay(spec, ctx["opts"], ctx.get("q", ctx.get("qa")), dims.layout)
    g, g_axes, decayed, S0, z0, comp = decay_and_state(ctx, decay, given, initial_state,
                                                       F, E, comp)
    if cos:
        _cosformer.finish(ctx, comp)
    else:
        for name in ("q", "k", "v"):
            ctx[name] = ctx[name].astype(comp, copy=False)
    chunk = _tuning.default_chunk(F) if chunk_size is None else int(chunk_size)
    form = backward or ("chunked" if T >= 2 * chunk else "recurrent")
    if form == "parallel":
        form, chunk = "chunked", max(T, 1)
    maps = ctx["flags_maps"] if cos else spec.fmap_q | (spec.fmap_k << 4)
    flags = (maps | (reg.NORMALIZE[ctx["normalize"]] << 8)
             | (reg.EPS_MODES[ctx["eps_mode"]] << 10) | (int(decayed) << 12))
    axes: dict = {}
    if dims.layout == "bthd" and not cos:
        t3 = (-3, -1)
        axes = {"axes": [t3, t3, t3, g_axes, (-2, -1), (-1,), t3, (-2, -1), (-1,),
                         (), (), (), (), t3, t3, t3, g_axes, (-2, -1), (-1,)]}
    ctx.update(g=g, S0=S0, z0=z0, flags=flags, chunk=chunk, form=form, axes=axes,
               batch=dims.batch, F=F, E=E)
    return result, LinearVJP(spec.name, True, ctx)


def noncausal_vjp(q, k, v, kind: str = "elu", *, chunk_size: int | None = None,
                  scale: float | None = None, normalize: str | None = None,
                  eps: float | None = None, num_features: int | None = None, projection=None,
                  seed: int | None = None, horizon: int | None = None,
                  layout: str = "...td", check_finite: bool = False, **kind_options):
    """``la.noncausal`` (cross-attention too) and its vector-Jacobian product.

    Returns ``(o, vjp)``; ``vjp(do)`` returns ``{"q", "k", "v"}`` with each input's shape
    and dtype.  Residuals as :func:`causal_vjp`.
    """
    spec = _spec_for(kind, "noncausal_vjp")
    if "out" in kind_options:
        raise TypeError("noncausal_vjp() does not take out=")
    if spec.name == "performer":
        _performer.check_supported({**spec.options, **kind_options})
    from .._api import noncausal

    o = noncausal(q, k, v, kind, chunk_size=chunk_size, scale=scale, normalize=normalize,
                  eps=eps, num_features=num_features, projection=projection, seed=seed,
                  horizon=horizon, layout=layout, check_finite=check_finite, **kind_options)
    if spec.name == "performer":
        ctx = _performer.context(q, k, v, spec, scale=scale, normalize=normalize, eps=eps,
                                 num_features=num_features, projection=projection, seed=seed,
                                 options={**spec.options, **kind_options}, initial_state=None,
                                 chunk_size=chunk_size, layout=layout, causal=False)
        return o, _performer.PerformerVJP(ctx, False)
    if spec.name == "rfa":
        ctx = _rfa.context(q, k, v, spec, scale=scale, normalize=normalize, eps=eps,
                           num_features=num_features, projection=projection, seed=seed,
                           options={**spec.options, **kind_options}, initial_state=None,
                           chunk_size=chunk_size, backward=None, layout=layout, causal=False)
        return o, _rfa.RfaVJP(ctx, False)
    if spec.name == "cosformer":
        ctx = _cosformer.context(q, k, v, spec, scale=scale, normalize=normalize, eps=eps,
                                 horizon=horizon, layout=layout, causal=False, t0=0)
        _cosformer.finish(ctx, ctx["comp"])
        maps, axes = ctx["flags_maps"], {}
    else:
        ctx = _context(q, k, v, spec, kind_options, layout, scale, normalize, eps,
                       causal=False)
        for name in ("q", "k", "v"):
            ctx[name] = ctx[name].astype(ctx["comp"], copy=False)
        maps = spec.fmap_q | (spec.fmap_k << 4)
        t3 = (-3, -1)
        axes = {"axes": [t3] * 4 + [()] * 4 + [t3] * 3} if ctx["dims"].layout == "bthd" else {}
    flags = (maps | (reg.NORMALIZE[ctx["normalize"]] << 8)
             | (reg.EPS_MODES[ctx["eps_mode"]] << 10))
    ctx.update(flags=flags, chunk=256 if chunk_size is None else int(chunk_size), axes=axes)
    return o, LinearVJP(spec.name, False, ctx)


def _context(q, k, v, spec, kind_options, layout, scale, normalize, eps, *, causal):
    """What the backward needs, from arguments the forward has already validated."""
    qa, ka, va = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    dims = val.qkv_dims(qa, ka, va, layout, causal)
    _, comp = val.compute_dtype(qa, ka, va)
    opts = {**spec.options, **kind_options}
    normalize = spec.normalize if normalize is None else normalize
    eps_mode = opts.get("eps_mode") or spec.eps_mode
    if eps is None:
        eps = 1e-8 if normalize == "norm" else spec.eps
    scale = spec.default_scale(dims.D) if scale is None else float(scale)
    return {
        "q": qa, "k": ka, "v": va, "dims": dims, "comp": comp, "opts": opts,
        "normalize": normalize, "eps_mode": eps_mode, "eps": float(eps), "scale": scale,
        "div": normalize == "div", "out_shape": dims.out_shape(dims.E),
        "q_shape": qa.shape, "k_shape": ka.shape, "v_shape": va.shape,
        "q_dtype": qa.dtype, "k_dtype": ka.dtype, "v_dtype": va.dtype,
    }


def _attach_backward() -> None:
    """Each kind in scope gets ``causal_vjp`` bound to it in its ``backward`` slot, with
    the inputs it differentiates (``la.kinds()[kind]["grad"]``)."""
    for name in grad_kinds():
        spec = reg.get(name)
        slot = functools.partial(causal_vjp if spec.causal_modes else noncausal_vjp, kind=name)
        slot.wrt = (("q", "k", "v")
                    + (("decay",) if "decay" in spec.keywords else ())
                    + (("gate",) if name == "rfa" else ())
                    + (("initial_state",) if spec.causal_modes else ()))
        slot.nondiff = ("projection",) if "projection" in spec.keywords else ()
        reg.attach(name, backward=slot)


_attach_backward()
