"""``linattn.dask``: linear attention over Dask arrays (optional extra ``linattn[dask]``).

``causal`` and ``noncausal`` take the arguments of ``la.causal`` / ``la.noncausal`` and
return a lazy ``dask.array.Array`` (chunked like ``v`` along time): nothing runs until
``.compute()``, ``da.store(...)`` or ``.to_zarr(...)``.  Sequences longer than memory
stream through the block-state scan (docs/design/dask.md §3):

1. every block's state from a zero state (``linattn.transition``), in parallel;
2. a scan of the small states (``linattn.combine``): block ``b``'s entering state;
3. every block's outputs from its entering state (``linattn.read_out``), in parallel.

Kinds or options without a state combine run the blocks as a sequential chain (block
``b`` starts from block ``b - 1``'s final state); ``scan=`` chooses.  Non-causal:
key-block states are summed by a tree reduction, then read out per query block.
``selective_scan`` is ``la.selective_scan`` (Mamba-1) over time blocks, with the same
two choices: a chain of blocks carrying the state, or the block scan of its diagonal,
linear state recursion.

Engine rules: Dask only (any scheduler: threads, processes, ``dask.distributed``); inside
a task linattn's kernels run on one thread, so a worker with ``n`` threads runs ``n``
single-threaded kernels and cores are not oversubscribed; random draws (projections,
bases) happen once, here on the client, and travel to every block; every task is a pure
function of its inputs, so a retried task returns the same result.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from typing import Any

import numpy as np

from . import _algebra as alg
from . import _draws
from . import _registry as reg
from . import _validate as val
from .state import State

DEFAULT_BLOCK = 65536
"""Tokens per block when NumPy inputs are wrapped (``block_size=`` overrides)."""

SCANS = ("auto", "parallel", "sequential")
_ARRAY_OPTIONS = {"projection": 2, "bases": 2, "position_bias": 1, "memory_bias": 1}


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised without dask
        raise ImportError("linattn.dask needs dask: pip install \"linattn[dask]\"") from exc
    return dask, da


def _is_dask(x) -> bool:
    return type(x).__module__.startswith("dask") and hasattr(x, "dask")


# ------------------------------------------------------------------ threads --

_CTL: dict = {}
_CTL_LOCK = threading.Lock()


def _controllers():
    """threadpoolctl's controllers of linattn's thread pool and the BLAS libraries (None
    without threadpoolctl)."""
    with _CTL_LOCK:
        if not _CTL:
            try:
                from threadpoolctl import ThreadpoolController

                ctl = ThreadpoolController()
                sel = ctl.select(user_api=["linattn", "blas"])
                _CTL["ctl"] = sel if sel.lib_controllers else None
            except Exception:  # noqa: BLE001 - threadpoolctl is optional
                _CTL["ctl"] = None
        return _CTL["ctl"]


_LIMIT_LOCK = threading.Lock()
_LIMIT: dict = {"depth": 0, "limiter": None, "last_exit": 0.0, "timer": None}
_RESTORE_DELAY = 0.5
"""Seconds without a running task before the thread limits are lifted (0: at once)."""


@contextlib.contextmanager
def _one_thread():
    """Single-threaded kernels in a task: linattn's thread pool and NumPy's BLAS (the
    GEMMs of the state transitions and non-causal read-outs).  Both limits are
    process-wide, so the first task that enters sets them, and they are lifted once no
    task has run for ``_RESTORE_DELAY`` seconds (tasks of a threaded scheduler overlap or
    follow each other closely: lifting and setting OpenBLAS's limit between two tasks
    wakes its spinning threads, which costs several times the task itself)."""
    ctl = _controllers()
    if ctl is None:
        yield
        return
    with _LIMIT_LOCK:
        if _LIMIT["limiter"] is None:
            _free_openblas()
            _LIMIT["limiter"] = ctl.limit(limits=1)
            _free_openblas()
        _LIMIT["depth"] += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _LIMIT["depth"] -= 1
            _LIMIT["last_exit"] = time.monotonic()
            if _LIMIT["depth"] == 0:
                if _RESTORE_DELAY <= 0:
                    _lift()
                elif _LIMIT["timer"] is None:
                    _start_timer(_RESTORE_DELAY)


def _start_timer(delay: float) -> None:
    t = threading.Timer(delay, _lift_when_idle)
    t.daemon = True
    _LIMIT["timer"] = t
    t.start()


def _free_openblas() -> None:
    """threadpoolctl lets only the first thread that sets OpenBLAS's limit (its
    "controlling thread") change it again, silently ignoring the others: the task thread
    that sets the limit is not the one that lifts it, so control is released after each
    change (and a user's later limits from any thread are not ignored)."""
    try:
        from threadpoolctl import OpenBLASController

        OpenBLASController.clear_controlling_thread(force=True)
    except (ImportError, AttributeError, TypeError):  # threadpoolctl < 3.6: no owner
        pass


def _lift() -> None:
    if _LIMIT["limiter"] is not None:
        _free_openblas()
        _LIMIT["limiter"].restore_original_limits()
        _free_openblas()
        _LIMIT["limiter"] = None


def _lift_when_idle() -> None:
    with _LIMIT_LOCK:
        _LIMIT["timer"] = None
        if _LIMIT["depth"] > 0:
            return  # the running task's exit starts the next timer
        wait = _LIMIT["last_exit"] + _RESTORE_DELAY - time.monotonic()
        if wait > 0:
            _start_timer(wait)
        else:
            _lift()


# -------------------------------------------------------------------- tasks --

def _kw(kw: dict, g, gate) -> dict:
    kw = dict(kw)
    if g is not None:
        kw["decay"] = g
    if gate is not None:
        kw["gate"] = gate
    return kw


class _QueryBlock:
    """The shape and dtype of a query block, standing for it in pass 1: a block's state
    does not depend on its queries, so the transition task does not wait for (or move
    between workers) the query block; zeros of that shape (stride 0) take its place."""

    def __init__(self, shape: tuple, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __dask_tokenize__(self):
        return ("linattn.dask._QueryBlock", self.shape, self.dtype.str)

    def array(self) -> np.ndarray:
        return np.broadcast_to(np.zeros((), self.dtype), self.shape)


def _task_transition(q, k, v, g, gate, start, kind, kw):
    if isinstance(q, _QueryBlock):
        q = q.array()
    with _one_thread():
        return alg.transition(q, k, v, kind, start=start, **_kw(kw, g, gate))


def _task_combine(first, second):
    return alg.combine(first, second)


def _task_read_out(q, k, v, g, gate, state, kind, kw):
    with _one_thread():
        return alg.read_out(q, k, v, state, kind, **_kw(kw, g, gate))


def _task_step(q, k, v, g, gate, state, kind, kw):
    with _one_thread():
        return alg.read_out(q, k, v, state, kind, return_state=True, **_kw(kw, g, gate))


def _task_start(state, offset):
    return offset + (0 if state is None else int(state.t))


def _task_join(grid_shape, *states):
    grid = np.empty(grid_shape, dtype=object)
    for i, s in enumerate(states):
        grid.flat[i] = alg.strip(s)
    return alg.join_states(grid)


def _task_slice_state(state, index, batch):
    return alg.slice_state(state, index, batch)


def _task_nc_transition(k, v, start, kind, kw):
    with _one_thread():
        return alg.transition(None, k, v, kind, start=start, causal=False, **kw)


def _task_nc_read_out(q, state, start, kind, kw):
    with _one_thread():
        return alg.read_out(q, None, None, state, kind, causal=False, start=start, **kw)


def _task_noncausal(q, k, v, kind, kw):
    from ._api import noncausal as _noncausal

    with _one_thread():
        return _noncausal(q, k, v, kind, **kw)


# --------------------------------------------------------------- validation --

def _wrap(name: str, x, t_axis: int, block: int | None):
    """A dask array of a float dtype (NumPy inputs wrapped with blocks of ``block``
    tokens along time), or the NumPy entry points' TypeError."""
    _, da = _dask()
    if _is_dask(x):
        dt = x.dtype
        if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
            raise TypeError(f"{name} must be a float32, float64 or float16 array, got dtype "
                            f"{dt}")
        if not dt.isnative:
            x = x.astype(dt.newbyteorder("="))
        return x
    a = val.array(name, x)
    chunks = list(a.shape)
    if a.ndim >= -t_axis:
        chunks[t_axis] = max(1, min(a.shape[t_axis], block or DEFAULT_BLOCK))
    return da.from_array(a, chunks=tuple(chunks))


def _probe(x, t_axis: int, size: int = 1) -> np.ndarray:
    """Zeros of ``x``'s dtype and shape with the time axis cut to ``size`` (no memory)."""
    shape = list(x.shape)
    if len(shape) >= -t_axis:
        shape[t_axis] = min(shape[t_axis], size)
    return np.broadcast_to(np.zeros((), x.dtype), tuple(shape))


_FULL_PROBE_MAX = 1 << 22


def _run_probe(fn, kind, args, kwargs, full, size):
    """The NumPy entry point on a short probe (it raises the entry point's errors).  A
    message may quote the probe's lengths: on an error the call is repeated on
    zero-stride inputs of the true shapes, which raises before any kernel runs, so the
    message quotes the true ones (skipped for inputs of more than 4 M output values)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return fn(*args, kind, **kwargs)
        except Exception:
            if size > _FULL_PROBE_MAX:
                raise
            fargs, fkw = full()
            fn(*fargs, kind, **fkw)
            raise


def _per_token_meta(shape: tuple, dims: val.Dims) -> bool:
    """The shape checks of a per-token ``decay`` (the NumPy entry point's messages); True
    for per token, False for per head."""
    nb = len(dims.batch)
    nd = len(shape)
    if nd == nb + 1:
        if dims.layout == "bthd":
            if nd < 2 or shape[-2] != dims.T:
                raise ValueError(f"per-token decay with layout='bthd' must have shape "
                                 f"(..., T={dims.T}, H), got {shape}")
            bshape = shape[:-2] + (shape[-1],)
        else:
            if shape[-1] != dims.T:
                raise ValueError(f"per-token decay must have shape (..., T={dims.T}) with one "
                                 f"more axis than the batch dimensions {dims.batch}, got "
                                 f"{shape}")
            bshape = shape[:-1]
        try:
            np.broadcast_shapes(bshape, dims.batch)
        except ValueError:
            raise ValueError(f"per-token decay of shape {shape} does not broadcast against "
                             f"the batch dimensions {dims.batch}") from None
        return True
    if nd > nb:
        raise ValueError(f"decay must be per head (broadcastable to the batch dimensions "
                         f"{dims.batch}) or per token (one more axis, of length T={dims.T}); "
                         f"got shape {shape}")
    try:
        np.broadcast_shapes(shape, dims.batch)
    except ValueError:
        raise ValueError(f"per-head decay of shape {shape} does not broadcast against the "
                         f"batch dimensions {dims.batch}") from None
    return False


def _gate_meta(shape: tuple, dims: val.Dims) -> None:
    nb = len(dims.batch)
    T_ax = -2 if dims.layout == "bthd" else -1
    if len(shape) != nb + 1 or shape[T_ax] != dims.T:
        want = f"(..., T={dims.T}, H)" if dims.layout == "bthd" else f"(..., T={dims.T})"
        raise ValueError(f"gate must be per token, shape {want} with one more axis than the "
                         f"batch dimensions {dims.batch}, got {shape}")


def _t_slice(a, t_axis: int, n: int):
    sl = [slice(None)] * a.ndim
    sl[t_axis] = slice(0, n)
    return a[tuple(sl)]


def _draw_first(kind: str, D: int, kw: dict, opts: dict) -> tuple[dict, dict]:
    """``(kw, opts)`` with the random draws made (once, here on the client); unchanged
    when the arguments are invalid, so that the NumPy entry point raises its message."""
    kw2, opts2 = dict(kw), dict(opts)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _client_draws(kind, D, kw2, opts2)
    except (TypeError, ValueError):
        return kw, opts
    return kw2, opts2


def _refuse_eager_options(kind_options: dict, finite_hint: str) -> None:
    """The NumPy entry points' options that need the values at call time."""
    if "out" in kind_options:
        raise TypeError("out= is not supported by linattn.dask: the result is a lazy dask "
                        "array; write it with dask.array.store(...) or .to_zarr(...)")
    if kind_options.pop("check_finite", False):
        raise TypeError("check_finite= is not supported by linattn.dask (values are not "
                        f"read at call time); use {finite_hint}")


def _client_draws(kind: str, D: int, kw: dict, opts: dict) -> None:
    """Projections and bases drawn once here and passed as arrays; ``seed=None`` is fresh
    entropy, as in ``la.causal``.  The states then carry the projection's fingerprint but
    not the seed: resume them with the same ``projection=`` or ``seed=``."""
    if kind in ("performer", "rfa") and kw.get("projection") is None:
        features = opts.get("features", "positive")
        seed = kw.get("seed")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
        W, _ = _draws.projection_for(kind, D, kw.get("num_features"), None, seed, features)
        kw["projection"], kw["seed"] = W, None
    elif kind == "lavo" and opts.get("bases") is None:
        seed = kw.get("seed")
        opts["bases"] = _draws.lavo_bases(min(D, 64), D, seed=0 if seed is None else seed)
        kw["seed"] = None


def _preset_decay(kind: str, q, layout: str, opts: dict):
    H = (q.shape[-2] if layout == "bthd" else (q.shape[-3] if q.ndim >= 3 else 1))
    spec = reg.get(kind)
    o = {**spec.options, **opts}
    if kind == "lightning":
        val.choice("slopes", o["slopes"], ("tnl", "fla"))
        g = _draws.decay_slopes(max(H, 1), o["slopes"], o["layer"], o["num_layers"])[:H]
    else:
        g = _draws.decay_slopes(max(H, 1), "retnet")[:H]
    return np.asarray(g if q.ndim >= 3 else g[0], dtype=np.float64)


def _cosformer_lag(M: int, max_lag: int, beyond: str, where: str) -> None:
    if beyond == "error" and max_lag > M:
        raise ValueError(f"horizon={M} is too small: {where} reach a lag of {max_lag} > "
                         f"horizon, where cosFormer weights cos((pi/2) lag/M) turn negative; "
                         f"pass horizon >= {max_lag} or beyond_horizon='allow'")


# ------------------------------------------------------------- graph layout --

class _Grid:
    """Operands padded to the output's batch dimensions, rechunked to one block grid."""

    def __init__(self, batch: tuple[int, ...], tchunks: tuple[int, ...]):
        self.batch = batch
        self.nb = len(batch)
        self.tchunks = tchunks
        self.bchunks: list[tuple[int, ...]] = [(n,) for n in batch]

    def pad(self, x, core: int):
        lead = x.ndim - core
        return x[(None,) * (self.nb - lead)] if lead < self.nb else x

    def choose_batch_chunks(self, arrays):
        for a in range(self.nb):
            for x in arrays:
                if x is not None and x.shape[a] == self.batch[a] and self.batch[a] != 1:
                    self.bchunks[a] = x.chunks[a]
                    break

    def fit(self, x, core: int, has_t: bool):
        """Rechunk: batch dimensions of full size to the grid, time to ``tchunks``, the
        feature axes to one block."""
        ch: dict[int, Any] = {}
        for a in range(self.nb):
            ch[a] = self.bchunks[a] if x.shape[a] == self.batch[a] else -1
        tail = x.ndim - self.nb
        for i in range(tail):
            ch[self.nb + i] = -1
        if has_t:
            ch[self.nb] = self.tchunks
        return x.rechunk(ch)

    def blocks(self, x):
        return None if x is None else x.to_delayed(optimize_graph=False)

    def index_of(self, x, bi: tuple[int, ...], j: int | None, tail: int):
        idx = tuple(0 if x.shape[a] == 1 else b for a, b in enumerate(bi))
        if j is not None:
            idx += (j,)
        return idx + (0,) * tail

    def batch_blocks(self):
        return list(np.ndindex(*[len(c) for c in self.bchunks]))

    def batch_slices(self, bi):
        out = []
        for a, b in enumerate(bi):
            lo = sum(self.bchunks[a][:b])
            out.append(slice(lo, lo + self.bchunks[a][b]))
        return tuple(out)

    def block_shape(self, bi):
        return tuple(self.bchunks[a][b] for a, b in enumerate(bi))


def _assemble(grid: _Grid, pieces: dict):
    """da.block of the output pieces (batch blocks x time blocks)."""
    _, da = _dask()
    nbb = [len(c) for c in grid.bchunks]

    def nest(prefix):
        d = len(prefix)
        if d == grid.nb:
            return [[pieces[prefix + (j,)]] for j in range(len(grid.tchunks))]
        return [nest(prefix + (i,)) for i in range(nbb[d])]
    if grid.nb == 0:
        return da.block([[pieces[(j,)]] for j in range(len(grid.tchunks))])
    return da.block(nest(()))


# ------------------------------------------------------------------- causal --

def causal(q, k, v, kind: str = "elu", *, mode: str = "auto", chunk_size: int | None = None,
           scale: float | None = None, normalize: str | None = None, eps: float | None = None,
           decay=None, num_features: int | None = None, projection=None, seed: int | None = None,
           horizon: int | None = None, initial_state=None, return_state: bool = False,
           layout: str = "...td", scan: str = "auto", block_size: int | None = None,
           **kind_options):
    """Causal linear attention over Dask arrays: ``la.causal`` block by block.

    Arguments, defaults, layouts (``layout="bthd"``), broadcasting, dtypes and error
    messages are those of ``la.causal``; errors are raised here, at call time, from the
    arrays' shapes and dtypes (values inside dask arrays are checked when their blocks
    run).  Returns a lazy ``dask.array.Array`` chunked like ``v`` along time and the batch
    dimensions; with ``return_state=True`` also a ``dask.delayed`` object that computes to
    the final ``la.State``.

    q, k, v : dask arrays or array_like
        NumPy inputs are wrapped with ``block_size`` tokens per block (default 65536).
        Any chunking along time (uneven, blocks shorter than the kernel's chunk, blocks of
        one token) and along the batch dimensions; the feature axes D and E are rechunked
        to one block automatically (as ``da.apply_gufunc(allow_rechunk=True)`` would), and
        q, k, decay are rechunked to v's blocks along time.
    decay : array_like or dask array, optional
        Per head, or per token (a dask array chunked along time like q is fine).
    initial_state : la.State or a Delayed one, optional
    scan : {"auto", "parallel", "sequential"}
        ``"parallel"``: the block-state scan (every block's state, a scan of small states,
        every block's outputs, all blocks at once: pass 1 computes only states, from key
        features, a quarter of a forward's flops (0.7-0.85 of its time measured), pass 3
        one forward per block);
        ``"sequential"``: a chain, block ``b`` starting from block ``b - 1``'s state (one
        forward, parallel only across batch blocks).  ``"auto"``: parallel when the kind
        and options have a state combine (``linattn.parallel(kind, **options)``).
    block_size : int, optional
        Tokens per block for NumPy inputs.

    ``out=`` is not accepted (write the lazy result with ``da.store`` or ``to_zarr``).
    Performer's ``stabilizer="global"`` is not split-invariant: its blocks run as a chain
    and equal ``la.causal`` streamed over the same blocks, not one call.
    """
    dask, da = _dask()
    _refuse_eager_options(kind_options, "la.causal(..., check_finite=True) per block")
    spec = reg.get(kind)
    if not spec.causal_modes:
        raise ValueError(f"kind {kind!r} has no causal form; use la.noncausal")
    val.choice("scan", scan, SCANS)
    if block_size is not None:
        block_size = val.positive_int("block_size", block_size)
    layout = val.check_layout(layout)
    t_axis = -3 if layout == "bthd" else -2
    same_kv = v is k
    q = _wrap("q", q, t_axis, block_size)
    k = _wrap("k", k, t_axis, block_size)
    v = k if same_kv else _wrap("v", v, t_axis, block_size)
    dims = val.qkv_dims(q, k, v, layout, causal=True)
    T = dims.T

    # decay and gate: shapes here, values in NumPy inputs here too
    per_token = False
    decay_p = None
    if decay is not None:
        if _is_dask(decay):
            if decay.dtype.kind != "f":
                raise TypeError(f"decay must be a float array, got dtype {decay.dtype}")
            per_token = _per_token_meta(tuple(decay.shape), dims)
            decay_p = _probe(decay, -2 if layout == "bthd" else -1) if per_token else \
                np.zeros(decay.shape, np.float64)
            decay = decay.astype(np.float64)
        else:
            _, _, per_token = val.decay(decay, dims)
            decay = np.asarray(decay, dtype=np.float64)
            decay_p = _t_slice(decay, -2 if layout == "bthd" else -1, 1) if per_token \
                else decay
        if kind == "mamba2" and not per_token:
            raise ValueError(f"kind 'mamba2' needs a per-token decay of shape (..., T={T}) "
                             f"(one more axis than the batch dimensions {dims.batch}), got "
                             f"shape {tuple(decay.shape)}")
    gate = kind_options.get("gate")
    gate_p = None
    if gate is not None and kind == "rfa":
        if _is_dask(gate):
            _gate_meta(tuple(gate.shape), dims)
            gate_p = np.full(_probe(gate, -2 if layout == "bthd" else -1).shape, 0.5)
            gate = gate.astype(np.float64)
        else:
            gate = np.asarray(gate, dtype=np.float64)
            _gate_meta(gate.shape, dims)
            gate_p = _t_slice(gate, -2 if layout == "bthd" else -1, 1)
            val.unit_interval("gate", gate)

    kw: dict[str, Any] = dict(mode=mode, chunk_size=chunk_size, scale=scale,
                              normalize=normalize, eps=eps, num_features=num_features,
                              projection=projection, seed=seed, horizon=horizon)
    opts = {k_: x for k_, x in kind_options.items() if k_ != "gate"}
    init_known = initial_state if not _is_dask(initial_state) else None
    empty = T == 0 or math.prod(dims.batch) == 0

    # the NumPy entry point on a one-token probe raises its own messages
    from ._api import causal as _causal

    qp = _probe(q, t_axis) if not empty else _probe(q, t_axis, T)
    kp = _probe(k, t_axis) if not empty else _probe(k, t_axis, T)
    vp = kp if same_kv else (_probe(v, t_axis) if not empty else _probe(v, t_axis, T))
    kw, opts = _draw_first(kind, dims.D, kw, opts)
    probe_kw = dict(kw, **opts)
    if gate_p is not None:
        probe_kw["gate"] = gate_p
    def full_shapes():
        fkw = dict(probe_kw)
        if gate is not None:
            fkw["gate"] = np.full(gate.shape, 0.5) if _is_dask(gate) else gate
        d = decay
        if d is not None and _is_dask(d):
            d = np.broadcast_to(np.zeros((), np.float64), d.shape)
        kf = _probe(k, t_axis, T)
        return ((_probe(q, t_axis, T), kf, kf if same_kv else _probe(v, t_axis, T)),
                dict(decay=d, initial_state=init_known, return_state=bool(return_state),
                     layout=layout, **fkw))
    probe = _run_probe(_causal, kind, (qp, kp, vp),
                       dict(decay=decay_p, initial_state=init_known,
                            return_state=bool(return_state), layout=layout, **probe_kw),
                       full_shapes, math.prod(dims.out_shape(dims.E)))
    o_p = probe[0] if return_state else probe
    res = o_p.dtype
    if kind == "cosformer":
        t0 = init_known.t if isinstance(init_known, State) else 0
        if horizon is not None:
            _cosformer_lag(int(horizon), t0 + T - 1, opts.get("beyond_horizon", "error"),
                           f"positions 1..{t0 + T}")
        else:
            kw["horizon"] = max(T, 1)  # one call's default, given to every block
    if empty:
        o = da.from_array(np.asarray(o_p))
        if return_state:
            return o, dask.delayed(probe[1])
        return o

    if decay is None and kind in ("lightning", "retnet"):
        # the preset follows the head index: drawn here for all heads, so that a block of
        # heads gets its own slopes
        decay = _preset_decay(kind, q, layout, opts)
    allowed = alg.parallel(kind, **opts)
    if scan == "parallel" and not allowed:
        raise ValueError(f"scan='parallel' needs a state combine, which kind {kind!r} with "
                         f"these options does not have; use scan='sequential' or 'auto'")
    use_parallel = allowed and scan != "sequential"
    _client_draws(kind, dims.D, kw, opts)

    # to the "...td" layout, batch dimensions padded and on one block grid
    if layout == "bthd":
        q = q.swapaxes(-3, -2)
        k = k.swapaxes(-3, -2)
        v = k if same_kv else v.swapaxes(-3, -2)
        if per_token and decay is not None:
            decay = decay.swapaxes(-1, -2) if _is_dask(decay) else np.swapaxes(decay, -1, -2)
        if gate is not None and np.ndim(gate) >= 2:
            gate = gate.swapaxes(-1, -2) if _is_dask(gate) else np.swapaxes(gate, -1, -2)
    if decay is not None and not _is_dask(decay):
        decay = da.from_array(decay, chunks=decay.shape if not per_token else
                              decay.shape[:-1] + (v.chunks[-2],))
    if gate is not None and not _is_dask(gate):
        gate = da.from_array(gate, chunks=gate.shape[:-1] + (v.chunks[-2],))
    grid = _Grid(dims.batch, v.chunks[-2])
    q, k = grid.pad(q, 2), grid.pad(k, 2)
    v = k if same_kv else grid.pad(v, 2)
    g_core = 1 if per_token else 0
    if decay is not None:
        decay = grid.pad(decay, g_core)
    if gate is not None:
        gate = grid.pad(gate, 1)
    grid.choose_batch_chunks([v, q, k, decay, gate])
    q, k = grid.fit(q, 2, True), grid.fit(k, 2, True)
    v = k if same_kv else grid.fit(v, 2, True)
    if decay is not None:
        decay = grid.fit(decay, g_core, per_token)
    if gate is not None:
        gate = grid.fit(gate, 1, True)
    Q, K, V = grid.blocks(q), grid.blocks(k), (None if same_kv else grid.blocks(v))
    G, GT = grid.blocks(decay), grid.blocks(gate)
    nt = len(grid.tchunks)
    offsets = np.concatenate([[0], np.cumsum(grid.tchunks)]).astype(int)

    delayed = dask.delayed
    pieces: dict = {}
    finals = []
    E = dims.E
    if _is_dask(initial_state):
        init_d = initial_state
    else:
        init_d = None
    for bi in grid.batch_blocks():
        index = grid.batch_slices(bi)
        bkw = dict(kw, layout="...td", **opts)
        for name, core in _ARRAY_OPTIONS.items():
            if isinstance(bkw.get(name), np.ndarray):
                bkw[name] = alg.slice_batch(bkw[name], core, index, grid.batch)
        bkw = delayed(bkw, pure=True)
        if init_d is not None:
            enter = delayed(_task_slice_state, pure=True)(init_d, index, grid.batch)
        elif initial_state is not None:
            enter = delayed(alg.slice_state(initial_state, index, grid.batch), pure=True)
        else:
            enter = None

        def blk(j, bi=bi):
            qb = Q[grid.index_of(q, bi, j, 1)]
            kb = K[grid.index_of(k, bi, j, 1)]
            vb = kb if same_kv else V[grid.index_of(v, bi, j, 1)]
            gb = None if G is None else G[grid.index_of(decay, bi, j if per_token else None,
                                                        0)]
            gtb = None if GT is None else GT[grid.index_of(gate, bi, j, 0)]
            return qb, kb, vb, gb, gtb

        bshape = grid.block_shape(bi)
        state = enter
        if use_parallel:
            deltas = []
            for j in range(nt):
                if init_d is not None:
                    start = delayed(_task_start, pure=True)(enter, int(offsets[j]))
                else:
                    start = int(offsets[j]) + (0 if initial_state is None
                                               else int(initial_state.t))
                qb, *rest = blk(j)
                iq = grid.index_of(q, bi, j, 1)
                qb = _QueryBlock([q.chunks[a][i] for a, i in enumerate(iq)], q.dtype)
                deltas.append(delayed(_task_transition, pure=True)(qb, *rest, start, kind,
                                                                    bkw))
            entering = [state]
            for j in range(nt):
                state = delayed(_task_combine, pure=True)(state, deltas[j])
                entering.append(state)
            for j in range(nt):
                o = delayed(_task_read_out, pure=True)(*blk(j), entering[j], kind, bkw)
                pieces[bi + (j,)] = da.from_delayed(o, shape=bshape + (grid.tchunks[j], E),
                                                    dtype=res)
        else:
            for j in range(nt):
                o, state = delayed(_task_step, pure=True, nout=2)(*blk(j), state, kind, bkw)
                pieces[bi + (j,)] = da.from_delayed(o, shape=bshape + (grid.tchunks[j], E),
                                                    dtype=res)
        finals.append(state)

    out = _assemble(grid, pieces)
    if layout == "bthd":
        out = out.swapaxes(-3, -2)
    if not return_state:
        return out
    shape = tuple(len(c) for c in grid.bchunks)
    final = delayed(_task_join, pure=True)(shape, *finals)
    return out, final


# --------------------------------------------------------------- noncausal --

def noncausal(q, k, v, kind: str = "elu", *, chunk_size: int | None = None,
              scale: float | None = None, normalize: str | None = None,
              eps: float | None = None, num_features: int | None = None, projection=None,
              seed: int | None = None, horizon: int | None = None, layout: str = "...td",
              block_size: int | None = None, **kind_options):
    """Non-causal linear attention (and cross-attention) over Dask arrays.

    Arguments and errors as ``la.noncausal``.  Kinds with a key-block state (linear, elu,
    relu, transnormer NormAttention, rfa, cosformer, performer with
    ``stabilizer="prefix"`` or ``features="relu"``; ``linattn.noncausal_reduces``) sum
    ``phi(K_b)^T V_b`` and ``phi(K_b)^T 1`` over key blocks by a tree reduction, then read
    every query block out in parallel.  The others (lavo, lara, ra, DiagAttention,
    Performer's global stabiliser) need every key and query position at once: each batch
    block runs as one task (lara and ra, whose random draws follow the whole batch: the
    whole call), so keys and queries of one batch block must fit in a worker's memory.
    The result is chunked like q along time; feature axes are rechunked to one block.
    """
    dask, da = _dask()
    _refuse_eager_options(kind_options, "la.noncausal(..., check_finite=True)")
    spec = reg.get(kind)
    if not spec.noncausal:
        raise ValueError(f"kind {kind!r} has no non-causal form; use la.causal")
    if "decay" in kind_options:
        raise TypeError("decay= is causal only: la.noncausal does not accept it")
    if block_size is not None:
        block_size = val.positive_int("block_size", block_size)
    layout = val.check_layout(layout)
    t_axis = -3 if layout == "bthd" else -2
    same_kv = v is k
    q = _wrap("q", q, t_axis, block_size)
    k = _wrap("k", k, t_axis, block_size)
    v = k if same_kv else _wrap("v", v, t_axis, block_size)
    dims = val.qkv_dims(q, k, v, layout, causal=False)
    T, S = dims.T, dims.S
    empty = T == 0 or math.prod(dims.batch) == 0
    kw: dict[str, Any] = dict(chunk_size=chunk_size, scale=scale, normalize=normalize,
                              eps=eps, num_features=num_features, projection=projection,
                              seed=seed, horizon=horizon)
    opts = dict(kind_options)
    from ._api import noncausal as _noncausal

    Tp = T if empty else 1
    Sp = S if empty else (Tp if S == T else Tp + 1)
    qp = _probe(q, t_axis, Tp)
    kp = _probe(k, t_axis, Sp)
    vp = kp if same_kv else _probe(v, t_axis, Sp)
    kw, opts = _draw_first(kind, dims.D, kw, opts)
    def full_shapes():
        kf = _probe(k, t_axis, S)
        return ((_probe(q, t_axis, T), kf, kf if same_kv else _probe(v, t_axis, S)),
                dict(layout=layout, **kw, **opts))
    o_p = _run_probe(_noncausal, kind, (qp, kp, vp), dict(layout=layout, **kw, **opts),
                     full_shapes, math.prod(dims.out_shape(dims.E)) + k.size)
    if kind == "cosformer":
        M = max(T, S, 1) if horizon is None else int(horizon)
        _cosformer_lag(M, max(T, S) - 1, opts.get("beyond_horizon", "error"),
                       f"query positions 1..{T} and key positions 1..{S}")
        kw["horizon"] = M
    if empty:
        return da.from_array(np.asarray(o_p))
    res = o_p.dtype
    _client_draws(kind, dims.D, kw, opts)
    if layout == "bthd":
        q = q.swapaxes(-3, -2)
        k = k.swapaxes(-3, -2)
        v = k if same_kv else v.swapaxes(-3, -2)
    tchunks = q.chunks[-2]
    grid = _Grid(dims.batch, tchunks)
    q, k = grid.pad(q, 2), grid.pad(k, 2)
    v = k if same_kv else grid.pad(v, 2)
    grid.choose_batch_chunks([q, k, v])
    reduces = alg.noncausal_reduces(kind, **dict(kw, **opts))
    whole = kind in ("lara", "ra")
    delayed = dask.delayed
    E = dims.E
    if reduces:
        q = grid.fit(q, 2, True)
        kch = grid.tchunks
        grid.tchunks = v.chunks[-2]
        k = grid.fit(k, 2, True)
        v = k if same_kv else grid.fit(v, 2, True)
        grid.tchunks = kch
    else:
        grid.tchunks = (T,)
        if whole:
            grid.bchunks = [(n,) for n in grid.batch]
        q, k = grid.fit(q, 2, True), grid.fit(k, 2, False).rechunk({grid.nb: -1})
        v = k if same_kv else grid.fit(v, 2, False).rechunk({grid.nb: -1})
    Q, K = grid.blocks(q), grid.blocks(k)
    V = K if same_kv else grid.blocks(v)
    pieces: dict = {}
    for bi in grid.batch_blocks():
        index = grid.batch_slices(bi)
        bkw = dict(kw, layout="...td", **opts)
        for name, core in _ARRAY_OPTIONS.items():
            if isinstance(bkw.get(name), np.ndarray) and not whole:
                bkw[name] = alg.slice_batch(bkw[name], core, index, grid.batch)
        bkw = delayed(bkw, pure=True)
        bshape = grid.block_shape(bi)
        if reduces:
            nk = len(v.chunks[grid.nb])
            koff = np.concatenate([[0], np.cumsum(v.chunks[grid.nb])]).astype(int)
            states = []
            for j in range(nk):
                kb = K[grid.index_of(k, bi, j, 1)]
                vb = kb if same_kv else V[grid.index_of(v, bi, j, 1)]
                states.append(delayed(_task_nc_transition, pure=True)(kb, vb, int(koff[j]),
                                                                      kind, bkw))
            while len(states) > 1:  # tree reduction
                nxt = [delayed(_task_combine, pure=True)(states[i], states[i + 1])
                       for i in range(0, len(states) - 1, 2)]
                if len(states) % 2:
                    nxt.append(states[-1])
                states = nxt
            total = states[0]
            qoff = np.concatenate([[0], np.cumsum(grid.tchunks)]).astype(int)
            for j in range(len(grid.tchunks)):
                qb = Q[grid.index_of(q, bi, j, 1)]
                o = delayed(_task_nc_read_out, pure=True)(qb, total, int(qoff[j]), kind, bkw)
                pieces[bi + (j,)] = da.from_delayed(o, shape=bshape + (grid.tchunks[j], E),
                                                    dtype=res)
        else:
            qb = Q[grid.index_of(q, bi, 0, 1)]
            kb = K[grid.index_of(k, bi, 0, 1)]
            vb = kb if same_kv else V[grid.index_of(v, bi, 0, 1)]
            o = delayed(_task_noncausal, pure=True)(qb, kb, vb, kind, bkw)
            pieces[bi + (0,)] = da.from_delayed(o, shape=bshape + (T, E), dtype=res)
    out = _assemble(grid, pieces)
    if not reduces:
        out = out.rechunk({grid.nb: tchunks})
    if layout == "bthd":
        out = out.swapaxes(-3, -2)
    return out


# ---------------------------------------------------------------- selective scan --

def _task_ss_step(u, delta, A, B, C, D, z, bias, state, gsl, softplus):
    from ._sscan import selective_scan as _selective_scan

    B, C = _groups(B, gsl[0]), _groups(C, gsl[1])
    with _one_thread():
        return _selective_scan(u, delta, A, B, C, D, z, bias, softplus, state, True)


def _task_ss_transition(u, delta, A, B, C, bias, gsl, softplus, comp):
    B, C = _groups(B, gsl[0]), _groups(C, gsl[1])
    with _one_thread():
        return alg.sscan_transition(u, delta, A, B, C, bias, softplus, dtype=comp)


def _task_ss_combine(first, second):
    return alg.sscan_combine(first, second)


def _task_ss_read_out(u, delta, A, B, C, D, z, bias, state, gsl, softplus, comp):
    from ._sscan import selective_scan as _selective_scan

    B, C = _groups(B, gsl[0]), _groups(C, gsl[1])
    h0 = None if state is None else np.asarray(state[0]).astype(comp)
    with _one_thread():
        return _selective_scan(u, delta, A, B, C, D, z, bias, softplus, h0, False)


def _task_ss_final(state, comp):
    return np.asarray(state[0]).astype(comp)


def _task_ss_entering(h):
    return (h, None)


def _groups(X, gsl):
    """The groups of a grouped ``B`` / ``C`` ``(B, G, N, L)`` that a block of channels
    uses (``gsl`` a slice of groups; None: X as it is)."""
    return X if gsl is None or X is None else X[:, gsl]


def _ss_time_probe(x, n: int):
    """Zeros of ``x``'s dtype and shape with the last (time) axis cut to ``n``."""
    shape = list(x.shape)
    if shape:
        shape[-1] = min(shape[-1], n)
    return np.broadcast_to(np.zeros((), x.dtype), tuple(shape))


def _ss_zeros(x):
    return np.broadcast_to(np.zeros((), x.dtype), tuple(x.shape))


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_state=False, *, scan: str = "auto",
                   block_size: int | None = None, check_finite: bool = False):
    """Mamba-1's selective scan (``la.selective_scan``) over Dask arrays chunked along time.

    Arguments, shapes ``(B, D, L)`` (channel first, time last), dtypes and error messages
    are those of ``la.selective_scan``; errors are raised here, at call time, from the
    shapes and dtypes (and from the values of NumPy ``A``; the values of a dask ``A``
    are checked when its blocks run).  Returns a lazy ``dask.array.Array`` ``(B, D, L)``
    chunked like ``u``; with ``return_state=True`` also the last state ``(B, D, N)`` as a
    lazy dask array.

    u, delta, z : dask arrays or array_like ``(B, D, L)``
        Any chunking along time (uneven, blocks of one token) and along batch and
        channels; ``delta``, ``z`` and time-varying ``B``, ``C`` are rechunked to ``u``'s
        blocks (``N`` and groups to one block).  NumPy inputs are wrapped with
        ``block_size`` tokens per block (default 65536).  Channels are independent: blocks
        of channels run in parallel with no extra work.  With grouped ``B`` / ``C``
        ``(B, G, N, L)`` a block of channels must cover whole groups, otherwise the
        channel axis is rechunked to one block.
    A, D, delta_bias, initial_state, time-invariant B, C : NumPy or dask arrays.
    scan : {"auto", "parallel", "sequential"}
        The state recursion is linear in ``h`` with a diagonal decay, so time blocks
        combine: ``"parallel"`` computes every block's final state from zero and its
        log-decay ``A sum_t dt_t`` (all blocks at once), scans the small ``(B, D, N)``
        states (``h = exp(g_2) h_1 + h_2``, float64), then every block's outputs from its
        entering state (all at once): two scans of work, every block in parallel.
        ``"sequential"``: a chain, block ``b`` starting from block ``b - 1``'s state (one
        scan of work, parallel across batch and channel blocks).  ``"auto"``: parallel
        when batch and channels are one block (the chain would run one block at a time),
        sequential otherwise.
    check_finite : not supported (values are not read at call time).
    """
    dask, da = _dask()
    if check_finite:
        raise TypeError("check_finite= is not supported by linattn.dask (values are not "
                        "read at call time); use la.selective_scan(..., check_finite=True) "
                        "per block")
    val.choice("scan", scan, SCANS)
    if block_size is not None:
        block_size = val.positive_int("block_size", block_size)
    from ._sscan import selective_scan as _selective_scan

    def arr(x):
        return None if x is None else (x if _is_dask(x) else np.asarray(x))
    u, delta, A, B, C = (arr(x) for x in (u, delta, A, B, C))
    D, z, delta_bias, initial_state = (arr(x) for x in (D, z, delta_bias, initial_state))
    L = u.shape[-1] if u.ndim else 0
    timed = {"u": u, "delta": delta, "z": z}
    for name, X in (("B", B), ("C", C)):
        if X.ndim >= 3:
            timed[name] = X
    small = {"A": A, "D": D, "delta_bias": delta_bias, "initial_state": initial_state}
    if B.ndim < 3:
        small["B"] = B
    if C.ndim < 3:
        small["C"] = C

    def probes(n):
        p = {k_: None if x is None else (_ss_time_probe(x, n) if n is not None else
                                          _ss_zeros(x)) for k_, x in timed.items()}
        for k_, x in small.items():
            p[k_] = None if x is None else (_ss_zeros(x) if _is_dask(x) else x)
        return ((p["u"], p["delta"], p["A"], p["B"], p["C"]),
                dict(D=p["D"], z=p["z"], delta_bias=p["delta_bias"],
                     delta_softplus=delta_softplus, initial_state=p["initial_state"],
                     return_state=True))
    lengths = {x.shape[-1] for x in timed.values() if x is not None and x.ndim}
    size = math.prod(u.shape) if u.ndim else 0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if len(lengths) > 1:  # raises the entry point's message before any scan runs
            fa, fk = probes(None)
            _selective_scan(*fa, **fk)
        try:
            pa, pk = probes(1)
            o_p, h_p = _selective_scan(*pa, **pk)
        except Exception:
            if size > _FULL_PROBE_MAX:
                raise
            fa, fk = probes(None)
            _selective_scan(*fa, **fk)
            raise
    res, comp = o_p.dtype, h_p.dtype
    Bb, Dc = u.shape[0], u.shape[1]
    N = A.shape[1]

    def lazy(x, chunks):
        if x is None:
            return None
        return x.rechunk(chunks) if _is_dask(x) else da.from_array(x, chunks=chunks)

    if L == 0 or Bb == 0 or Dc == 0:
        out = da.zeros((Bb, Dc, L), dtype=res)
        if not return_state:
            return out
        st = da.zeros((Bb, Dc, N), dtype=comp) if initial_state is None else \
            lazy(initial_state, initial_state.shape).astype(comp)
        return out, st

    # the block grid: u's chunks (NumPy u: one block of batch and channels)
    if not _is_dask(u):
        u = da.from_array(u, chunks=(-1, -1, max(1, min(L, block_size or DEFAULT_BLOCK))))
    bch, cch, lch = u.chunks
    cuts = np.concatenate([[0], np.cumsum(cch)]).astype(int)
    per = [Dc // X.shape[1] for X in (B, C) if X.ndim == 4]
    if any(c % p for c in cuts for p in per):
        cch = (Dc,)
        cuts = np.array([0, Dc])
    u = u.rechunk((bch, cch, lch))
    delta = lazy(delta, (bch, cch, lch))
    z = lazy(z, (bch, cch, lch))

    def fit_bc(X):
        if X.ndim == 2:
            return lazy(X, (cch, -1))
        return lazy(X, (bch,) + (-1,) * (X.ndim - 2) + (lch,))
    B, C = fit_bc(B), fit_bc(C)
    A = lazy(A, (cch, -1))
    D = lazy(D, (cch,))
    delta_bias = lazy(delta_bias, (cch,))
    initial_state = lazy(initial_state, (bch, cch, -1))

    def blocks(x):
        return None if x is None else x.to_delayed(optimize_graph=False)
    U, DL, Z = blocks(u), blocks(delta), blocks(z)
    BD, CD = blocks(B), blocks(C)
    AD, DD, BiD, H0 = blocks(A), blocks(D), blocks(delta_bias), blocks(initial_state)
    nt = len(lch)
    single = len(bch) == 1 and len(cch) == 1
    use_parallel = scan == "parallel" or (scan == "auto" and single and nt > 1)
    delayed = dask.delayed
    pieces: dict = {}
    finals: dict = {}
    for bi in range(len(bch)):
        for ci in range(len(cch)):
            c0, c1 = int(cuts[ci]), int(cuts[ci + 1])

            def gsl(X):
                if X.ndim != 4:
                    return None
                p = Dc // X.shape[1]
                return slice(c0 // p, c1 // p)
            gs = (gsl(B), gsl(C))

            def bc(XD, X, j, bi=bi, ci=ci):
                if X.ndim == 2:
                    return XD[ci, 0]
                return XD[(bi,) + (0,) * (X.ndim - 2) + (j,)]

            def blk(j, bi=bi, ci=ci):
                return (U[bi, ci, j], DL[bi, ci, j], AD[ci, 0], bc(BD, B, j), bc(CD, C, j),
                        None if DD is None else DD[ci], None if Z is None else Z[bi, ci, j],
                        None if BiD is None else BiD[ci])
            enter = None if H0 is None else H0[bi, ci, 0]
            shape = (bch[bi], c1 - c0)
            if use_parallel:
                state = None if enter is None else delayed(_task_ss_entering, pure=True)(enter)
                entering = [state]
                for j in range(nt):
                    uj, dj, aj, bj, cj, _, _, bsj = blk(j)
                    d = delayed(_task_ss_transition, pure=True, nout=2)(
                        uj, dj, aj, bj, cj, bsj, gs, bool(delta_softplus), comp)
                    state = delayed(_task_ss_combine, pure=True)(state, d)
                    entering.append(state)
                for j in range(nt):
                    o = delayed(_task_ss_read_out, pure=True)(*blk(j), entering[j], gs,
                                                              bool(delta_softplus), comp)
                    pieces[bi, ci, j] = da.from_delayed(o, shape=shape + (lch[j],), dtype=res)
                final = delayed(_task_ss_final, pure=True)(state, comp)
            else:
                state = enter
                for j in range(nt):
                    o, state = delayed(_task_ss_step, pure=True, nout=2)(
                        *blk(j), state, gs, bool(delta_softplus))
                    pieces[bi, ci, j] = da.from_delayed(o, shape=shape + (lch[j],), dtype=res)
                final = state
            finals[bi, ci] = da.from_delayed(final, shape=shape + (N,), dtype=comp)
    out = da.block([[[pieces[bi, ci, j] for j in range(nt)] for ci in range(len(cch))]
                    for bi in range(len(bch))])
    if not return_state:
        return out
    st = da.block([[[finals[bi, ci]] for ci in range(len(cch))] for bi in range(len(bch))])
    return out, st


__all__ = ["DEFAULT_BLOCK", "SCANS", "causal", "noncausal", "selective_scan"]
