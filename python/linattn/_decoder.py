"""``la.Decoder``: a decoding loop's low-overhead front end to ``la.step``.

A decoder is made once per kind, shapes and options; everything ``la.step`` checks and
resolves on every call (the kind, its options, the scale and normaliser, the preset
decay, a random-feature projection, the state's shapes and flags) is checked and
resolved at construction.  Each :meth:`Decoder.step` then does only cheap checks of
the new token (exact shape and dtype, compared by identity) and goes straight to C
(docs/internals.md, "One call, described once"): for the elementwise and decay kinds
the one-token entry ``_core._step_token`` (no gufunc dispatch: it reads the arrays'
pointers and strides itself), for the others their in-place gufunc.  Anything the fast path does not cover (other shapes that broadcast, other
dtypes, a state replaced from outside, a kind without one) runs ``la.step(...,
inplace=True)`` itself, so results and error messages are those of ``la.step``, bit for
bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from . import _registry as reg
from ._call import _ZERO_DECAY, build, flags
from .state import State

# kinds whose step ends in the generic operator on the raw inputs (elementwise maps)
_ELEMENTWISE = ("linear", "elu", "relu", "lightning", "retnet", "mamba2", "transnormer")
_F64 = np.dtype(np.float64)
_ONE = np.int64(1)


class Decoder:
    """A decoding loop over one stream of tokens, with its state updated in place.

    ::

        dec = la.Decoder("elu", (B, H), D, E, dtype=np.float32)   # once
        for t in range(T):
            o_t = dec.step(q[..., t, :], k[..., t, :], v[..., t, :])  # (B, H, E)
        dec.state                                                   # the la.State

    Parameters
    ----------
    kind : str, optional
        A causal kind from ``la.kinds()``; default ``state.kind`` (``"elu"`` without a
        state).
    batch_shape, D, E, dtype
        The shapes of the empty state to start from, as :meth:`la.State.zeros` takes
        them (``E`` defaults to ``D``); not with ``state=``.
    state : la.State, optional
        Continue a stream (a ``return_state=True`` call's state, or ``la.State.zeros``);
        the decoder updates this object's arrays in place from now on (keep
        ``state.copy()`` to keep the old one).
    decay : array_like, optional
        A per-head log-decay used at every step (as ``la.step``'s ``decay=``).  A
        per-token decay is passed to each :meth:`step` instead (``mamba2`` requires one).
    **options
        Everything else ``la.step`` takes for this kind (``scale=``, ``normalize=``,
        ``eps=``, ``horizon=``, ``seed=``, ``num_features=``, kind options ...); checked
        once, here.

    :meth:`step` returns exactly what ``la.step(q_t, k_t, v_t, dec.state, inplace=True,
    **options)`` returns as its output (bit for bit), in the state's dtype.  Tokens
    of the exact shapes ``batch + (D,)``, ``batch + (E,)`` and of the state's dtype take
    the fast path; others (broadcasting shapes, other dtypes) run ``la.step`` itself.
    """

    __slots__ = ("kind", "_state", "_opts", "_S", "_z", "_qshape", "_vshape", "_dtype",
                 "_gshape", "_gconst", "_plan", "_token", "_D")

    def __init__(self, kind: str | None = None, batch_shape=(), D: int | None = None,
                 E: int | None = None, dtype=np.float64, *, state: State | None = None,
                 decay=None, **options: Any) -> None:
        if state is not None:
            if not isinstance(state, State):
                raise TypeError(f"state must be a linattn.State, got {type(state).__name__}")
            if D is not None or E is not None or batch_shape != ():
                raise TypeError("pass either state= or the shapes (batch_shape, D, E), "
                                "not both: a state fixes its shapes")
            kind = state.kind if kind is None else kind
            if kind != state.kind:
                raise ValueError(f"state comes from kind {state.kind!r}, not {kind!r}")
        else:
            kind = "elu" if kind is None else kind
            if D is None:
                raise TypeError("Decoder needs D (the feature width of q and k) or a state=")
            state = State.zeros(kind, batch_shape, D, E, dtype, **options)
        self.kind = reg.get(kind).name
        self._state = state
        self._opts = dict(options)
        if decay is not None:
            self._opts["decay"] = decay
        self._plan = self._token = None
        dims = _state_dims(self.kind, state) if D is None else \
            (_batch(batch_shape), D, E if E is not None or self.kind == "lavo" else D)
        self._D = dims[1] if dims is not None else None
        if dims is not None:
            self._dry_run(*dims, _state_dtype(state))  # every option checked once
        self._prepare()

    # ----------------------------------------------------------------- public --

    @property
    def state(self) -> State:
        """The :class:`la.State` the decoder updates (the same object at every step)."""
        return self._state

    @property
    def t(self) -> int:
        """Tokens consumed so far (``state.t``)."""
        return self._state.t

    def step(self, q_t, k_t, v_t, decay=None) -> np.ndarray:
        """One token: ``q_t``, ``k_t`` ``(..., D)``, ``v_t`` ``(..., E)`` (and the
        per-token log-decay ``(...)`` where the kind takes one) -> ``o_t (..., E)``.

        The state is updated in place; a rejected token raises before anything is
        written (the errors of ``la.step``).
        """
        st = self._state
        if st.S is self._S and st.z is self._z and st.t >= 0:
            o = self._fast(q_t, k_t, v_t, decay, st)
            if o is not None:
                return o
        return self._slow(q_t, k_t, v_t, decay)

    def _fast(self, q_t, k_t, v_t, decay, st: State):
        """``o_t`` from the checks and plan resolved once, on ``st`` (whose ``S`` and
        ``z`` are those the plan was made for, at ``t >= 0``: the caller checks), or None
        with nothing written: then the caller's full path runs and does every check.
        Serves ``Decoder.step`` and ``la.step(..., inplace=True)``."""
        plan = self._plan
        if plan is None or type(q_t) is not np.ndarray or type(k_t) is not np.ndarray \
                or type(v_t) is not np.ndarray or q_t.dtype is not self._dtype \
                or k_t.dtype is not self._dtype or v_t.dtype is not self._dtype \
                or q_t.shape != self._qshape or k_t.shape != self._qshape \
                or v_t.shape != self._vshape:
            return None
        tok = self._token
        if tok is not None:  # the C entry on the tokens as they are
            o = tok(q_t, k_t, v_t, decay, st.S, st.z, False)
            if o is not None:
                st.t += 1
            return o
        g = self._fast_decay(decay)
        if g is None:
            return None
        o = plan(q_t[..., None, :], k_t[..., None, :], v_t[..., None, :], g, st)
        return None if o is None else o[..., 0, :]

    @classmethod
    def _for_step(cls, kind: str, state: State, options: dict, D: int):
        """The fast path ``la.step(..., inplace=True)`` keeps per state (no dry run, no
        reference to the state: see ``_api.step``); None when the kind has none."""
        dec = cls.__new__(cls)
        dec.kind, dec._state, dec._opts, dec._D = kind, state, options, D
        dec._prepare()
        dec._state = None
        return dec

    def __repr__(self) -> str:
        return (f"Decoder(kind={self.kind!r}, state={self._state!r}, "
                f"fast={self._plan is not None or self._token is not None})")

    # -------------------------------------------------------------- internals --

    def _slow(self, q_t, k_t, v_t, decay) -> np.ndarray:
        opts = self._opts
        if decay is not None:
            if "decay" in opts:
                raise TypeError("this decoder was made with decay= (used at every step); "
                                "a per-step decay is not taken as well")
            opts = dict(opts, decay=decay)
        from ._api import step

        o, _ = step(q_t, k_t, v_t, self._state, self.kind, inplace=True, **opts)
        if self._D is None:
            self._D = np.shape(q_t)[-1]  # a decoder made from a state learns D here
            self._prepare()
        elif self._state.S is not self._S or self._state.z is not self._z:
            self._prepare()  # the state's arrays were replaced: check them again
        return o

    def _dry_run(self, batch: tuple, D: int, E: int | None, dt: np.dtype) -> None:
        """One la.step on a copy of the state with zero tokens: raises what a first step
        would raise (bad options, a state that does not fit, with la.step's messages), and
        changes nothing."""
        from ._api import step

        q = np.zeros(batch + (D,), dt)
        k = np.zeros(batch + (D,), dt)
        v = k if E is None else np.zeros(batch + (E,), dt)
        opts = dict(self._opts)
        if self.kind == "mamba2" and "decay" not in opts:
            opts["decay"] = np.zeros(batch)
        step(q, k, v, self._state.copy(), self.kind, inplace=True, **opts)

    def _fast_decay(self, decay):
        """The ``(..., 1)`` float64 log-decay of this step for the gufunc, ``_ZERO_DECAY``
        without one, or None when la.step must check (and reject or broadcast) it."""
        if decay is None:
            return self._gconst
        if self._gshape is None:
            return None
        g = decay if type(decay) is np.ndarray else np.asarray(decay)
        if g.dtype is not _F64 or g.shape != self._gshape or not g.size \
                or not g.max() <= 0.0:
            return None  # NaN, > 0, other shapes and dtypes: la.step's checks and errors
        return g[..., None]

    def _prepare(self) -> None:
        """Check the state and options once and build the fast path (None: la.step)."""
        st = self._state
        self._S, self._z = st.S, st.z
        self._plan = self._token = None
        self._gshape = None
        self._gconst = None
        S = st.S
        if self.kind not in _NO_S and (not isinstance(S, np.ndarray) or S.ndim < 2
                                       or S.dtype not in (np.float32, np.float64)):
            return
        maker = _PLANS.get(self.kind)
        if maker is None:
            return
        try:
            made = maker(self, st)
        except (TypeError, ValueError):
            return  # la.step raises the same error with its own message at the first step
        if made is not None:
            self._plan = made


# ------------------------------------------------------------------- plans ----

def _state_dtype(st: State) -> np.dtype:
    """The dtype of a state's arrays (``S``, else the first array of ``extra``)."""
    if isinstance(st.S, np.ndarray):
        return st.S.dtype
    for name in ("ring_k", "keys"):
        a = st.extra.get(name)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return a.dtype
    return np.dtype(np.float64)


def _batch(batch_shape) -> tuple:
    if isinstance(batch_shape, (int, np.integer)):
        return (int(batch_shape),)
    return tuple(int(b) for b in batch_shape)


def _state_dims(kind: str, st: State):
    """``(batch, D, E)`` of the tokens a state takes (``E`` None: LAVO's keys-equal-values
    stream), or None where the state does not tell (the random-feature kinds' ``D``)."""
    S, ex = st.S, st.extra
    if isinstance(S, np.ndarray) and S.ndim >= 2:
        if kind in _ELEMENTWISE:
            return S.shape[:-2], S.shape[-2], S.shape[-1]
        if kind == "cosformer" and S.shape[-2] % 2 == 0:
            return S.shape[:-2], S.shape[-2] // 2, S.shape[-1]
        return None
    try:
        if kind == "lavo":
            rk = np.shape(ex["ring_k"])
            return tuple(rk[:-2]), rk[-1], (rk[-1] if "ring_v" in ex else None)
        if kind == "transnormer":
            kk, vv = np.shape(ex["keys"]), np.shape(ex["values"])
            return tuple(kk[:-2]), kk[-1], vv[-1]
    except (KeyError, IndexError):
        return None
    return None


def _resolved(dec: Decoder, st: State, spec: reg.KindSpec, D: int, E: int, decay=None,
              batch=None, dtype=None):
    """The :class:`linattn._call.Call` ``la.step`` builds for one token of this decoder
    (zero inputs of the state's shapes), with its options checked as ``la.step`` checks
    them."""
    from ._api import _CAUSAL_COMMON
    from ._call import check_gated, check_options

    batch = st.S.shape[:-2] if batch is None else batch
    dtype = st.S.dtype if dtype is None else dtype
    opts = dict(dec._opts)
    if decay is not None:
        opts["decay"] = decay
    gated = {n: opts.pop(n, None) for n in ("decay", "num_features", "projection", "seed",
                                            "horizon")}
    check_gated(spec, **gated)
    common = {n: opts.pop(n) for n in _CAUSAL_COMMON if n in opts}
    if common:
        if set(common) - {"scale", "normalize", "eps", "chunk_size"}:
            raise TypeError("step options")
    kind_opts = check_options(spec, opts, "step_inplace")
    z = np.zeros(batch + (1, D), dtype)
    v = np.zeros(batch + (1, E), dtype)
    call = build("step_inplace", spec, z, z.copy(), v, mode="recurrent",
                 eps_mode=kind_opts.get("eps_mode"), initial_state=st, return_state=True,
                 **gated, **common)
    return call, kind_opts


def _set_shapes(dec: Decoder, st: State, D: int, E: int, per_token: bool) -> None:
    batch = st.S.shape[:-2]
    dec._dtype = st.S.dtype
    dec._qshape = batch + (D,)
    dec._vshape = batch + (E,)
    dec._gshape = batch if per_token else None


def _updatable(st: State, shape: tuple, div: bool) -> bool:
    for arr, want in ((st.S, shape), (st.z, shape[:-1])):
        if arr is None:
            if want is shape or div:
                return False
            continue
        if not isinstance(arr, np.ndarray) or arr.shape != want or arr.dtype != st.S.dtype \
                or not arr.flags.writeable or not arr.flags.aligned:
            return False
    return st.t >= 0


def _plan_elementwise(dec: Decoder, st: State):
    """linear, elu, relu, lightning, retnet, mamba2 and transnormer's NormAttention: the
    generic operator on the raw inputs (``_call.linear_causal``'s in-place branch)."""
    from .kinds import decay as _decaykinds
    from .kinds import transnormer as _tn

    spec = reg.get(dec.kind)
    F, E = st.S.shape[-2:]
    D = F
    decay = dec._opts.get("decay")
    per_token = "decay" in spec.keywords and decay is None
    # mamba2 needs its decay at every step; resolve the call with a zero one
    probe = np.zeros(st.S.shape[:-2] + (1,)) if spec.name == "mamba2" and decay is None \
        else None
    call, opts = _resolved(dec, st, spec, D, E, decay=probe)
    fq, fk = spec.fmap_q, spec.fmap_k
    g = None
    if spec.name == "transnormer":
        if _tn._block(opts["diag_block"]) is not None:
            return None  # DiagAttention keeps a block cache, not S
        fq = fk = _tn.VARIANTS[opts["variant"]]
    if decay is not None:
        g = call.decay_td()
    elif spec.name == "lightning":
        from ._draws import decay_slopes

        decay_slopes(1, opts["slopes"], opts["layer"], opts["num_layers"])
        g = call.decay_td(_decaykinds.preset_decay(call, preset=opts["slopes"],
                                                   layer=opts["layer"],
                                                   num_layers=opts["num_layers"]))
    elif spec.name == "retnet":
        g = call.decay_td(_decaykinds.preset_decay(call, preset="retnet"))
    div = call.normalize == "div"
    if not _updatable(st, call.dims.batch + (F, E), div):
        return None
    _set_shapes(dec, st, D, E, per_token)
    scale, eps = float(call.scale), float(call.eps)
    fl_plain = int(flags(fq, fk, call.normalize, call.eps_mode, False))
    fl_decay = int(flags(fq, fk, call.normalize, call.eps_mode, True))
    if g is not None:
        g = np.ascontiguousarray(g[..., 0])  # (..., 1): the step's one token
        g.flags.writeable = False
    needs_decay = spec.name == "mamba2"
    dec._gconst = None if needs_decay else _ZERO_DECAY if g is None else g
    batch = st.S.shape[:-2]
    nb = len(batch)
    # scratch z without a carried denominator (the kernel keeps it zero)
    zs = None if div else np.zeros(batch + (F,), st.S.dtype)
    step = _core._step_token

    def token(q, k, v, decay, S, z, copy):
        """o (..., E) (copy: (o, S1, z1), z1 None without the div normaliser) of one
        token from the exact tokens, or None when ``la.step`` must check ``decay``."""
        if decay is None:
            if needs_decay:
                return None  # la.step raises its error
            gt = g
        else:
            if not per_token:
                return None
            gt = decay if type(decay) is np.ndarray else np.asarray(decay)
            if gt.shape != batch:
                if gt.ndim == nb + 1 and gt.shape[-1] == 1:
                    gt = gt[..., 0]  # (..., 1): la.step's per-token decay with its T axis
                elif gt.ndim != nb:
                    return None  # a per-head decay, other shapes: la.step's checks
                # (a per-token decay broadcasting to the batch: the C entry checks that
                # it does without widening it, else la.step broadcasts or raises)
            if gt.dtype is not _F64:
                if gt.dtype.kind != "f":
                    return None  # la.step's checks
                gt = gt.astype(_F64)  # la.step's conversion: the same values
            # (the C entry refuses a NaN or > 0 before writing: then la.step's error)
        try:
            got = step(q, k, v, gt, S, z if div else zs, scale, eps,
                       fl_plain if gt is None else fl_decay, copy)
        except (TypeError, ValueError):
            return None  # (a misaligned token, a decay > 0) refused before any write
        if copy and not div:
            return got[0], got[1], None  # no denominator carried: the new state has no z
        return got

    dec._token = token
    return _token_plan


def _token_plan(q, k, v, gt, st):
    """The plan of a kind with a one-token entry (``Decoder._token``), which runs first."""
    return None


def _plan_cosformer(dec: Decoder, st: State):
    """cosFormer: its position-dependent features in C, then the generic operator."""
    from .kinds import cosformer as _cf

    spec = reg.get("cosformer")
    F, E = st.S.shape[-2:]
    D = F // 2
    call, opts = _resolved(dec, st, spec, D, E)
    beyond = opts["beyond_horizon"]
    if call.horizon is None or beyond not in _cf.BEYOND:
        return None
    M = _cf._horizon(call.horizon, 1)
    _cf._resume_t0(call, M)
    if not _updatable(st, call.dims.batch + (F, E), True):
        return None
    _set_shapes(dec, st, D, E, False)
    dec._gconst = _ZERO_DECAY
    S, z = st.S, st.z
    scale, eps = call.scale, call.eps
    fl = np.int64(flags(reg.FMAP_IDENTITY, reg.FMAP_IDENTITY, call.normalize,
                        call.eps_mode, False))
    step, Mf, sc = _core._cosformer_step_inplace, float(M), float(scale)

    def plan(q, k, v, gt, st):  # gt is always _ZERO_DECAY here
        t0 = st.t
        if beyond == "error" and t0 > M:
            return None  # la.step raises "horizon=... is too small"
        o = step(q, k, v, S, z, t0, Mf, sc, eps, fl)  # features and step in one call
        st.t += 1
        return o

    return plan


def _plan_rfa(dec: Decoder, st: State):
    """RFA (without gate=): its random features in C, then the generic operator."""
    from .kinds import randomfeatures as _rf

    if dec._opts.get("gate") is not None or dec._opts.get("decay") is not None \
            or dec._D is None:
        return None  # a decoder made from a state learns D at its first step
    spec = reg.get("rfa")
    F, E = st.S.shape[-2:]
    D = dec._D
    call, opts = _resolved(dec, st, spec, D, E)
    W, Fw, extra = _rf._projection(call, "rfa")
    st.extra.update(extra)  # as every la.step does: the same fingerprint and seed
    if Fw != F or _rf._batch_with(call.dims, W) != call.dims.batch:
        return None
    div = call.normalize == "div"
    if not _updatable(st, call.dims.batch + (F, E), div):
        return None
    _set_shapes(dec, st, D, E, False)
    dec._gconst = _ZERO_DECAY
    S = st.S
    z = st.z if div else np.zeros(S.shape[:-1], S.dtype)
    scale, eps = call.scale, call.eps
    fl = np.int64(flags(reg.FMAP_IDENTITY, reg.FMAP_IDENTITY, call.normalize,
                        call.eps_mode, False))
    step = _core._rfa_step_inplace
    W = _transposed(W)

    def plan(q, k, v, gt, st):  # gt is always _ZERO_DECAY here
        o = step(q, k, v, W, S, z, scale, eps, fl)  # features and step in one call
        st.t += 1
        return o

    return plan


def _transposed(W: np.ndarray) -> np.ndarray:
    """``W`` (..., r, d) as a view of its transpose's contiguous copy: the one-token
    kernels then read the projection's columns in place instead of copying it
    transposed for every head (the same bits as any layout)."""
    Wt = np.ascontiguousarray(np.swapaxes(W, -1, -2))
    Wt.flags.writeable = False
    return np.swapaxes(Wt, -1, -2)


def _plan_performer(dec: Decoder, st: State):
    """Performer with the prefix-safe stabiliser: its C kernel updating ``S``, ``z``
    and the running maximum ``extra["max"]`` in place."""
    from .features import PERFORMER_KINDS
    from .kinds import randomfeatures as _rf

    if dec._D is None:
        return None  # a decoder made from a state learns D at its first step
    spec = reg.get("performer")
    F, E = st.S.shape[-2:]
    call, opts = _resolved(dec, st, spec, dec._D, E)
    features, stab = opts["features"], opts["stabilizer"]
    if features not in ("positive", "hyperbolic") or stab != "prefix":
        return None  # the published form: la.step
    W, Fw, extra = _rf._projection(call, "performer", features)
    _rf._check_resume(st, extra["fingerprint"], stab)
    batch = call.dims.batch
    if Fw != F or _rf._batch_with(call.dims, W) != batch:
        return None
    div = call.normalize == "div"
    if not _updatable(st, batch + (F, E), div):
        return None
    mu = st.extra.get("max")
    if not isinstance(mu, np.ndarray) or mu.dtype != _F64 or mu.shape != batch:
        return None  # la.step checks (or replaces) it at the first step
    extra["stabilizer"] = np.array(stab)
    st.extra.update(extra)  # as every la.step does: the same fingerprint and seed
    _set_shapes(dec, st, dec._D, E, False)
    dec._gconst = _ZERO_DECAY
    S = st.S
    z = st.z if div else np.zeros(S.shape[:-1], S.dtype)
    Wt = _transposed(W.astype(S.dtype, copy=False))
    scale, eps = float(call.scale), float(call.eps)
    fl = np.int64(PERFORMER_KINDS[features] | (reg.NORMALIZE[call.normalize] << 2))
    chunk = np.int64(call.chunk(1))
    step = _core._performer_step_inplace

    def plan(q, k, v, gt, st):
        mu = st.extra.get("max")
        if type(mu) is not np.ndarray or mu.dtype is not _F64 or mu.shape != batch \
                or not mu.flags.writeable:
            return None  # replaced from outside: la.step checks it
        o = step(q, k, v, Wt, S, z, mu, scale, eps, fl, chunk)
        st.t += 1
        return o

    return plan


def _plan_lavo(dec: Decoder, st: State):
    """LAVO: its C kernel updating the memory sums and the rings of ``extra`` in place.
    A stream with separate values has ``value_sums`` and ``ring_v``; a keys-are-values
    stream takes the fast path when ``k_t`` is ``v_t``."""
    from ._call import same_array
    from .kinds import lavo as _lv

    ex = st.extra
    rk = ex.get("ring_k")
    if dec._D is None or not isinstance(rk, np.ndarray) or rk.ndim < 2 \
            or rk.dtype not in (np.float32, np.float64):
        return None  # a state la.step must check
    separate = "value_sums" in ex
    spec = reg.get("lavo")
    D, batch, comp = dec._D, rk.shape[:-2], rk.dtype
    call, opts = _resolved(dec, st, spec, D, D, batch=batch, dtype=comp)
    w = _lv._window(opts["window"], 64)
    B, r, mb, fl = _lv._options(opts, D, call.seed, batch, w)
    pb = _lv._bias("position_bias", opts["position_bias"], w, batch,
                   "one entry per offset t - j = 0 .. window-1")
    _lv._state_in(st, batch, r, w, D, comp, separate)
    shapes = {"sums": (batch + (r,), _F64), "value_sums": (batch + (r,), _F64),
              "ring_k": (batch + (w, D), comp), "ring_v": (batch + (w, D), comp)}
    # a keys-are-values stream: value sums the kernel zeroes, a ring it never reads
    unused = {"value_sums": np.zeros(batch + (r,)),
              "ring_v": np.broadcast_to(np.zeros((1, 1), comp), batch + (w, D))}

    def arrays(ex):
        """The four state arrays the kernel updates, or None (la.step: copies them)."""
        out = []
        for name, (shape, dt) in shapes.items():
            if not separate and name in unused:
                out.append(unused[name])
                continue
            a = ex.get(name)
            if type(a) is not np.ndarray or a.shape != shape or a.dtype != dt \
                    or not a.flags.writeable or not a.flags.aligned:
                return None
            out.append(a)
        return out

    cur = arrays(ex)
    if cur is None:
        return None
    dec._dtype = comp
    dec._qshape = dec._vshape = batch + (D,)
    dec._gshape = None
    dec._gconst = _ZERO_DECAY
    Bc = B.astype(comp, copy=False)
    scale = float(call.scale)
    flags = np.int64(fl | (_lv._FLAG_SEP if separate else 0) | _lv._FLAG_REC)
    chunk = np.int64(call.chunk(64))
    step, int64, fill = _core._lavo_step_inplace, np.int64, np.array

    def plan(q, k, v, gt, st):
        ex = st.extra
        sums, vsums, ring_k, ring_v = cur
        if not separate and not same_array(k, v):
            return None  # k_t is not v_t: la.step decides (and raises)
        if ex.get("sums") is not sums or ex.get("ring_k") is not ring_k or separate and (
                ex.get("value_sums") is not vsums or ex.get("ring_v") is not ring_v):
            new = arrays(ex)  # replaced (by a step that took la.step's path)
            if new is None:
                return None
            cur[:] = new
            sums, vsums, ring_k, ring_v = cur
        o = step(q, k, v, Bc, pb, mb, sums, vsums, ring_k, ring_v, int64(st.t), scale,
                 flags, chunk)
        st.t += 1
        ex["fill"] = fill(min(st.t, w), np.int64)
        return o

    return plan


_NO_S = ("lavo",)  # kinds whose state keeps no S, z (their plan checks extra)
_PLANS = {name: _plan_elementwise for name in _ELEMENTWISE}
_PLANS["lavo"] = _plan_lavo
_PLANS["performer"] = _plan_performer
_PLANS["cosformer"] = _plan_cosformer
_PLANS["rfa"] = _plan_rfa
