"""Public entry points: causal, noncausal, step, softmax_attention.

Python validates, applies defaults and layouts, and picks the gufunc; every
per-token computation runs in C with the GIL released (linattn._core).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from . import _registry as reg
from . import _tuning
from . import _validate as val
from .state import State

_CAUSAL_GUFUNC = {
    "recurrent": _core._causal_recurrent,
    "chunked": _core._causal_chunked,
    "parallel": _core._causal_parallel,
}
_ZERO_DECAY = np.zeros(1, dtype=np.float64)


def default_chunk(F: int) -> int:
    """The tuning table's default chunk size (docs/design/family.md §6.2): 64, or 32 when
    the feature width is at most 32, unless la.tune() measured others on this CPU."""
    return _tuning.default_chunk(F)


def pick_mode(mode: str, T: int, chunk: int, spec: reg.KindSpec, *, F: int | None = None,
              E: int | None = None, slices: int | None = None) -> str:
    """The documented ``mode="auto"`` rule (``la.kinds()[kind]["auto_rule"]``), with the
    numbers of the tuning table (``_tuning.active()``: the active ISA path's row, or this
    CPU's ``la.tune()`` results).

    Measured on the reference machine (one core, B*H = 4, T = 4096, with and without
    decay): the AVX-512 recurrent loop keeps 64 value columns of accumulators in registers
    and wins while ``E <= 64``, whatever ``F`` (F, E = 64, 64: 4.3 vs 5.0 ms; 128, 64: 5.3 vs
    6.2 ms; 256, 64: 10.6 vs 11.5 ms); wider values take more passes over the state and the
    chunked form with its AVX-512 tiles wins (96, 96: 6.2 vs 6.7 ms; 128, 128: 9.3 vs 12.8
    ms; float64 128, 128: 21.8 vs 30.3 ms).  With fewer (batch x head) slices than threads the
    chunked form splits the sequence over the otherwise idle threads.  Kinds with their
    own kernels pass no ``F``/``E`` and get chunked from ``T >= 2 * chunk``.
    """
    if mode != "auto":
        if mode not in spec.causal_modes:
            raise ValueError(f"mode must be 'auto' or one of {spec.causal_modes} for kind "
                             f"{spec.name!r}, got {mode!r}")
        return mode
    if "chunked" not in spec.causal_modes or T < 2 * chunk:
        return "recurrent"
    if F is None or E is None:
        return "chunked"
    knobs = _tuning.active()
    threads = _core.get_num_threads()
    if (slices is not None and slices < threads
            and T >= knobs["seq_min_chunks"] * chunk * threads):
        return "chunked"  # sequence-parallel over the idle threads
    return "chunked" if E > knobs["recurrent_max_e"] else "recurrent"


# Widest values (E) for which the recurrent loop beats the chunked form: the tuning
# table's value for the active ISA path (la.tune() may measure another on this CPU).
AUTO_RECURRENT_MAX_E = _tuning.table()[_tuning.simd()["active"]]["recurrent_max_e"]


def _check_options(spec: reg.KindSpec, given: dict[str, Any], entry: str) -> dict[str, Any]:
    """Merge kind options with their defaults; unknown ones raise TypeError."""
    bad = [k for k in given if k not in spec.options]
    if bad:
        valid = sorted(spec.options) + sorted(spec.keywords)
        raise TypeError(f"{entry}() got option(s) {bad} that kind {spec.name!r} does not accept; "
                        f"its options are {valid}")
    return {**spec.options, **given}


def _check_gated(spec: reg.KindSpec, entry: str, **kw: Any) -> None:
    for name, value in kw.items():
        if value is not None and name not in spec.keywords:
            raise TypeError(f"{name}= does not apply to kind {spec.name!r}; it accepts "
                            f"{sorted(spec.keywords) + sorted(spec.options)}")


def _prepare_qkv(q, k, v, layout, causal):
    q = val.array("q", q)
    k = val.array("k", k)
    v = val.array("v", v)
    layout = val.check_layout(layout)
    dims = val.qkv_dims(q, k, v, layout, causal)
    res, comp = val.compute_dtype(q, k, v)
    return q, k, v, dims, res, comp


def _axes(layout: str, n3: int, scalars: int, core_out: list) -> dict:
    """gufunc keyword for ``layout="bthd"``: time at -3, features at -1, heads at -2 a
    loop dimension; nothing for the default layout."""
    if layout != "bthd":
        return {}
    return {"axes": [(-3, -1)] * n3 + core_out[0] + [()] * scalars + core_out[1]}


def _finish_out(o: np.ndarray, out: np.ndarray | None, res: np.dtype) -> np.ndarray:
    if out is not None:
        if o is not out:
            np.copyto(out, o, casting="unsafe")
        return out
    return o if o.dtype == res else o.astype(res)


def _norm_and_eps(spec: reg.KindSpec, normalize, eps, eps_mode):
    normalize = spec.normalize if normalize is None else normalize
    val.choice("normalize", normalize, reg.NORMALIZE)
    eps_mode = val.choice("eps_mode", eps_mode if eps_mode is not None else spec.eps_mode,
                          reg.EPS_MODES)
    if eps is None:
        eps = 1e-8 if normalize == "norm" else spec.eps
    return normalize, val.nonneg_number("eps", eps), eps_mode


def linear_core(q, k, v, *, spec: reg.KindSpec, fmap_q: int, fmap_k: int, scale: float,
                normalize: str, eps: float, eps_mode: str, decay, mode: str, chunk_size,
                initial_state, return_state: bool, layout: str, out, dims: val.Dims,
                res: np.dtype, comp: np.dtype, extra: dict | None = None):
    """Run the generic causal operator on validated inputs (also used by other kinds
    after they computed their features)."""
    F, E, T = dims.D, dims.E, dims.T
    chunk = default_chunk(F) if chunk_size is None else val.positive_int("chunk_size",
                                                                         chunk_size)
    div = normalize == "div"
    S0, z0, t0 = _state_in(initial_state, spec, dims, F, E, div)
    if S0 is not None and S0.dtype == np.float64:
        comp = np.dtype(np.float64)  # a float64 state keeps the computation in float64
    mode = pick_mode(mode, T, chunk, spec, F=F, E=E, slices=math.prod(dims.batch))
    if decay is None:
        g, g_axes, decayed = np.broadcast_to(_ZERO_DECAY, (T,)), (-1,), False
    else:
        g, g_axes, _ = val.decay(decay, dims)
        decayed = True
    if S0 is None:
        S0 = np.zeros((F, E), comp)
        z0 = np.zeros((F,), comp)
    elif z0 is None:
        z0 = np.zeros(S0.shape[:-1], comp)
    out_shape = dims.out_shape(E)
    if out is not None:
        out = val.out_array(out, out_shape, res, (q, k, v))
    flags = (fmap_q | (fmap_k << 4) | (reg.NORMALIZE[normalize] << 8)
             | (reg.EPS_MODES[eps_mode] << 10) | (int(decayed) << 12))
    qc, kc, vc = (x.astype(comp, copy=False) for x in (q, k, v))
    S0 = S0.astype(comp, copy=False)
    z0 = z0.astype(comp, copy=False)
    kernel_out = out if (out is not None and out.dtype == comp) else None
    axes = _axes(layout, 3, 4, [[g_axes, (-2, -1), (-1,)], [(-3, -1), (-2, -1), (-1,)]])
    o, S1, z1 = _CAUSAL_GUFUNC[mode](qc, kc, vc, g, S0, z0, scale, eps, np.int64(flags),
                                     np.int64(chunk), out=(kernel_out, None, None),
                                     **axes)
    o = _finish_out(o, out, res)
    if not return_state:
        return o
    ex = dict(initial_state.extra) if initial_state is not None else {}
    if extra:
        ex.update(extra)
    return o, State(S1, z1 if div else None, t0 + T, spec.name, ex)


def _state_in(state, spec: reg.KindSpec, dims: val.Dims, F: int, E: int, div: bool):
    if state is None:
        return None, None, 0
    if not isinstance(state, State):
        raise TypeError(f"initial_state must be a linattn.State (or None), got "
                        f"{type(state).__name__}")
    if state.kind != spec.name:
        raise ValueError(f"initial_state comes from kind {state.kind!r}, not {spec.name!r}")
    S = state.S
    if S is None or not isinstance(S, np.ndarray) or S.ndim < 2:
        raise ValueError(f"initial_state.S must be an array of shape (..., {F}, {E}), got "
                         f"{None if S is None else getattr(S, 'shape', type(S).__name__)}")
    if S.dtype not in (np.float32, np.float64):
        raise TypeError(f"initial_state.S must be float32 or float64, got {S.dtype}")
    if S.shape[-2:] != (F, E):
        raise ValueError(f"initial_state.S has core shape {S.shape[-2:]}, expected (F, E) = "
                         f"({F}, {E}) for these inputs")
    try:
        np.broadcast_shapes(S.shape[:-2], dims.batch)
    except ValueError:
        raise ValueError(f"initial_state.S batch dimensions {S.shape[:-2]} do not broadcast "
                         f"against the inputs' {dims.batch}") from None
    z = state.z
    if div:
        if z is None:
            raise ValueError(f"initial_state has no denominator state z, but kind "
                             f"{spec.name!r} with normalize='div' needs one")
        if not isinstance(z, np.ndarray) or z.shape != S.shape[:-1] or z.dtype != S.dtype:
            raise ValueError(f"initial_state.z must be an array of shape {S.shape[:-1]} and "
                             f"dtype {S.dtype}, got {getattr(z, 'shape', None)} "
                             f"{getattr(z, 'dtype', None)}")
    else:
        z = None
    if state.t < 0:
        raise ValueError(f"initial_state.t must be >= 0, got {state.t}")
    return S, z, state.t


def causal(q, k, v, kind: str = "elu", *, mode: str = "auto", chunk_size: int | None = None,
           scale: float | None = None, normalize: str | None = None, eps: float | None = None,
           decay=None, num_features: int | None = None, projection=None, seed: int | None = None,
           horizon: int | None = None, initial_state: State | None = None,
           return_state: bool = False, layout: str = "...td", out=None,
           check_finite: bool = False, **kind_options):
    """Causal linear attention ``o_t = sum_{s<=t} w(t,s) phi(q_t).phi(k_s) v_s / den_t``.

    Parameters
    ----------
    q : array_like, ``(..., T, D)`` (or ``(B, T, H, D)`` with ``layout="bthd"``)
    k : array_like, ``(..., T, D)``; leading dimensions broadcast as in ``np.matmul``
        (``(B, 1, T, D)`` serves every head).
    v : array_like, ``(..., T, E)``
    kind : str
        A name from ``la.kinds()``.
    mode : {"auto", "recurrent", "chunked", "parallel"}
        Execution form; all agree to the tolerances of family.md.  ``"auto"``: recurrent
        when ``T < 2 * chunk_size``, else chunked.
    chunk_size : int, optional
        Chunk (and row-block) size; default 64, or 32 when the feature width is <= 32.
    scale : float, optional
        Logit temperature; default and how it enters are per kind (``la.kinds()``).
    normalize : {"div", "none", "norm"}, optional
        Divide by the denominator, return the numerator, or RMS-normalise the output.
    eps : float, optional
        Denominator guard (div) or norm epsilon; ``eps_mode=`` selects the rule.
    decay : array_like, optional
        Log-decay ``<= 0``: per head (broadcastable to the batch dimensions) or per token
        (one more axis, of length T).  ``-inf`` is a hard reset.
    initial_state : la.State, optional
        Resume from a state returned by ``return_state=True`` or ``la.step``.
    return_state : bool
        Also return the final ``la.State``.
    layout : {"...td", "bthd"}
    out : ndarray, optional
        Output array of the result's shape and dtype.
    check_finite : bool
        Scan ``q``, ``k``, ``v`` first and raise ValueError naming the tensor and the
        index of its first NaN or Inf.  By default (False) nothing is scanned and NaN /
        Inf propagate to the outputs they reach (at least every later output of a causal
        call; no error, no warning).

    Returns
    -------
    o : ndarray ``(..., T, E)``, or ``(o, state)`` with ``return_state=True``.
    """
    if check_finite:
        val.check_finite(q=q, k=k, v=v)
    spec = reg.get(kind)
    if not spec.causal_modes:
        raise ValueError(f"kind {kind!r} has no causal form; use la.noncausal")
    _check_gated(spec, "causal", decay=decay, num_features=num_features,
                 projection=projection, seed=seed, horizon=horizon)
    if spec.causal_impl is not None:
        # checks every kind shares, before kinds that compute features first lose track
        # of the caller's arrays
        if chunk_size is not None:
            val.positive_int("chunk_size", chunk_size)
        val.no_overlap(out, q=q, k=k, v=v)
        return spec.causal_impl(
            q, k, v, spec=spec, mode=mode, chunk_size=chunk_size, scale=scale,
            normalize=normalize, eps=eps, decay=decay, num_features=num_features,
            projection=projection, seed=seed, horizon=horizon, initial_state=initial_state,
            return_state=return_state, layout=layout, out=out,
            options=_check_options(spec, kind_options, "causal"))
    opts = _check_options(spec, kind_options, "causal")
    q, k, v, dims, res, comp = _prepare_qkv(q, k, v, layout, causal=True)
    normalize, eps, eps_mode = _norm_and_eps(spec, normalize, eps, opts.get("eps_mode"))
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    val.choice("mode", mode, ("auto",) + spec.causal_modes)
    return linear_core(q, k, v, spec=spec, fmap_q=spec.fmap_q, fmap_k=spec.fmap_k,
                       scale=scale, normalize=normalize, eps=eps, eps_mode=eps_mode,
                       decay=decay, mode=mode, chunk_size=chunk_size,
                       initial_state=initial_state, return_state=bool(return_state),
                       layout=dims.layout, out=out, dims=dims, res=res, comp=comp)


def noncausal(q, k, v, kind: str = "elu", *, chunk_size: int | None = None,
              scale: float | None = None, normalize: str | None = None,
              eps: float | None = None, num_features: int | None = None, projection=None,
              seed: int | None = None, horizon: int | None = None, layout: str = "...td",
              out=None, check_finite: bool = False, **kind_options):
    """Non-causal linear attention (and cross-attention, ``S != T``).

    ``o_t = phi(q_t)^T (sum_s phi(k_s) v_s^T) / guard(phi(q_t) . sum_s phi(k_s))``:
    two GEMMs blocked over the key axis.  Shapes: ``q (..., T, D)``, ``k (..., S, D)``,
    ``v (..., S, E)`` -> ``(..., T, E)``.  Arguments as :func:`causal`, without state,
    mode or decay (decay is causal only).  ``check_finite=True`` raises ValueError naming
    the first of ``q``, ``k``, ``v`` holding a NaN or Inf and its index; by default they
    propagate.
    """
    if check_finite:
        val.check_finite(q=q, k=k, v=v)
    spec = reg.get(kind)
    if not spec.noncausal:
        raise ValueError(f"kind {kind!r} has no non-causal form; use la.causal")
    if "decay" in kind_options:
        raise TypeError("decay= is causal only: la.noncausal does not accept it")
    _check_gated(spec, "noncausal", num_features=num_features, projection=projection,
                 seed=seed, horizon=horizon)
    opts = _check_options(spec, kind_options, "noncausal")
    if spec.noncausal_impl is not None:
        if chunk_size is not None:
            val.positive_int("chunk_size", chunk_size)
        val.no_overlap(out, q=q, k=k, v=v)
        return spec.noncausal_impl(
            q, k, v, spec=spec, chunk_size=chunk_size, scale=scale, normalize=normalize,
            eps=eps, num_features=num_features, projection=projection, seed=seed,
            horizon=horizon, layout=layout, out=out, options=opts)
    q, k, v, dims, res, comp = _prepare_qkv(q, k, v, layout, causal=False)
    normalize, eps, eps_mode = _norm_and_eps(spec, normalize, eps, opts.get("eps_mode"))
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    return noncausal_core(q, k, v, fmap_q=spec.fmap_q, fmap_k=spec.fmap_k, scale=scale,
                          normalize=normalize, eps=eps, eps_mode=eps_mode,
                          chunk_size=chunk_size, layout=dims.layout, out=out, dims=dims,
                          res=res, comp=comp)


def noncausal_core(q, k, v, *, fmap_q: int, fmap_k: int, scale: float, normalize: str,
                   eps: float, eps_mode: str, chunk_size, layout: str, out, dims: val.Dims,
                   res: np.dtype, comp: np.dtype):
    chunk = 256 if chunk_size is None else val.positive_int("chunk_size", chunk_size)
    if out is not None:
        out = val.out_array(out, dims.out_shape(dims.E), res, (q, k, v))
    flags = (fmap_q | (fmap_k << 4) | (reg.NORMALIZE[normalize] << 8)
             | (reg.EPS_MODES[eps_mode] << 10))
    qc, kc, vc = (x.astype(comp, copy=False) for x in (q, k, v))
    kernel_out = out if (out is not None and out.dtype == comp) else None
    axes = _axes(layout, 3, 4, [[], [(-3, -1)]])
    o = _core._noncausal(qc, kc, vc, scale, eps, np.int64(flags), np.int64(chunk),
                         out=kernel_out, **axes)
    return _finish_out(o, out, res)


def step(q_t, k_t, v_t, state: State | None = None, kind: str = "elu", *,
         inplace: bool = False, check_finite: bool = False, **options):
    """One decoding step: ``q_t (..., D)``, ``k_t (..., D)``, ``v_t (..., E)``.

    Equivalent to ``la.causal`` on a length-1 sequence resumed from ``state`` (None
    starts fresh), in the recurrent form.  Returns ``(o_t (..., E), new_state)``; the
    new state has the same structure as a ``T > 1`` call's.  ``check_finite=True`` raises
    ValueError naming the first of ``q_t``, ``k_t``, ``v_t`` holding a NaN or Inf.

    ``inplace=True`` updates ``state``'s arrays in place and returns the same object
    (like ``out=``): no new ``(..., F, E)`` state is allocated, which is what makes a
    decoding loop fast.  The old state is consumed; keep ``state.copy()`` if you need it.
    Every check runs before anything is written, so a rejected call leaves it intact.
    """
    if check_finite:
        val.check_finite(q_t=q_t, k_t=k_t, v_t=v_t)
    q_t = val.array("q_t", q_t)
    k_t = val.array("k_t", k_t)
    v_t = val.array("v_t", v_t)
    for name, a in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        if a.ndim < 1:
            raise ValueError(f"{name} must have at least 1 dimension (..., D), got a scalar")
    if "layout" in options or "mode" in options or "return_state" in options:
        bad = [n for n in ("layout", "mode", "return_state") if n in options]
        raise TypeError(f"step() does not take {bad}: it runs one token in the recurrent "
                        f"form on (..., D) arrays")
    q1, k1, v1 = q_t[..., None, :], k_t[..., None, :], v_t[..., None, :]
    if not inplace:
        o, st = causal(q1, k1, v1, kind, mode="recurrent", initial_state=state,
                       return_state=True, **options)
        return o[..., 0, :], st
    if not isinstance(state, State):
        raise TypeError(f"inplace=True needs a linattn.State to update, got "
                        f"{type(state).__name__}")
    spec = reg.get(kind)
    if spec.causal_impl is not None or options.get("out") is not None:
        # kinds with their own machinery: compute, then write into the given state
        o, st = causal(q1, k1, v1, kind, mode="recurrent", initial_state=state,
                       return_state=True, **options)
        _write_state(state, st)
        return o[..., 0, :], state
    return _step_inplace(q1, k1, v1, state, spec, options)


def _write_state(state: State, new: State) -> None:
    for name in ("S", "z"):
        old, fresh = getattr(state, name), getattr(new, name)
        if old is not None and fresh is not None and old.shape == fresh.shape \
                and old.dtype == fresh.dtype and old.flags.writeable:
            np.copyto(old, fresh)
        else:
            setattr(state, name, fresh)
    state.t = new.t
    state.extra = new.extra


def _step_inplace(q, k, v, state: State, spec: reg.KindSpec, options: dict):
    """The in-place decoding path of the elementwise kinds: one gufunc call that
    updates ``state.S`` / ``state.z`` where they are."""
    scale = options.pop("scale", None)
    normalize = options.pop("normalize", None)
    eps = options.pop("eps", None)
    decay = options.pop("decay", None)
    options.pop("chunk_size", None)
    _check_gated(spec, "step", **{n: options.pop(n, None) for n in reg.GATED_KEYWORDS
                                  if n in options})
    opts = _check_options(spec, options, "step")
    dims = val.qkv_dims(q, k, v, "...td", causal=True)
    res, comp = val.compute_dtype(q, k, v)
    normalize, eps, eps_mode = _norm_and_eps(spec, normalize, eps, opts.get("eps_mode"))
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    div = normalize == "div"
    S, z, _ = _state_in(state, spec, dims, dims.D, dims.E, div)
    comp = S.dtype if S.dtype == np.float64 else comp
    want = dims.batch + (dims.D, dims.E)
    for name, arr, shape in (("S", S, want), ("z", z, want[:-1])):
        if arr is None:
            continue
        if arr.shape != shape or arr.dtype != comp or not arr.flags.writeable \
                or not arr.flags.aligned:
            raise ValueError(f"inplace=True needs a writeable, aligned state.{name} of shape "
                             f"{shape} and dtype {comp}; got shape {arr.shape}, dtype "
                             f"{arr.dtype}, writeable={arr.flags.writeable} (use the state "
                             f"returned by a call on these shapes, or inplace=False)")
    if z is None:
        z = np.zeros(dims.D, comp)  # scratch: no denominator is carried
    g, decayed = (_ZERO_DECAY, False) if decay is None else (val.decay(decay, dims)[0], True)
    flags = (spec.fmap_q | (spec.fmap_k << 4) | (reg.NORMALIZE[normalize] << 8)
             | (reg.EPS_MODES[eps_mode] << 10) | (int(decayed) << 12))
    qc, kc, vc = (x.astype(comp, copy=False) for x in (q, k, v))
    o = _core._step_inplace(qc, kc, vc, g, S, z, scale, eps, np.int64(flags), np.int64(1))
    state.t += 1
    o = o[..., 0, :]
    return (o if o.dtype == res else o.astype(res)), state


def softmax_attention(q, k, v, causal: bool = True, scale: float | None = None, *,
                      layout: str = "...td", out=None, check_finite: bool = False):
    """Exact softmax attention ``softmax(scale * q k^T [+ causal mask]) v``, in C.

    The quality baseline.  ``scale`` defaults to ``D**-0.5``.  Causal attention needs
    ``S == T``.  Shapes and ``layout`` as :func:`causal`.  ``check_finite=True`` raises
    ValueError naming the first of ``q``, ``k``, ``v`` holding a NaN or Inf; by default
    they propagate.
    """
    if check_finite:
        val.check_finite(q=q, k=k, v=v)
    q, k, v, dims, res, comp = _prepare_qkv(q, k, v, layout, causal=bool(causal))
    scale = (1.0 / np.sqrt(dims.D) if dims.D else 1.0) if scale is None else \
        val.positive_number("scale", scale)
    if out is not None:
        out = val.out_array(out, dims.out_shape(dims.E), res, (q, k, v))
    qc, kc, vc = (x.astype(comp, copy=False) for x in (q, k, v))
    kernel_out = out if (out is not None and out.dtype == comp) else None
    axes = _axes(dims.layout, 3, 2, [[], [(-3, -1)]])
    o = _core._softmax(qc, kc, vc, float(scale), np.int64(bool(causal)), out=kernel_out,
                       **axes)
    return _finish_out(o, out, res)
