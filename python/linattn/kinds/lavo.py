"""``kind="lavo"``: LAVO-R v1, linear attention via orthogonal memory (docs/design/lavo.md).

Zhang, Jiang, Feng, Zheng, Kong, *Linear Attention via Orthogonal Memory*, arXiv:2312.11135.
The paper's method section and code were not available; this is our reconstruction
"LAVO-R v1".  Verified [V]: fixed orthogonal bases, a cumulative mean of the context
compressed to ``r`` coefficients and read by attention, keys = values, a local window, an
additive relative bias.  Reconstructed [R] (each a switch): orthonormal ``bases`` as an
input, the memory slot ``h_i b_i``, ``memory_scope`` ("all" | "before_local"),
``window_mode`` ("sliding" | "block"), one joint softmax over memory and local logits
(``combine="joint"``; "sum" is reserved), the bias only on local logits
(``position_bias``).  Library choices [L]: ``memory_bias``, separate values (``E == d``),
default ``r = min(d, 64)``, ``window = 64``.

Per head, memory is ``r`` float64 sums (+ ``r`` value sums with separate ``v``) and a
ring of the last ``w`` rows (``w*d`` values, + ``w*E`` with separate ``v``): constant in
``t``.  Cost per token ``(3r + 2w) d`` MACs plus ``r + w`` exponentials (separate ``v``
adds ``r d``).  Streaming: ``return_state=True`` / ``initial_state=`` or ``la.step``;
the state is ``State(S=None, z=None, t, extra={"sums", "ring_k", "fill"[, "value_sums",
"ring_v"]})``; ring rows are oldest first, newest in row ``w - 1``.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from .. import _core
from .. import _registry as reg
from .. import _validate as val
from .._api import pick_mode
from .._call import Call, same_array, scalar_operands
from .._draws import lavo_bases
from ..state import State

WINDOW_MODES = ("sliding", "block")
MEMORY_SCOPES = ("all", "before_local")
COMBINES = ("joint",)
_FLAG_BLOCK, _FLAG_BEFORE, _FLAG_SEP, _FLAG_REC = 1, 2, 4, 8


def _window(x, default: int) -> int:
    if x is None:
        return default
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"window must be an integer >= 0, got {type(x).__name__}")
    if x < 0:
        raise ValueError(f"window must be >= 0, got {x}")
    return int(x)


@functools.lru_cache(maxsize=16)
def _default_bases(r: int, d: int, seed) -> np.ndarray:
    """The default bases, drawn once per (r, d, seed): a decoding loop calls the kind
    once per token and the draw (Gram-Schmidt in NumPy) would dominate it."""
    B = lavo_bases(r, d, seed=seed)
    B.flags.writeable = False
    return B


def check_bases(bases, d: int, seed, batch: tuple) -> np.ndarray:
    """Validated bases ``(..., r, d)`` (float64 or float32); orthonormal rows."""
    if bases is None:
        return _default_bases(min(d, 64), d, 0 if seed is None else seed)
    B = val.array("bases", bases)
    if B.ndim < 2:
        raise ValueError(f"bases must have shape (r, d) or (..., r, d), got {B.shape}")
    r = B.shape[-2]
    if B.shape[-1] != d:
        raise ValueError(f"bases has {B.shape[-1]} columns but q has d = {d} features")
    if r > d:
        raise ValueError(f"bases has r = {r} rows but at most d = {d} can be orthonormal "
                         f"(r > d)")
    try:
        np.broadcast_shapes(B.shape[:-2], batch)
    except ValueError:
        raise ValueError(f"bases batch dimensions {B.shape[:-2]} do not broadcast against "
                         f"the inputs' {batch}") from None
    if r:
        B64 = B.astype(np.float64)
        err = float(np.max(np.abs(B64 @ np.swapaxes(B64, -1, -2) - np.eye(r))))
        tol = 1e-10 if B.dtype == np.float64 else 1e-4
        if not err <= tol:
            raise ValueError(f"bases must have orthonormal rows: max |B B^T - I| = {err:.3g} "
                             f"> {tol:g} (use la.lavo_bases or orthonormalise, e.g. by QR)")
    return B


def _bias(name: str, x, n: int, batch: tuple, what: str) -> np.ndarray:
    if x is None:
        return np.zeros((n,), np.float64)
    if isinstance(x, np.ndarray) and x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array, got dtype {x.dtype}")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] != n:
        raise ValueError(f"{name} must have shape (..., {n}) ({what}), got {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} must not contain NaN")
    try:
        np.broadcast_shapes(a.shape[:-1], batch)
    except ValueError:
        raise ValueError(f"{name} batch dimensions {a.shape[:-1]} do not broadcast against "
                         f"the inputs' {batch}") from None
    return a


def _options(opts, d, seed, batch, w):
    val.choice("window_mode", opts["window_mode"], WINDOW_MODES)
    val.choice("memory_scope", opts["memory_scope"], MEMORY_SCOPES)
    val.choice("combine", opts["combine"], COMBINES)
    B = check_bases(opts["bases"], d, seed, batch)
    r = B.shape[-2]
    if r == 0 and w == 0:
        raise ValueError("LAVO needs at least one branch: bases with r >= 1 rows or "
                         "window >= 1")
    flags = (_FLAG_BLOCK if opts["window_mode"] == "block" else 0) | \
        (_FLAG_BEFORE if opts["memory_scope"] == "before_local" else 0)
    mb = _bias("memory_bias", opts["memory_bias"], r, batch, "one entry per memory slot")
    return B, r, mb, flags


LAVO_CHUNKED_FROM = 24  # mode="auto": the chunked form from this many tokens


def _pick_mode(call: Call, T: int, chunk: int) -> str:
    """The form of a causal call: ``mode="auto"`` takes the chunked form from
    ``T >= LAVO_CHUNKED_FROM`` (a prefill of one chunk reads the memory once per chunk
    instead of once per token) and the recurrent form below, otherwise the documented
    rule (:func:`linattn._api.pick_mode`).  Measured on one core (Intel Xeon, AVX-512;
    d = 64, r = 64, window 64, float32; chunked vs recurrent, us per call): B x H = 1,
    T = 4: 27 vs 18, T = 16: 37 vs 33, T = 24: 43 vs 62, T = 32: 51 vs 65; B x H = 8,
    T = 8: 223 vs 147, T = 16: 422 vs 316, T = 24: 397 vs 433, T = 32: 552 vs 664."""
    if call.mode == "auto" and T >= LAVO_CHUNKED_FROM:
        return "chunked"
    if call.mode == "auto" and T >= 2:
        return "recurrent"
    return pick_mode(call.mode, T, chunk, call.spec)


def _state_in(st, batch, r, w, d, comp, separate):
    if st is None:
        return None, 0
    ex = st.extra
    need = ["sums", "ring_k"] + (["value_sums", "ring_v"] if separate else [])
    miss = [n for n in need if n not in ex]
    if miss:
        raise ValueError(f"initial_state.extra lacks {miss} (a LAVO state with "
                         f"{'separate' if separate else 'shared'} values is needed)")
    shapes = {"sums": (r,), "ring_k": (w, d), "value_sums": (r,), "ring_v": (w, d)}
    for n in need:
        a = np.asarray(ex[n])
        core = shapes[n]
        if a.shape[a.ndim - len(core):] != core:
            raise ValueError(f"initial_state.extra[{n!r}] has shape {a.shape}, expected "
                             f"(..., {', '.join(map(str, core))}) for r = {r}, window = {w}, "
                             f"d = {d}")
        try:
            np.broadcast_shapes(a.shape[:a.ndim - len(core)], batch)
        except ValueError:
            raise ValueError(f"initial_state.extra[{n!r}] batch dimensions do not broadcast "
                             f"against the inputs' {batch}") from None
    if st.t < 0:
        raise ValueError(f"initial_state.t must be >= 0, got {st.t}")
    return ex, st.t


def _causal_setup(call: Call, options: dict):
    """What a causal call resolves from its options: window, bases (B, r, mb, flags),
    position bias, chunk and mode."""
    dims = call.dims
    w = _window(options["window"], 64)
    B, r, mb, flags = _options(options, dims.D, call.seed, dims.batch, w)
    pb = _bias("position_bias", options["position_bias"], w, dims.batch,
               "one entry per offset t - j = 0 .. window-1")
    chunk = call.chunk(64)
    mode = _pick_mode(call, dims.T, chunk)
    if mode == "parallel":
        chunk = max(dims.T, 1)
    return w, B, r, mb, flags, pb, chunk, mode


# Keys-are-values calls: the kernel's value sums and value ring are empty (it neither
# reads nor writes them), so no (..., w, d) output is allocated for them.
_NO_VSUMS = np.zeros((0,))
_NO_VSUMS.flags.writeable = False


@functools.lru_cache(maxsize=8)
def _no_ring(d: int, comp) -> np.ndarray:
    a = np.zeros((0, d), comp)
    a.flags.writeable = False
    return a


def _state_out(t1: int, w: int, s1, rk1, vs1, rv1, separate: bool) -> State:
    """The state after a causal call ending at position ``t1``."""
    extra = {"sums": s1, "ring_k": rk1, "fill": np.array(min(t1, w), np.int64)}
    if separate:
        extra["value_sums"] = vs1
        extra["ring_v"] = rv1
    return State(None, None, t1, "lavo", extra)


def _causal(call: Call, options: dict, separate: bool):
    """la.causal(q, x, x, kind="lavo", ...): see the module docstring and
    docs/design/lavo.md."""
    dims, comp = call.dims, call.comp
    st = call.initial_state
    if st is not None and "value_sums" in st.extra:
        separate = True  # a stream started with separate values keeps them
        if dims.E != dims.D:
            raise ValueError(f"v has E = {dims.E} features but LAVO with separate values "
                             f"needs E == d = {dims.D}")
    d, T, batch = dims.D, dims.T, dims.batch
    w, B, r, mb, flags, pb, chunk, mode = _causal_setup(call, options)
    ex, t0 = _state_in(st, batch, r, w, d, comp, separate)
    if ex is None:
        sums0 = np.zeros((r,))
        vsums0 = np.zeros((r,))
        ring_k0 = np.zeros((w, d), comp)
        ring_v0 = np.zeros((w, d), comp)
    else:
        sums0 = np.asarray(ex["sums"], np.float64)
        ring_k0 = np.asarray(ex["ring_k"]).astype(comp, copy=False)
        vsums0 = np.asarray(ex["value_sums"], np.float64) if separate else np.zeros((r,))
        ring_v0 = np.asarray(ex["ring_v"]).astype(comp, copy=False) if separate else \
            np.zeros((w, d), comp)
    v = call.v if separate else call.k
    if not separate:  # the kernel neither reads nor writes them: empty
        vsums0, ring_v0 = _NO_VSUMS, _no_ring(d, comp)
    flags |= (_FLAG_SEP if separate else 0) | (_FLAG_REC if mode == "recurrent" else 0)
    qc, kc, vc = (x.astype(comp, copy=False) for x in (call.q, call.k, v))
    o, s1, vs1, rk1, rv1 = _core._lavo_causal(
        qc, kc, vc, B.astype(comp, copy=False), pb, mb, sums0, vsums0, ring_k0, ring_v0,
        np.int64(t0), float(call.scale), np.int64(flags), np.int64(chunk),
        out=(call.kernel_out(), None, None, None, None))
    if not call.return_state:
        return call.finish(o)
    return call.finish(o, _state_out(t0 + T, w, s1, rk1, vs1, rv1, separate))


def plan(call: Call, options: dict):
    """The causal plan of repeated calls without a state (the same kernel call as
    :func:`_causal`, with the bases, biases, empty state, mode and flags resolved once);
    a call whose keys and values are one array or not, unlike this one's, takes the full
    path."""
    if not call.causal or call.initial_state is not None or call.out is not None \
            or call.comp is not call.res:
        return None
    dims, comp = call.dims, call.comp
    shared = call.shared_kv
    separate = not shared
    d, T = dims.D, dims.T
    w, B, r, mb, flags, pb, chunk, mode = _causal_setup(call, options)
    sums0 = np.zeros((r,))
    if separate:
        vsums0, ring_v0 = np.zeros((r,)), np.zeros((w, d), comp)
    else:
        vsums0, ring_v0 = _NO_VSUMS, _no_ring(d, comp)
    ring_k0 = np.zeros((w, d), comp)
    for a in (sums0, vsums0, ring_k0, ring_v0):
        a.flags.writeable = False
    flags |= (_FLAG_SEP if separate else 0) | (_FLAG_REC if mode == "recurrent" else 0)
    Bc = B.astype(comp, copy=False)
    scale, _, ch = scalar_operands(call.scale, 0.0, chunk)
    t0, fl = np.array(0, dtype=np.int64), np.array(flags, dtype=np.int64)
    want_state = call.return_state
    lavo = _core._lavo_causal

    def run(q, k, v, decay, state):
        if (k is v or same_array(k, v)) is not shared:
            return None
        o, s1, vs1, rk1, rv1 = lavo(q, k, v if separate else k, Bc, pb, mb, sums0, vsums0,
                                    ring_k0, ring_v0, t0, scale, fl, ch)
        if not want_state:
            return o
        return o, _state_out(T, w, s1, rk1, vs1, rv1, separate)
    return run


def _noncausal(call: Call, options: dict, separate: bool):
    """la.noncausal(q, x, x, kind="lavo"): docs/design/lavo.md §8 [R].  Self-attention
    (``S == T``): memory is the mean over all keys ("all") or over keys outside the window
    ("before_local"); the window is symmetric ``|t - j| <= w`` with ``position_bias`` of
    length ``2w + 1`` indexed by ``t - j + w``.  Cross-attention (``S != T``): memory only,
    ``window`` defaults to 0 and ``window > 0`` raises."""
    dims, comp = call.dims, call.comp
    d, batch = dims.D, dims.batch
    cross = dims.S != dims.T
    w = _window(options["window"], 0 if cross else 64)
    if cross and w > 0:
        raise ValueError(f"window must be 0 for cross-attention (S = {dims.S} keys != T = "
                         f"{dims.T} queries: no alignment for a local window), got {w}")
    B, r, mb, flags = _options(options, d, call.seed, batch, w)
    pb = _bias("position_bias", options["position_bias"], 2 * w + 1, batch,
               "signed offsets t - j = -window .. window")
    v = call.v if separate else call.k
    flags |= _FLAG_SEP if separate else 0
    qc, kc, vc = (x.astype(comp, copy=False) for x in (call.q, call.k, v))
    o = _core._lavo_noncausal(qc, kc, vc, B.astype(comp, copy=False), pb, mb,
                              float(call.scale), np.int64(flags))
    return call.finish(o)


def forward(call: Call, options: dict):
    separate = not call.shared_kv
    if separate and call.dims.E != call.dims.D:
        raise ValueError(f"v has E = {call.dims.E} features but LAVO with separate values "
                         f"needs E == d = {call.dims.D} (memory values are rebuilt through "
                         f"bases)")
    return (_causal if call.causal else _noncausal)(call, options, separate)


SPEC = reg.register(reg.KindSpec(
    name="lavo",
    doc="LAVO-R v1 (our reconstruction): orthogonal memory of r slots over fixed orthonormal "
        "bases (cumulative mean of B x) + a local window with relative bias, one joint "
        "softmax; keys = values.",
    paper="Zhang et al. 2023, Linear Attention via Orthogonal Memory, arXiv:2312.11135",
    fmap_q=None, fmap_k=None,
    scale=reg.pow_inv_sqrt, scale_doc="d**-0.5, multiplies the logits (tau)",
    normalize="softmax", eps=0.0,
    keywords=("seed",),
    options={"bases": None, "window": None, "position_bias": None, "memory_bias": None,
             "window_mode": "sliding", "memory_scope": "all", "combine": "joint"},
    forward=forward, plan=plan, progress=False,
    example_kwargs={"shared_kv": True, "window": 4,  # the oracle takes bases explicitly
                    "bases": lambda rng, shape: _default_bases(min(shape[-1], 64), shape[-1], 0)},
))
