"""Public entry points: causal, noncausal, step, softmax_attention.

Each entry point validates its arguments and resolves the defaults once into a
:class:`linattn._call.Call`, then hands it to the kind's ``forward(call, options)``
(docs/internals.md); every per-token computation runs in C with the GIL released
(linattn._core).
"""

from __future__ import annotations

import weakref

import numpy as np

from . import _core
from . import _progress
from . import _registry as reg
from . import _tuning
from . import _validate as val
from ._call import build, check_gated, check_options, elementwise_forward, elementwise_plan
from .state import State


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


def _prepare_qkv(q, k, v, layout, causal):
    """Compatibility: checked ``q``, ``k``, ``v`` (caller's layout), their Dims and the
    result / compute dtypes (the checks :func:`linattn._call.build` starts with)."""
    q, k, v = val.array("q", q), val.array("k", k), val.array("v", v)
    dims = val.qkv_dims(q, k, v, val.check_layout(layout), causal)
    res, comp = val.compute_dtype(q, k, v)
    return q, k, v, dims, res, comp


def _forward(call, options):
    """Run the kind on a built call (with a progress display when asked for)."""
    fwd = call.spec.forward or elementwise_forward
    if not call.progress:
        return fwd(call, options)
    with _progress.call_progress(f"la.{call.entry}({call.spec.name!r})",
                                 total=_progress.expected_tokens(call)):
        return fwd(call, options)


def causal(q, k, v, kind: str = "elu", *, mode: str = "auto", chunk_size: int | None = None,
           scale: float | None = None, normalize: str | None = None, eps: float | None = None,
           decay=None, num_features: int | None = None, projection=None, seed: int | None = None,
           horizon: int | None = None, initial_state: State | None = None,
           return_state: bool = False, layout: str = "...td", out=None,
           check_finite: bool = False, progress: bool = False, **kind_options):
    """Causal linear attention ``o_t = sum_{s<=t} w(t,s) phi(q_t).phi(k_s) v_s / den_t``.

    Parameters
    ----------
    q : array_like, ``(..., T, D)`` (or ``(B, T, H, D)`` with ``layout="bthd"``)
    k : array_like, ``(..., T, D)``; leading dimensions broadcast as in ``np.matmul``
        (``(B, 1, T, D)`` serves every head; for grouped-query attention with ``G`` key
        heads and ``R`` query heads each, shape q ``(B, G, R, T, D)`` and k, v
        ``(B, G, 1, T, D)``).
    v : array_like, ``(..., T, E)``
    kind : str
        A name from ``la.kinds()``.
    mode : {"auto", "recurrent", "chunked", "parallel"}
        Execution form; all agree to the tolerances of docs/design/family.md.  The rule
        ``"auto"`` follows is ``la.kinds()[kind]["auto_rule"]``.
    chunk_size : int, optional
        Chunk (and row-block) size; default 64, or 32 when the feature width is <= 32.
    scale : float, optional
        Logit temperature; default and how it enters are per kind (``la.kinds()``).
    normalize : {"div", "none", "norm"}, optional
        Divide by the denominator, return the numerator, or RMS-normalise the output.
    eps : float, optional
        Denominator guard (div) or norm epsilon; ``eps_mode=`` selects the rule.
    decay : array_like, optional
        Log-decay ``<= 0`` (pass ``np.log(gamma)`` for a factor ``gamma``): per head
        (broadcastable to the batch dimensions) or per token (one more axis, of length T;
        ``(B, T, H)`` with ``layout="bthd"``).  ``-inf`` is a hard reset.
    num_features, projection, seed : optional
        Random-feature kinds (``"rfa"``, ``"performer"``): the projection is drawn from
        ``seed`` (``None``: fresh entropy, as in NumPy; the seed drawn is kept in the
        returned state's ``extra["seed"]``, and a resumed call reuses it) or passed as
        ``projection``.  One projection serves every head.
    horizon : int, optional
        cosFormer's ``M``; required to stream.
    initial_state : la.State, optional
        Resume from a state returned by ``return_state=True``, ``la.step`` or
        ``la.State.zeros``.
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
    progress : bool
        Show a progress bar on stderr (tqdm when installed, else a plain line) once the
        call has run for about half a second: tokens done out of the call's total (the
        elapsed time for lavo, lara and ra); off by default.

    Returns
    -------
    o : ndarray ``(..., T, E)``, or ``(o, state)`` with ``return_state=True``.
    """
    if check_finite:
        val.check_finite(q=q, k=k, v=v)
    if decay is not None and (type(decay) is _ND and decay.dtype is not _F64
                              or type(decay) in _FLOATS):
        decay = _decay64(decay)
    key = None
    if type(q) is _ND and type(k) is _ND and type(v) is _ND \
            and (initial_state is None or type(initial_state) is State) \
            and out is None and progress is False and projection is None \
            and type(return_state) is bool and type(kind) is str and type(mode) is str \
            and type(layout) is str and layout == "...td":
        dt = q.dtype
        if (dt is _F32 or dt is _F64) and k.dtype is dt and v.dtype is dt \
                and (decay is None or type(decay) is _ND and decay.dtype is _F64):
            key = _plan_key(q, k, v, kind, mode, chunk_size, scale, normalize, eps, decay,
                            num_features, seed, horizon, return_state, kind_options,
                            initial_state)
            ent = _PLANS.get(key) if key is not None else None
            if ent is not None and ent[1] is _tuning.active() \
                    and ent[2] == _core.get_num_threads() and reg.lookup(kind) is ent[3]:
                got = ent[0](q, k, v, decay, initial_state)
                if got is not None:
                    return got
    call, opts = _causal_call("causal", q, k, v, kind, mode=mode, chunk_size=chunk_size,
                              scale=scale, normalize=normalize, eps=eps, decay=decay,
                              num_features=num_features, projection=projection, seed=seed,
                              horizon=horizon, initial_state=initial_state,
                              return_state=return_state, layout=layout, out=out,
                              progress=progress, **kind_options)
    result = _forward(call, opts)
    if key is not None:
        _store_plan(key, call, opts)
    return result


# la.causal's plans of repeated small calls (linattn._call.linear_causal_plan): key ->
# (plan, the tuning knobs and the thread count it resolved its mode with, the kind's
# spec), or None for a key seen once
_PLANS: dict = {}
_PLANS_MAX = 256
_ND = np.ndarray
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_SCALARS = frozenset((type(None), bool, int, float, str))
_FLOATS = frozenset((float, np.float64, np.float32))


def _decay64(decay):
    """A real floating decay (an array of another float dtype than float64, or a Python
    float) as the float64 array the checks convert it to (``np.asarray(decay,
    dtype=np.float64)``: the same values, so the same results and errors), converted
    once so that the plans, which take float64 decays, serve it; anything else as
    given (the checks reject it with their message)."""
    if type(decay) in _FLOATS or decay.dtype.kind == "f":
        return np.asarray(decay, dtype=_F64)
    return decay


def _plan_key(q, k, v, kind, mode, chunk_size, scale, normalize, eps, decay, num_features,
              seed, horizon, return_state, kind_options, state):
    """The key of a plan: everything a plan resolves once (the kind, the options with
    their types, since ``1``, ``1.0`` and ``True`` are equal but not checked alike, the
    shapes, the dtype, whether k is v, the decay's shape, an initial state's kind and the
    types, shapes and dtypes of its arrays); None when an option is not a plain scalar (an
    array option is the full path's) or a state's ``S`` or ``z`` is not an array."""
    kv = k is v
    if state is None:
        skey = None
    else:
        S, z = state.S, state.z
        if type(S) is not _ND or type(state.t) is not int or type(state.kind) is not str \
                or not (z is None or type(z) is _ND):
            return None
        skey = (state.kind, S.shape, S.dtype, None if z is None else (z.shape, z.dtype))
    dshape = None if decay is None else decay.shape
    if chunk_size is None and scale is None and normalize is None and eps is None \
            and num_features is None and seed is None and horizon is None:
        given = None
    else:
        given = (chunk_size, scale, normalize, eps, num_features, seed, horizon)
        types = tuple(map(type, given))
        if not _SCALARS.issuperset(types):
            return None
        given = given + types
    if kind_options:
        items = tuple(sorted(kind_options.items()))
        types = tuple(type(x) for _, x in items)
        if not _SCALARS.issuperset(types):
            return None
        given = (given, items, types)
    return (kind, mode, q.shape, k.shape, v.shape, q.dtype, kv, dshape, return_state, given,
            skey)


def _store_plan(key, call, opts) -> None:
    """Store the kind's plan of ``call`` under ``key`` (after the call ran: every check
    passed), replacing one that did not serve it (made with other tuning knobs or thread
    count, or declined the inputs).  A key seen for the first time is only noted (None):
    a plan is made when it comes again, so that calls of ever new shapes do not pay for
    plans they never use.  A kind without a plan is remembered too, as one that declines
    every call."""
    if key not in _PLANS:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()  # one step, safe while other threads call
        _PLANS[key] = None
        return
    spec = call.spec
    make = spec.plan if spec.plan is not None else \
        (elementwise_plan if spec.forward is None else None)
    plan = make(call, opts) if make is not None else None
    _PLANS[key] = (plan or _no_plan, _tuning.active(), _core.get_num_threads(), spec)


def _no_plan(q, k, v, decay, state):
    return None


def _causal_call(entry, q, k, v, kind, *, decay=None, num_features=None, projection=None,
                 seed=None, horizon=None, **kw):
    """The checked :class:`linattn._call.Call` of a causal entry and the kind's options."""
    spec = reg.get(kind)
    if not spec.causal_modes:
        raise ValueError(f"kind {kind!r} has no causal form; use la.noncausal")
    check_gated(spec, decay=decay, num_features=num_features, projection=projection,
                seed=seed, horizon=horizon)
    common = {n: kw.pop(n) for n in _CAUSAL_COMMON if n in kw}
    opts = check_options(spec, kw, entry.split("_")[0])
    call = build(entry, spec, q, k, v, eps_mode=opts.get("eps_mode"), decay=decay,
                 num_features=num_features, projection=projection, seed=seed,
                 horizon=horizon, **common)
    return call, opts


def _causal(entry, q, k, v, kind, **kw):
    return _forward(*_causal_call(entry, q, k, v, kind, **kw))


_CAUSAL_COMMON = ("mode", "chunk_size", "scale", "normalize", "eps", "initial_state",
                  "return_state", "layout", "out", "progress")


def noncausal(q, k, v, kind: str = "elu", *, chunk_size: int | None = None,
              scale: float | None = None, normalize: str | None = None,
              eps: float | None = None, num_features: int | None = None, projection=None,
              seed: int | None = None, horizon: int | None = None, layout: str = "...td",
              out=None, check_finite: bool = False, progress: bool = False, **kind_options):
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
    check_gated(spec, num_features=num_features, projection=projection, seed=seed,
                horizon=horizon)
    opts = check_options(spec, kind_options, "noncausal")
    call = build("noncausal", spec, q, k, v, chunk_size=chunk_size, scale=scale,
                 normalize=normalize, eps=eps, eps_mode=opts.get("eps_mode"),
                 num_features=num_features, projection=projection, seed=seed,
                 horizon=horizon, layout=layout, out=out, progress=progress)
    return _forward(call, opts)


def step(q_t, k_t, v_t, state: State | None = None, kind: str | None = None, *,
         inplace: bool = False, check_finite: bool = False, **options):
    """One decoding step: ``q_t (..., D)``, ``k_t (..., D)``, ``v_t (..., E)``.

    Equivalent to ``la.causal`` on a length-1 sequence resumed from ``state`` (None
    starts from an empty state, as ``la.State.zeros`` makes), in the recurrent form.
    ``kind`` defaults to ``state.kind`` (``"elu"`` without a state).  Returns ``(o_t
    (..., E), new_state)``; the new state has the same structure as a ``T > 1`` call's.
    A per-token ``decay`` has the shape of ``q_t`` without its last axis (or that shape
    with the length-1 time axis, ``(..., 1)``, as ``la.causal`` takes it); any real
    float dtype is taken as its float64 values.
    ``check_finite=True`` raises ValueError naming the first of ``q_t``, ``k_t``, ``v_t``
    holding a NaN or Inf.

    ``inplace=True`` updates ``state``'s arrays in place and returns the same object
    (like ``out=``): no new ``(..., F, E)`` state is allocated, which is what makes a
    decoding loop fast.  The old state is consumed; keep ``state.copy()`` if you need it.
    Every check runs before anything is written, so a rejected call leaves it intact.
    With ``state=None`` a new state is returned, which later in-place steps update.
    A loop of in-place steps on one state checks the kind, its options and the state's
    arrays once (the plan of :class:`linattn.Decoder`, kept per state and options) and
    then only each token's shape and dtype; :class:`linattn.Decoder` is the same loop
    without the per-call keyword handling.  The copying step of the elementwise and
    decay kinds reads the old state and writes the new one in one pass, with the
    operations (and bits) of the in-place step.
    """
    if type(state) is State and not check_finite and (kind is None or kind == state.kind):
        if inplace:
            o = _step_fast(q_t, k_t, v_t, state, options)
            if o is not None:
                return o, state
        else:
            got = _step_copy_fast(q_t, k_t, v_t, state, options)
            if got is not None:
                return got
    if check_finite:
        val.check_finite(q_t=q_t, k_t=k_t, v_t=v_t)
    if kind is None:
        kind = state.kind if isinstance(state, State) else "elu"
    q_t = val.array("q_t", q_t)
    k_t = val.array("k_t", k_t)
    v_t = val.array("v_t", v_t)
    for name, a in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        if a.ndim < 1:
            raise ValueError(f"{name} must have at least 1 dimension (..., D), got a scalar")
    bad = [n for n in ("layout", "mode", "return_state", "initial_state") if n in options]
    if bad:
        raise TypeError(f"step() does not take {bad}: it runs one token in the recurrent "
                        f"form on (..., D) arrays, resumed from its state argument")
    _check_token_axis(q_t, state)
    decay = options.get("decay")
    if decay is not None and np.ndim(decay) == q_t.ndim - 1:
        options["decay"] = np.asarray(decay)[..., None]  # per token: add the T axis
    q1, k1, v1 = q_t[..., None, :], k_t[..., None, :], v_t[..., None, :]
    if inplace and state is not None and not isinstance(state, State):
        raise TypeError(f"inplace=True needs a linattn.State to update (or None to start "
                        f"one), got {type(state).__name__}")
    entry = "step_inplace" if inplace and state is not None else "step"
    try:
        o, st = _causal(entry, q1, k1, v1, kind, mode="recurrent", initial_state=state,
                        return_state=True, **options)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if "initial_state" not in msg:
            raise
        raise type(exc)(msg.replace("initial_state", "state")) from None
    if entry == "step_inplace" and st is not state:
        _write_state(state, st)  # the kind computed a new state: copy it into the given one
        st = state
    return o[..., 0, :], st


def _options_key(options: dict):
    """``(key, decay)``: the hashable key of a step's options other than ``decay`` (which
    is the step's own), and that decay; None when an option is not hashable (an array)."""
    if not options:
        return (), None
    decay = options.get("decay")
    if decay is not None and len(options) == 1:
        return (), decay  # a per-token decay alone (mamba2's loop)
    try:
        key = tuple(sorted((n, type(x), x) for n, x in options.items() if n != "decay"))
        hash(key)
    except TypeError:
        return None
    return key, decay


# la.step(inplace=True)'s fast path per state: id(state) -> (weak reference to the state,
# options key, la.Decoder's checks and plan); an entry leaves with its state
_STEP_PLANS: dict = {}


def _step_fast(q_t, k_t, v_t, state: State, options: dict):
    """``o_t`` from the fast path of :class:`linattn.Decoder` (the same gufunc call as the
    path below, made with checks resolved once per state and options), or None: then the
    full path runs and does every check.  The plan is kept per state (weakly) and per
    options; a decay of the batch shape (per token) is the step's own."""
    got = _options_key(options)
    if got is None:
        return None  # array-valued options: the full path
    key, decay = got
    if state.t < 0:
        return None  # the full path's error
    ent = _STEP_PLANS.get(id(state))
    if ent is None or ent[0]() is not state or ent[1] != key or state.S is not ent[2]._S \
            or state.z is not ent[2]._z or ent[2].kind != state.kind:
        if type(q_t) is not np.ndarray or q_t.ndim < 1:
            return None
        from ._decoder import Decoder

        opts = {n: x for n, x in options.items() if n != "decay"}
        sid = id(state)
        ref = weakref.ref(state, lambda _, sid=sid: _STEP_PLANS.pop(sid, None))
        ent = (ref, key, Decoder._for_step(state.kind, state, opts, q_t.shape[-1]))
        _STEP_PLANS[sid] = ent
    return ent[2]._fast(q_t, k_t, v_t, decay, state)


# la.step's copying fast path: (kind, options key, S's shape and dtype, whether z is
# None, D) -> la.Decoder's checks and one-token entry, made once on a template state
# of those shapes (the step reads the given state and writes a new one, so no state
# is kept); at most _COPY_PLANS_MAX entries
_COPY_PLANS: dict = {}
_COPY_PLANS_MAX = 64


def _step_copy_fast(q_t, k_t, v_t, state: State, options: dict):
    """``(o_t, new_state)`` of a copying step through the one-token C entry (read the
    old state, write the new one, in one pass per head), or None: then the full path
    runs and does every check.  The same kernel as the in-place step: the same bits."""
    S, z = state.S, state.z
    if type(S) is not np.ndarray or type(q_t) is not np.ndarray or state.t < 0 \
            or state.extra or S.ndim < 2 or not S.flags.aligned:
        return None
    if z is not None and (type(z) is not np.ndarray or z.dtype is not S.dtype
                          or z.shape != S.shape[:-1] or not z.flags.aligned):
        return None
    got = _options_key(options)
    if got is None:
        return None  # array-valued options: the full path
    key, decay = got
    ck = (state.kind, key, S.shape, S.dtype, z is None, q_t.shape[-1] if q_t.ndim else 0)
    dec = _COPY_PLANS.get(ck)
    if dec is None:
        from ._decoder import Decoder

        if q_t.ndim < 1 or state.kind not in _COPY_KINDS:
            return None
        tmpl = State(np.zeros(S.shape, S.dtype), None if z is None else np.zeros(z.shape, z.dtype),
                     0, state.kind)
        opts = {n: x for n, x in options.items() if n != "decay"}
        dec = Decoder._for_step(state.kind, tmpl, opts, q_t.shape[-1])
        if len(_COPY_PLANS) >= _COPY_PLANS_MAX:
            _COPY_PLANS.clear()
        _COPY_PLANS[ck] = dec
    tok = dec._token
    if tok is None or type(k_t) is not np.ndarray or type(v_t) is not np.ndarray \
            or q_t.dtype is not dec._dtype or k_t.dtype is not dec._dtype \
            or v_t.dtype is not dec._dtype or q_t.shape != dec._qshape \
            or k_t.shape != dec._qshape or v_t.shape != dec._vshape:
        return None
    got = tok(q_t, k_t, v_t, decay, S, z, True)
    if got is None:
        return None
    o, S1, z1 = got
    return o, State(S1, z1, state.t + 1, state.kind)


# the kinds whose step the one-token C entry runs (la.Decoder's elementwise plan)
_COPY_KINDS = ("linear", "elu", "relu", "lightning", "retnet", "mamba2", "transnormer")


def _check_token_axis(q_t: np.ndarray, state: object) -> None:
    """ValueError when ``q_t`` carries a length-1 time axis that the state lacks."""
    S = getattr(state, "S", None) if isinstance(state, State) else None
    if isinstance(S, np.ndarray) and q_t.ndim >= 2 and q_t.shape[-2] == 1 \
            and q_t.ndim - 1 == S.ndim - 1:
        raise ValueError(f"q_t has shape {q_t.shape} but the state's batch dimensions are "
                         f"{S.shape[:-2]}: la.step takes one token without the T axis, "
                         f"(..., D) = {q_t.shape[:-2] + q_t.shape[-1:]} here (use q[..., t, :] "
                         f"or q_t[..., 0, :])")


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
    call = build("causal" if causal else "noncausal", _SOFTMAX, q, k, v, mode="auto",
                 scale=scale, layout=layout, out=out)
    qc, kc, vc = (x.astype(call.comp, copy=False) for x in (call.q, call.k, call.v))
    o = _core._softmax(qc, kc, vc, call.scale, np.int64(bool(causal)), out=call.kernel_out())
    return call.finish(o)


# the exact baseline, described like a kind so that it shares the call machinery
_SOFTMAX = reg.KindSpec(name="softmax", doc="", paper="", scale=reg.inv_sqrt,
                        normalize="softmax", eps=0.0)
