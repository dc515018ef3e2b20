"""One call, described once: what every kind receives, and the steps all kinds share.

The entry points (``la.causal``, ``la.noncausal``, ``la.step``) validate their arguments
and resolve the defaults once, into a frozen :class:`Call`; a kind's ``forward(call,
options)`` only does what is specific to it (features, its own kernel, its state) and
hands its result to :meth:`Call.finish`, which honours ``out=``, puts the output back in
the caller's layout and casts it to the result dtype.  The generic causal and non-causal
operators that most kinds end in are :func:`linear_causal` and :func:`linear_noncausal`.

Inside a kind every array is in the ``(..., T, D)`` view: with ``layout="bthd"`` the
inputs are views ``(B, H, T, D)`` of the caller's ``(B, T, H, D)`` arrays (no copies), and
:meth:`Call.finish` swaps the axes back.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from . import _registry as reg
from . import _validate as val
from .state import State

_CAUSAL_GUFUNC = {
    "recurrent": _core._causal_recurrent,
    "chunked": _core._causal_chunked,
    "parallel": _core._causal_parallel,
}
_ZERO_DECAY = np.zeros(1, dtype=np.float64)
# the explicit arguments a kind may need to tell apart from their resolved defaults
_TRACKED = ("scale", "normalize", "eps", "chunk_size")


def td(x: np.ndarray, layout: str) -> np.ndarray:
    """The ``(..., T, D)`` view of an array in ``layout`` (a no-op for ``"...td"``)."""
    return np.swapaxes(x, -3, -2) if layout == "bthd" else x


def suggest(name: str, given: object, valid) -> str:
    """``"; did you mean 'x'?"`` for a near miss among ``valid`` (difflib), else ``""``."""
    if not isinstance(given, str):
        return ""
    close = difflib.get_close_matches(given, [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True, eq=False)
class Call:
    """A validated call with its defaults resolved; built by :func:`build`.

    ``q``, ``k``, ``v`` are the checked inputs in the ``(..., T, D)`` view, ``dims``
    their sizes (``dims.layout`` is the caller's layout), ``res`` the result dtype and
    ``comp`` the compute dtype.  ``scale``, ``normalize``, ``eps`` and ``eps_mode`` are
    resolved from the kind's defaults (``normalize="softmax"`` for kinds with a softmax
    read-out, which take neither); ``given`` names those the caller passed explicitly.
    ``mode`` is ``"auto"`` or a causal form of the kind (``""`` for non-causal calls).
    The kind-gated keywords (``decay``, ``num_features``, ``projection``, ``seed``,
    ``horizon``) are passed through as given; ``initial_state`` is None or a State of
    this kind; ``out`` is a checked output array in the caller's layout and ``out_td``
    its ``(..., T, E)`` view.
    """

    entry: str
    spec: reg.KindSpec
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    dims: val.Dims
    res: np.dtype
    comp: np.dtype
    mode: str
    chunk_size: int | None
    scale: float
    normalize: str
    eps: float
    eps_mode: str
    decay: Any
    num_features: Any
    projection: Any
    seed: Any
    horizon: Any
    initial_state: State | None
    return_state: bool
    out: np.ndarray | None
    out_td: np.ndarray | None
    shared_kv: bool
    given: frozenset
    progress: bool = False

    @property
    def causal(self) -> bool:
        return self.entry != "noncausal"

    @property
    def layout(self) -> str:
        return self.dims.layout

    def chunk(self, default: int) -> int:
        """The chunk size: the caller's, else the kind's ``default``."""
        return default if self.chunk_size is None else self.chunk_size

    def kernel_out(self, comp: np.dtype | None = None) -> np.ndarray | None:
        """``out`` (in the ``(..., T, E)`` view) when a kernel computing in ``comp`` can
        write into it directly, else None."""
        comp = self.comp if comp is None else comp
        return self.out_td if self.out_td is not None and self.out_td.dtype == comp else None

    def decay_td(self, decay: Any = None) -> np.ndarray | None:
        """The checked float64 log-decay (the caller's ``decay=``, or ``decay``) with the
        time axis last, in the ``(..., T)`` view; None without a decay."""
        g = self.decay if decay is None else decay
        if g is None:
            return None
        key = _decay_key(g, self.dims)
        if key is not None:
            got = _DECAY_CACHE.get(key)
            if got is not None:
                return got
            g = g.copy()  # the stored view must not see the caller's later writes
        g, axes, _ = val.decay(g, self.dims)
        g = np.swapaxes(g, -1, -2) if axes == (-2,) else g
        if key is not None:
            if len(_DECAY_CACHE) >= 64:
                _DECAY_CACHE.pop(next(iter(_DECAY_CACHE)))
            _DECAY_CACHE[key] = g
        return g

    def finish(self, o: np.ndarray, state: State | None = None):
        """The shared last step: ``o`` (``(..., T, E)`` view, compute dtype) into ``out=``
        or the result dtype, in the caller's layout; ``(o, state)`` when the caller asked
        for the state."""
        if self.out is not None:
            if o is not self.out_td:
                np.copyto(self.out_td, o, casting="unsafe")
            o = self.out
        else:
            if o.dtype != self.res:
                o = o.astype(self.res)
            o = td(o, self.dims.layout)
        return (o, state) if self.return_state else o


# checked per-head decays by value (a preset's slopes are a new array at every call)
_DECAY_CACHE: dict = {}


def _decay_key(g: Any, dims: val.Dims):
    """A value key for a small float64 per-head decay array (fewer dimensions than a
    per-token one), else None.  The checks of ``val.decay`` depend on the value, the shape
    and the call's dims only, so a value seen before has passed them; rejected values are
    never stored."""
    if type(g) is not np.ndarray or g.dtype != np.float64 or g.size > 256 \
            or g.ndim > len(dims.batch):
        return None
    return (g.tobytes(), g.shape, dims.layout, dims.T, dims.batch)


def check_options(spec: reg.KindSpec, given: dict[str, Any], entry: str) -> dict[str, Any]:
    """Merge kind options with their defaults; unknown ones raise TypeError."""
    bad = [k for k in given if k not in spec.options]
    if bad:
        valid = sorted(spec.options) + sorted(spec.keywords)
        hint = suggest("", bad[0], valid + list(reg.COMMON_OPTIONS)) if len(bad) == 1 else ""
        raise TypeError(f"{entry}() got option(s) {bad} that kind {spec.name!r} does not accept; "
                        f"its options are {valid}{hint}")
    return {**spec.options, **given}


def check_gated(spec: reg.KindSpec, **kw: Any) -> None:
    for name, value in kw.items():
        if value is not None and name not in spec.keywords:
            raise TypeError(f"{name}= does not apply to kind {spec.name!r}; it accepts "
                            f"{sorted(spec.keywords) + sorted(spec.options)}")


def check_state(state: object, spec: reg.KindSpec) -> State | None:
    if state is None:
        return None
    if not isinstance(state, State):
        raise TypeError(f"initial_state must be a linattn.State (or None), got "
                        f"{type(state).__name__}")
    if state.kind != spec.name:
        raise ValueError(f"initial_state comes from kind {state.kind!r}, not {spec.name!r}")
    return state


def same_array(a: object, b: object) -> bool:
    """``a`` and ``b`` are one array (the same object, or the same memory, shape, strides
    and dtype)."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
                and np.may_share_memory(a, b)
                and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])
    return False


def build(entry: str, spec: reg.KindSpec, q, k, v, *, mode: str = "", chunk_size=None,
          scale=None, normalize=None, eps=None, eps_mode=None, decay=None,
          num_features=None, projection=None, seed=None, horizon=None, initial_state=None,
          return_state: bool = False, layout=None, out=None, progress: bool = False) -> Call:
    """Validate once and resolve the defaults: the :class:`Call` a kind receives."""
    causal = entry != "noncausal"
    shared_kv = same_array(k, v)
    val.no_overlap(out, q=q, k=k, v=v)
    qa, ka = val.array("q", q), val.array("k", k)
    va = ka if shared_kv else val.array("v", v)
    layout = val.check_layout(layout)
    dims = _same_shape_dims(qa, ka, va, layout)
    if dims is None:
        dims = val.qkv_dims(qa, ka, va, layout, causal)
    dt = qa.dtype
    if (dt is _F32 or dt is _F64) and ka.dtype is dt and va.dtype is dt:
        res = comp = dt  # one native float dtype: what compute_dtype resolves to
    else:
        res, comp = val.compute_dtype(qa, ka, va)
    given = frozenset(n for n, x in zip(_TRACKED, (scale, normalize, eps, chunk_size))
                      if x is not None) if (scale is not None or normalize is not None
                                            or eps is not None or chunk_size is not None) \
        else _NONE_GIVEN
    if chunk_size is not None:
        chunk_size = val.positive_int("chunk_size", chunk_size)
    if spec.normalize == "softmax":
        for name, x in (("normalize", normalize), ("eps", eps)):
            if x is not None:
                raise TypeError(f"{name}= does not apply to kind {spec.name!r} (a softmax "
                                f"read-out has no denominator guard)")
        normalize, eps, eps_mode = "softmax", 0.0, spec.eps_mode
    elif normalize is None and eps is None and (eps_mode is None or type(eps_mode) is str):
        normalize, eps_mode, eps = _kind_defaults(spec, eps_mode)
    else:
        normalize = spec.normalize if normalize is None else normalize
        val.choice("normalize", normalize, reg.NORMALIZE)
        eps_mode = val.choice("eps_mode", spec.eps_mode if eps_mode is None else eps_mode,
                              reg.EPS_MODES)
        eps = val.nonneg_number("eps", (1e-8 if normalize == "norm" else spec.eps)
                                if eps is None else eps)
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    if causal:
        if mode not in ("auto",) + spec.causal_modes:
            raise ValueError(f"mode must be one of {('auto',) + spec.causal_modes}, got "
                             f"{mode!r}{_mode_hint(mode)}")
    initial_state = check_state(initial_state, spec) if causal else None
    out_td = None
    if out is not None:
        out = val.out_array(out, dims.out_shape(dims.E, _result_batch(dims, decay,
                                                                       initial_state)), res, ())
        out_td = td(out, layout)
    return Call(entry, spec, td(qa, layout), td(ka, layout), td(va, layout), dims, res, comp,
                mode if causal else "", chunk_size, scale, normalize, eps, eps_mode, decay,
                num_features, projection, seed, horizon, initial_state, bool(return_state),
                out, out_td, shared_kv, given, bool(progress))


def _result_batch(dims: val.Dims, decay, state) -> tuple[int, ...]:
    """The batch dimensions of a call's output: the inputs' broadcast with those of a
    per-head or per-token decay and of an initial state's ``S`` (either may widen them,
    as the kernels broadcast them); the inputs' alone where they do not broadcast (the
    kind raises that error later, naming the argument)."""
    shapes = [dims.batch]
    if decay is not None:
        a, axes, per_token = val.decay(decay, dims)
        if per_token:
            shapes.append(a.shape[:-2] + a.shape[-1:] if axes == (-2,) else a.shape[:-1])
        else:
            shapes.append(a.shape[:-1])  # val.decay added the time axis
    if state is not None and isinstance(getattr(state, "S", None), np.ndarray) \
            and state.S.ndim >= 2:
        shapes.append(state.S.shape[:-2])
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return dims.batch


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_NONE_GIVEN: frozenset = frozenset()
_INT_MAX = 2**31 - 1


def _same_shape_dims(q: np.ndarray, k: np.ndarray, v: np.ndarray, layout: str):
    """The :class:`linattn._validate.Dims` of the common case (default layout, q, k, v of
    one batch shape and length, k as wide as q) without the general broadcasting rule;
    None otherwise (then ``val.qkv_dims`` checks and explains)."""
    if layout != "...td" or q.ndim < 2:
        return None
    qs, ks, vs = q.shape, k.shape, v.shape
    if qs != ks or qs[:-1] != vs[:-1] or qs[-1] > _INT_MAX or vs[-1] > _INT_MAX:
        return None
    return val.Dims(layout, qs[-2], qs[-2], qs[-1], vs[-1], qs[:-2])


_DEFAULTS: dict = {}


def _kind_defaults(spec: reg.KindSpec, eps_mode: str | None) -> tuple[str, str, float]:
    """``(normalize, eps_mode, eps)`` of a kind called without ``normalize`` and ``eps``
    (``eps_mode`` None or a kind option's string): checked as in the general path, once
    per kind and ``eps_mode``."""
    key = (spec.name, spec.normalize, spec.eps_mode, spec.eps, eps_mode)
    got = _DEFAULTS.get(key)
    if got is None:
        val.choice("normalize", spec.normalize, reg.NORMALIZE)
        eps_mode = val.choice("eps_mode", spec.eps_mode if eps_mode is None else eps_mode,
                              reg.EPS_MODES)
        eps = val.nonneg_number("eps", 1e-8 if spec.normalize == "norm" else spec.eps)
        got = _DEFAULTS[key] = (spec.normalize, eps_mode, eps)
    return got


def _mode_hint(mode: object) -> str:
    if mode == "noncausal":
        return "; for attention over every key use la.noncausal(q, k, v, kind=...)"
    return suggest("mode", mode, ("auto",) + reg.CAUSAL_MODES)


# ------------------------------------------------------- the generic operators --

def state_arrays(state: State | None, spec: reg.KindSpec, batch: tuple, F: int, E: int,
                 div: bool):
    """``(S, z, t)`` of a carried state checked against the call (``(None, None, 0)``
    without one)."""
    if state is None:
        return None, None, 0
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
        np.broadcast_shapes(S.shape[:-2], batch)
    except ValueError:
        raise ValueError(f"initial_state.S batch dimensions {S.shape[:-2]} do not broadcast "
                         f"against the inputs' {batch}") from None
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


def flags(fmap_q: int, fmap_k: int, normalize: str, eps_mode: str, decayed: bool = False) -> int:
    """The generic operator's flag word (see docs/internals.md)."""
    return (fmap_q | (fmap_k << 4) | (reg.NORMALIZE[normalize] << 8)
            | (reg.EPS_MODES[eps_mode] << 10) | (int(decayed) << 12))


_SAME = object()


def linear_causal(call: Call, fq: np.ndarray, fk: np.ndarray, v: np.ndarray, *,
                  fmap_q: int = reg.FMAP_IDENTITY, fmap_k: int = reg.FMAP_IDENTITY,
                  scale: float = 1.0, g: np.ndarray | None = None, eps: float | None = None,
                  eps_mode: str | None = None, state: Any = _SAME, batch: tuple | None = None,
                  extra: dict | None = None):
    """The generic causal operator on ``(..., T, F)`` features (or raw inputs with an
    elementwise map ``fmap_q`` / ``fmap_k``), with the checked log-decay ``g``
    (``(..., T)``, float64) or None.  Returns ``(o, state)``: ``o`` in the ``(..., T, E)``
    view and the new State (None unless the caller asked for it), for :meth:`Call.finish`.
    ``extra`` is merged into the carried state's ``extra``."""
    spec = call.spec
    F, E, T = fq.shape[-1], v.shape[-1], fq.shape[-2]
    batch = call.dims.batch if batch is None else batch
    state = call.initial_state if state is _SAME else state
    eps = call.eps if eps is None else eps
    eps_mode = call.eps_mode if eps_mode is None else eps_mode
    default_chunk, pick_mode = _api_helpers()
    chunk = call.chunk(default_chunk(F))
    div = call.normalize == "div"
    S0, z0, t0 = state_arrays(state, spec, batch, F, E, div)
    comp = call.comp
    if S0 is not None and S0.dtype == np.float64:
        comp = np.dtype(np.float64)  # a float64 state keeps the computation in float64
    fl = flags(fmap_q, fmap_k, call.normalize, eps_mode, g is not None)
    if call.entry == "step_inplace" and state is call.initial_state \
            and _updatable(spec, state, S0, z0, batch + (F, E), comp):
        # la.step(inplace=True): one gufunc call updates state.S / state.z where they are
        qc, kc, vc = (x.astype(comp, copy=False) for x in (fq, fk, v))
        z = z0 if z0 is not None else np.zeros(F, comp)  # scratch: no denominator carried
        o = _core._step_inplace(qc, kc, vc, _ZERO_DECAY if g is None else g, S0, z, scale,
                                eps, np.int64(fl), np.int64(1))
        state.t += 1
        if extra:
            state.extra.update(extra)
        return o, state
    mode = pick_mode(call.mode, T, chunk, spec, F=F, E=E, slices=math.prod(batch))
    if S0 is None:
        S0, z0 = _zeros((F, E), comp), _zeros((F,), comp)
    elif z0 is None:
        z0 = _zeros(S0.shape[:-1], comp)
    if g is None:
        g = _zero_decay(T)
    qc, kc, vc = (x.astype(comp, copy=False) for x in (fq, fk, v))
    o, S1, z1 = _CAUSAL_GUFUNC[mode](qc, kc, vc, g, S0.astype(comp, copy=False),
                                     z0.astype(comp, copy=False), scale, eps, np.int64(fl),
                                     np.int64(chunk), out=(call.kernel_out(comp), None, None))
    if not call.return_state:
        return o, None
    ex = dict(state.extra) if state is not None else {}
    if extra:
        ex.update(extra)
    return o, State(S1, z1 if div else None, t0 + T, spec.name, ex)


@functools.lru_cache(maxsize=1)
def _api_helpers():
    """``(default_chunk, pick_mode)`` from ``_api`` (which imports this module), looked up
    once rather than by an import statement on every call."""
    from ._api import default_chunk, pick_mode

    return default_chunk, pick_mode


def _updatable(spec, state, S, z, shape, comp) -> bool:
    """Whether ``la.step(inplace=True)`` can update ``state.S`` / ``state.z`` where they
    are.  The elementwise kinds require it (ValueError); the others fall back to computing
    a new state that la.step copies into the given one."""
    for name, arr, want in (("S", S, shape), ("z", z, shape[:-1])):
        if arr is None:
            continue
        if arr.shape != want or arr.dtype != comp or not arr.flags.writeable \
                or not arr.flags.aligned:
            if spec.forward is not None:
                return False
            raise ValueError(f"inplace=True needs a writeable, aligned state.{name} of shape "
                             f"{want} and dtype {comp}; got shape {arr.shape}, dtype "
                             f"{arr.dtype}, writeable={arr.flags.writeable} (use the state "
                             f"returned by a call on these shapes, or inplace=False)")
    return S is not None


@functools.lru_cache(maxsize=64)
def _zero_decay(T: int) -> np.ndarray:
    return np.broadcast_to(_ZERO_DECAY, (T,))


@functools.lru_cache(maxsize=64)
def _zeros(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A read-only zero array (an empty carried state), made once per shape and dtype."""
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


def linear_noncausal(call: Call, fq: np.ndarray, fk: np.ndarray, v: np.ndarray, *,
                     fmap_q: int = reg.FMAP_IDENTITY, fmap_k: int = reg.FMAP_IDENTITY,
                     scale: float = 1.0, eps: float | None = None,
                     eps_mode: str | None = None) -> np.ndarray:
    """The generic non-causal operator (two GEMMs blocked over the keys); returns ``o``
    in the ``(..., T, E)`` view for :meth:`Call.finish`."""
    eps = call.eps if eps is None else eps
    eps_mode = call.eps_mode if eps_mode is None else eps_mode
    fl = flags(fmap_q, fmap_k, call.normalize, eps_mode)
    qc, kc, vc = (x.astype(call.comp, copy=False) for x in (fq, fk, v))
    return _core._noncausal(qc, kc, vc, scale, eps, np.int64(fl),
                            np.int64(call.chunk(256)), out=call.kernel_out())


def elementwise_forward(call: Call, options: dict, *, g: Any = _SAME,
                        fmap_q: int | None = None, fmap_k: int | None = None) -> Any:
    """``forward`` of the kinds with elementwise feature maps (linear, elu, relu), and the
    generic path of the kinds built on them: ``g`` replaces the caller's decay (checked,
    ``(..., T)`` view), ``fmap_q`` / ``fmap_k`` the kind's maps."""
    spec = call.spec
    fq = spec.fmap_q if fmap_q is None else fmap_q
    fk = spec.fmap_k if fmap_k is None else fmap_k
    if call.causal:
        o, st = linear_causal(call, call.q, call.k, call.v, fmap_q=fq, fmap_k=fk,
                              scale=call.scale, g=call.decay_td() if g is _SAME else g)
        return call.finish(o, st)
    return call.finish(linear_noncausal(call, call.q, call.k, call.v, fmap_q=fq, fmap_k=fk,
                                        scale=call.scale))


# ------------------------------------------------------------ small-call plans --
#
# A repeated la.causal call with the same kind, options, dtypes and shapes (and no
# state, out= or progress) resolves the same defaults, mode, chunk, flags and constant
# arrays every time.  After such a call has run the full path (every check passed), the
# kind may return a *plan*: a closure ``run(q, k, v, decay) -> result or None`` that
# makes the same kernel calls with everything resolved, given inputs of the key the
# entry point stored it under (see ``_api.causal``).  A plan holds no input array; it
# repeats every check whose outcome depends on the values (a caller's decay), and
# returns None to send a call down the full path (which then raises the exact error).

_MAX = np.maximum.reduce


def decay_now(call: Call):
    """The call-time half of the caller's ``decay=`` for a plan: ``fn(decay) -> g`` (the
    checked ``(..., T)`` float64 log-decay, or None to take the full path), or None when
    the call has no decay.  The shape is part of the plan's key, so only the values are
    checked again: a per-token decay by its maximum (NaN or a positive value: the full
    path and its error), a per-head one by the value cache of :meth:`Call.decay_td` or
    else by its maximum."""
    g = call.decay
    if g is None:
        return None
    _, axes, per_token = val.decay(g, call.dims)  # passed already: only what it decides
    dims = call.dims
    if per_token:
        if axes != (-1,):
            return lambda d: None
        if g.size == 0:
            return lambda d: d
        return lambda d: d if _MAX(d, axis=None) <= 0 else None

    T = dims.T

    def per_head(d):
        key = _decay_key(d, dims)
        got = None if key is None else _DECAY_CACHE.get(key)
        if got is not None or d.size == 0 or not _MAX(d, axis=None) <= 0:
            return got  # a value seen before; else None: the full path checks and caches
        return np.broadcast_to(d[..., None], d.shape + (T,))
    return per_head


def scalar_operands(scale: float, eps: float, chunk: int):
    """``scale``, ``eps`` (float64) and ``chunk`` (int64) as the 0-d arrays a plan passes
    to a gufunc: the exact values, without the conversion of Python scalars at every
    call (about a microsecond of the call's set-up)."""
    return np.array(float(scale)), np.array(float(eps)), np.array(chunk, dtype=np.int64)


def linear_causal_plan(call: Call, F: int, *, fmap_q: int = reg.FMAP_IDENTITY,
                       fmap_k: int = reg.FMAP_IDENTITY, scale: float = 1.0,
                       g: Any = _SAME, eps: float | None = None, eps_mode: str | None = None,
                       feats=None, extra=None):
    """The plan of :func:`linear_causal` for calls like ``call`` (no ``out=``, one native
    float dtype): ``run(q, k, v, decay, state)``, or None where it cannot be planned.

    ``F`` is the feature width; ``feats(q, k) -> (fq, fk)`` computes the features (None:
    the elementwise maps ``fmap_q`` / ``fmap_k`` run in the kernel); ``g`` a fixed checked
    log-decay (``(..., T)`` view, or None) replacing the caller's decay; ``extra()`` the
    carried state's ``extra`` (a fresh dict per call; only without an initial state).

    With an initial state, the plan serves states of the same kind and the same structure
    (the key holds the shapes and dtypes of ``S`` and ``z``, which :func:`state_arrays`
    checks) in the dtype of the inputs; their position ``t`` is checked at every call.

    Where the mode resolves to the recurrent form (the small calls), the plan calls
    ``_core._causal_token``, which runs that gufunc's kernel on each (batch, head) item
    without NumPy's gufunc dispatch (the same bits) and checks every operand, a caller's
    per-token decay's values included, before anything runs; a call it refuses takes the
    full path, which raises the error (or, for an input it does not take, such as a
    misaligned view, computes the result).  The other forms keep their gufuncs."""
    st = call.initial_state
    if call.out is not None or call.comp is not call.res:
        return None
    if st is not None and (extra is not None or st.S.dtype is not call.comp):
        return None
    spec, dims, comp = call.spec, call.dims, call.comp
    E, T, batch = dims.E, dims.T, dims.batch
    eps = call.eps if eps is None else eps
    eps_mode = call.eps_mode if eps_mode is None else eps_mode
    default_chunk, pick_mode = _api_helpers()
    chunk = call.chunk(default_chunk(F))
    div = call.normalize == "div"
    mode = pick_mode(call.mode, T, chunk, spec, F=F, E=E, slices=math.prod(batch))
    uf = _CAUSAL_GUFUNC[mode]
    token = mode == "recurrent"
    S0, z0 = _zeros((F, E), comp), _zeros((F,), comp)
    if st is not None and not div:  # a carried z is not read: an empty one of S's batch
        z0 = _zeros(st.S.shape[:-1], comp)
    raw = False  # the caller's decay passed as given (its values checked in C)
    if g is _SAME:  # the caller's decay, checked again at every call
        now, g0 = decay_now(call), None
        decayed = now is not None
        if token and decayed and val.decay(call.decay, dims)[1:] == ((-1,), True):
            now, raw = None, True  # a per-token (..., T) decay: no NumPy max here
    else:
        now, g0, decayed = None, g, g is not None
    fl = np.int64(flags(fmap_q, fmap_k, call.normalize, eps_mode, decayed))
    if token:  # the C entry's plain operands: g None without a decay
        tok, scale, eps, fl = _core._causal_token, float(scale), float(eps), int(fl)
    else:
        tok = None
        if g0 is None and now is None:
            g0 = _zero_decay(T)
        scale, eps, ch = scalar_operands(scale, eps, chunk)
        fl = np.array(fl)
    name, want_state = spec.name, call.return_state

    def run(q, k, v, decay, state):
        gg = decay if raw else g0
        if now is not None:
            gg = now(decay)
            if gg is None:
                return None
        fq, fk = (q, k) if feats is None else feats(q, k)
        if state is None:
            S, z, t0 = S0, z0, 0
        else:
            t0 = state.t
            if t0 < 0:
                return None  # the full path's error
            S, z = state.S, state.z if div else z0
        if tok is not None:
            try:
                o, S1, z1 = tok(fq, fk, v, gg, S, z, scale, eps, fl)
            except (TypeError, ValueError):
                return None  # refused before anything ran: the full path decides
        else:
            o, S1, z1 = uf(fq, fk, v, gg, S, z, scale, eps, fl, ch)
        if not want_state:
            return o
        if state is not None:
            return o, State(S1, z1 if div else None, t0 + T, name, state.extra)
        return o, State(S1, z1 if div else None, T, name, None if extra is None else extra())
    return run


def elementwise_plan(call: Call, options: dict, *, g: Any = _SAME, fmap_q: int | None = None,
                     fmap_k: int | None = None):
    """The plan of :func:`elementwise_forward`'s causal path (arguments as there)."""
    if not call.causal:
        return None
    spec = call.spec
    return linear_causal_plan(call, call.dims.D,
                              fmap_q=spec.fmap_q if fmap_q is None else fmap_q,
                              fmap_k=spec.fmap_k if fmap_k is None else fmap_k,
                              scale=call.scale, g=g)
