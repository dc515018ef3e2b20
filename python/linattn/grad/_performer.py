"""Backward of ``"performer"`` with the prefix stabiliser (positive and hyperbolic
features), docs/design/grad.md §3.

The stabiliser cancels exactly: ``o_t = num~_t / (den~_t + eps e^{-nu_t - mu_t})`` equals
``num_t / (den_t + eps)`` for any shifts, so the shifts are constants of the backward and
may be chosen freely.  Here ``nu_t`` is the query row's maximum log-feature and ``mu_t``
the running maximum of the key log-features up to ``t`` (from the state's
``extra["max"]``), so the shifted problem is the generic operator with identity maps and
the per-token log-decay ``mu_{t-1} - mu_t <= 0``.  Its numerator and denominator are
recomputed (``la.causal(kind="linear")``), the row finish (true guard) is differentiated
here in float64, the C backward runs with ``normalize="none"`` on ``[v | 1]``, and the
log-feature backward is ``dl = phi~ * dphi~``, ``dx' = W^T dl - x' sum_i dl_i``
(hyperbolic: ``W^T (dl+ - dl-)``), ``dx = sqrt(s) dx'``.  The state cotangents refer to
the stored (shifted) ``S``, ``z`` with ``extra["max"]`` held constant.

The published forms run the generic operator on features computed outside it, so their
backward is the C operator backward on those features (identity maps, the forward's
guard) followed by the map backward:

- ``features="relu"``: ``phi = m^(-1/2) ReLU(u) + 1e-3``, ``u = W x'``:
  ``dx = sqrt(s) W^T (m^(-1/2) [u > 0] dphi)``;
- ``stabilizer="global"`` (eps inside the features, ``phi = c (exp(l - M) + eps)`` with
  ``l = u - h`` and ``M`` the maximum of the projections ``u``: per query row, over every
  key of the call and the carried maximum): the maxima are held constant (as performer-pytorch's
  ``.detach()``; the form is not invariant to them, so this is the gradient of the
  published estimator with its stabiliser treated as a constant), ``dl = c exp(l - M)
  dphi`` and the log-feature backward above.  A carried state was rescaled by
  ``exp(max_prev - M)`` in the forward; its cotangent gets the same factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .. import _draws
from .. import _registry as reg
from .. import features as _features
from ..state import State
from ._cotangent import inputs


def check_supported(options: dict) -> None:
    """Every ``features`` x ``stabilizer`` the forward offers has a backward (the forward
    validates the values)."""


def _published(options: dict) -> bool:
    return options.get("features", "positive") == "relu" or \
        options.get("stabilizer", "prefix") == "global"


def _log_features(x, W, feats, scale, comp):
    fn = _core._performer_features_2 if feats == "hyperbolic" else \
        _core._performer_features_1
    flags = _features.PERFORMER_KINDS[feats] | (_features.PERFORMER_SHIFTS[None] << 2) | 16
    y = fn(x.astype(comp, copy=False), W, float(scale), 0.0, np.int64(flags))
    return y.reshape(y.shape[:-2] + (-1,))


class PerformerVJP:
    """``vjp(do, dstate=None)`` for ``kind="performer"`` (see grad/_performer.py)."""

    nondiff = ("projection",)

    def __init__(self, ctx: dict, causal: bool) -> None:
        self._c = ctx
        self.causal = causal
        self.kind = "performer"

    def __repr__(self) -> str:
        return f"<linattn {'' if self.causal else 'non'}causal_vjp backward of kind 'performer'>"

    def __call__(self, do, dstate=None) -> dict[str, Any]:
        from .. import _api
        from ._linear import _cotangent, _grad_as, _state_cotangent

        c = self._c
        if c["published"]:
            return self._published(do, dstate)
        comp, E, F, div = c["comp"], c["E"], c["F"], c["div"]
        td = c["td"]
        doc = td(_cotangent("do", do, c["out_shape"], comp)).astype(np.float64)
        qx, kx, vx, W, scale = c["qx"], c["kx"], c["vx"], c["W"], c["scale"]
        lq = _log_features(qx, W, c["features"], scale, comp)
        lk = _log_features(kx, W, c["features"], scale, comp)
        nu = lq.max(axis=-1, initial=-np.inf).astype(np.float64)
        kmax = lk.max(axis=-1, initial=-np.inf).astype(np.float64)
        batch = np.broadcast_shapes(lq.shape[:-2], lk.shape[:-2], vx.shape[:-2])
        if self.causal:
            mu = np.maximum.accumulate(np.maximum(kmax, c["mu0"][..., None]), axis=-1)
            prev = np.concatenate([np.broadcast_to(c["mu0"][..., None], mu.shape[:-1] + (1,)),
                                   mu[..., :-1]], axis=-1)
            with np.errstate(invalid="ignore"):
                g = np.where(np.isneginf(prev), -np.inf, prev - mu)
            fk = np.exp(lk - mu[..., None].astype(comp))
        else:
            mu = kmax.max(axis=-1, initial=-np.inf)  # one shift for all keys
            fk = np.exp(lk - mu[..., None, None].astype(comp))
        fq = np.exp(lq - nu[..., None].astype(comp))
        vb = np.broadcast_to(vx, batch + vx.shape[-2:])
        va = np.concatenate([vb, np.ones(batch + (vx.shape[-2], 1), comp)], axis=-1) \
            if div else np.ascontiguousarray(vb)
        ec = va.shape[-1]
        # the shifted numerator (and denominator), recomputed
        if self.causal:
            S0a = c["S0a"]
            n_a, _ = _api.causal(fq, fk, va, "linear", mode="chunked", decay=g,
                                 chunk_size=c["chunk"], normalize="none",
                                 initial_state=State(S0a, None, 0, "linear"),
                                 return_state=True)
        else:
            n_a = _api.noncausal(fq, fk, va, "linear", normalize="none",
                                 chunk_size=c["chunk"])
        n_a = n_a.astype(np.float64)
        num = n_a[..., :E]
        with np.errstate(over="ignore"):
            # e^{-nu-mu} overflows only where the true features underflow: the guard
            # then dominates and the row's gradient is 0
            lam = np.exp(-(nu + (mu if self.causal else mu[..., None])))
        eps_t = c["eps"] * lam  # the true guard on the shifted scale
        dN = np.zeros(num.shape[:-1] + (ec,))
        if c["normalize"] == "div":
            gam = n_a[..., E] + eps_t
            o = num / gam[..., None]
            dN[..., :E] = doc / gam[..., None]
            dN[..., E] = -np.einsum("...e,...e->...", doc, o) / gam
        elif c["normalize"] == "norm":
            r = np.sqrt(np.mean(num * num, axis=-1))
            rho = r + eps_t
            with np.errstate(invalid="ignore", divide="ignore"):
                cc = np.where(r > 0, np.einsum("...e,...e->...", doc, num) / (E * r * rho), 0.0)
            dN[..., :E] = (doc - cc[..., None] * num) / rho[..., None]
        else:
            dN[..., :E] = doc / lam[..., None]
        dN = dN.astype(comp)
        if self.causal:
            dSa = np.zeros(batch + (F, ec), comp)
            dS, dz = _state_cotangent(dstate, batch, F, E, div, comp)
            dSa[..., :E] = dS
            if div:
                dSa[..., E] = dz
            flags = np.int64(1 << 12)  # identity maps, normalize none, decay
            dfq, dfk, dva, _, dS0a, _ = _core._causal_bwd_chunked(
                fq, fk, va, g, S0a, np.zeros(F, comp), dN, dSa, np.zeros(F, comp), 1.0, 0.0,
                flags, np.int64(c["chunk"]))
        else:
            if dstate is not None:
                raise TypeError("dstate applies to causal_vjp only (noncausal has no state)")
            dfq, dfk, dva = _core._noncausal_bwd(fq, fk, va, dN, 1.0, 0.0, np.int64(0),
                                                 np.int64(c["chunk"]))
        dq = td(self._map_backward(qx, dfq * fq, W, scale))
        dk = td(self._map_backward(kx, dfk * fk, W, scale))
        dv = td(dva[..., :E])
        out = {"q": _grad_as(dq, c["q_shape"], c["q_dtype"]),
               "k": _grad_as(dk, c["k_shape"], c["k_dtype"]),
               "v": _grad_as(dv, c["v_shape"], c["v_dtype"])}
        if self.causal:
            out["decay"] = None
            st = c["state"]
            out["initial_state"] = None
            if st is not None:
                dS0 = _grad_as(dS0a[..., :E], st.S.shape, st.S.dtype)
                dz0 = _grad_as(dS0a[..., E], st.z.shape, st.z.dtype) if div else None
                out["initial_state"] = State(dS0, dz0, st.t, st.kind)
        return out

    def _published(self, do, dstate) -> dict[str, Any]:
        """relu features or the global stabiliser: the operator backward on the forward's
        features, then the map backward (module docstring)."""
        from ..kinds.randomfeatures import _perf_feats, _perf_global_keys
        from ._linear import _cotangent, _grad_as, _state_cotangent

        c = self._c
        comp, E, F, div, td = c["comp"], c["E"], c["F"], c["div"], c["td"]
        qx, kx, vx, W, scale, feats = c["qx"], c["kx"], c["vx"], c["W"], c["scale"], \
            c["features"]
        eps = c["eps"]
        doc = td(_cotangent("do", do, c["out_shape"], comp))
        batch = np.broadcast_shapes(qx.shape[:-2], kx.shape[:-2], vx.shape[:-2],
                                    W.shape[:-2])
        rescale = None
        if feats == "relu":
            fq = _perf_feats(qx, W, "relu", scale, comp)
            fk = _perf_feats(kx, W, "relu", scale, comp)
            guard = eps
        else:
            fq = _perf_feats(qx, W, feats, scale, comp, shift="row", eps=eps)
            eq = np.exp(_perf_feats(qx, W, feats, scale, comp, shift="row", log=True))
            if self.causal:
                prev = c["mu0_published"]
                fk, M = _perf_global_keys(kx, W, feats, scale, comp, eps, F, prev)
                lk = _perf_feats(kx, W, feats, scale, comp, log=True)
                with np.errstate(invalid="ignore"):
                    ek = np.exp(lk - np.asarray(M)[..., None, None].astype(comp))
                if prev is not None:
                    rescale = np.exp(prev - np.broadcast_to(M, batch))
            else:
                fk = _perf_feats(kx, W, feats, scale, comp, shift="global", eps=eps)
                ek = np.exp(_perf_feats(kx, W, feats, scale, comp, shift="global",
                                        log=True))
            guard = 0.0
        flags = (reg.NORMALIZE[c["normalize"]] << 8) | (reg.EPS_MODES["add"] << 10)
        if self.causal:
            S0, z0 = c["S0p"], c["z0p"]
            if rescale is not None:
                S0 = S0 * rescale[..., None, None].astype(S0.dtype)
                z0 = z0 * rescale[..., None].astype(z0.dtype)
            dS, dz = _state_cotangent(dstate, batch, F, E, div, comp)
            T = fq.shape[-2]
            chunk = c["chunk"]
            fn = _core._causal_bwd_chunked if T >= 2 * chunk else _core._causal_bwd_recurrent
            dfq, dfk, dv, _, dS0, dz0 = fn(fq, fk, vx, np.zeros(T), S0, z0, doc, dS, dz,
                                           1.0, guard, np.int64(flags), np.int64(chunk))
        else:
            if dstate is not None:
                raise TypeError("dstate applies to causal_vjp only (noncausal has no state)")
            dfq, dfk, dv = _core._noncausal_bwd(fq, fk, vx, doc, 1.0, guard, np.int64(flags),
                                                np.int64(c["chunk"]))
        if feats == "relu":
            dq, dk = (self._relu_backward(x, dphi, W, scale)
                      for x, dphi in ((qx, dfq), (kx, dfk)))
        else:
            dq = self._map_backward(qx, dfq * eq, W, scale)
            dk = self._map_backward(kx, dfk * ek, W, scale)
        out = {"q": _grad_as(td(dq), c["q_shape"], c["q_dtype"]),
               "k": _grad_as(td(dk), c["k_shape"], c["k_dtype"]),
               "v": _grad_as(td(dv), c["v_shape"], c["v_dtype"])}
        if self.causal:
            out["decay"] = None
            out["initial_state"] = None
            st = c["state"]
            if st is not None:
                if rescale is not None:
                    dS0 = dS0 * rescale[..., None, None]
                    dz0 = dz0 * rescale[..., None]
                out["initial_state"] = State(
                    _grad_as(dS0, st.S.shape, st.S.dtype),
                    _grad_as(dz0, st.z.shape, st.z.dtype) if div else None, st.t, st.kind)
        return out

    @staticmethod
    def _relu_backward(x, dphi, W, scale):
        """phi = m^(-1/2) ReLU(u) + 1e-3, u = W x', x' = sqrt(s) x."""
        m = W.shape[-2]
        rs = np.sqrt(scale)
        u = (rs * x) @ np.swapaxes(W, -1, -2)
        return rs * (((u > 0) * dphi / np.sqrt(m)) @ W)

    def _map_backward(self, x, dl, W, scale):
        """dl (..., T, F) -> dx (..., T, D): dx' = W^T dl - x' sum(dl), dx = sqrt(s) dx'."""
        m = W.shape[-2]
        dW = dl[..., :m] - dl[..., m:] if self._c["features"] == "hyperbolic" else dl
        rs = np.sqrt(scale)
        xs = rs * x
        return rs * (dW @ W - xs * dl.sum(axis=-1, keepdims=True))


def context(q, k, v, spec, *, scale, normalize, eps, num_features, projection, seed,
            options: dict, initial_state, chunk_size, layout, causal: bool):
    lay, qa, ka, va, qt, kt, vt, dims, outer, comp = inputs(q, k, v, layout, causal)
    feats = options.get("features", "positive")
    scale = spec.default_scale(dims.D) if scale is None else float(scale)
    normalize = spec.normalize if normalize is None else normalize
    eps = (1e-8 if normalize == "norm" else spec.eps) if eps is None else float(eps)
    W, F = _draws.projection_for("performer", dims.D, num_features, projection, seed, feats,
                                 dtype=comp)
    div = normalize == "div"
    ctx = {"features": feats, "published": _published(options), "scale": scale,
           "normalize": normalize, "eps": eps, "F": F,
           "E": dims.E, "div": div, "chunk": 64 if chunk_size is None else int(chunk_size),
           "out_shape": outer.out_shape(dims.E),
           "td": (lambda x: np.swapaxes(x, -3, -2)) if lay == "bthd" else (lambda x: x),
           "q_shape": qa.shape, "k_shape": ka.shape, "v_shape": va.shape,
           "q_dtype": qa.dtype, "k_dtype": ka.dtype, "v_dtype": va.dtype, "state": None}
    mu0 = np.float64(-np.inf)
    if causal:
        batch = np.broadcast_shapes(dims.batch, W.shape[:-2])
        ec = dims.E + div
        S0a = np.zeros(batch + (F, ec), comp)
        if initial_state is not None:
            if initial_state.S.dtype == np.float64:
                comp = np.dtype(np.float64)
                S0a = S0a.astype(comp)
            S0a[..., :dims.E] = initial_state.S
            if div:
                S0a[..., dims.E] = initial_state.z
            if "max" in initial_state.extra:
                mu0 = np.asarray(initial_state.extra["max"], dtype=np.float64)
            ctx["state"] = initial_state
        ctx["S0a"] = S0a
        ctx["mu0"] = np.broadcast_to(np.asarray(mu0, np.float64), batch)
        # the published forms: the state as given (rescaled in the backward for "global")
        ctx["S0p"] = np.ascontiguousarray(S0a[..., :dims.E])
        ctx["z0p"] = np.ascontiguousarray(S0a[..., dims.E]) if div else \
            np.zeros(S0a.shape[:-1], comp)
        ctx["mu0_published"] = None if (initial_state is None or
                                        "max" not in initial_state.extra) else \
            np.asarray(initial_state.extra["max"], dtype=np.float64)
    ctx.update(comp=comp, W=W.astype(comp, copy=False), qx=qt.astype(comp, copy=False),
               kx=kt.astype(comp, copy=False), vx=vt.astype(comp, copy=False))
    return ctx
