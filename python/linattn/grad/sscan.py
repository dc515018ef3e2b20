"""``la.selective_scan_vjp``: Mamba-1's selective scan and its backward, in C.

The backward (``_core._selective_scan_bwd``, one (batch, channel) slice per work item)
recomputes the states: a forward pass keeps the state entering every block of 64 tokens,
then each block is recomputed from its checkpoint and walked in reverse
(docs/design/grad.md §3 "selective_scan").  Nothing but the inputs is saved between the
forward and the backward.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core
from .. import _sscan
from .. import _validate as val
from ._cotangent import as_dtype_of, cotangent

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _inputs(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """The inputs as arrays (validated by ``la.selective_scan``, which runs first)."""
    f = lambda x: None if x is None else (x if isinstance(x, np.ndarray)  # noqa: E731
                                          else np.asarray(x))
    return {n: f(x) for n, x in zip(NAMES, (u, delta, A, B, C, D, z, delta_bias,
                                           initial_state))}


def backward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
             initial_state=None, dout=None, dstate=None) -> dict:
    """Gradients of every input (None where it was None) from the cotangents ``dout``
    of ``out`` and ``dstate`` of the last state (None: zero).  The inputs must be
    valid for ``la.selective_scan`` (its forward ran on them)."""
    x = _inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    u, A = x["u"], x["A"]
    Bb, Dc, L = u.shape
    N = A.shape[1]
    arrays = [x[n] for n in NAMES[:-1] if x[n] is not None]
    res, comp = val.compute_dtype(*arrays)
    if x["initial_state"] is not None and x["initial_state"].dtype == np.float64:
        comp = np.dtype(np.float64)
    dout = cotangent("dout", dout, (Bb, Dc, L), "out", comp)
    if dstate is not None:
        dstate = cotangent("dstate", dstate, (Bb, Dc, N), "the last state", comp)
    G = 1
    for X in (x["B"], x["C"]):
        if X.ndim == 4:
            G = G * X.shape[1] // math.gcd(G, X.shape[1])
    Dg = Dc // G
    cv = lambda a: a.astype(comp, copy=False)  # noqa: E731
    Bv = _sscan._bc_view("B", cv(x["B"]), Bb, Dc, N, L, G)
    Cv = _sscan._bc_view("C", cv(x["C"]), Bb, Dc, N, L, G)
    uv = cv(u).reshape(Bb, G, Dg, L)
    dv = cv(x["delta"]).reshape(Bb, G, Dg, L)
    Av = cv(A).reshape(G, Dg, N)
    zero = np.zeros((), comp)
    Dv = cv(x["D"]).reshape(G, Dg) if x["D"] is not None else zero
    bv = cv(x["delta_bias"]).reshape(G, Dg) if x["delta_bias"] is not None else zero
    zv = cv(x["z"]).reshape(Bb, G, Dg, L) if x["z"] is not None else \
        np.broadcast_to(zero, (L,))
    s0 = cv(x["initial_state"]).reshape(Bb, G, Dg, N) if x["initial_state"] is not None \
        else np.broadcast_to(zero, (N,))
    dh1 = dstate.reshape(Bb, G, Dg, N) if dstate is not None else np.broadcast_to(zero, (N,))
    bsum, csum = x["B"].ndim == 2, x["C"].ndim == 2
    dBo = np.empty((Bb, G, Dg, N, 1 if bsum else L), comp)
    dCo = np.empty((Bb, G, Dg, N, 1 if csum else L), comp)
    flags = (int(bool(delta_softplus)) | (int(x["z"] is not None) << 1) | (int(bsum) << 2)
             | (int(csum) << 3))
    outs = _core._selective_scan_bwd(
        uv, dv, Av, Bv, Cv, Dv, zv, bv, s0, np.int64(flags), dout.reshape(Bb, G, Dg, L), dh1,
        out=(None, None, None, dBo, dCo, None, None, None, None))
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = outs

    def group_sum(g, X):  # dB / dC back to B's / C's own shape
        if X.ndim == 2:
            return g.sum(axis=0)[..., 0].reshape(Dc, N)
        if X.ndim == 3:
            return g.sum(axis=(1, 2))
        g = g.sum(axis=2)
        xg = X.shape[1]
        return g if xg == G else g.reshape(Bb, xg, G // xg, N, L).sum(axis=2)

    grads = {
        "u": du.reshape(Bb, Dc, L),
        "delta": ddelta.reshape(Bb, Dc, L),
        "A": dA.sum(axis=0).reshape(Dc, N),
        "B": group_sum(dB, x["B"]),
        "C": group_sum(dC, x["C"]),
        "D": dD.sum(axis=0).reshape(Dc) if x["D"] is not None else None,
        "z": dz.reshape(Bb, Dc, L) if x["z"] is not None else None,
        "delta_bias": dbias.sum(axis=0).reshape(Dc) if x["delta_bias"] is not None else None,
        "initial_state": dh0.reshape(Bb, Dc, N) if x["initial_state"] is not None else None,
    }
    return {n: None if g is None else as_dtype_of(g, x[n]) for n, g in grads.items()}


def selective_scan_vjp(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, initial_state=None, return_state=False):
    """Selective scan (``la.selective_scan``) and its vector-Jacobian product.

    ::

        out, vjp = la.selective_scan_vjp(u, delta, A, B, C, D=D, z=z, ...)
        g = vjp(dout, dstate=None)   # u, delta, A, B, C, D, z, delta_bias, initial_state

    ``out`` (or ``(out, last_state)`` with ``return_state=True``) is what
    ``la.selective_scan`` returns (bit-identical).  ``dout`` has ``out``'s shape exactly
    (a ValueError names it otherwise); ``dstate`` is the cotangent of the last state
    ``(B, D, N)`` or None (zero).  Every gradient has its input's shape and dtype and is
    None where the input was None; shared inputs get summed gradients (``A``, ``D``,
    ``delta_bias`` over the batch; ``B``, ``C`` over the channels that share them, and
    over time too when time-invariant).  ``g["initial_state"]`` is the cotangent of the
    state entering the scan: chain split sequences with
    ``vjp1(dout1, dstate=vjp2(dout2)["initial_state"])``.

    Saved: references to the inputs only (they alias the caller's arrays: editing them
    in place before ``vjp`` gives wrong gradients); the backward recomputes the states
    from a checkpoint every 64 tokens.  Per-token ``B`` / ``C`` gradients are formed per
    channel, then summed over each group: transient memory ``B x D x N x L`` items.
    """
    res = _sscan.selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                delta_softplus=delta_softplus, initial_state=initial_state,
                                return_state=return_state)
    x = _inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    sp = bool(delta_softplus)

    def vjp(dout, dstate=None):
        return backward(**x, delta_softplus=sp, dout=dout, dstate=dstate)

    vjp.nondiff = ()
    return res, vjp
