"""Research plots for linattn (``pip install "linattn[plot]"``).

Every function returns a :class:`matplotlib.figure.Figure`, takes ``ax=`` (an Axes, or a
sequence of Axes where it draws several panels) and is deterministic: random draws come
from fixed seeds.  Figures are built without ``pyplot`` (no global figure registry), so
they display in notebooks through IPython's Figure formatter and never pile up in scripts;
use ``fig.savefig(path)`` to write one.  matplotlib is imported only when a function is
called, so ``import linattn`` never needs it.

- :func:`attention_matrix`: the attention matrix a kind implies, next to exact softmax.
- :func:`approximation_error`: random-feature error vs number of features, per input scale.
- :func:`state_norm`: the size of the carried state over time, streaming in pieces.
- :func:`decay_curves`: per-head decay ``lambda_h^t`` of a preset (``la.decay_slopes``).
- :func:`crossover`: benchmark time vs ``T`` curves (log-log) from benchmark CSV rows.
- :func:`implied_attention`: the matrix behind :func:`attention_matrix`, as an array.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._progress import progress as _progress

_INSTALL_HINT = 'linattn.plot needs matplotlib; install it with: pip install "linattn[plot]"'


def _mpl():
    """The ``matplotlib.figure`` module, or an ImportError naming the extra."""
    try:
        import matplotlib.figure as mfig
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return mfig


def _root_figure(ax):
    fig = ax.figure
    while getattr(fig, "figure", None) is not None and fig.figure is not fig:
        fig = fig.figure  # SubFigure -> its parent
    return fig


def _figure_axes(ax, n: int, figsize: tuple[float, float], what: str):
    """(figure, list of n Axes): new ones when ``ax`` is None, else the caller's."""
    mfig = _mpl()
    if ax is None:
        fig = mfig.Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(1, n, squeeze=False)[0]
        return fig, list(axes)
    from matplotlib.axes import Axes

    if isinstance(ax, Axes):
        axes = [ax]
    elif isinstance(ax, (np.ndarray, Sequence)):
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if not all(isinstance(a, Axes) for a in axes):
            raise TypeError(f"ax must be a matplotlib Axes or a sequence of Axes, got "
                            f"{[type(a).__name__ for a in axes]}")
    else:
        raise TypeError(f"ax must be a matplotlib Axes or a sequence of Axes, got "
                        f"{type(ax).__name__}")
    if len(axes) != n:
        raise ValueError(f"{what} draws {n} panel(s), so ax must hold {n} Axes, got "
                         f"{len(axes)}")
    return _root_figure(axes[0]), axes


# --------------------------------------------------------------------------- attention


def _kind_info(kind: str) -> dict[str, Any]:
    from ._registry import kinds

    table = kinds()
    if kind not in table:
        raise ValueError(f"kind must be one of {sorted(table)}, got {kind!r}")
    return table[kind]


def _head(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be one head of shape (T, D), got shape {a.shape}; "
                         f"select a head first, e.g. {name}[0, 0]")
    return a


def implied_attention(q, k, kind: str = "elu", causal: bool = True,
                      **kind_kwargs) -> np.ndarray:
    """The ``(T, S)`` attention matrix that ``kind`` applies to one head's values.

    Runs the kind through ``la.causal`` / ``la.noncausal`` with one-hot values
    (``v = I_S``), so entry ``[t, s]`` is the weight of key ``s`` in output ``t``: rows
    sum to 1 for ``normalize="div"`` kinds, raw weights (decays included) for
    ``normalize="none"``.  A kind whose default is ``normalize="norm"`` (TransNormer)
    is run with ``normalize="none"`` unless you pass ``normalize=``: its norm rescales
    each output vector, which is not a weight on keys.  LAVO rebuilds memory values
    through its bases (a ``D x D`` map per key rather than a number), so its entry is
    the mean diagonal ``tr(M_ts) / D`` of that map.  ``q (T, D)``, ``k (S, D)``; float64.
    """
    import linattn as la

    q = _head("q", q)
    k = _head("k", k)
    info = _kind_info(kind)
    causal = bool(causal)
    if causal and not info["causal"]:
        raise ValueError(f"kind {kind!r} has no causal form; pass causal=False")
    if not causal and not info["noncausal"]:
        raise ValueError(f"kind {kind!r} has no non-causal form; pass causal=True")
    if causal and q.shape[0] != k.shape[0]:
        raise ValueError(f"causal attention needs as many keys as queries, got T = "
                         f"{q.shape[0]} and S = {k.shape[0]}; pass causal=False")
    kw = dict(kind_kwargs)
    if info["defaults"].get("normalize") == "norm" and "normalize" not in kw:
        kw["normalize"] = "none"
    run = la.causal if causal else la.noncausal
    S, D = k.shape
    if kind == "lavo":
        # v[(j, s)] has e_j in row s: o[(j, s), t, j] = M_ts[j, j].
        V = np.zeros((D, S, S, D))
        idx = np.arange(S)
        for j in range(D):
            V[j, idx, idx, j] = 1.0
        o = run(q, k, V, kind=kind, **kw)  # (D, S, T, D)
        diag = o[np.arange(D), :, :, np.arange(D)]  # (D, S, T)
        return np.ascontiguousarray(diag.mean(axis=0).T)
    return np.asarray(run(q, k, np.eye(S), kind=kind, **kw), dtype=np.float64)


def _softmax_matrix(q, k, causal: bool, scale) -> np.ndarray:
    import linattn as la

    return np.asarray(la.softmax_attention(q, k, np.eye(k.shape[0]), causal=causal,
                                           scale=scale), dtype=np.float64)


def _show_matrix(fig, ax, A: np.ndarray, causal: bool, title: str, colorbar: bool):
    finite = A[np.isfinite(A)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    shown = A
    if causal:
        shown = np.ma.masked_where(np.triu(np.ones(A.shape, dtype=bool), 1), A)
    if lo < -1e-12 * max(abs(hi), 1.0):
        m = max(abs(lo), abs(hi)) or 1.0
        im = ax.imshow(shown, cmap=_mpl_colormap("RdBu_r").with_extremes(bad="white"),
                       vmin=-m, vmax=m, interpolation="nearest")
    else:
        from matplotlib.colors import PowerNorm

        # square-root colour scale: the few large early weights do not hide the rest
        im = ax.imshow(shown, cmap=_mpl_colormap("viridis").with_extremes(bad="white"),
                       interpolation="nearest",
                       norm=PowerNorm(0.5, vmin=0.0, vmax=hi if hi > 0 else 1.0))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key s")
    ax.set_ylabel("query t")
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=0.8)
    return im


def attention_matrix(q, k, kind: str = "elu", causal: bool = True, ax=None, *,
                     softmax_scale: float | None = None, colorbar: bool = True,
                     **kind_kwargs):
    """The implied attention matrix of ``kind`` (left) next to exact softmax (right).

    Parameters
    ----------
    q, k : array_like ``(T, D)`` and ``(S, D)``
        One head (select it first, e.g. ``q[0, h]``).
    kind : str
        Any name from ``la.kinds()``; ``kind_kwargs`` go to it (``decay=``, ``horizon=``,
        ``num_features=``, ``seed=``, ``window=``, ...).  The matrix is
        :func:`implied_attention`: one-hot values, so decays and cosFormer's cos
        re-weighting show as they act on the values.
    causal : bool
        ``la.causal`` (masked upper triangle left blank) or ``la.noncausal``.
    ax : a sequence of two Axes, optional
    softmax_scale : float, optional
        Temperature of the softmax panel (default ``D**-0.5``).
    colorbar : bool
        One colour bar per panel (adds two Axes to the figure).

    Signed matrices (``kind="linear"``, decay kinds) use a diverging map centred at 0.
    For ``normalize="div"`` kinds the softmax title reports the mean L1 distance between
    the rows (at most 2).
    """
    _mpl()
    q = _head("q", q)
    k = _head("k", k)
    A = implied_attention(q, k, kind=kind, causal=causal, **kind_kwargs)
    P = _softmax_matrix(q, k, bool(causal), softmax_scale)
    fig, axes = _figure_axes(ax, 2, (9.0, 4.0), "attention_matrix")
    info = _kind_info(kind)
    norm = kind_kwargs.get("normalize", info["defaults"].get("normalize"))
    if norm == "norm":
        norm = "none"
    detail = ", ".join(f"{n}={_short(v)}" for n, v in sorted(kind_kwargs.items()))
    title = f"{kind} (implied{', ' + detail if detail else ''})"
    if norm == "none":
        title += "\nraw weights, normalize='none'"
    _show_matrix(fig, axes[0], A, bool(causal), title, colorbar)
    stitle = "softmax (exact)"
    if norm == "div":
        err = float(np.mean(np.abs(A - P).sum(axis=-1)))
        stitle += f"\nmean row L1 vs {kind}: {err:.3g}"
    _show_matrix(fig, axes[1], P, bool(causal), stitle, colorbar)
    return fig


def _short(v) -> str:
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}" if v.ndim else f"{v.item():.3g}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return repr(v) if isinstance(v, str) else str(v)


# --------------------------------------------------------------------------- fidelity


def approximation_error(q, k, v=None, kind: str = "performer",
                        num_features=(16, 64, 256, 1024), scales=(0.25, 0.5),
                        seeds=range(4), ax=None, *, causal: bool = False,
                        metric: str = "output_error", progress: bool | None = None,
                        **options):
    """Error of a random-feature kind against exact softmax vs number of features.

    For every input scale ``c`` in ``scales`` the kind runs on ``(c q, c k, v)`` (the
    logits grow as ``c**2``, and with them the variance of the estimate) for every ``m``
    in ``num_features`` and every seed, through :func:`linattn.approximation_error`
    (whose ``metric`` is ``"output_error"``, the relative RMS error of the output, or
    ``"attention_error"``, the mean L1 error of the attention rows).  One line per scale
    (mean over seeds) with a band from the smallest to the largest seed's error; log-log
    axes.  ``v`` defaults to standard normal values drawn with seed 0.  ``options`` go to
    the kind (``features=``, ``scale=``, ...).  ``progress`` shows a tqdm bar (default:
    when installed and stderr is a terminal).
    """
    from .fidelity import approximation_error as _fidelity

    _mpl()  # fail before the sweep, not after it
    if metric not in ("output_error", "attention_error"):
        raise ValueError(f"metric must be 'output_error' or 'attention_error', got {metric!r}")
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    if v is None:
        v = np.random.default_rng(0).standard_normal(k.shape)
    ms = [int(m) for m in np.atleast_1d(num_features)]
    seeds = [int(s) for s in seeds]
    cs = [float(c) for c in np.atleast_1d(scales)]
    if not ms or not seeds or not cs:
        raise ValueError("num_features, scales and seeds must each hold at least one value")
    fig, (a,) = _figure_axes(ax, 1, (5.5, 4.0), "approximation_error")
    errs = np.zeros((len(cs), len(ms), len(seeds)))
    jobs = [(i, j) for i in range(len(cs)) for j in range(len(ms))]
    for i, j in _progress(jobs, total=len(jobs), desc=f"{kind} fidelity", enabled=progress):
        r = _fidelity(cs[i] * q, cs[i] * k, v, kind=kind, num_features=(ms[j],), seeds=seeds,
                      causal=causal, **options)
        errs[i, j] = r[metric][0]
    x = np.array(ms, dtype=np.float64)
    for i, c in enumerate(cs):
        (line,) = a.plot(x, errs[i].mean(axis=1), marker="o", label=f"input scale {c:g}")
        if len(seeds) > 1:
            a.fill_between(x, errs[i].min(axis=1), errs[i].max(axis=1),
                           color=line.get_color(), alpha=0.2, linewidth=0)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("number of features m")
    a.set_ylabel("relative RMS output error" if metric == "output_error"
                 else "mean L1 attention-row error")
    a.set_title(f"{kind}: error vs m ({len(seeds)} seed{'s' * (len(seeds) > 1)})",
                fontsize=10)
    a.legend(fontsize=8)
    a.grid(True, which="both", alpha=0.3)
    return fig


# --------------------------------------------------------------------------- streaming


def _piece_bounds(pieces, T: int) -> list[tuple[int, int]]:
    if isinstance(pieces, (int, np.integer)) and not isinstance(pieces, bool):
        n = int(pieces)
        if n < 1:
            raise ValueError(f"pieces must be >= 1, got {n}")
        edges = np.linspace(0, T, min(n, T) + 1).round().astype(int)
    else:
        lens = [int(p) for p in pieces]
        if any(p < 1 for p in lens) or sum(lens) != T:
            raise ValueError(f"pieces must be a count or positive lengths summing to T = {T}, "
                             f"got {lens}")
        edges = np.concatenate([[0], np.cumsum(lens)])
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _state_arrays(state) -> dict[str, np.ndarray]:
    """The growing parts of a state: S and z, else LAVO's coefficient sums."""
    out = {}
    if state.S is not None:
        out["S"] = np.linalg.norm(state.S.reshape(state.S.shape[:-2] + (-1,)), axis=-1)
    if state.z is not None:
        out["z"] = np.linalg.norm(state.z, axis=-1)
    if not out:
        for name in ("sums", "value_sums"):
            if name in state.extra:
                out[name] = np.linalg.norm(np.asarray(state.extra[name], dtype=np.float64),
                                           axis=-1)
    if not out:
        raise ValueError(f"state of kind {state.kind!r} holds no S, z or sums to measure")
    return out


def state_norm(q, k, v, kind: str = "elu", pieces=64, ax=None, **kw):
    """The norm of the carried state over time, streaming ``(q, k, v)`` in pieces.

    Runs ``la.causal(..., return_state=True, initial_state=previous)`` piece by piece
    (``pieces``: a count of near-equal pieces or a list of lengths summing to ``T``) and
    plots, after each piece, the Frobenius norm ``||S||`` (solid) and ``||z||`` (dashed,
    kinds with a denominator) for every head (leading index), or LAVO's coefficient
    ``sums`` / ``value_sums`` (its memory, a cumulative mean).  ``kw`` go to
    ``la.causal``; a per-token ``decay`` (``(..., T)``) is split with the pieces, and
    cosFormer gets ``horizon=T`` unless given.  Default layout only.
    """
    import linattn as la

    _mpl()
    q, k, v = (np.asarray(x) for x in (q, k, v))
    if q.ndim < 2:
        raise ValueError(f"q must have shape (..., T, D), got {q.shape}")
    if kw.get("layout", "...td") != "...td":
        raise ValueError("state_norm supports the default layout only; pass (..., T, D) arrays")
    T = q.shape[-2]
    kw = dict(kw)
    if kind == "cosformer" and kw.get("horizon") is None:
        kw["horizon"] = T
    decay = kw.pop("decay", None)
    nb = max(q.ndim, k.ndim, v.ndim) - 2
    per_token = decay is not None and np.ndim(decay) == nb + 1 and np.shape(decay)[-1] == T
    ts: list[int] = []
    series: dict[str, list[np.ndarray]] = {}
    state = None
    for a, b in _piece_bounds(pieces, T):
        d = None if decay is None else (np.asarray(decay)[..., a:b] if per_token else decay)
        _, state = la.causal(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :], kind=kind,
                             decay=d, initial_state=state, return_state=True, **kw)
        ts.append(state.t)
        for name, val in _state_arrays(state).items():
            series.setdefault(name, []).append(np.atleast_1d(val).ravel())
    fig, (a_,) = _figure_axes(ax, 1, (6.0, 4.0), "state_norm")
    t = np.array(ts)
    styles = {"S": "-", "z": "--", "sums": "-", "value_sums": "--"}
    colors = [f"C{i % 10}" for i in range(64)]
    for name, vals in series.items():
        Y = np.stack(vals)  # (pieces, heads)
        for h in range(Y.shape[1]):
            label = f"||{name}||" + (f" head {h}" if Y.shape[1] > 1 else "")
            a_.plot(t, Y[:, h], styles.get(name, "-"), color=colors[h % 64], label=label)
    a_.set_xlabel("tokens consumed t")
    a_.set_ylabel("norm")
    a_.set_title(f"{kind}: state norm over {T} tokens in {len(ts)} pieces", fontsize=10)
    if sum(len(v[0]) for v in series.values()) <= 12:
        a_.legend(fontsize=8)
    a_.grid(True, alpha=0.3)
    return fig


def decay_curves(H: int, preset: str = "tnl", ax=None, layer: int = 0, num_layers: int = 1,
                 length: int = 256):
    """Per-head decay ``lambda_h^t`` for ``t = 0..length`` of a preset (``la.decay_slopes``).

    One line per head; the legend gives each head's ``lambda_h`` and half-life
    ``ln 2 / -log lambda_h`` tokens (``inf`` for a head that never decays).
    """
    from ._draws import decay_slopes

    g = decay_slopes(H, preset, layer, num_layers)
    length = int(length)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    fig, (a,) = _figure_axes(ax, 1, (6.0, 4.0), "decay_curves")
    t = np.arange(length + 1, dtype=np.float64)
    cmap = _mpl_colormap("viridis")
    for h, gh in enumerate(g):
        half = math.log(2.0) / -gh if gh < 0 else math.inf
        a.plot(t, np.exp(gh * t), color=cmap(h / max(len(g) - 1, 1)),
               label=f"h={h}: lambda={math.exp(gh):.4g}, half-life {half:.3g}")
    a.set_ylim(0.0, 1.05)
    a.set_xlim(0, length)
    a.set_xlabel("lag t - s (tokens)")
    a.set_ylabel("lambda_h ^ (t - s)")
    where = "" if preset == "retnet" else f", layer {layer}/{num_layers}"
    a.set_title(f"decay preset {preset!r}, H={len(g)}{where}", fontsize=10)
    if len(g) <= 12:
        a.legend(fontsize=7)
    a.grid(True, alpha=0.3)
    return fig


def _mpl_colormap(name: str):
    _mpl()
    import matplotlib

    return matplotlib.colormaps[name]


# --------------------------------------------------------------------------- benchmarks


def _rows(results) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        with open(results, newline="") as f:
            return list(csv.DictReader(f))
    if isinstance(results, dict):
        raise TypeError("results must be a list of rows (dicts) or a CSV path, got one dict")
    return [dict(r) for r in results]


def crossover(results: Iterable[dict] | str | os.PathLike, ax=None, *,
              baseline: str | None = None):
    """Benchmark time vs ``T`` on log-log axes, one line per ``name``.

    ``results``: rows with keys ``name``, ``T``, ``seconds`` (optional ``threads`` and any
    extras): a list of dicts, ``csv.DictReader`` rows (strings are converted) or the path
    of a benchmark CSV (``name,T,threads,seconds,...``).  When the rows hold several
    thread counts each line is one ``(name, threads)`` pair.  Repeated ``(name, T)``
    rows are reduced to their median.  ``baseline`` names the reference series (e.g.
    ``"softmax"``): where another series of the same thread count becomes faster than it
    (log-interpolated ``T``), a marker and the crossover ``T`` are drawn.
    """
    rows = _rows(results)
    if not rows:
        raise ValueError("results holds no rows")
    for need in ("name", "T", "seconds"):
        if any(need not in r for r in rows):
            raise ValueError(f"every row needs the keys name, T and seconds; one lacks {need!r}")
    threads = sorted({str(r.get("threads", "")) for r in rows})
    by_thread = len(threads) > 1
    groups: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in rows:
        key = (str(r["name"]), str(r.get("threads", "")) if by_thread else "")
        groups.setdefault(key, {}).setdefault(float(r["T"]), []).append(float(r["seconds"]))
    fig, (a,) = _figure_axes(ax, 1, (6.0, 4.5), "crossover")
    curves = {}
    for key in sorted(groups):
        pts = groups[key]
        T = np.array(sorted(pts))
        s = np.array([float(np.median(pts[x])) for x in T])
        curves[key] = (T, s)
        label = key[0] + (f" ({key[1]} thr)" if by_thread else "")
        a.plot(T, s, marker="o", markersize=3, label=label)
    if baseline is not None:
        bases = {key: c for key, c in curves.items() if key[0] == baseline}
        if not bases:
            raise ValueError(f"baseline {baseline!r} is not a name in results; names: "
                             f"{sorted({k[0] for k in curves})}")
        for key, (T, s) in curves.items():
            if key[0] == baseline or (baseline, key[1]) not in bases:
                continue
            tx = _crossing(T, s, *bases[(baseline, key[1])])
            if tx is not None:
                y = float(np.exp(np.interp(np.log(tx), np.log(T), np.log(s))))
                a.plot([tx], [y], marker="x", color="black", markersize=8, linestyle="none")
                a.annotate(f"T={tx:.0f}", (tx, y), textcoords="offset points",
                           xytext=(4, -10), fontsize=7)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("sequence length T")
    a.set_ylabel("seconds")
    a.set_title("time vs T" + (f" (x: crossover with {baseline})" if baseline else ""),
                fontsize=10)
    a.legend(fontsize=8)
    a.grid(True, which="both", alpha=0.3)
    return fig


def _crossing(T, s, Tb, sb) -> float | None:
    """First T (log-interpolated) where series s drops below the baseline sb."""
    grid = np.array(sorted(set(T) & set(Tb)))
    if grid.size == 0:
        return None
    d = np.log(s[np.searchsorted(T, grid)]) - np.log(sb[np.searchsorted(Tb, grid)])
    if d[0] < 0:
        return None  # faster from the start: no crossover inside the range
    for i in range(1, grid.size):
        if d[i] < 0 <= d[i - 1]:
            lt0, lt1 = np.log(grid[i - 1]), np.log(grid[i])
            return float(np.exp(lt0 + (lt1 - lt0) * d[i - 1] / (d[i - 1] - d[i])))
    return None


__all__ = ["approximation_error", "attention_matrix", "crossover", "decay_curves",
           "implied_attention", "state_norm"]
