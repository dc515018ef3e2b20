"""``la.selective_scan``: Mamba-1's S6 scan, a drop-in for mamba_ssm's ``selective_scan_ref``.

Channel-first shapes as the reference (a documented exception to docs/design/api.md's layout); the
recurrent scan runs in C (``_core._selective_scan``), one (batch, channel) slice per
work item, threads over them, the GIL released by NumPy.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from . import _validate as val


def _real(name: str, x, ndim_ok: tuple[int, ...], what: str) -> np.ndarray:
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype.kind == "c":
        raise TypeError(f"{name} must be real: complex {name} (accepted by mamba_ssm's "
                        f"reference) is not supported, got dtype {a.dtype}")
    a = val.array(name, a)
    if a.ndim not in ndim_ok:
        raise ValueError(f"{name} must have shape {what}, got shape {a.shape}")
    return a


def _bc_view(name: str, X: np.ndarray, Bb: int, Dc: int, N: int, L: int, G: int):
    """B or C as an array broadcastable to ``(Bb, G, Dg, N, L)``."""
    Dg = Dc // G if G else 0
    if X.ndim == 2:
        if X.shape != (Dc, N):
            raise ValueError(f"time-invariant {name} must have shape (D, N) = ({Dc}, {N}), got "
                             f"{X.shape}")
        return np.broadcast_to(X.reshape(G, Dg, N)[..., None], (G, Dg, N, L))
    if X.ndim == 3:
        if X.shape != (Bb, N, L):
            raise ValueError(f"{name} must have shape (B, N, L) = ({Bb}, {N}, {L}), got "
                             f"{X.shape}")
        return X[:, None, None]
    g = X.shape[1]
    if X.shape[0] != Bb or X.shape[2:] != (N, L) or g < 1 or Dc % g:
        raise ValueError(f"grouped {name} must have shape (B, G, N, L) = ({Bb}, G, {N}, {L}) "
                         f"with G dividing D = {Dc}, got {X.shape}")
    if g != G:  # the other of B / C has another group count: repeat to G groups
        X = np.repeat(X, G // g, axis=1)
    return X[:, :, None]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_state=False, *, check_finite=False):
    """Selective scan (Mamba-1 S6), as
    ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``.

    ::

        dt        = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
        h_t[c, n] = exp(dt[c, t] A[c, n]) h_{t-1}[c, n] + dt[c, t] B[n, t] u[c, t]
        y[c, t]   = sum_n C[n, t] h_t[c, n] + D[c] u[c, t]
        out       = y * silu(z)                               (when z is given)

    Parameters
    ----------
    u, delta : ``(B, D, L)``
    A : ``(D, N)``, real, ``<= 0`` (positive or complex ``A`` raise)
    B, C : ``(D, N)`` time-invariant, ``(B, N, L)``, or grouped ``(B, G, N, L)`` (channel
        ``c`` uses group ``c // (D / G)``)
    D, delta_bias : ``(D,)``, optional
    z : ``(B, D, L)``, optional
    delta_softplus : bool
        Apply ``softplus(x) = log1p(exp(x))`` (stable form) to ``delta + delta_bias``.
    initial_state : ``(B, D, N)``, optional (an extension; the reference starts from 0)
    return_state : bool
        Also return the last state ``(B, D, N)`` (the reference's ``return_last_state``).

    check_finite : bool
        Raise ValueError naming the first array holding a NaN or Inf (and its index)
        before the scan; by default they propagate.

    Returns ``out (B, D, L)`` in the promoted input dtype (float16 computed in float32),
    or ``(out, last_state)``.  Discretisation as the reference: ZOH on A, Euler on B.
    """
    if check_finite:
        val.check_finite(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                         initial_state=initial_state)
    u = _real("u", u, (3,), "(B, D, L)")
    delta = _real("delta", delta, (3,), "(B, D, L)")
    A = _real("A", A, (2,), "(D, N)")
    B = _real("B", B, (2, 3, 4), "(D, N), (B, N, L) or (B, G, N, L)")
    C = _real("C", C, (2, 3, 4), "(D, N), (B, N, L) or (B, G, N, L)")
    Bb, Dc, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta has shape {delta.shape} but u has {u.shape}; both are (B, D, L)")
    if A.shape[0] != Dc:
        raise ValueError(f"A has {A.shape[0]} channels (shape {A.shape}) but u has D = {Dc}; "
                         f"A is (D, N)")
    N = A.shape[1]
    if np.isnan(A).any() or (A > 0).any():
        amax = np.where(np.isnan(A), -np.inf, A).max() if A.size else 0.0
        raise ValueError("A must be real and <= 0 (a contractive scan; A = -exp(A_log) "
                         f"upstream); got max(A) = {float(amax)!r}"
                         + (" and NaN" if np.isnan(A).any() else ""))
    opt = {}
    for name, x, shape in (("D", D, (Dc,)), ("delta_bias", delta_bias, (Dc,)),
                           ("z", z, (Bb, Dc, L)), ("initial_state", initial_state, (Bb, Dc, N))):
        if x is not None:
            a = _real(name, x, (len(shape),), str(shape))
            if a.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
            opt[name] = a
    arrays = [u, delta, A, B, C] + [a for n, a in opt.items() if n != "initial_state"]
    res, comp = val.compute_dtype(*arrays)
    if initial_state is not None and opt["initial_state"].dtype == np.float64:
        comp = np.dtype(np.float64)  # a float64 state keeps the scan in float64
    G = 1
    for name, X in (("B", B), ("C", C)):
        if X.ndim == 4:
            if X.shape[1] < 1 or Dc % X.shape[1]:
                raise ValueError(f"grouped {name} has G = {X.shape[1]} groups (shape "
                                 f"{X.shape}), which must divide D = {Dc}")
            G = G * X.shape[1] // math.gcd(G, X.shape[1])
    Dg = Dc // G
    cv = lambda x: x.astype(comp, copy=False)  # noqa: E731
    Bv = _bc_view("B", cv(B), Bb, Dc, N, L, G)
    Cv = _bc_view("C", cv(C), Bb, Dc, N, L, G)
    uv = cv(u).reshape(Bb, G, Dg, L)
    dv = cv(delta).reshape(Bb, G, Dg, L)
    Av = cv(A).reshape(G, Dg, N)
    zero = np.zeros((), comp)
    Dv = cv(opt["D"]).reshape(G, Dg) if "D" in opt else zero
    bv = cv(opt["delta_bias"]).reshape(G, Dg) if "delta_bias" in opt else zero
    zv = cv(opt["z"]).reshape(Bb, G, Dg, L) if "z" in opt else np.broadcast_to(zero, (L,))
    h0 = initial_state is not None
    s0 = opt["initial_state"].reshape(Bb, G, Dg, N) if h0 else np.broadcast_to(zero, (N,))
    s0 = cv(s0)
    flags = int(bool(delta_softplus)) | (int("z" in opt) << 1)
    out, h1 = _core._selective_scan(uv, dv, Av, Bv, Cv, Dv, zv, bv, s0, np.int64(flags))
    out = np.broadcast_to(out, (Bb, G, Dg, L)).reshape(Bb, Dc, L)
    out = out if out.dtype == res else out.astype(res)
    if not return_state:
        return out
    return out, np.broadcast_to(h1, (Bb, G, Dg, N)).reshape(Bb, Dc, N)
