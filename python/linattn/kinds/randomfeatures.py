"""Random-feature kinds: ``"rfa"`` (Peng et al. 2021, with gated RFA) and
``"performer"`` (Choromanski et al. 2021, FAVOR+), kinds.md sections 4 and 5.

RFA computes its sin/cos features in C (``la.features.rfa``) and runs the generic
operator; gated RFA folds the write weight ``1 - g`` into the key features and uses
``log g`` as the per-token decay.  Performer with ``stabilizer="prefix"`` (the default)
runs its own C kernel on log-features, so the stabiliser shift never looks ahead and the
``eps`` guard applies to the true denominator; ``stabilizer="global"`` reproduces the
published code (``eps`` inside the features, one key maximum over the whole call), which
leaks future keys into causal outputs; it is kept for parity only.
"""

from __future__ import annotations

import numpy as np

from .. import _api, _core
from .. import _draws
from .. import _registry as reg
from .. import _validate as val
from .. import features as _features
from ..state import State

_PERF_CAUSAL = {
    "recurrent": _core._performer_recurrent,
    "chunked": _core._performer_chunked,
    "parallel": _core._performer_parallel,
}
STABILIZERS = ("prefix", "global")


# ------------------------------------------------------------------ helpers --

def _from_td(layout, o):
    return np.swapaxes(o, -3, -2) if layout == "bthd" else o


def _out_td(layout, out):
    if out is None or layout != "bthd":
        return out
    if not isinstance(out, np.ndarray) or out.ndim < 3:
        raise TypeError(f"out must be a numpy.ndarray with layout='bthd' (B, T, H, E), got "
                        f"{getattr(out, 'shape', type(out).__name__)}")
    return np.swapaxes(out, -3, -2)


def _batch_with(dims: val.Dims, W: np.ndarray, F: int) -> val.Dims:
    try:
        batch = tuple(np.broadcast_shapes(dims.batch, W.shape[:-2]))
    except ValueError:
        raise ValueError(f"projection batch dimensions {W.shape[:-2]} do not broadcast "
                         f"against the inputs' {dims.batch}") from None
    return val.Dims("...td", dims.T, dims.S, F, dims.E, batch)


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
    bad = ~((g >= 0) & (g <= 1))
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad)), g.shape)
        raise ValueError(f"gate values must lie in [0, 1], got {g[idx]!r} at index {idx}")
    with np.errstate(divide="ignore"):
        return 1.0 - g, np.log(g)


# ---------------------------------------------------------------------- RFA --

def _rfa_setup(q, k, v, layout, causal, scale, num_features, projection, seed, spec):
    layout, (q, k, v) = val.td_views(q, k, v, layout)
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, "...td", causal=causal)
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    W, F = _draws.projection_for("rfa", dims.D, num_features, projection, seed, dtype=comp)
    dimsF = _batch_with(dims, W, F)
    qc, kc = q.astype(comp, copy=False), k.astype(comp, copy=False)
    fq = _features._rf_finish(_core._rfa_features(qc, W, scale), comp, False, None)
    fk = _features._rf_finish(_core._rfa_features(kc, W, scale), comp, False, None)
    return layout, v, dimsF, res, comp, W, fq, fk


def rfa_causal(q, k, v, *, spec, mode, chunk_size, scale, normalize, eps, decay,
               num_features, projection, seed, horizon, initial_state, return_state,
               layout, out, options):
    gate = options.get("gate")
    if decay is not None:
        if gate is not None:
            raise ValueError("gate= and decay= cannot be combined for kind 'rfa': gated RFA "
                             "already uses log(gate) as its decay")
        raise TypeError("decay= does not apply to kind 'rfa'; use gate= (gated RFA: "
                        "per-token gates in [0, 1])")
    lay, v, dims, res, comp, W, fq, fk = _rfa_setup(q, k, v, layout, True, scale,
                                                    num_features, projection, seed, spec)
    normalize, eps, eps_mode = _api._norm_and_eps(spec, normalize, eps,
                                                  options.get("eps_mode"))
    val.choice("mode", mode, ("auto",) + spec.causal_modes)
    g = None
    if gate is not None:
        if lay == "bthd":
            gate = np.swapaxes(np.asarray(gate), -1, -2) if np.ndim(gate) >= 2 else gate
        w, g = _gate(gate, dims)
        fk = fk * w[..., None].astype(comp)
    fp = _draws.fingerprint(W)
    _check_resume(initial_state, fp)
    r = _api.linear_core(fq, fk, v, spec=spec, fmap_q=reg.FMAP_IDENTITY,
                         fmap_k=reg.FMAP_IDENTITY, scale=1.0, normalize=normalize, eps=eps,
                         eps_mode=eps_mode, decay=g, mode=mode, chunk_size=chunk_size,
                         initial_state=initial_state, return_state=bool(return_state),
                         layout="...td", out=_out_td(lay, out), dims=dims, res=res, comp=comp,
                         extra={"fingerprint": fp})
    if return_state:
        return _from_td(lay, r[0]) if out is None else out, r[1]
    return _from_td(lay, r) if out is None else out


def rfa_noncausal(q, k, v, *, spec, chunk_size, scale, normalize, eps, num_features,
                  projection, seed, horizon, layout, out, options):
    if options.get("gate") is not None:
        raise TypeError("gate= is causal only (gated RFA); la.noncausal does not accept it")
    lay, v, dims, res, comp, W, fq, fk = _rfa_setup(q, k, v, layout, False, scale,
                                                    num_features, projection, seed, spec)
    normalize, eps, eps_mode = _api._norm_and_eps(spec, normalize, eps,
                                                  options.get("eps_mode"))
    o = _api.noncausal_core(fq, fk, v, fmap_q=reg.FMAP_IDENTITY, fmap_k=reg.FMAP_IDENTITY,
                            scale=1.0, normalize=normalize, eps=eps, eps_mode=eps_mode,
                            chunk_size=chunk_size, layout="...td", out=_out_td(lay, out),
                            dims=dims, res=res, comp=comp)
    return _from_td(lay, o) if out is None else out


# ---------------------------------------------------------------- Performer --

def _perf_setup(q, k, v, layout, causal, scale, num_features, projection, seed, spec, options):
    features = val.choice("features", options["features"], tuple(_features.PERFORMER_KINDS))
    stabilizer = val.choice("stabilizer", options["stabilizer"], STABILIZERS)
    layout, (q, k, v) = val.td_views(q, k, v, layout)
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, "...td", causal=causal)
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    W, F = _draws.projection_for("performer", dims.D, num_features, projection, seed,
                                 features, dtype=comp)
    return layout, q, k, v, dims, res, comp, scale, W, F, features, stabilizer


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


def performer_causal(q, k, v, *, spec, mode, chunk_size, scale, normalize, eps, decay,
                     num_features, projection, seed, horizon, initial_state, return_state,
                     layout, out, options):
    lay, q, k, v, dims, res, comp, scale, W, F, features, stabilizer = _perf_setup(
        q, k, v, layout, True, scale, num_features, projection, seed, spec, options)
    normalize = spec.normalize if normalize is None else normalize
    val.choice("normalize", normalize, reg.NORMALIZE)
    if eps is None:
        eps = 1e-8 if normalize == "norm" else spec.eps
    eps = val.nonneg_number("eps", eps)
    val.choice("mode", mode, ("auto",) + spec.causal_modes)
    dimsF = _batch_with(dims, W, F)
    fp = _draws.fingerprint(W)
    stab = "relu" if features == "relu" else stabilizer
    _check_resume(initial_state, fp, stab)
    extra = {"fingerprint": fp, "stabilizer": np.array(stab)}
    out_td = _out_td(lay, out)

    if features == "relu" or stabilizer == "global":
        state = initial_state
        if features == "relu":
            fq = _perf_feats(q, W, "relu", scale, comp)
            fk = _perf_feats(k, W, "relu", scale, comp)
            guard = eps
        else:
            fq = _perf_feats(q, W, features, scale, comp, shift="row", eps=eps)
            prev = None
            if isinstance(initial_state, State) and "max" in initial_state.extra:
                prev = np.asarray(initial_state.extra["max"], dtype=np.float64)
            fk, M = _perf_global_keys(k, W, features, scale, comp, eps, F, prev)
            M = np.broadcast_to(M, dimsF.batch).copy()
            if prev is not None:
                # put the carried state on the new maximum (inexact through eps: the
                # published form is not split-invariant)
                state = initial_state.copy()
                f = np.exp(prev - M)
                state.S = state.S * f[..., None, None].astype(state.S.dtype)
                if state.z is not None:
                    state.z = state.z * f[..., None].astype(state.z.dtype)
            extra["max"] = M
            guard = 0.0
        r = _api.linear_core(fq, fk, v, spec=spec, fmap_q=reg.FMAP_IDENTITY,
                             fmap_k=reg.FMAP_IDENTITY, scale=1.0, normalize=normalize,
                             eps=guard, eps_mode="add", decay=None, mode=mode,
                             chunk_size=chunk_size, initial_state=state,
                             return_state=bool(return_state), layout="...td", out=out_td,
                             dims=dimsF, res=res, comp=comp, extra=extra)
        if return_state:
            return (_from_td(lay, r[0]) if out is None else out), r[1]
        return _from_td(lay, r) if out is None else out

    # prefix-safe stabiliser: the C kernel on log-features
    E, T = dims.E, dims.T
    div = normalize == "div"
    chunk = _api.default_chunk(F) if chunk_size is None else \
        val.positive_int("chunk_size", chunk_size)
    mode = _api.pick_mode(mode, T, chunk, spec)
    S0, z0, t0 = _api._state_in(initial_state, spec, dimsF, F, E, div)
    if S0 is not None:
        if "max" not in initial_state.extra:
            raise ValueError("initial_state has no extra['max'] (the running maximum of "
                             "the Performer state)")
        mu0 = np.asarray(initial_state.extra["max"], dtype=np.float64)
        try:
            np.broadcast_shapes(mu0.shape, dimsF.batch)
        except ValueError:
            raise ValueError(f"initial_state.extra['max'] of shape {mu0.shape} does not "
                             f"broadcast against the batch dimensions {dimsF.batch}") from None
        if S0.dtype == np.float64:
            comp = np.dtype(np.float64)
        if z0 is None:
            z0 = np.zeros(S0.shape[:-1], comp)
    else:
        S0 = np.zeros((F, E), comp)
        z0 = np.zeros((F,), comp)
        mu0 = np.float64(-np.inf)
    if out is not None:
        out_td = val.out_array(out_td, dimsF.out_shape(E), res, (q, k, v))
    flags = _features.PERFORMER_KINDS[features] | (reg.NORMALIZE[normalize] << 2)
    kernel_out = out_td if (out_td is not None and out_td.dtype == comp) else None
    qc, kc, vc, Wc = (x.astype(comp, copy=False) for x in (q, k, v, W))
    o, S1, z1, mu1 = _PERF_CAUSAL[mode](qc, kc, vc, Wc, S0.astype(comp, copy=False),
                                        z0.astype(comp, copy=False), mu0, float(scale),
                                        float(eps), np.int64(flags), np.int64(chunk),
                                        out=(kernel_out, None, None, None))
    o = _api._finish_out(o, out_td, res)
    o = _from_td(lay, o) if out is None else out
    if not return_state:
        return o
    ex = dict(initial_state.extra) if initial_state is not None else {}
    ex.update(extra)
    ex["max"] = np.asarray(mu1, dtype=np.float64)
    return o, State(S1, z1 if div else None, t0 + T, spec.name, ex)


def performer_noncausal(q, k, v, *, spec, chunk_size, scale, normalize, eps, num_features,
                        projection, seed, horizon, layout, out, options):
    lay, q, k, v, dims, res, comp, scale, W, F, features, stabilizer = _perf_setup(
        q, k, v, layout, False, scale, num_features, projection, seed, spec, options)
    normalize = spec.normalize if normalize is None else normalize
    val.choice("normalize", normalize, reg.NORMALIZE)
    if eps is None:
        eps = 1e-8 if normalize == "norm" else spec.eps
    eps = val.nonneg_number("eps", eps)
    dimsF = _batch_with(dims, W, F)
    out_td = _out_td(lay, out)
    if features == "relu" or stabilizer == "global":
        if features == "relu":
            fq = _perf_feats(q, W, "relu", scale, comp)
            fk = _perf_feats(k, W, "relu", scale, comp)
            guard = eps
        else:
            fq = _perf_feats(q, W, features, scale, comp, shift="row", eps=eps)
            fk = _perf_feats(k, W, features, scale, comp, shift="global", eps=eps)
            guard = 0.0
        o = _api.noncausal_core(fq, fk, v, fmap_q=reg.FMAP_IDENTITY, fmap_k=reg.FMAP_IDENTITY,
                                scale=1.0, normalize=normalize, eps=guard, eps_mode="add",
                                chunk_size=chunk_size, layout="...td", out=out_td, dims=dimsF,
                                res=res, comp=comp)
        return _from_td(lay, o) if out is None else out
    chunk = 256 if chunk_size is None else val.positive_int("chunk_size", chunk_size)
    if out is not None:
        out_td = val.out_array(out_td, dimsF.out_shape(dims.E), res, (q, k, v))
    flags = _features.PERFORMER_KINDS[features] | (reg.NORMALIZE[normalize] << 2)
    kernel_out = out_td if (out_td is not None and out_td.dtype == comp) else None
    qc, kc, vc, Wc = (x.astype(comp, copy=False) for x in (q, k, v, W))
    o = _core._performer_noncausal(qc, kc, vc, Wc, float(scale), float(eps), np.int64(flags),
                                   np.int64(chunk), out=kernel_out)
    o = _api._finish_out(o, out_td, res)
    return _from_td(lay, o) if out is None else out


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
    causal_impl=rfa_causal, noncausal_impl=rfa_noncausal,
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
    causal_impl=performer_causal, noncausal_impl=performer_noncausal,
))
