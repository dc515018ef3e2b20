"""Backward of ``"rfa"`` (docs/design/grad.md §3): the generic operator's C backward on
the sin/cos features, then the feature backward

    du = dphi_sin * phi_cos - dphi_cos * phi_sin        (the sqrt(2/F) factors cancel)
    dx_hat = sqrt(s) W^T du,  dx = dx_hat / (n + d) - x (x . dx_hat) / (n (n + d)^2)

(``n = |x|``, ``d = 1e-3``, last term 0 at ``n = 0``).  Gated RFA (``gate=``) folds the
write weight ``1 - g`` into the key features and uses ``log g`` as the per-token decay:
``dg_s = dlog_s / g_s - phi(k_s) . dphi'_K(s)`` for ``g_s > 0``.

A gate of exactly 0 resets the state (``log 0 = -inf``, the decay factor is exactly 0), so
``dlog_s = g_s <S_{s-1}, dS_s> = 0`` loses the first term.  There the gradient is the
derivative from the ``g > 0`` side (the forward is affine in ``g_s`` and defined for
``g_s >= 0`` only), the limit of the formula above:

    dg_s = <S_{s-1}, dS_s> - phi(k_s) . dphi'_K(s)           (z included with "div")

``S_{s-1}`` (the state before the reset) comes from the C forward of the segment before
``s`` (from the previous reset, or from the start), and ``dS_s`` (the cotangent of the
state after token ``s``, its read-out included) from the C backward of the segment from
``s`` to the next reset, started from a zero state with the decay at ``s`` set to 1: that
forward equals the true one from ``s`` on, and no cotangent crosses the next reset, so
its initial state's cotangent is ``dS_s``.  ``O(T)`` per slice in all, one pair of C
calls per reset.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .. import _draws
from .. import _registry as reg
from ..state import State
from ._cotangent import inputs

_DELTA = 1e-3


def _features(x: np.ndarray, W: np.ndarray, scale: float) -> np.ndarray:
    y = _core._rfa_features(x, W, float(scale))
    return y.reshape(y.shape[:-2] + (-1,))


def _map_backward(x, phi, dphi, W, scale):
    r = W.shape[-2]
    du = dphi[..., :r] * phi[..., r:] - dphi[..., r:] * phi[..., :r]
    dxh = np.sqrt(scale) * (du @ W)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    nd = n + _DELTA
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(n > 0, np.einsum("...d,...d->...", x, dxh)[..., None]
                        / (n * nd * nd), 0.0)
    return dxh / nd - x * corr


class RfaVJP:
    nondiff = ("projection",)

    def __init__(self, ctx: dict, causal: bool) -> None:
        self._c = ctx
        self.causal = causal
        self.kind = "rfa"

    def __repr__(self) -> str:
        return f"<linattn {'' if self.causal else 'non'}causal_vjp backward of kind 'rfa'>"

    def __call__(self, do, dstate=None) -> dict[str, Any]:
        from ._linear import _cotangent, _grad_as, _state_cotangent

        c = self._c
        comp, td = c["comp"], c["td"]
        doc = td(_cotangent("do", do, c["out_shape"], comp))
        qx, kx, vx, W, scale = c["qx"], c["kx"], c["vx"], c["W"], c["scale"]
        fq = _features(qx, W, scale)
        fk = _features(kx, W, scale)
        flags = (reg.NORMALIZE[c["normalize"]] << 8) | (reg.EPS_MODES[c["eps_mode"]] << 10)
        if not self.causal:
            if dstate is not None:
                raise TypeError("dstate applies to causal_vjp only (noncausal has no state)")
            dfq, dfk, dv = _core._noncausal_bwd(fq, fk, vx, doc, 1.0, c["eps"],
                                                np.int64(flags), np.int64(c["chunk"]))
        else:
            gate = c["gate"]
            fkw = fk if gate is None else fk * (1.0 - gate)[..., None].astype(comp)
            g = np.zeros(fk.shape[-2]) if gate is None else c["logg"]
            flags |= int(gate is not None) << 12
            F, E = fk.shape[-1], c["E"]
            dS, dz = _state_cotangent(dstate, c["batch"], F, E, c["div"], comp)
            dfq, dfkw, dv, dg, dS0, dz0 = c["fn"](fq, fkw, vx, g, c["S0"], c["z0"], doc, dS,
                                                  dz, 1.0, c["eps"], np.int64(flags),
                                                  np.int64(c["chunk"]))
            dfk = dfkw if gate is None else dfkw * (1.0 - gate)[..., None].astype(comp)
        out = {"q": _grad_as(td(_map_backward(qx, fq, dfq, W, scale)), c["q_shape"],
                             c["q_dtype"]),
               "k": _grad_as(td(_map_backward(kx, fk, dfk, W, scale)), c["k_shape"],
                             c["k_dtype"]),
               "v": _grad_as(td(dv), c["v_shape"], c["v_dtype"])}
        if self.causal:
            out["decay"] = None
            out["initial_state"] = None
            st = c["state"]
            if st is not None:
                out["initial_state"] = State(
                    _grad_as(dS0, st.S.shape, st.S.dtype), _grad_as(dz0, st.z.shape,
                                                                    st.z.dtype)
                    if c["div"] else None, st.t, st.kind)
            if gate is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    dlog = np.where(gate > 0, dg / np.where(gate > 0, gate, 1.0), 0.0)
                if (gate == 0).any():
                    dlog = dlog + self._reset_terms(fq, fkw, vx, doc, dS, dz)
                dgate = dlog - np.einsum("...tf,...tf->...t", fk, dfkw)
                if c["gate_layout_swap"]:
                    dgate = np.swapaxes(dgate, -1, -2)
                out["gate"] = _grad_as(dgate, c["gate_shape"], c["gate_dtype"])
        return out


    def _reset_terms(self, fq, fkw, vx, doc, dS, dz) -> np.ndarray:
        """``<S_{s-1}, dS_s>`` (plus ``<z_{s-1}, dz_s>``) at the gates of exactly 0, 0
        elsewhere (see the module docstring).  Per slice, the resets cut the sequence into
        segments that no state and no state cotangent crosses, so each reset needs the
        forward of the segment before it and the backward of the segment after it:
        ``O(T)`` per slice in all."""
        c = self._c
        gate, logg, comp, div = c["gate"], c["logg"], c["comp"], c["div"]
        F, E = fkw.shape[-1], c["E"]
        batch = np.broadcast_shapes(fq.shape[:-2], fkw.shape[:-2], vx.shape[:-2],
                                    gate.shape[:-1], np.shape(c["S0"])[:-2],
                                    np.shape(dS)[:-2])
        T = fq.shape[-2]
        ec = E + div
        zero = np.broadcast_to(gate == 0, batch + (T,))
        out = np.zeros(batch + (T,), np.float64)
        fqb = np.broadcast_to(fq, batch + fq.shape[-2:])
        fkb = np.broadcast_to(fkw, batch + fkw.shape[-2:])
        vb = np.broadcast_to(vx, batch + vx.shape[-2:])
        S0 = np.broadcast_to(c["S0"], batch + (F, E))
        z0 = np.broadcast_to(c["z0"], batch + (F,))
        dSb = np.broadcast_to(dS, batch + (F, E))
        docb = np.broadcast_to(doc, batch + doc.shape[-2:])
        dzb = np.broadcast_to(dz, batch + (F,))
        gb = np.broadcast_to(logg, batch + (T,))
        fwd_flags = np.int64(1 << 12)  # identity maps, normalize none, decay
        bwd_flags = np.int64((reg.NORMALIZE[c["normalize"]] << 8)
                             | (reg.EPS_MODES[c["eps_mode"]] << 10) | (1 << 12))
        zS, zz, zSa = np.zeros((F, E), comp), np.zeros((F,), comp), np.zeros((F, ec), comp)
        chunk = np.int64(c["chunk"])
        for i in np.ndindex(batch):
            resets = np.flatnonzero(zero[i])
            if resets.size == 0:
                continue
            va = np.concatenate([vb[i], np.ones((T, 1), comp)], axis=-1) if div else vb[i]
            for j, s in enumerate(resets):
                s = int(s)
                start = int(resets[j - 1]) if j else 0
                end = int(resets[j + 1]) if j + 1 < resets.size else T
                # S_{s-1}: the forward of the segment before s (from the previous reset,
                # where a zero state with decay 1 equals the reset, or from the start)
                if s == 0:
                    prev = np.concatenate([S0[i], z0[i][:, None]], axis=-1) if div else S0[i]
                else:
                    g0 = np.array(gb[i][start:s])
                    if j:
                        init = zSa
                        g0[0] = 0.0
                    else:
                        init = np.concatenate([S0[i], z0[i][:, None]], axis=-1) if div \
                            else S0[i]
                    _, Sp, _ = _core._causal_chunked(
                        fqb[i][start:s], fkb[i][start:s], va[start:s], g0,
                        np.ascontiguousarray(init, comp), np.zeros((F,), comp), 1.0, 0.0,
                        fwd_flags, chunk)
                    prev = Sp
                # dS_s: the backward of the segment from s (a zero state, decay 1 at s);
                # nothing crosses the next reset, the state cotangent enters at the end
                g1 = np.array(gb[i][s:end])
                g1[0] = 0.0
                last = end == T
                res = c["fn"](fqb[i][s:end], fkb[i][s:end], vb[i][s:end], g1, zS, zz,
                              docb[i][s:end],
                              dSb[i] if last else zS, dzb[i] if last else zz, 1.0, c["eps"],
                              bwd_flags, chunk)
                prev = prev.astype(np.float64)
                x = float(np.vdot(prev[:, :E], res[4].astype(np.float64)))
                if div:
                    x += float(np.vdot(prev[:, E], res[5].astype(np.float64)))
                out[i + (s,)] = x
        return out


def context(q, k, v, spec, *, scale, normalize, eps, num_features, projection, seed,
            options: dict, initial_state, chunk_size, backward, layout, causal: bool):
    lay, qa, ka, va, qt, kt, vt, dims, outer, comp = inputs(q, k, v, layout, causal)
    scale = spec.default_scale(dims.D) if scale is None else float(scale)
    normalize = spec.normalize if normalize is None else normalize
    eps = (1e-8 if normalize == "norm" else spec.eps) if eps is None else float(eps)
    W, F = _draws.projection_for("rfa", dims.D, num_features, projection, seed, dtype=comp)
    div = normalize == "div"
    batch = tuple(np.broadcast_shapes(dims.batch, W.shape[:-2]))
    chunk = (32 if F <= 32 else 64) if chunk_size is None else int(chunk_size)
    ctx = {"scale": scale, "normalize": normalize, "eps": eps,
           "eps_mode": options.get("eps_mode") or spec.eps_mode, "E": dims.E, "div": div,
           "out_shape": outer.out_shape(dims.E), "batch": batch,
           "td": (lambda x: np.swapaxes(x, -3, -2)) if lay == "bthd" else (lambda x: x),
           "q_shape": qa.shape, "k_shape": ka.shape, "v_shape": va.shape,
           "q_dtype": qa.dtype, "k_dtype": ka.dtype, "v_dtype": va.dtype, "state": None,
           "gate": None, "chunk": 256 if (chunk_size is None and not causal) else chunk}
    if causal:
        gate = options.get("gate")
        if gate is not None:
            ga = np.asarray(gate, dtype=np.float64)
            ctx["gate_shape"], ctx["gate_layout_swap"] = ga.shape, lay == "bthd"
            dt = getattr(gate, "dtype", None)
            ctx["gate_dtype"] = dt if dt is not None and dt.kind == "f" else np.float64
            if lay == "bthd":
                ga = np.swapaxes(ga, -1, -2) if ga.ndim >= 2 else ga
            ctx["gate"] = ga
            with np.errstate(divide="ignore"):
                ctx["logg"] = np.log(ga)
        if initial_state is not None:
            S0 = initial_state.S
            if S0.dtype == np.float64:
                comp = np.dtype(np.float64)
            S0 = S0.astype(comp, copy=False)
            z0 = initial_state.z.astype(comp, copy=False) if div else \
                np.zeros(S0.shape[:-1], comp)
            ctx["state"] = initial_state
        else:
            S0, z0 = np.zeros((F, dims.E), comp), np.zeros((F,), comp)
        form = backward or ("chunked" if dims.T >= 2 * chunk else "recurrent")
        if form == "parallel":
            form, ctx["chunk"] = "chunked", max(dims.T, 1)
        ctx.update(S0=S0, z0=z0, fn=_core._causal_bwd_chunked if form == "chunked"
                   else _core._causal_bwd_recurrent)
    ctx.update(comp=comp, W=W.astype(comp, copy=False), qx=qt.astype(comp, copy=False),
               kx=kt.astype(comp, copy=False), vx=vt.astype(comp, copy=False))
    return ctx
