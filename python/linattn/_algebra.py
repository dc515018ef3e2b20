"""Block-state algebra: the NumPy-level primitives of the block-state scan.

A causal sequence cut into blocks ``b = 0..n-1`` is computed in three passes
(docs/design/dask.md §3, docs/design/family.md §7 at cluster scale):

1. ``transition(q_b, k_b, v_b, kind, start=p_b)``: each block's state from a zero state
   entering at absolute position ``p_b``, with its total log-decay
   ``state.extra["log_decay"]`` (kinds with decay); all blocks in parallel.
2. ``combine(first, second)``: the state after both blocks (associative), so the entering
   states ``P_{b+1} = combine(P_b, transition_b)`` are a scan of small states.
3. ``read_out(q_b, k_b, v_b, P_b, kind)``: the block's outputs from its entering state;
   all blocks in parallel.

Each kind's algebra is one entry of :data:`ALGEBRA` (kind -> ``transition``, ``combine``,
``read_out`` and ``parallel``, a predicate on the kind options telling whether a combine
exists for them).  A kind (or an option set) without a combine is computed as a
sequential chain (block ``b`` waits for block ``b - 1``'s final state).

The absolute position of a block's first token reaches the kernels through the entering
state's ``t`` (cosFormer's weights, LAVO's window, DiagAttention's blocks).

Non-causal attention has the same algebra over key blocks: ``transition(None, k_b, v_b,
kind, causal=False)`` is ``(sum_s phi(k_s) v_s^T, sum_s phi(k_s))`` for the block,
``combine`` adds (Performer rescales to the larger maximum) and ``read_out(q, None, None,
state, kind, causal=False)`` divides.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _core
from . import _draws
from . import _registry as reg
from . import _validate as val
from . import features as _features
from .state import State

LOG_DECAY = "log_decay"
MEMORY_BASES = "memory_bases"  # LAVO before_local: the bases, to project rows leaving the ring
MEMORY_WINDOW = "memory_window"  # LAVO before_local: the window mode ("sliding" | "block")
SCAN_KEYS = (LOG_DECAY, MEMORY_BASES, MEMORY_WINDOW)  # bookkeeping that strip() removes
_CLAMP = -1000.0  # kernels clamp log-decays below this (docs/design/family.md §2.3)

# Trailing (core) dimensions of each state entry; the leading ones are batch dimensions
# (broadcast against the inputs').  None: a scalar attribute of the stream.
CORE_NDIM: dict[str, int | None] = {
    "S": 2, "z": 1, "max": 0, LOG_DECAY: 0, "sums": 1, "value_sums": 1, "ring_k": 2,
    "ring_v": 2, "keys": 2, "values": 2, "fill": None, "fingerprint": None,
    "stabilizer": None, "horizon": None, "diag_block": None, "seed": None,
    MEMORY_BASES: 2, MEMORY_WINDOW: None,
}


def _drawn_extra(W: np.ndarray, options: dict) -> dict:
    """What the entry points keep of a drawn projection: its fingerprint, and the seed it
    was drawn from (a resumed call without ``seed=`` reuses it)."""
    extra = {"fingerprint": _draws.fingerprint(W)}
    if options.get("projection") is None:
        extra["seed"] = np.array(options["seed"], dtype=np.int64)
    return extra

# kinds whose features are elementwise maps in the generic core: (fmap of q and k)
_ELEMENTWISE = {"linear": reg.FMAP_IDENTITY, "elu": reg.FMAP_ELU1, "relu": reg.FMAP_RELU,
                "lightning": reg.FMAP_IDENTITY, "retnet": reg.FMAP_IDENTITY,
                "mamba2": reg.FMAP_IDENTITY}
_TN_VARIANTS = {"t2": reg.FMAP_ELU1, "t1": reg.FMAP_ELU}
_FMAP_FN = {reg.FMAP_IDENTITY: _features.identity, reg.FMAP_ELU1: _features.elu1,
            reg.FMAP_RELU: _features.relu, reg.FMAP_ELU: _features.elu}


# ------------------------------------------------------------------ helpers --

def _opts(kind: str, options: dict) -> dict:
    spec = reg.get(kind)
    return {**spec.options, **{k: v for k, v in options.items() if k in spec.options}}


def _diag_block(opts: dict) -> int | None:
    w = opts.get("diag_block")
    if w is None or w is False:
        return None
    return 64 if w is True else int(w)


def _normalize(spec: reg.KindSpec, normalize, eps, eps_mode):
    normalize = spec.normalize if normalize is None else normalize
    val.choice("normalize", normalize, reg.NORMALIZE)
    eps_mode = val.choice("eps_mode", spec.eps_mode if eps_mode is None else eps_mode,
                          reg.EPS_MODES)
    if eps is None:
        eps = 1e-8 if normalize == "norm" else spec.eps
    return normalize, val.nonneg_number("eps", eps), eps_mode


def _td(x, layout):
    return np.swapaxes(x, -3, -2) if layout == "bthd" else x


def _per_token(a: np.ndarray | None, layout: str, nb: int) -> np.ndarray | None:
    """A per-token array (decay, gate) in the ``...td`` layout: time on the last axis."""
    if a is None:
        return None
    if layout == "bthd" and a.ndim >= 2:
        return np.swapaxes(a, -1, -2)
    return a


def block_log_decay(kind: str, q, k, v, *, decay=None, layout: str = "...td",
                    **options) -> np.ndarray | None:
    """The total log-decay ``Gamma = sum_t g_t`` of a block, float64 of the batch
    dimensions' shape, or None for a kind without decay.  Values below -1000 (and
    ``-inf``, a hard reset) count as -1000, as in the kernels."""
    spec = reg.get(kind)
    opts = _opts(kind, options)
    qa, ka, va = (val.array(n, x) for n, x in (("q", q), ("k", k), ("v", v)))
    layout = val.check_layout(layout)
    if kind == "rfa" and opts.get("gate") is not None:
        dims = val.qkv_dims(qa, ka, va, layout, True)
        g = _per_token(np.asarray(opts["gate"], dtype=np.float64), layout, len(dims.batch))
        with np.errstate(divide="ignore"):
            lg = np.maximum(np.log(g), _CLAMP)
        return lg.sum(axis=-1)
    if "decay" not in spec.keywords:
        return None
    if kind == "transnormer" and _diag_block(opts) is not None:
        return None
    dims = val.qkv_dims(qa, ka, va, layout, True)
    if decay is None:
        if kind == "lightning":
            H = _heads(qa, layout)
            g = _draws.decay_slopes(max(H, 1), opts["slopes"], opts["layer"],
                                    opts["num_layers"])[:H]
            decay = g if qa.ndim >= 3 else g[0]
        elif kind == "retnet":
            H = _heads(qa, layout)
            g = _draws.decay_slopes(max(H, 1), "retnet")[:H]
            decay = g if qa.ndim >= 3 else g[0]
        else:
            return None
    a, _, per_token = val.decay(decay, dims)
    a = np.maximum(a, _CLAMP)
    if per_token:
        a = _per_token(a, layout, len(dims.batch))
    return a.sum(axis=-1)


def _heads(q: np.ndarray, layout: str) -> int:
    if layout == "bthd":
        return q.shape[-2]
    return q.shape[-3] if q.ndim >= 3 else 1


def _decay_weights(kind, q, k, v, decay, layout, options):
    """Per-token log-decay ``(..., T)`` (``...td``) for the fast transition, or None."""
    spec = reg.get(kind)
    if "decay" not in spec.keywords:
        return None
    dims = val.qkv_dims(q, k, v, layout, True)
    if decay is None:
        if kind not in ("lightning", "retnet"):
            return None
        opts = _opts(kind, options)
        H = _heads(q, layout)
        if kind == "lightning":
            g = _draws.decay_slopes(max(H, 1), opts["slopes"], opts["layer"],
                                    opts["num_layers"])[:H]
        else:
            g = _draws.decay_slopes(max(H, 1), "retnet")[:H]
        decay = g if q.ndim >= 3 else g[0]
    a, _, per_token = val.decay(decay, dims)
    if per_token:
        a = _per_token(a, layout, len(dims.batch))
    return np.maximum(a, _CLAMP)


# ------------------------------------------------------------- transition --

def _fast_ok(kind: str, opts: dict, options: dict) -> bool:
    """Kinds whose block state is computed here from key features (no outputs)."""
    if kind in _ELEMENTWISE or kind == "rfa":
        return True
    if kind == "transnormer":
        return _diag_block(opts) is None
    if kind == "performer":
        return opts["stabilizer"] == "prefix" or opts["features"] == "relu"
    if kind == "lavo":
        return True
    return kind == "cosformer" and options.get("horizon") is not None


def _lavo_memory(t: int, w: int, block: bool, before: bool) -> int:
    """How many tokens LAVO's memory holds after position ``t`` (docs/design/lavo.md §4-5):
    ``t`` for ``memory_scope="all"``, the tokens before the window otherwise."""
    if t <= 0:
        return 0
    if not before or w == 0:
        return t
    lo = ((t - 1) // w) * w + 1 if block else max(1, t - w + 1)
    return lo - 1


def _lavo_transition(q, k, v, *, start, layout, options):
    """LAVO's block state without its outputs: memory sums ``sum_j B x_j`` (float64) over
    the block's tokens that are in memory after it, and the ring of the block's last
    ``window`` rows (zeros before them).

    With ``memory_scope="before_local"`` the block's last rows enter memory only in later
    blocks, when they leave the window: :func:`combine` projects them then, so the state
    keeps the bases (``extra["memory_bases"]``) and the window mode
    (``extra["memory_window"]``) as scan bookkeeping, removed by :func:`strip`."""
    opts = _opts("lavo", options)
    separate = not (v is k or (isinstance(v, np.ndarray) and isinstance(k, np.ndarray)
                               and v.shape == k.shape and v.strides == k.strides
                               and v.dtype == k.dtype and v.__array_interface__["data"][0]
                               == k.__array_interface__["data"][0]))
    q, k, v = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    dims = val.qkv_dims(q, k, v, layout, True)
    _, comp = val.compute_dtype(q, k, v)
    d, T = dims.D, dims.T
    B = opts["bases"]
    if B is None:
        seed = options.get("seed")
        B = _draws.lavo_bases(min(d, 64), d, seed=0 if seed is None else seed)
    B = np.asarray(B).astype(comp).astype(np.float64)
    w = 64 if opts["window"] is None else int(opts["window"])
    block = opts["window_mode"] == "block"
    before = opts["memory_scope"] == "before_local"
    batch = tuple(np.broadcast_shapes(dims.batch, B.shape[:-2]))
    t1 = start + T
    n_mem = min(max(_lavo_memory(t1, w, block, before) - start, 0), T)
    extra = {}
    for name, x in (("k", k), ("v", v)) if separate else (("k", k),):
        xt = _td(x, layout).astype(comp, copy=False)
        tot = xt[..., :n_mem, :].astype(np.float64).sum(axis=-2)
        sums = np.einsum("...d,...rd->...r", tot, B)
        n = min(T, w)
        ring = np.zeros(batch + (w, d), comp)
        ring[..., w - n:, :] = xt[..., T - n:, :]
        extra["sums" if name == "k" else "value_sums"] = \
            np.ascontiguousarray(np.broadcast_to(sums, batch + (B.shape[-2],)))
        extra["ring_k" if name == "k" else "ring_v"] = ring
    extra["fill"] = np.array(min(t1, w), np.int64)
    if before and w:
        extra[MEMORY_BASES] = B
        extra[MEMORY_WINDOW] = np.array(opts["window_mode"])
    return State(None, None, t1, "lavo", extra)


def _key_features(kind, q, k, v, kt, comp, dims, start, layout, decay, options):
    """``(phi (..., T, F), extra, log_features, log-decay (..., T) or None)`` of a block's
    keys, as the kind's kernels compute them."""
    spec = reg.get(kind)
    opts = _opts(kind, options)
    scale = options.get("scale")
    D = dims.D
    if kind in _ELEMENTWISE or kind == "transnormer":
        fmap = _TN_VARIANTS[val.choice("variant", opts["variant"], _TN_VARIANTS)] \
            if kind == "transnormer" else _ELEMENTWISE[kind]
        return (_FMAP_FN[fmap](kt), {}, False,
                _decay_weights(kind, q, k, v, decay, layout, options))
    scale = spec.default_scale(D) if scale is None else val.positive_number("scale", scale)
    if kind == "cosformer":
        M = val.positive_int("horizon", options["horizon"])
        last = start + dims.T
        if opts["beyond_horizon"] == "error" and last - 1 > M:
            raise ValueError(f"horizon={M} is too small: positions 1..{last} reach a lag of "
                             f"{last - 1} > horizon, where cosFormer weights cos((pi/2) lag/M) "
                             f"turn negative; pass horizon >= {last - 1} or "
                             f"beyond_horizon='allow'")
        y = _core._cosformer_features(kt, np.int64(start), float(M), 1.0)
        return (y.reshape(y.shape[:-2] + (2 * y.shape[-1],)),
                {"horizon": np.array(M, dtype=np.int64)}, False, None)
    if kind == "rfa":
        W, _ = _draws.projection_for("rfa", D, options.get("num_features"),
                                     options.get("projection"), options.get("seed"), dtype=comp)
        phi = _features.rfa(kt, W, scale)
        g = None
        gate = opts.get("gate")
        if gate is not None:
            gate = _per_token(np.asarray(gate, dtype=np.float64), layout, len(dims.batch))
            phi = phi * (1.0 - gate)[..., None].astype(comp)
            with np.errstate(divide="ignore"):
                g = np.maximum(np.log(gate), _CLAMP)
        return phi, _drawn_extra(W, options), False, g
    # performer: the prefix stabiliser's log-features, or relu features
    features = opts["features"]
    W, _ = _draws.projection_for("performer", D, options.get("num_features"),
                                 options.get("projection"), options.get("seed"), features,
                                 dtype=comp)
    extra = {**_drawn_extra(W, options),
             "stabilizer": np.array("relu" if features == "relu" else opts["stabilizer"])}
    if features == "relu":
        return _features.performer(kt, W, "relu", scale), extra, False, None
    return _features.performer(kt, W, features, scale, log=True), extra, True, None


def _column_sums(phi: np.ndarray) -> np.ndarray:
    """``phi.sum(axis=-2)`` as a BLAS product with a ones vector (a reduction along the
    strided axis costs a third of the block's GEMM; this a tenth), accumulated like the
    GEMM of ``S``."""
    return np.matmul(np.ones(phi.shape[-2], phi.dtype), phi)


def _fast_transition(kind, q, k, v, *, start, layout, options):
    """A block's state from its key features: ``S = sum_s w_s phi(k_s) v_s^T`` with
    ``w_s = exp(G_{T-1} - G_s)`` (one GEMM; no outputs computed).  Performer's prefix
    stabiliser keeps ``S`` on the block's maximum log-feature ``mu`` (``extra["max"]``)."""
    spec = reg.get(kind)
    opts = _opts(kind, options)
    q, k, v = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    dims = val.qkv_dims(q, k, v, layout, True)
    res, comp = val.compute_dtype(q, k, v)
    if kind == "performer":
        normalize = spec.normalize if options.get("normalize") is None else \
            options["normalize"]
    else:
        normalize, _, _ = _normalize(spec, options.get("normalize"), options.get("eps"),
                                     opts.get("eps_mode"))
    kt = _td(k, layout).astype(comp, copy=False)
    vt = _td(v, layout).astype(comp, copy=False)
    if kind in _ELEMENTWISE or kind == "transnormer":
        return _kernel_transition(kind, q, k, v, kt, vt, dims, normalize, start, layout,
                                  options)
    phi, extra, logf, g = _key_features(kind, q, k, v, kt, comp, dims, start, layout,
                                        options.get("decay"), options)
    batch = tuple(np.broadcast_shapes(phi.shape[:-2], vt.shape[:-2], dims.batch))
    if logf:
        mu = phi.max(axis=(-2, -1), initial=-np.inf).astype(np.float64)
        with np.errstate(invalid="ignore"):
            phi = np.exp(phi - np.where(np.isneginf(mu), 0.0, mu)[..., None, None].astype(comp))
        extra["max"] = np.ascontiguousarray(np.broadcast_to(mu, batch))
    gamma = None
    if g is not None:
        G = np.cumsum(g, axis=-1)
        gamma = G[..., -1] if dims.T else np.zeros(G.shape[:-1])
        w = np.exp(gamma[..., None] - G).astype(comp)
        phi = phi * w[..., None]
    S = np.matmul(np.swapaxes(phi, -1, -2), vt)
    S = np.ascontiguousarray(np.broadcast_to(S, batch + S.shape[-2:]))
    z = None
    if normalize == "div":
        z = np.ascontiguousarray(np.broadcast_to(_column_sums(phi), batch + (phi.shape[-1],)))
    if gamma is not None:
        extra[LOG_DECAY] = np.asarray(gamma, np.float64)
    return State(S, z, start + dims.T, kind, extra)


def _kernel_transition(kind, q, k, v, kt, vt, dims, normalize, start, layout, options):
    """The elementwise feature maps' block state in one C call (``_core._linear_transition``:
    the chunked kernel's key features, increments and state steps without outputs, the
    state carried in float64 across chunks): ``S = sum_s exp(G_{T-1} - G_s) phi(k_s)
    v_s^T`` and ``z`` (div normalisation), in chunks of ``chunk_size`` tokens (the kernel's
    default), so the state is the one ``la.causal(..., mode="chunked")`` ends with."""
    from ._api import default_chunk

    opts = _opts(kind, options)
    fmap = _TN_VARIANTS[val.choice("variant", opts["variant"], _TN_VARIANTS)] \
        if kind == "transnormer" else _ELEMENTWISE[kind]
    g = _decay_weights(kind, q, k, v, options.get("decay"), layout, options)
    chunk = options.get("chunk_size")
    chunk = default_chunk(dims.D) if chunk is None else int(chunk)
    flags = (fmap << 4) | (reg.NORMALIZE[normalize] << 8) | (int(g is not None) << 12)
    if g is None:
        g0 = np.broadcast_to(_NO_DECAY, (dims.T,))  # stride 0 along time
    S, z = _core._linear_transition(kt, vt, g0 if g is None else g, np.int64(flags),
                                    np.int64(chunk))
    batch = tuple(np.broadcast_shapes(S.shape[:-2], dims.batch))
    extra = {}
    if g is not None:
        extra[LOG_DECAY] = np.ascontiguousarray(np.broadcast_to(g.sum(axis=-1), batch))
    S = np.ascontiguousarray(np.broadcast_to(S, batch + S.shape[-2:]))
    z = np.ascontiguousarray(np.broadcast_to(z, batch + z.shape[-1:])) \
        if normalize == "div" else None
    return State(S, z, start + dims.T, kind, extra)


_NO_DECAY = np.zeros((), np.float64)  # broadcast along time; the flags say "no decay"


def _zero_state(kind: str, q, k, v, start: int, options: dict, layout: str):
    """The zero state entering at absolute position ``start`` (None when the kind's
    outputs do not depend on positions, where ``initial_state=None`` is the zero state)."""
    if kind != "cosformer" or start == 0:
        return None
    q, k, v = val.array("q", q), val.array("k", k), val.array("v", v)
    dims = val.qkv_dims(q, k, v, val.check_layout(layout), True)
    _, comp = val.compute_dtype(q, k, v)
    spec = reg.get(kind)
    normalize = spec.normalize if options.get("normalize") is None else options["normalize"]
    F = 2 * dims.D
    horizon = options.get("horizon")
    extra = {} if horizon is None else {"horizon": np.array(int(horizon), np.int64)}
    return State(np.zeros((F, dims.E), comp),
                 np.zeros((F,), comp) if normalize == "div" else None, start, kind, extra)


def _diag_transition(kind, q, k, v, *, start, layout, options):
    """DiagAttention's state is the input's tail: the last ``min(T, t mod w)`` keys and
    values of the block (combine concatenates)."""
    opts = _opts(kind, options)
    w = _diag_block(opts)
    q, k, v = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    dims = val.qkv_dims(q, k, v, layout, True)
    _, comp = val.compute_dtype(q, k, v)
    t1 = start + dims.T
    n = min(dims.T, t1 % w)
    kt, vt = _td(k, layout), _td(v, layout)
    keys = np.ascontiguousarray(np.broadcast_to(kt[..., dims.T - n:, :], dims.batch + (n, dims.D)),
                                dtype=comp)
    values = np.ascontiguousarray(np.broadcast_to(vt[..., dims.T - n:, :],
                                                  dims.batch + (n, dims.E)), dtype=comp)
    return State(None, None, t1, kind, {"keys": keys, "values": values,
                                        "diag_block": np.array(w, np.int64)})


def transition(q, k, v, kind: str = "elu", *, start: int = 0, causal: bool = True,
               **options) -> State:
    """A block's state from a zero state: the first primitive of the block-state scan.

    ``q, k, v`` are one block (any layout and options ``la.causal`` accepts for
    ``kind``); ``start`` is the absolute position of its first token (it matters to
    cosFormer, LAVO and DiagAttention).  Returns the ``la.State`` after the block as if the
    stream had entered it with an empty state at ``start`` (``state.t = start + T``); kinds
    with decay add ``state.extra["log_decay"]``, the block's total log-decay
    ``sum_t g_t`` (float64, batch shape), which :func:`combine` needs.

    With ``causal=False`` the block is a block of keys and values (``q`` may be None) and
    the state holds ``sum_s phi(k_s) v_s^T`` and ``sum_s phi(k_s)`` (see
    :func:`read_out`).  Options as in ``la.noncausal``; ``start`` is the keys' position
    (cosFormer).
    """
    _fixed_draws(kind, options, "transition")
    if not causal:
        return _nc_transition(k, v, kind, start=start, **options)
    start = _start(start)
    spec = reg.get(kind)
    if not spec.causal_modes:
        raise ValueError(f"kind {kind!r} has no causal form; use la.noncausal")
    opts = _opts(kind, options)
    layout = options.pop("layout", "...td")
    if kind == "transnormer" and _diag_block(opts) is not None:
        return _diag_transition(kind, q, k, v, start=start, layout=layout, options=options)
    if _fast_ok(kind, opts, options) and options.get("initial_state") is None:
        # the public call validates every argument (and raises its messages)
        _validate_only(q, k, v, kind, layout, options)
        if kind == "lavo":
            return _lavo_transition(q, k, v, start=start, layout=layout, options=options)
        return _fast_transition(kind, q, k, v, start=start, layout=layout, options=options)
    from ._api import causal as _causal
    options = dict(options)
    options.pop("initial_state", None)
    options.pop("return_state", None)
    zero = _zero_state(kind, q, k, v, start, options, layout)
    _, st = _causal(q, k, v, kind, initial_state=zero, return_state=True, layout=layout,
                    **options)
    st.t = start + (st.t - (zero.t if zero is not None else 0))
    if kind == "lavo":
        w = st.extra["ring_k"].shape[-2]
        st.extra["fill"] = np.array(min(st.t, w), np.int64)
    gamma = block_log_decay(kind, q, k, v, layout=layout, **options)
    if gamma is not None:
        st.extra[LOG_DECAY] = gamma
    return st


def _fixed_draws(kind: str, options: dict, entry: str) -> None:
    """Every block must see the same random features: ``seed=None`` means fresh entropy in
    the entry points, which would give each block its own projection."""
    if kind in ("performer", "rfa") and options.get("projection") is None \
            and options.get("seed") is None:
        raise ValueError(f"{entry}: kind {kind!r} draws random features; pass seed= (or "
                         f"projection=) so that every block uses the same ones")


def _validate_only(q, k, v, kind, layout, options):
    """Run the NumPy entry point's checks on a one-token probe (its error messages), plus
    the checks that need every token (decay and gate values, cosFormer's horizon)."""
    q, k, v = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    if layout == "bthd":
        sl = (Ellipsis, slice(0, 1), slice(None), slice(None))
    else:
        sl = (Ellipsis, slice(0, 1), slice(None))
    dims = val.qkv_dims(q, k, v, layout, True)
    opts = dict(options)
    decay = opts.pop("decay", None)
    if decay is not None:
        _, _, per_token = val.decay(decay, dims)  # full check, with the true T
        if per_token:
            decay = np.asarray(decay)[..., :1, :] if layout == "bthd" else \
                np.asarray(decay)[..., :1]
    gate = opts.get("gate")
    if gate is not None and kind == "rfa":
        g = np.asarray(gate, dtype=np.float64)
        nb = len(dims.batch)
        t_ax = -2 if layout == "bthd" else -1
        if g.ndim == nb + 1 and g.shape[t_ax] == dims.T:
            val.unit_interval("gate", g)
            opts["gate"] = g[..., :1, :] if layout == "bthd" else g[..., :1]
    if dims.T == 0:
        return
    from ._api import causal as _causal
    _causal(q[sl], k[sl], v[sl], kind, decay=decay, layout=layout, **opts)


def _start(start) -> int:
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    return int(start)


# ---------------------------------------------------------------- combine --

def _exp(x) -> np.ndarray:
    return np.exp(np.asarray(x, np.float64))


def _scaled(a: np.ndarray | None, f: np.ndarray | None, core: int):
    if a is None or f is None:
        return a
    f = np.asarray(f, np.float64).reshape(np.shape(f) + (1,) * core)
    return a * f.astype(a.dtype) if a.dtype == np.float32 else a * f


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return np.add(a, b, dtype=np.result_type(a, b))


def _generic_combine(first: State, second: State) -> State:
    g2 = second.extra.get(LOG_DECAY)
    f = None if g2 is None else _exp(g2)
    S = _add(_scaled(first.S, f, 2), second.S)
    z = _add(_scaled(first.z, f, 1), second.z) if second.z is not None else None
    extra = {**first.extra, **second.extra}
    g1 = first.extra.get(LOG_DECAY)
    if g1 is not None or g2 is not None:
        extra[LOG_DECAY] = np.asarray((0.0 if g1 is None else g1) + (0.0 if g2 is None else g2),
                                      np.float64)
    return State(S, z, second.t, second.kind, extra)


def _performer_combine(first: State, second: State) -> State:
    if "max" not in second.extra or "max" not in first.extra:
        return _generic_combine(first, second)  # relu features: no maximum
    m1 = np.asarray(first.extra["max"], np.float64)
    m2 = np.asarray(second.extra["max"], np.float64)
    m = np.maximum(m1, m2)
    with np.errstate(invalid="ignore"):
        f1 = np.where(np.isneginf(m1), 0.0, np.exp(m1 - m))
        f2 = np.where(np.isneginf(m2), 0.0, np.exp(m2 - m))
    S = _add(_scaled(first.S, f1, 2), _scaled(second.S, f2, 2))
    z = _add(_scaled(first.z, f1, 1), _scaled(second.z, f2, 1)) \
        if second.z is not None else None
    extra = {**first.extra, **second.extra, "max": m}
    return State(S, z, second.t, second.kind, extra)


def _tail_rows(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """The last ``n`` rows (axis -2) of ``[a; b]`` (batch dimensions broadcast)."""
    if b.shape[-2] >= n:
        return b[..., b.shape[-2] - n:, :]
    need = n - b.shape[-2]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = a[..., a.shape[-2] - min(need, a.shape[-2]):, :]
    return np.concatenate([np.broadcast_to(a, batch + a.shape[-2:]),
                           np.broadcast_to(b, batch + b.shape[-2:])], axis=-2)


def _lavo_combine(first: State, second: State) -> State:
    """Memory sums add and the ring keeps the last ``w`` rows.  ``before_local``: the
    first state's ring rows that leave the window during the second block enter memory
    then, projected through the bases the transition kept."""
    n2 = second.t - first.t
    if n2 < 0:
        raise ValueError(f"second state (t = {second.t}) does not follow first (t = "
                         f"{first.t})")
    ex1, ex2 = first.extra, second.extra
    w = ex2["ring_k"].shape[-2]
    extra = dict(ex2)
    bases = ex2.get(MEMORY_BASES, ex1.get(MEMORY_BASES))
    lo = hi = 0
    if bases is not None:
        extra[MEMORY_BASES] = bases
        mode = str(np.asarray(ex2.get(MEMORY_WINDOW, ex1.get(MEMORY_WINDOW, "sliding"))))
        extra[MEMORY_WINDOW] = np.array(mode)
        block = mode == "block"
        t1, t2 = first.t, second.t
        # ring row i holds position t1 - (w - 1 - i); rows m(t1) < j <= min(t1, m(t2))
        # enter memory during the second block (m(t) >= t - w: they are in the ring)
        lo = _lavo_memory(t1, w, block, True) - t1 + w
        hi = min(t1, _lavo_memory(t2, w, block, True)) - t1 + w
    for name, sums in (("ring_k", "sums"), ("ring_v", "value_sums")):
        if name not in ex2:
            continue
        total = np.asarray(ex1[sums], np.float64) + np.asarray(ex2[sums], np.float64)
        if hi > lo:
            rows = np.asarray(ex1[name])[..., lo:hi, :].astype(np.float64).sum(axis=-2)
            total = total + np.einsum("...d,...rd->...r", rows, np.asarray(bases, np.float64))
        extra[sums] = total
        valid = min(n2, w)
        r2 = ex2[name][..., w - valid:, :]
        extra[name] = np.ascontiguousarray(_tail_rows(ex1[name], r2, w))
    extra["fill"] = np.array(min(second.t, w), np.int64)
    return State(None, None, second.t, second.kind, extra)


def _diag_combine(first: State, second: State) -> State:
    w = int(second.extra["diag_block"])
    c = second.t % w
    extra = dict(second.extra)
    for name in ("keys", "values"):
        extra[name] = np.ascontiguousarray(_tail_rows(first.extra[name], second.extra[name], c))
    return State(None, None, second.t, second.kind, extra)


def combine(first: State | None, second: State) -> State:
    """The state after two consecutive blocks (associative): ``second`` is a block's
    :func:`transition` (or a combination of them), ``first`` the state before it (an
    entering state, another transition, or None for the start of the stream).

    With decay: ``S = exp(Gamma_2) S_1 + S_2`` (and ``z``), log-decays add.  Performer:
    both put on the larger running maximum first.  cosFormer: sums (its weights are
    absolute-position functions).  LAVO: memory sums add, the window ring keeps the last
    ``w`` tokens (``memory_scope="before_local"``: the first ring's rows that leave the
    window during the second block are projected into memory, through the bases the
    second's transition kept).  DiagAttention: the last ``t mod w`` keys and values.
    Kinds and options without a combine (``parallel(kind, **options)`` is False) raise
    ValueError.
    """
    if not isinstance(second, State):
        raise TypeError(f"second must be a linattn.State, got {type(second).__name__}")
    if first is None:
        return second.copy()
    if not isinstance(first, State):
        raise TypeError(f"first must be a linattn.State or None, got {type(first).__name__}")
    if first.kind != second.kind:
        raise ValueError(f"cannot combine states of kinds {first.kind!r} and {second.kind!r}")
    entry = ALGEBRA.get(second.kind)
    if entry is None or entry["combine"] is None:
        raise ValueError(f"kind {second.kind!r} has no state combine")
    if second.kind == "performer" and str(np.asarray(second.extra.get("stabilizer",
                                                                       "prefix"))) == "global":
        raise ValueError("Performer with stabilizer='global' has no state combine (the "
                         "published stabiliser is not split-invariant); run the blocks "
                         "as a sequential chain")
    return entry["combine"](first, second)


# --------------------------------------------------------------- read-out --

def strip(state: State | None) -> State | None:
    """The state without the scan's bookkeeping (``extra["log_decay"]``, LAVO's
    ``extra["memory_bases"]`` and ``extra["memory_window"]``): what the
    NumPy entry points and ``la.step`` take as ``initial_state``."""
    if state is None or not any(k in state.extra for k in SCAN_KEYS):
        return state
    ex = {k: v for k, v in state.extra.items() if k not in SCAN_KEYS}
    return State(state.S, state.z, state.t, state.kind, ex)


def read_out(q, k, v, state: State | None, kind: str = "elu", *, causal: bool = True,
             return_state: bool = False, **options):
    """A block's outputs from its entering state (the carried state read out into the
    block, plus the block's own terms): ``la.causal(q, k, v, kind,
    initial_state=state, ...)`` with the scan's bookkeeping removed from ``state``.

    With ``mode="auto"`` a float32 read-out from a state entering at or past
    ``2**21`` tokens takes the chunked form (its state carried in float64: the recurrent
    form's float32 state loses a long undecayed stream's increments), for the linear
    kernel's kinds.

    With ``causal=False``: ``o_t = S^T phi(q_t) / guard(z . phi(q_t))`` from a key-block
    state (the combined :func:`transition` of every key block); ``k`` and ``v`` are
    unused and may be None, and ``start`` is the position of the block's first query
    (cosFormer).
    """
    _fixed_draws(kind, options, "read_out")
    if not causal:
        return _nc_read_out(q, state, kind, **options)
    from ._api import causal as _causal
    if _chunked_read_out(q, k, v, state, kind, options):
        options = {**options, "mode": "chunked"}
    return _causal(q, k, v, kind, initial_state=strip(state), return_state=return_state,
                   **options)


LONG_STREAM = 2**21
"""Tokens before a block from which ``read_out`` takes the chunked form (float32)."""


def _chunked_read_out(q, k, v, state, kind, options) -> bool:
    """Whether ``mode="auto"`` becomes ``"chunked"`` for a read-out from an entering state.

    The entering state of a late block of a long stream is large (an undecayed kind's
    normaliser grows like the token count: ~1.4e8 per feature after 2**27 elu tokens,
    float32 spacing 16), and the recurrent form adds each token's increment (~1) to a
    float32 state: once the increments approach the state's spacing they round with one
    bias, which grows with the block.  Measured (elu, D = 64, a 2**18-token block, float32
    against float64 from the same entering state): 3e-6 relative RMS entering at 2**20
    tokens, 1.5e-5 at 2**22, 3.5e-4 at 2**23, 4e-3 at 2**25, 1.1e-3 at 2**27.  The chunked
    kernel carries its state in float64 across chunks: 1.9e-7 at every one of them, for
    about 1.6x the recurrent form's time at E = 64 (AVX-512), so it is taken from
    :data:`LONG_STREAM` tokens on.  Float32 compute only (a float64 state computes in
    float64); the linear kernel's kinds (elementwise feature maps and TransNormer)."""
    if state is None or state.S is None or options.get("mode", "auto") != "auto":
        return False
    if int(state.t) < LONG_STREAM:
        return False
    if kind not in _ELEMENTWISE and kind != "transnormer":
        return False
    if kind == "transnormer" and _diag_block(_opts(kind, options)) is not None:
        return False
    try:
        comp = np.result_type(*(np.asarray(x).dtype for x in (q, k, v, state.S)))
    except TypeError:
        return False  # the entry point raises its own message
    return comp != np.float64


def parallel(kind: str, **options) -> bool:
    """Whether ``kind`` with these options has a state combine (the block-state scan runs
    in parallel); False: blocks run as a sequential chain."""
    entry = ALGEBRA.get(kind)
    if entry is None:
        reg.get(kind)  # raises the registry's message
        return False
    return entry["combine"] is not None and entry["parallel"](_opts(kind, options))


# ------------------------------------------------------------- non-causal --

def _nc_setup(kind: str, D: int, options: dict):
    """(feature function x, which -> phi, feature width, normalize, eps, eps_mode, shift)
    for the kinds whose key states reduce over blocks; None for the others."""
    spec = reg.get(kind)
    opts = _opts(kind, options)
    scale = options.get("scale")
    scale = spec.default_scale(D) if scale is None else val.positive_number("scale", scale)
    if kind in ("linear", "elu", "relu") or (kind == "transnormer"
                                             and _diag_block(opts) is None):
        fmap = _TN_VARIANTS[opts["variant"]] if kind == "transnormer" else _ELEMENTWISE[kind]
        fn = _FMAP_FN[fmap]

        def feats(x, which, start=0):
            return fn(x, scale) if which == "q" else fn(x)
        norm = _normalize(spec, options.get("normalize"), options.get("eps"),
                          opts.get("eps_mode"))
        return feats, norm, False
    if kind == "rfa":
        W, _ = _draws.projection_for("rfa", D, options.get("num_features"),
                                     options.get("projection"), options.get("seed"))

        def feats(x, which, start=0):
            return _features.rfa(x, W.astype(x.dtype, copy=False), scale)
        return feats, _normalize(spec, options.get("normalize"), options.get("eps"),
                                 opts.get("eps_mode")), False
    if kind == "cosformer":
        M = options.get("horizon")
        if M is None:
            return None
        M = val.positive_int("horizon", M)

        def feats(x, which, start=0):
            y = _core._cosformer_features(x, np.int64(start), float(M),
                                          float(scale if which == "q" else 1.0))
            return y.reshape(y.shape[:-2] + (2 * y.shape[-1],))
        return feats, _normalize(spec, options.get("normalize"), options.get("eps"),
                                 None), False
    if kind == "performer":
        features = opts["features"]
        if opts["stabilizer"] != "prefix" and features != "relu":
            return None
        W, _ = _draws.projection_for("performer", D, options.get("num_features"),
                                     options.get("projection"), options.get("seed"), features)
        normalize = spec.normalize if options.get("normalize") is None else \
            options["normalize"]
        val.choice("normalize", normalize, reg.NORMALIZE)
        eps = options.get("eps")
        eps = val.nonneg_number("eps", (1e-8 if normalize == "norm" else spec.eps)
                                if eps is None else eps)
        if features == "relu":
            def feats(x, which, start=0):
                return _features.performer(x, W.astype(x.dtype, copy=False), "relu", scale)
            return feats, (normalize, eps, "add"), False

        def feats(x, which, start=0):  # log-features
            return _features.performer(x, W.astype(x.dtype, copy=False), features, scale,
                                       log=True)
        return feats, (normalize, eps, "add"), True
    return None


def noncausal_reduces(kind: str, **options) -> bool:
    """Whether ``la.noncausal`` of ``kind`` splits over key blocks (a tree reduction of
    key-block states); False: each query block needs every key at once."""
    spec = reg.get(kind)
    if not spec.noncausal:
        return False
    try:
        return _nc_setup(kind, 1, options) is not None
    except (TypeError, ValueError):
        return False


def _nc_transition(k, v, kind, *, start=0, layout="...td", **options) -> State:
    k, v = val.array("k", k), val.array("v", v)
    layout = val.check_layout(layout)
    kt, vt = _td(k, layout), _td(v, layout)
    _, comp = val.compute_dtype(kt, vt)
    setup = _nc_setup(kind, kt.shape[-1], options)
    if setup is None:
        raise ValueError(f"kind {kind!r} with these options has no key-block state (each "
                         f"query needs every key); use la.noncausal on all keys")
    feats, (normalize, eps, eps_mode), logf = setup
    phi = feats(kt.astype(comp, copy=False), "k", _start(start))
    vt = vt.astype(comp, copy=False)
    extra = {}
    if logf:
        m = phi.max(axis=(-2, -1), initial=-np.inf).astype(np.float64)
        with np.errstate(invalid="ignore"):
            phi = np.exp(phi - np.where(np.isneginf(m), 0.0, m)[..., None, None].astype(comp))
        extra["max"] = m
    batch = np.broadcast_shapes(phi.shape[:-2], vt.shape[:-2])
    S = np.ascontiguousarray(np.broadcast_to(np.matmul(np.swapaxes(phi, -1, -2), vt),
                                             batch + (phi.shape[-1], vt.shape[-1])))
    z = np.ascontiguousarray(np.broadcast_to(_column_sums(phi), batch + (phi.shape[-1],)))
    if "max" in extra:
        extra["max"] = np.ascontiguousarray(np.broadcast_to(extra["max"], batch))
    return State(S, z, _start(start) + kt.shape[-2], kind, extra)


def _guard(den, eps, eps_mode):
    if eps_mode == "add":
        return den + eps
    if eps_mode == "clamp":
        return np.maximum(den, eps)
    return np.maximum(np.abs(den), eps)


def _nc_read_out(q, state: State, kind, *, layout="...td", start=0, **options):
    q = val.array("q", q)
    layout = val.check_layout(layout)
    qt = _td(q, layout)
    res, comp = val.compute_dtype(qt)
    if not isinstance(state, State):
        raise TypeError(f"state must be a linattn.State, got {type(state).__name__}")
    setup = _nc_setup(kind, qt.shape[-1], options)
    if setup is None:
        raise ValueError(f"kind {kind!r} with these options has no key-block state")
    feats, (normalize, eps, eps_mode), logf = setup
    S = state.S
    z = state.z
    cdt = np.result_type(comp, S.dtype)
    phi = feats(qt.astype(comp, copy=False), "q", _start(start)).astype(cdt, copy=False)
    shift = None
    if logf:
        nu = phi.max(axis=-1, keepdims=True).astype(np.float64)
        nu = np.where(np.isneginf(nu), 0.0, nu)
        phi = np.exp(phi - nu.astype(cdt))
        mu = np.asarray(state.extra["max"], np.float64)
        shift = nu + np.where(np.isneginf(mu), 0.0, mu)[..., None, None]  # log of num's scale
    num = np.matmul(phi, S.astype(cdt, copy=False))
    if normalize == "div":
        den = np.matmul(phi, z.astype(cdt, copy=False)[..., None])
        if shift is not None:
            with np.errstate(over="ignore"):
                o = num / (den + eps * np.exp(np.minimum(-shift, 700.0)).astype(cdt))
        else:
            o = num / _guard(den, eps, eps_mode)
    elif normalize == "none":
        o = num if shift is None else num * np.exp(shift).astype(cdt)
    else:
        rms = np.sqrt(np.mean(num * num, axis=-1, keepdims=True))
        if shift is not None:
            with np.errstate(over="ignore"):
                o = num / (rms + eps * np.exp(np.minimum(-shift, 700.0)).astype(cdt))
        else:
            o = num / (rms + eps)
    o = _td(o, layout) if layout == "bthd" else o
    return o.astype(res, copy=False)


# ---------------------------------------------------------------- batches --

def _core_of(name: str) -> int | None:
    return CORE_NDIM.get(name, None)


def slice_batch(a, core: int | None, index: tuple[slice, ...], batch: tuple[int, ...]):
    """``a`` (batch dimensions broadcast against ``batch``, then ``core`` trailing ones)
    restricted to the batch block ``index``; dimensions of size 1 stay whole."""
    if a is None or core is None:
        return a
    a = np.asarray(a)
    nb = len(batch)
    lead = a.ndim - core
    sl = []
    for i in range(lead):
        ax = nb - lead + i
        sl.append(index[ax] if ax >= 0 and a.shape[i] == batch[ax] and batch[ax] != 1
                  else slice(None))
    return a[tuple(sl)]


def slice_state(state: State | None, index: tuple[slice, ...], batch: tuple[int, ...]):
    """``state`` restricted to the batch block ``index`` (one slice per batch dimension of
    the full batch shape ``batch``); entries broadcast along a dimension stay whole."""
    if state is None:
        return None
    extra = {n: slice_batch(x, _core_of(n), index, batch) for n, x in state.extra.items()}
    return State(slice_batch(state.S, 2, index, batch), slice_batch(state.z, 1, index, batch),
                 state.t, state.kind, extra)


def join_states(grid: np.ndarray) -> State:
    """One state from the states of a grid of batch blocks (an object array with one axis
    per batch dimension): the inverse of :func:`slice_state`."""
    flat = list(grid.flat)
    first = flat[0]
    if len(flat) == 1:
        return first
    nb = grid.ndim

    def join(get, core):
        arrs = np.empty(grid.shape, dtype=object)
        for idx in np.ndindex(grid.shape):
            arrs[idx] = get(grid[idx])
        a0 = arrs.flat[0]
        if a0 is None or core is None or np.ndim(a0) - core != nb:
            return a0

        def nest(prefix):
            d = len(prefix)
            if d == nb:
                return np.asarray(arrs[prefix])
            return np.concatenate([nest(prefix + (i,)) for i in range(grid.shape[d])],
                                  axis=d)
        return nest(())
    extra = {n: join(lambda s, n=n: s.extra.get(n), _core_of(n)) for n in first.extra}
    return State(join(lambda s: s.S, 2), join(lambda s: s.z, 1), first.t, first.kind, extra)


# ---------------------------------------------------------------- registry --

def _always(opts: dict) -> bool:
    return True


ALGEBRA: dict[str, dict[str, Any]] = {}


def _entry(combine_fn: Callable | None, parallel_fn: Callable[[dict], bool] = _always):
    return {"transition": transition, "combine": combine_fn, "read_out": read_out,
            "parallel": parallel_fn}


for _name in ("linear", "elu", "relu", "lightning", "retnet", "mamba2", "rfa", "cosformer"):
    ALGEBRA[_name] = _entry(_generic_combine)
ALGEBRA["transnormer"] = _entry(
    lambda a, b: _diag_combine(a, b) if "diag_block" in b.extra else _generic_combine(a, b))
ALGEBRA["performer"] = _entry(_performer_combine,
                              lambda o: o["stabilizer"] == "prefix" or o["features"] == "relu")
# "before_local": the rows that leave the ring during a later block enter memory then,
# projected through the bases the transition keeps (docs/design/lavo.md §4-5)
ALGEBRA["lavo"] = _entry(_lavo_combine)


def _attach_slots() -> None:
    """Each kind's state algebra in its contract slots (``reg.KindSpec``)."""
    from functools import partial

    for name, entry in ALGEBRA.items():
        reg.attach(name, transition=partial(entry["transition"], kind=name),
                   combine=entry["combine"], read_out=partial(entry["read_out"], kind=name))


_attach_slots()


# ---------------------------------------------------------- selective scan --
#
# Mamba-1's S6 recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is linear in h with a
# diagonal (channel x state) decay, so a block of the time axis maps an entering state P
# to exp(A sum_t dt_t) P + h_block, h_block its final state from zero: the same
# (log-decay, state) algebra as the decay kinds, elementwise.

def sscan_dt(delta, delta_bias, delta_softplus: bool, comp) -> np.ndarray:
    """The discretisation steps ``dt (B, D, L)`` as the kernel computes them (in the
    compute dtype: ``delta + delta_bias``, then the stable softplus)."""
    dt = np.asarray(delta).astype(comp, copy=False)
    if delta_bias is not None:
        dt = dt + np.asarray(delta_bias).astype(comp, copy=False)[:, None]
    if delta_softplus:
        d64 = dt.astype(np.float64)
        dt = (np.maximum(d64, 0.0) + np.log1p(np.exp(-np.abs(d64)))).astype(comp)
    return dt


def sscan_transition(u, delta, A, B, C, delta_bias=None, delta_softplus: bool = False, *,
                     dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """A time block's ``(h, log_decay)`` for ``la.selective_scan``: ``h (B, D, N)`` the
    block's final state from a zero state (in ``dtype``, default the inputs' compute
    dtype), ``log_decay = A * sum_t dt_t`` (float64, ``(B, D, N)``)."""
    from ._sscan import selective_scan as _selective_scan

    u, delta, A = np.asarray(u), np.asarray(delta), np.asarray(A)
    arrays = [u, delta, A, np.asarray(B), np.asarray(C)]
    if delta_bias is not None:
        arrays.append(np.asarray(delta_bias))
    comp = np.dtype(dtype) if dtype is not None else val.compute_dtype(*arrays)[1]
    zero = np.zeros((u.shape[0], u.shape[1], A.shape[1]), comp)
    _, h = _selective_scan(u, delta, A, B, C, delta_bias=delta_bias,
                           delta_softplus=delta_softplus, initial_state=zero,
                           return_state=True)
    dt = sscan_dt(delta, delta_bias, delta_softplus, h.dtype)
    tot = dt.astype(np.float64).sum(axis=-1)
    g = A.astype(h.dtype).astype(np.float64)[None, :, :] * tot[:, :, None]
    return h, g


def sscan_combine(first, second):
    """``(h, log_decay)`` after two consecutive time blocks (associative):
    ``h = exp(g_2) h_1 + h_2`` in float64, ``g = g_1 + g_2``.  ``first`` may be None (the
    start) or ``(h_1, None)`` (an entering state without a log-decay)."""
    if first is None:
        return second
    h1, g1 = first
    h2, g2 = second
    h = np.exp(g2) * np.asarray(h1, np.float64) + np.asarray(h2, np.float64)
    return h, (None if g1 is None else g1 + g2)
