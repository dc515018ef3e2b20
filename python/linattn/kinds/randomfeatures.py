"""Random-feature kinds: ``"rfa"`` (Peng et al. 2021, with gated RFA) and
``"performer"`` (Choromanski et al. 2021, FAVOR+), docs/design/kinds.md §4 and 5.

RFA computes its sin/cos features in C (``la.features.rfa``) and runs the generic
operator; gated RFA folds the write weight ``1 - g`` into the key features and uses
``log g`` as the per-token decay.  Performer with ``stabilizer="prefix"`` (the default)
runs its own C kernel on log-features, so the stabiliser shift never looks ahead and the
``eps`` guard applies to the true denominator; ``stabilizer="global"`` reproduces the
published code (``eps`` inside the features, one key maximum over the whole call), which
leaks future keys into causal outputs; it is kept for parity only.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _core
from .. import _draws
from .. import _registry as reg
from .. import _validate as val
from .. import features as _features
from .._api import default_chunk, pick_mode
from .._call import (Call, _zeros, flags, linear_causal, linear_causal_plan,
                     linear_noncausal, scalar_operands, state_arrays)
from ..state import State

_PERF_CAUSAL = {
    "recurrent": _core._performer_recurrent,
    "chunked": _core._performer_chunked,
    "parallel": _core._performer_parallel,
}
STABILIZERS = ("prefix", "global")


# ------------------------------------------------------------------ helpers --

def _batch_with(dims: val.Dims, W: np.ndarray) -> tuple:
    try:
        return tuple(np.broadcast_shapes(dims.batch, W.shape[:-2]))
    except ValueError:
        raise ValueError(f"projection batch dimensions {W.shape[:-2]} do not broadcast "
                         f"against the inputs' {dims.batch}") from None


def _seed(call: Call):
    """The seed to draw from: the caller's, else the one a resumed state was drawn with
    (0 for a state saved before seeds were kept), else fresh entropy (NumPy's rule for
    ``seed=None``); None with ``projection=``."""
    if call.projection is not None or call.seed is not None:
        return call.seed
    st = call.initial_state
    if st is not None and "seed" in st.extra:
        seed = np.asarray(st.extra["seed"])
        if seed.shape != () or seed.dtype.kind not in "iu" or int(seed) < 0:
            raise ValueError(f"initial_state.extra['seed'] must be a scalar integer >= 0, "
                             f"got {seed.dtype} of shape {seed.shape}")
        return int(seed)
    if st is not None and "fingerprint" in st.extra:
        return 0
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


@functools.lru_cache(maxsize=32)
def _drawn(kind: str, d: int, num_features, seed: int, features: str, dtype: np.dtype):
    """A drawn projection, its width and fingerprint, made once per (kind, d, width, seed,
    features, dtype): a decoding loop calls the kind once per token.  The projection is
    handed out in the transposed layout (``_draws.transposed``: the same values, row
    stride 1), which the C kernels read in place at every call."""
    W, F = _draws.projection_for(kind, d, num_features, None, seed, features, dtype=dtype)
    return _draws.transposed(W), F, _draws.fingerprint(W)


def _projection(call: Call, kind: str, features: str = "positive"):
    """``(W, F, extra)``: the projection, the feature width and what the state keeps."""
    seed = _seed(call)
    if call.projection is None and type(seed) is int \
            and (call.num_features is None or type(call.num_features) is int):
        W, F, fp = _drawn(kind, call.dims.D, call.num_features, seed, features, call.comp)
    else:
        W, F = _draws.projection_for(kind, call.dims.D, call.num_features, call.projection,
                                     seed, features, dtype=call.comp)
        fp = _draws.fingerprint(W)
        if call.dims.T == 1 and W.ndim == 2:
            W = _draws.transposed(W)  # one token: the kernels' in-place row projection
    _check_resume(call.initial_state, fp, None)
    extra = {"fingerprint": fp}
    if call.projection is None:
        extra["seed"] = np.array(seed, dtype=np.int64)
    return W, F, extra


def _check_resume(state, fp: np.ndarray, stabilizer: str | None = None) -> None:
    if state is None or not isinstance(state, State):
        return
    old = state.extra.get("fingerprint")
    if old is not None and (np.asarray(old).shape != () or np.asarray(old).dtype.kind not in "iu"):
        raise ValueError(f"initial_state.extra['fingerprint'] must be a scalar integer, got "
                         f"{np.asarray(old).dtype} of shape {np.asarray(old).shape}")
    if old is not None and int(old) != int(fp):
        raise ValueError("initial_state was computed with a different projection "
                         "(fingerprint mismatch); resume with the same projection= or "
                         "seed= and num_features=")
    if stabilizer is not None:
        s = state.extra.get("stabilizer")
        if s is not None and np.asarray(s).shape != ():
            raise ValueError(f"initial_state.extra['stabilizer'] must be a scalar string, got "
                             f"shape {np.asarray(s).shape}")
        if s is not None and str(np.asarray(s)[()]) != stabilizer:
            raise ValueError(f"initial_state was computed with stabilizer="
                             f"{str(np.asarray(s)[()])!r}, not {stabilizer!r}")


def _gate(gate, dims: val.Dims) -> tuple[np.ndarray, np.ndarray]:
    """(write weight 1 - g, log-decay log g), both ``(..., T)`` in the ``...td`` layout."""
    if isinstance(gate, np.ndarray) and gate.dtype.kind not in "fiu":
        raise TypeError(f"gate must be a float array, got dtype {gate.dtype}")
    g = np.asarray(gate, dtype=np.float64)
    nb = len(dims.batch)
    if g.ndim == nb and dims.T == 1:
        g = g[..., None]  # la.step: one token
    if g.ndim != nb + 1 or g.shape[-1] != dims.T:
        raise ValueError(f"gate must be per token, shape (..., T={dims.T}) with one more "
                         f"axis than the batch dimensions {dims.batch}, got {g.shape}")
    try:
        np.broadcast_shapes(g.shape[:-1], dims.batch)
    except ValueError:
        raise ValueError(f"gate of shape {g.shape} does not broadcast against the batch "
                         f"dimensions {dims.batch}") from None
    val.unit_interval("gate", g)
    with np.errstate(divide="ignore"):
        return 1.0 - g, np.log(g)


# ---------------------------------------------------------------------- RFA --

def rfa_forward(call: Call, options: dict):
    gate = options.get("gate")
    if call.decay is not None:
        if gate is not None:
            raise ValueError("gate= and decay= cannot be combined for kind 'rfa': gated RFA "
                             "already uses log(gate) as its decay")
        raise TypeError("decay= does not apply to kind 'rfa'; use gate= (gated RFA: "
                        "per-token gates in [0, 1])")
    if gate is not None and not call.causal:
        raise TypeError("gate= is causal only (gated RFA); la.noncausal does not accept it")
    comp = call.comp
    W, F, extra = _projection(call, "rfa")
    batch = _batch_with(call.dims, W)
    qc, kc = call.q.astype(comp, copy=False), call.k.astype(comp, copy=False)
    fq = _features._rf_finish(_core._rfa_features(qc, W, call.scale), comp, False, None)
    fk = _features._rf_finish(_core._rfa_features(kc, W, call.scale), comp, False, None)
    if not call.causal:
        return call.finish(linear_noncausal(call, fq, fk, call.v))
    g = None
    if gate is not None:
        if call.layout == "bthd":
            gate = np.swapaxes(np.asarray(gate), -1, -2) if np.ndim(gate) >= 2 else gate
        dims = call.dims
        w, g = _gate(gate, val.Dims("...td", dims.T, dims.S, F, dims.E, batch))
        fk = fk * w[..., None].astype(comp)
        g = val.decay(g, val.Dims("...td", dims.T, dims.S, F, dims.E, batch))[0]
    o, st = linear_causal(call, fq, fk, call.v, g=g, batch=batch, extra=extra)
    return call.finish(o, st)


def rfa_plan(call: Call, options: dict):
    """The causal plan of repeated calls with a given seed and no gate or state
    (linattn._call.linear_causal_plan): the projection drawn once."""
    if not call.causal or options.get("gate") is not None or call.decay is not None \
            or call.initial_state is not None or call.seed is None:
        return None
    W, F, extra = _projection(call, "rfa")
    if W.ndim != 2:
        return None
    fused = _rfa_fused_plan(call, W, F, extra)
    if fused is not None:
        return fused
    rf, scale, comp = _core._rfa_features, np.array(float(call.scale)), call.comp

    def feats(q, k):
        fq = _features._rf_finish(rf(q, W, scale), comp, False, None)
        return fq, _features._rf_finish(rf(k, W, scale), comp, False, None)

    fp, seed = extra["fingerprint"], extra["seed"]
    return linear_causal_plan(call, F, feats=feats, extra=lambda: {
        "fingerprint": fp, "seed": np.array(seed, dtype=np.int64)})


def _rfa_fused_plan(call: Call, W: np.ndarray, F: int, extra: dict):
    """The plan of a call whose mode resolves to the recurrent form: RFA's features of q
    and k and the recurrent form in one gufunc call (``_rfa_step_inplace`` on a new zero
    state, which it fills in place), instead of two feature calls and the operator's: the
    same kernels on the same values (the recurrent form copies its initial state into the
    state it updates, here a zero one where it lies), so the same bits, with two fewer
    dispatches and no feature arrays.  None where another form runs."""
    if call.out is not None or call.comp is not call.res:
        return None
    dims, comp, spec = call.dims, call.comp, call.spec
    E, T, batch = dims.E, dims.T, dims.batch
    chunk = call.chunk(default_chunk(F))
    if pick_mode(call.mode, T, chunk, spec, F=F, E=E, slices=math.prod(batch)) != "recurrent":
        return None
    div = call.normalize == "div"
    fl = np.array(np.int64(flags(reg.FMAP_IDENTITY, reg.FMAP_IDENTITY, call.normalize,
                                 call.eps_mode, False)))
    scale, eps, _ = scalar_operands(call.scale, call.eps, chunk)
    step, zeros = _core._rfa_step_inplace, np.zeros
    sshape, zshape = batch + (F, E), batch + (F,)
    want_state, name = call.return_state, spec.name
    fp, seed = extra["fingerprint"], extra["seed"]

    def run(q, k, v, decay, state):
        S, z = zeros(sshape, comp), zeros(zshape, comp)
        o = step(q, k, v, W, S, z, scale, eps, fl)
        if not want_state:
            return o
        return o, State(S, z if div else None, T, name,
                        {"fingerprint": fp, "seed": np.array(seed, dtype=np.int64)})
    return run


# ---------------------------------------------------------------- Performer --

def _perf_feats(x, W, features, scale, comp, shift=None, eps=0.0, log=False):
    g = _core._performer_features_2 if features == "hyperbolic" else \
        _core._performer_features_1
    flags = (_features.PERFORMER_KINDS[features] | (_features.PERFORMER_SHIFTS[shift] << 2)
             | (int(log) << 4))
    y = g(x.astype(comp, copy=False), W, float(scale), float(eps), np.int64(flags))
    return y.reshape(y.shape[:-2] + (-1,))


def _perf_global_keys(k, W, features, scale, comp, eps, F, prev_max):
    """Published key features c (exp(u - h - M_K) + eps) with M_K the maximum projection
    u = W x' over every key and feature of the call (and the carried maximum), as
    performer-pytorch and google-research compute it; returns (features, M_K)."""
    lk = _perf_feats(k, W, features, scale, comp, log=True)  # log c + u - h
    logc = -0.5 * np.log(F)
    xs = np.sqrt(scale) * np.asarray(k, dtype=np.float64)
    h = 0.5 * np.einsum("...i,...i->...", xs, xs)
    u = lk.astype(np.float64) - logc + h[..., None]
    M = u.max(axis=(-2, -1), initial=-np.inf) if u.size else np.full(u.shape[:-2], -np.inf)
    if prev_max is not None:
        M = np.maximum(M, prev_max)
    with np.errstate(invalid="ignore"):
        fk = np.exp(lk - M[..., None, None].astype(comp)) + np.exp(logc).astype(comp) \
            * comp.type(eps)
    return fk.astype(comp, copy=False), M


def _perf_published(call: Call, W, F, features: str, extra: dict, batch: tuple):
    """ReLU features, or the published ``stabilizer="global"`` form, on the generic
    operator."""
    comp, scale, eps = call.comp, call.scale, call.eps
    state = call.initial_state
    if features == "relu":
        fq = _perf_feats(call.q, W, "relu", scale, comp)
        fk = _perf_feats(call.k, W, "relu", scale, comp)
        guard = eps
    elif not call.causal:
        fq = _perf_feats(call.q, W, features, scale, comp, shift="row", eps=eps)
        fk = _perf_feats(call.k, W, features, scale, comp, shift="global", eps=eps)
        guard = 0.0
    else:
        fq = _perf_feats(call.q, W, features, scale, comp, shift="row", eps=eps)
        prev = None
        if state is not None and "max" in state.extra:
            prev = np.asarray(state.extra["max"], dtype=np.float64)
        fk, M = _perf_global_keys(call.k, W, features, scale, comp, eps, F, prev)
        M = np.broadcast_to(M, batch).copy()
        if prev is not None:
            # put the carried state on the new maximum (inexact through eps: the
            # published form is not split-invariant)
            state = state.copy()
            f = np.exp(prev - M)
            state.S = state.S * f[..., None, None].astype(state.S.dtype)
            if state.z is not None:
                state.z = state.z * f[..., None].astype(state.z.dtype)
        extra["max"] = M
        guard = 0.0
    if not call.causal:
        return call.finish(linear_noncausal(call, fq, fk, call.v, eps=guard, eps_mode="add"))
    o, st = linear_causal(call, fq, fk, call.v, eps=guard, eps_mode="add", state=state,
                          batch=batch, extra=extra)
    return call.finish(o, st)


def performer_forward(call: Call, options: dict):
    features = val.choice("features", options["features"], tuple(_features.PERFORMER_KINDS))
    stabilizer = val.choice("stabilizer", options["stabilizer"], STABILIZERS)
    W, F, extra = _projection(call, "performer", features)
    batch = _batch_with(call.dims, W)
    if call.causal:
        stab = "relu" if features == "relu" else stabilizer
        _check_resume(call.initial_state, extra["fingerprint"], stab)
        extra["stabilizer"] = np.array(stab)
    if features == "relu" or stabilizer == "global":
        return _perf_published(call, W, F, features, extra, batch)

    # prefix-safe stabiliser: the C kernel on log-features
    comp, dims = call.comp, call.dims
    fl = _features.PERFORMER_KINDS[features] | (reg.NORMALIZE[call.normalize] << 2)
    if not call.causal:
        qc, kc, vc, Wc = (x.astype(comp, copy=False) for x in (call.q, call.k, call.v, W))
        o = _core._performer_noncausal(qc, kc, vc, Wc, float(call.scale), float(call.eps),
                                       np.int64(fl), np.int64(call.chunk(256)),
                                       out=call.kernel_out())
        return call.finish(o)
    E, T = dims.E, dims.T
    div = call.normalize == "div"
    chunk = call.chunk(default_chunk(F))
    mode = pick_mode(call.mode, T, chunk, call.spec)
    st = call.initial_state
    S0, z0, t0 = state_arrays(st, call.spec, batch, F, E, div)
    if S0 is not None:
        if "max" not in st.extra:
            raise ValueError("initial_state has no extra['max'] (the running maximum of "
                             "the Performer state)")
        mu0 = np.asarray(st.extra["max"], dtype=np.float64)
        try:
            np.broadcast_shapes(mu0.shape, batch)
        except ValueError:
            raise ValueError(f"initial_state.extra['max'] of shape {mu0.shape} does not "
                             f"broadcast against the batch dimensions {batch}") from None
        if S0.dtype == np.float64:
            comp = np.dtype(np.float64)
        if z0 is None:
            z0 = np.zeros(S0.shape[:-1], comp)
    else:
        S0, z0, mu0 = np.zeros((F, E), comp), np.zeros((F,), comp), np.float64(-np.inf)
    qc, kc, vc, Wc = (x.astype(comp, copy=False) for x in (call.q, call.k, call.v, W))
    o, S1, z1, mu1 = _PERF_CAUSAL[mode](qc, kc, vc, Wc, S0.astype(comp, copy=False),
                                        z0.astype(comp, copy=False), mu0, float(call.scale),
                                        float(call.eps), np.int64(fl), np.int64(chunk),
                                        out=(call.kernel_out(comp), None, None, None))
    if not call.return_state:
        return call.finish(o)
    ex = dict(st.extra) if st is not None else {}
    ex.update(extra)
    ex["max"] = np.asarray(mu1, dtype=np.float64)
    return call.finish(o, State(S1, z1 if div else None, t0 + T, call.spec.name, ex))


def performer_plan(call: Call, options: dict):
    """The causal plan of repeated calls with a given seed, the prefix stabiliser and no
    state (the same kernel call as :func:`performer_forward`, with the projection drawn
    and the mode, chunk and flags resolved once)."""
    features, stabilizer = options["features"], options["stabilizer"]
    if not call.causal or call.initial_state is not None or call.out is not None \
            or call.seed is None or features == "relu" or stabilizer != "prefix" \
            or call.comp is not call.res:
        return None
    W, F, extra = _projection(call, "performer", features)
    if W.ndim != 2:
        return None
    comp, dims = call.comp, call.dims
    E, T = dims.E, dims.T
    fl = np.int64(_features.PERFORMER_KINDS[features] | (reg.NORMALIZE[call.normalize] << 2))
    div = call.normalize == "div"
    chunk = call.chunk(default_chunk(F))
    uf = _PERF_CAUSAL[pick_mode(call.mode, T, chunk, call.spec)]
    S0, z0, mu0 = _zeros((F, E), comp), _zeros((F,), comp), np.array(-np.inf)
    Wc = W.astype(comp, copy=False)
    scale, eps, ch = scalar_operands(call.scale, call.eps, chunk)
    fl = np.array(fl)
    want_state, name = call.return_state, call.spec.name
    fp, seed = extra["fingerprint"], extra["seed"]

    def run(q, k, v, decay, state):
        o, S1, z1, mu1 = uf(q, k, v, Wc, S0, z0, mu0, scale, eps, fl, ch)
        if not want_state:
            return o
        ex = {"fingerprint": fp, "seed": np.array(seed, dtype=np.int64),
              "stabilizer": np.array(stabilizer), "max": np.asarray(mu1, dtype=np.float64)}
        return o, State(S1, z1 if div else None, T, name, ex)
    return run


# ----------------------------------------------------------------- registry --

RFA = reg.register(reg.KindSpec(
    name="rfa",
    doc="Random Feature Attention: sqrt(2/F)[sin; cos] of sqrt(scale) W x/(|x|+1e-3) (iid "
        "Gaussian W from seed=, or projection=); estimates exp(scale q_hat.k_hat). gate= "
        "(per-token, in [0, 1], causal only) gives gated RFA: S_t = g S + (1-g) phi(k) v^T.",
    paper="Peng et al. 2021, Random Feature Attention, ICLR, arXiv:2103.02143",
    fmap_q=None, fmap_k=None, scale=1.0,
    scale_doc="1, the kernel variance: u = sqrt(scale) W x_hat on q and k",
    normalize="div", eps=1e-3, eps_mode="abs_clamp",
    keywords=("decay", "num_features", "projection", "seed"),
    options={"gate": None, "eps_mode": "abs_clamp"},
    forward=rfa_forward, plan=rfa_plan, example_kwargs={"seed": 0, "num_features": 16},
))

PERFORMER = reg.register(reg.KindSpec(
    name="performer",
    doc="Performer FAVOR+: positive (default) / hyperbolic / relu random features of "
        "sqrt(scale) x with orthogonal chi-norm W (seed=, num_features=256, or projection=). "
        "stabilizer='prefix' (default) never looks ahead and guards the true denominator "
        "(eps=1e-6); 'global' is the published form (eps inside features, one key maximum "
        "over the whole call) and leaks future keys into causal outputs. State.extra "
        "holds the running maximum 'max' and the projection 'fingerprint'.",
    paper="Choromanski et al. 2021, Rethinking Attention with Performers, ICLR, "
          "arXiv:2009.14794",
    fmap_q=None, fmap_k=None, scale=reg.inv_sqrt,
    scale_doc="d**-0.5, sqrt(scale) on q and k",
    normalize="div", eps=1e-6, eps_mode="add",
    keywords=("num_features", "projection", "seed"),
    options={"features": "positive", "stabilizer": "prefix"},
    forward=performer_forward, plan=performer_plan, example_kwargs={"seed": 0, "num_features": 16},
))
