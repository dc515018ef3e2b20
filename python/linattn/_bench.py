"""Benchmark harness behind ``python -m linattn bench`` and ``benchmarks/run.py``.

``main(argv, entries=None, parity=None)`` times a registry of entries for threads 1 and 2,
prints a table, writes ``results.csv`` and PNG plots, and runs the extra measurements of
docs/design/performance.md §3 (decode step, float64/float32, long-sequence scaling with peak
RSS).  ``--roofline`` instead reports every kernel figure as a fraction of this machine's
limits measured in the same run, per ISA path (:func:`roofline`).
Without ``entries`` it uses :func:`linattn_entries` (linattn kinds, NumPy references and
the ``np.matmul`` baseline); ``benchmarks/registry.py`` adds the torch peers.

Method (docs/design/performance.md §4): warm up, median of ``repeat`` (>= 5) runs with min-max,
threads pinned for linattn (``la.set_num_threads``), NumPy's BLAS (``threadpoolctl``) and
torch (``torch.set_num_threads``); every ratio is taken inside one run.
Not imported by ``linattn``; needs only NumPy (threadpoolctl, matplotlib, tqdm optional).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Iterable

import numpy as np

import linattn as la

D = E = 64
BH = 8
CHUNK = 64
TABLE_T = (512, 2048, 8192)
SWEEP_T = tuple(2 ** i for i in range(7, 15))  # 128 ... 16384
QUICK_T = (512, 2048)


@dataclasses.dataclass
class Entry:
    """One benchmarked callable.

    ``make(T, BH, dtype)`` builds inputs and returns a zero-argument callable (setup is not
    timed); ``flops(T, BH)`` gives the executed flop count (None: no GFLOP/s column);
    ``shapes`` the sequence lengths of a full run (``quick`` those of ``--quick``);
    ``heads_timed``: above ``full_heads_max_T`` only that many heads are timed and the time
    is multiplied by ``BH / heads_timed`` (for slow references).
    """

    name: str
    make: Callable[[int, int, type], Callable[[], object]]
    flops: Callable[[int, int], float] | None
    shapes: tuple[int, ...]
    quick: tuple[int, ...] = ()
    group: str = "linattn"
    full_heads_max_T: int | None = None
    heads_timed: int = 1
    note: str = ""


# ------------------------------------------------------------------- inputs --

def qkv(T: int, bh: int = BH, d: int = D, e: int = E, dtype=np.float32, seed: int = 0):
    """Inputs of the benchmarks: ``(bh, T, d)`` q, k and ``(bh, T, e)`` v, N(0, 0.25)."""
    rng = np.random.default_rng(seed)
    q = (0.5 * rng.standard_normal((bh, T, d), dtype=np.float32)).astype(dtype)
    k = (0.5 * rng.standard_normal((bh, T, d), dtype=np.float32)).astype(dtype)
    v = rng.standard_normal((bh, T, e), dtype=np.float32).astype(dtype)
    return q, k, v


def flops_recurrent(F: int = D, Ev: int = E, extra: float = 0.0):
    return lambda T, bh: bh * T * (4 * F * Ev + extra)


def flops_chunked(F: int = D, Ev: int = E, C: int = CHUNK, extra: float = 0.0):
    """Executed flops of the dense chunked form, docs/design/family.md §5."""
    return lambda T, bh: bh * T * (4 * F * Ev + 2 * C * (F + Ev) + extra)


def flops_quadratic(F: int = D, Ev: int = E):
    """Useful flops of causal quadratic attention (lower triangle of QK^T and PV)."""
    return lambda T, bh: bh * T * T * (F + Ev)


def elu1(x):
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))).astype(x.dtype, copy=False)


def numpy_quadratic(fq, fk, v, eps=1e-6):
    """NumPy reference a user would write: masked ``tril(QK^T) V`` with the normaliser."""
    A = np.tril(fq @ np.swapaxes(fk, -1, -2))
    return (A @ v) / (A.sum(-1, keepdims=True) + eps)


def numpy_cumsum(fq, fk, v, eps=1e-6):
    """NumPy reference: cumulative sum of outer products (O(T D E) memory)."""
    S = np.cumsum(np.einsum("...td,...te->...tde", fk, v), axis=-3)
    z = np.cumsum(fk, axis=-2)
    return np.einsum("...td,...tde->...te", fq, S) / (
        np.einsum("...td,...td->...t", fq, z)[..., None] + eps)


def linattn_entries() -> list[Entry]:
    """linattn kinds and modes, NumPy references; D = E = 64 (Mamba-2: N = 128, P = 64)."""
    full = tuple(sorted(set(TABLE_T) | set(SWEEP_T)))
    table = TABLE_T

    def causal(kind, mode="auto", **kw):
        def make(T, bh, dtype):
            q, k, v = qkv(T, bh, dtype=dtype)
            return lambda: la.causal(q, k, v, kind=kind, mode=mode, **kw)
        return make

    def mamba2(T, bh, dtype):
        rng = np.random.default_rng(1)
        C = (0.3 * rng.standard_normal((bh, T, 128), dtype=np.float32)).astype(dtype)
        B = (0.3 * rng.standard_normal((bh, T, 128), dtype=np.float32)).astype(dtype)
        x = rng.standard_normal((bh, T, 64), dtype=np.float32).astype(dtype)
        g = -0.1 * np.abs(rng.standard_normal((bh, T)))
        return lambda: la.causal(C, B, x, kind="mamba2", decay=g)

    def softmax(T, bh, dtype):
        q, k, v = qkv(T, bh, dtype=dtype)
        return lambda: la.softmax_attention(q, k, v, causal=True)

    def np_ref(fn):
        def make(T, bh, dtype):
            q, k, v = qkv(T, bh, dtype=dtype)
            return lambda: fn(elu1(q), elu1(k), v)
        return make

    m = 256
    perf_extra = 4 * D * m  # q and k feature maps, 2 d m flops each
    return [
        Entry("la elu chunked", causal("elu", "chunked"), flops_chunked(), full, QUICK_T + (8192,)),
        Entry("la elu recurrent", causal("elu", "recurrent"), flops_recurrent(), full,
              QUICK_T + (8192,)),
        Entry("la elu parallel", causal("elu", "parallel"), flops_quadratic(),
              tuple(t for t in full if t <= 8192), QUICK_T),
        Entry("la performer m256 chunked",
              causal("performer", "chunked", num_features=m, seed=0),
              flops_chunked(m, E, extra=perf_extra), table, (2048,)),
        Entry("la performer m256 recurrent",
              causal("performer", "recurrent", num_features=m, seed=0),
              flops_recurrent(m, E, extra=perf_extra), table, (2048,)),
        Entry("la lightning", causal("lightning"), flops_chunked(), table, (2048,)),
        Entry("la mamba2 N128", mamba2, flops_chunked(128, 64), table, (2048,)),
        Entry("la cosformer", causal("cosformer"), flops_chunked(2 * D, E), table, (2048,)),
        Entry("la lavo", causal("lavo"), None, table, (2048,)),
        Entry("la softmax_attention", softmax, flops_quadratic(),
              tuple(t for t in full if t <= 8192), QUICK_T, group="softmax"),
        Entry("numpy quadratic tril(QK^T)V", np_ref(numpy_quadratic), None,
              tuple(t for t in full if t <= 8192), (512,), group="reference",
              full_heads_max_T=2048, heads_timed=1, note="float32; 1 head x B*H above T=2048"),
        Entry("numpy cumsum outer", np_ref(numpy_cumsum), None, (512, 2048, 8192), (512,),
              group="reference", full_heads_max_T=2048, heads_timed=1,
              note="float32; 1 head x B*H above T=2048"),
    ]


# ------------------------------------------------------------------- timing --

def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1):
    """(median, min, max) seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


def _numpy_blas_controllers():
    """threadpoolctl controllers of BLAS libraries other than linattn's own (linattn keeps
    its BLAS single-threaded and threads over heads itself)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    ctl = ThreadpoolController()
    return [c for c in ctl.lib_controllers
            if c.user_api == "blas" and "linattn" not in (c.filepath or "")]


@contextlib.contextmanager
def threads(n: int):
    """Pin linattn, NumPy's BLAS and (if imported) torch to ``n`` threads."""
    old_la = la.get_num_threads()
    la.set_num_threads(n)
    ctls = _numpy_blas_controllers()
    olds = [c.num_threads for c in ctls]
    for c in ctls:
        c.set_num_threads(n)
    torch = sys.modules.get("torch")
    old_t = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        la.set_num_threads(old_la)
        for c, o in zip(ctls, olds):
            c.set_num_threads(o)
        if torch is not None:
            torch.set_num_threads(old_t)


def matmul_rate(repeat: int = 7) -> float:
    """Same-run ``np.matmul`` float32 1024^3 rate in GFLOP/s (current thread setting)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    b = a.copy()
    t, _, _ = median_time(lambda: a @ b, repeat, warmup=2)
    return 2 * 1024 ** 3 / t / 1e9


def _progress(it: Iterable, total: int, desc: str):
    if not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc=desc, leave=False)


# --------------------------------------------------------------- environment --

def environment() -> dict:
    """Versions, CPU, OpenBLAS core types of linattn and NumPy, relevant variables."""
    info = la.info()
    from ._tuning import cpu_model

    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "linattn": info["version"],
        "numpy": np.__version__,
        "linattn_blas": info["blas"],
        "linattn_blas_corename": info["blas_corename"],
        "simd": info["simd"],
        "simd_cpu": info.get("simd_cpu", info["simd"]),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "<unset>"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "<unset>"),
    }
    try:
        from threadpoolctl import threadpool_info
        for d in threadpool_info():
            if d.get("user_api") == "blas" and "linattn" not in d.get("filepath", ""):
                env["numpy_blas"] = f"{d.get('internal_api')} {d.get('version')}"
                env["numpy_blas_corename"] = d.get("architecture")
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
    return env


# ---------------------------------------------------------------------- run --

@dataclasses.dataclass
class Row:
    name: str
    T: int
    threads: int
    seconds: float
    min: float
    max: float
    gflops: float
    ratio_to_matmul: float
    group: str = ""


def run_entries(entries: list[Entry], thread_counts, quick: bool, repeat: int,
                sweep: bool, budget_s: float) -> tuple[list[Row], dict[int, float]]:
    rows: list[Row] = []
    rates: dict[int, float] = {}
    for n in thread_counts:
        with threads(n):
            rates[n] = mm = matmul_rate()
            rows.append(Row("np.matmul f32 1024^3", 1024, n, 2 * 1024 ** 3 / mm / 1e9,
                            float("nan"), float("nan"), mm, 1.0, "baseline"))
            jobs = [(e, T) for e in entries for T in (e.quick if quick else
                                                     (e.shapes if sweep else
                                                      tuple(t for t in e.shapes
                                                            if t in TABLE_T)))]
            slow: dict[str, float] = {}
            for e, T in _progress(jobs, len(jobs), f"threads={n}"):
                # skip larger T once a single call of this entry exceeded the budget
                if e.name in slow and T > slow[e.name]:
                    continue
                bh_t = BH
                if e.full_heads_max_T is not None and T > e.full_heads_max_T:
                    bh_t = e.heads_timed
                try:
                    fn = e.make(T, bh_t, np.float32)
                    fn()
                    t0 = time.perf_counter()
                    fn()
                    one = time.perf_counter() - t0
                    r = repeat if one * repeat < budget_s else 5
                    med, lo, hi = median_time(fn, r, warmup=0)
                except Exception as exc:  # noqa: BLE001 - a peer may fail at one shape
                    print(f"  {e.name} T={T}: failed: {type(exc).__name__}: {exc}")
                    continue
                f = BH / bh_t
                med, lo, hi = med * f, lo * f, hi * f
                gf = e.flops(T, BH) / med / 1e9 if e.flops else float("nan")
                rows.append(Row(e.name, T, n, med, lo, hi, gf, gf / mm, e.group))
                if one > budget_s / 5:
                    slow[e.name] = T
                del fn
    return rows, rates


def print_table(rows: list[Row], file=sys.stdout) -> None:
    base = {(r.name, r.T, r.threads): r.seconds for r in rows}
    print(f"{'name':<32} {'T':>6} {'thr':>3} {'median ms':>10} {'min':>9} {'max':>9} "
          f"{'GFLOP/s':>8} {'x mm':>6} {'vs chunked':>10}", file=file)
    for r in rows:
        ref = base.get(("la elu chunked", r.T, r.threads))
        rel = f"{r.seconds / ref:>10.2f}" if ref else f"{'':>10}"
        gf = "" if np.isnan(r.gflops) else f"{r.gflops:.1f}"
        xm = "" if np.isnan(r.ratio_to_matmul) else f"{r.ratio_to_matmul:.2f}"
        print(f"{r.name:<32} {r.T:>6} {r.threads:>3} {r.seconds * 1e3:>10.3f} "
              f"{r.min * 1e3:>9.3f} {r.max * 1e3:>9.3f} {gf:>8} {xm:>6} {rel}", file=file)


def write_csv(path: str, rows: list[Row], env: dict, notes: list[str]) -> None:
    with open(path, "w", newline="") as f:
        for k, val in env.items():
            f.write(f"# {k}: {val}\n")
        for n in notes:
            f.write(f"# {n}\n")
        w = csv.writer(f)
        w.writerow(["name", "T", "threads", "seconds", "min", "max", "gflops",
                    "ratio_to_matmul"])
        for r in rows:
            w.writerow([r.name, r.T, r.threads, f"{r.seconds:.6g}", f"{r.min:.6g}",
                        f"{r.max:.6g}", f"{r.gflops:.4g}", f"{r.ratio_to_matmul:.4g}"])


def plot(rows: list[Row], outdir: str, env: dict) -> list[str]:
    """time vs T (per thread count) and the crossover plot (time / softmax time)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install 'linattn[bench]')")
        return []
    names = [n for n in dict.fromkeys(r.name for r in rows) if not n.startswith("np.matmul")]
    thr = sorted({r.threads for r in rows})
    paths = []
    fig, axes = plt.subplots(1, len(thr), figsize=(7 * len(thr), 5.5), squeeze=False)
    for ax, n in zip(axes[0], thr):
        for name in names:
            pts = sorted((r.T, r.seconds) for r in rows if r.name == name and r.threads == n)
            if len(pts) >= 2:
                ax.loglog(*zip(*pts), marker="o", ms=3, label=name,
                          ls="-" if name.startswith("la ") else "--")
        ax.set_xlabel("T (sequence length)")
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"B*H={BH}, D=E={D}, float32, threads={n}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"linattn {env['linattn']} vs peers; {env['cpu']}; "
                 f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}", fontsize=9)
    fig.tight_layout()
    p = os.path.join(outdir, "time_vs_T.png")
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)

    # crossover: each entry's time relative to softmax (linattn's C softmax and torch SDPA)
    soft_names = [nm for nm in ("torch sdpa causal", "la softmax_attention") if nm in names]
    if soft_names:
        fig, axes = plt.subplots(1, len(soft_names), figsize=(7 * len(soft_names), 5.5),
                                 squeeze=False)
        n = thr[0]
        for ax, sname in zip(axes[0], soft_names):
            soft = {r.T: r.seconds for r in rows if r.name == sname and r.threads == n}
            for name in names:
                if name == sname:
                    continue
                pts = sorted((r.T, r.seconds / soft[r.T]) for r in rows
                             if r.name == name and r.threads == n and r.T in soft)
                if len(pts) >= 2:
                    ax.loglog(*zip(*pts), marker="o", ms=3, label=name,
                              ls="-" if name.startswith("la ") else "--")
            ax.axhline(1.0, color="k", lw=1)
            ax.set_xlabel("T")
            ax.set_ylabel(f"time / time of {sname} (below 1: faster)")
            ax.set_title(f"crossover vs {sname}, threads={n}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = os.path.join(outdir, "crossover.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


# ------------------------------------------------------------------- extras --

def step_us(bh: int = 32, calls: int = 2000, repeat: int = 5) -> tuple[float, float, float]:
    """Decode ``la.step`` microseconds per call (Python included), B*H = bh, D = E = 64."""
    q, k, v = qkv(65, bh)
    _, st = la.causal(q[:, :64], k[:, :64], v[:, :64], kind="elu", return_state=True)
    qt, kt, vt = q[:, 64], k[:, 64], v[:, 64]

    def loop():
        s = st
        for _ in range(calls):
            _, s = la.step(qt, kt, vt, s, kind="elu")

    med, lo, hi = median_time(loop, repeat)
    return med / calls * 1e6, lo / calls * 1e6, hi / calls * 1e6


def dtype_ratio(T: int = 8192, repeat: int = 5) -> dict:
    """float64 speed / float32 speed (= t32 / t64) for elu chunked and recurrent."""
    out = {}
    for mode in ("chunked", "recurrent"):
        ts = {}
        for dt in (np.float32, np.float64):
            q, k, v = qkv(T, BH, dtype=dt)
            ts[dt] = median_time(lambda: la.causal(q, k, v, kind="elu", mode=mode), repeat)[0]
        out[mode] = (ts[np.float32], ts[np.float64], ts[np.float32] / ts[np.float64])
    return out


_SCALING_CHILD = r"""
import json, resource, sys, time
import numpy as np
import linattn as la
T, n, rep = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
la.set_num_threads(n)
rng = np.random.default_rng(0)
q = 0.5 * rng.standard_normal((1, T, 64), dtype=np.float32)
k = 0.5 * rng.standard_normal((1, T, 64), dtype=np.float32)
v = rng.standard_normal((1, T, 64), dtype=np.float32)
out = np.zeros((1, T, 64), np.float32)
def hwm():
    # VmHWM (KiB): ru_maxrss is inherited from the forking parent on Linux, VmHWM is not
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = hwm()
ts = []
for i in range(rep + 1):
    t0 = time.perf_counter()
    la.causal(q, k, v, kind="elu", mode="chunked", out=out)
    ts.append(time.perf_counter() - t0)
peak = hwm()
ts = sorted(ts[1:])
print(json.dumps({"T": T, "threads": n, "seconds": ts[len(ts) // 2], "min": ts[0],
                  "max": ts[-1], "base_kib": base, "extra_kib": peak - base}))
"""


def scaling(max_T: int = 1 << 20, thread_counts=(1, 2), repeat: int = 5) -> list[dict]:
    """elu chunked, B*H = 1, T = 4096 ... max_T; one subprocess per T for a clean peak RSS
    (peak RSS after inputs and ``out=`` are allocated vs after the calls: ``VmHWM``, since
    ``getrusage().ru_maxrss`` of a child starts at the forking parent's RSS on Linux)."""
    res = []
    for n in thread_counts:
        T = 4096
        while T <= max_T:
            p = subprocess.run([sys.executable, "-c", _SCALING_CHILD, str(T), str(n),
                                str(repeat)], capture_output=True, text=True, check=False)
            if p.returncode != 0:
                print(f"  scaling T={T}: failed: {p.stderr.strip()[-300:]}")
                break
            res.append(json.loads(p.stdout.strip().splitlines()[-1]))
            T *= 2
    return res


# --------------------------------------------------------------------- main --

def main(argv=None, entries: list[Entry] | None = None,
         parity: Callable[[], list[tuple[str, float, str]]] | None = None,
         versions: Callable[[], dict] | None = None) -> int:
    if argv is not None and "--roofline" in argv:
        return roofline(argv)
    if argv is None and "--roofline" in sys.argv[1:]:
        return roofline(sys.argv[1:])
    p = argparse.ArgumentParser(prog="linattn bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few shapes, < 2 minutes")
    p.add_argument("--out", default="bench-results", help="output folder")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--repeat", type=int, default=7, help="timed runs (>= 5)")
    p.add_argument("--no-sweep", action="store_true", help="only T in {512, 2048, 8192}")
    p.add_argument("--no-extras", action="store_true",
                   help="skip step / float64 / scaling measurements")
    p.add_argument("--filter", default="", help="only entries whose name contains this")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per (entry, T) before dropping to 5 runs / larger T")
    p.add_argument("--roofline", action="store_true",
                   help="instead: kernel figures as fractions of this machine's FMA peak and "
                        "np.matmul rate, per ISA path (roofline.csv; see --roofline --help)")
    a = p.parse_args(argv)
    repeat = max(5, a.repeat)
    if a.budget is None:
        a.budget = 2.0 if a.quick else 12.0
    if a.quick:
        repeat = 5
    thread_counts = [int(x) for x in a.threads.split(",") if x]
    os.makedirs(a.out, exist_ok=True)
    t_start = time.perf_counter()
    if entries is None:
        entries = linattn_entries()
    if a.filter:
        entries = [e for e in entries if a.filter in e.name]

    notes: list[str] = []
    if parity is not None:
        print("parity vs linattn (max |peer - linattn| / max |linattn|, small input):")
        for name, err, msg in parity():
            line = f"parity {name}: {err:.2e} {msg}".rstrip()
            print("  " + line)
            notes.append(line)
    env = environment()
    if versions is not None:
        env.update(versions())
    env["run"] = "quick" if a.quick else "full"
    env["shape"] = f"B*H={BH} D=E={D} chunk={CHUNK} float32 (mamba2 N=128 P=64)"
    print("  ".join(f"{k}={v}" for k, v in env.items()))

    rows, rates = run_entries(entries, thread_counts, a.quick, repeat,
                              sweep=not (a.quick or a.no_sweep), budget_s=a.budget)
    for e in entries:
        if e.note:
            notes.append(f"{e.name}: {e.note}")
    print()
    print_table(rows)

    extras: list[str] = []
    if not a.no_extras:
        for n in thread_counts:
            with threads(n):
                us = step_us(calls=300 if a.quick else 2000)
                extras.append(f"step B*H=32 threads={n}: {us[0]:.1f} us/call "
                              f"(min {us[1]:.1f}, max {us[2]:.1f})")
                if not a.quick:
                    for mode, (t32, t64, r) in dtype_ratio().items():
                        extras.append(f"float64/float32 speed elu {mode} T=8192 threads={n}: "
                                      f"{r:.2f} ({t64 * 1e3:.1f} vs {t32 * 1e3:.1f} ms)")
        sc = scaling(max_T=(1 << 15) if a.quick else (1 << 20),
                     thread_counts=thread_counts[:1] if a.quick else thread_counts)
        prev = {}
        for s in sc:
            key = s["threads"]
            ratio = s["seconds"] / prev[key] if key in prev else float("nan")
            prev[key] = s["seconds"]
            extras.append(f"scaling elu chunked B*H=1 T={s['T']} threads={key}: "
                          f"{s['seconds'] * 1e3:.2f} ms (min {s['min'] * 1e3:.2f}, "
                          f"max {s['max'] * 1e3:.2f}) x{ratio:.2f} per doubling, "
                          f"peak RSS +{s['extra_kib'] / 1024:.1f} MiB over inputs "
                          f"({s['base_kib'] / 1024:.0f} MiB)")
        print()
        for x in extras:
            print(x)
    write_csv(os.path.join(a.out, "results.csv"), rows, env, notes + extras)
    pngs = plot(rows, a.out, env)
    print(f"\nwrote {os.path.join(a.out, 'results.csv')} " + " ".join(pngs))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ----------------------------------------------------------------- roofline --
#
# `python -m linattn bench --roofline`: every kernel figure of the performance targets as
# a fraction of limits measured in the same run on this machine, for each ISA path this
# CPU runs (docs/design/performance.md §0, §3-4): the 1-core float32 FMA peak (a C loop in
# the extension) and NumPy's np.matmul float32 1024^3 rate on one thread with its BLAS at
# the core type it picks itself (a subprocess without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE).

ROOFLINE_TARGETS = {
    "chunked_vs_matmul": (">=", 0.8),
    "recurrent_vs_fma_floor": ("<=", 2.0),
    "threads_2v1": (">=", 1.9),
    "threads_2v1_seq_split": (">=", 1.8),
    "vs_numpy_reference": (">=", 150.0),
    "busy_core_2v1": ("<=", 1.1),
    "threads_override_omp": (">=", 1.0),
}
STEP_KINDS = {  # kind -> target us per call, B*H = 32, D = E = 64
    "linear": 10, "elu": 10, "relu": 10, "lightning": 10, "retnet": 10, "mamba2": 10,
    "rfa": 20, "performer": 20, "cosformer": 20, "transnormer": 20, "lavo": 40,
}
SMALL_KINDS = {  # kind -> target us per la.causal call, T = 16, B*H = 1
    "linear": 15, "elu": 15, "relu": 15, "lightning": 15, "retnet": 15, "mamba2": 15,
    "rfa": 40, "performer": 40, "cosformer": 40, "transnormer": 40, "lavo": 40,
}

_MATMUL_CHILD = r"""
import json, os, sys, time
import numpy as np
info = {"corename": None, "blas": None, "threads": None}
try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None
a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
b = a.copy()
tick = time.thread_time if os.environ.get("LA_ROOFLINE_CLOCK") == "cpu" else time.perf_counter
def once():
    t0 = tick()
    a @ b
    return tick() - t0
if threadpool_limits is not None:
    threadpool_limits(limits=1, user_api="blas")
    for d in threadpool_info():
        if d.get("user_api") == "blas":
            info["corename"] = d.get("architecture")
            info["blas"] = f"{d.get('internal_api')} {d.get('version')}"
            info["threads"] = d.get("num_threads")
for _ in range(2):
    a @ b
print(json.dumps(info), flush=True)
for line in sys.stdin:  # "n": time n products, answer their seconds
    print(json.dumps([once() for _ in range(int(line))]), flush=True)
"""

_MM_FLOPS = 2 * 1024 ** 3


class MatmulServer:
    """np.matmul float32 1024^3 on one BLAS thread in a child process where NumPy's
    OpenBLAS picks its own core type (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset), or
    the one named by ``coretype`` (``"Haswell"``: the AVX2 kernels an AVX2-only CPU
    runs); threadpoolctl reports which kernels ran (``info``).  The products are timed
    on request (``rates``), so that a kernel and the matmul can be timed in alternation:
    a change of the machine's speed during a run (a shared host) then hits both.
    ``clock="cpu"`` times by the thread's CPU time, as the kernel figures it is compared
    with."""

    def __init__(self, clock: str = "wall", coretype: str | None = None):
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", LA_ROOFLINE_CLOCK=clock)
        self.p = subprocess.Popen([sys.executable, "-c", _MATMUL_CHILD], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.info = json.loads(self._line())

    def _line(self) -> str:
        line = self.p.stdout.readline()
        if not line:
            self.p.kill()
            raise RuntimeError(f"np.matmul subprocess failed: {self.p.stderr.read()[-500:]}")
        return line

    def rates(self, n: int) -> list[float]:
        """GFLOP/s of n products timed now."""
        self.p.stdin.write(f"{n}\n")
        self.p.stdin.flush()
        return [_MM_FLOPS / t / 1e9 for t in json.loads(self._line())]

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)


def matmul_limit(repeat: int = 7, clock: str = "wall", coretype: str | None = None,
                 server: MatmulServer | None = None) -> dict:
    """np.matmul float32 1024^3 GFLOP/s on one BLAS thread (see :class:`MatmulServer`):
    the median and the best of ``repeat`` products, with the child's BLAS ``info``."""
    srv = server if server is not None else MatmulServer(clock, coretype)
    try:
        r = sorted(srv.rates(max(1, repeat)))
        return {**srv.info, "rate": r[len(r) // 2], "best": r[-1]}
    finally:
        if server is None:
            srv.close()


def _paired(fn, limit, repeat: int, clock: str = "wall"):
    """A kernel and a limit measured in alternation (one warm-up call, then ``repeat``
    rounds of ``limit()`` and one timed ``fn()``): the kernel's (median, min, max) seconds,
    the limit's median and the per-round (seconds, limit) pairs, whose ratios a row
    reports by their median, so that a change of the machine's speed during the run
    (a shared host) moves the kernel and its limit together."""
    tick = _timer(clock)
    fn()
    pairs = []
    for _ in range(max(1, repeat)):
        lim = limit()
        t0 = tick()
        fn()
        pairs.append((tick() - t0, lim))
    ts = sorted(t for t, _ in pairs)
    ls = sorted(x for _, x in pairs)
    return (ts[len(ts) // 2], ts[0], ts[-1]), ls[len(ls) // 2], pairs


def _median(xs) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _numpy_ref_seconds(T: int, repeat: int, coretype: str | None = None) -> float:
    """The NumPy quadratic reference's time for B*H heads (one head timed, scaled), in
    this process or, with ``coretype``, in a subprocess whose OpenBLAS runs that core
    type's kernels."""
    if coretype:
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_L2_SIZE"}
        env.update(OPENBLAS_CORETYPE=coretype, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        code = f"from linattn import _bench; print(_bench._numpy_ref_seconds({T}, {repeat}))"
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"NumPy reference subprocess failed: {p.stderr[-500:]}")
        return float(p.stdout.strip().splitlines()[-1])
    q1, k1, v1 = qkv(T, 1)
    fq, fk = elu1(q1 * D ** -0.5), elu1(k1)
    with threads(1):
        return _med(lambda: numpy_quadratic(fq, fk, v1), max(3, repeat // 2))[0] * BH


def _timer(clock: str):
    return time.thread_time if clock == "cpu" else time.perf_counter


def _med(fn, repeat: int, clock: str = "wall", warmup: int = 1):
    tick = _timer(clock)
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, repeat)):
        t0 = tick()
        fn()
        ts.append(tick() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


def _threads_2v1(fn, repeat: int) -> dict:
    """2 threads vs 1 on the same call, as benchmarks/bench_threads.py measures it: two
    warm-up calls per thread count, then rounds that time the 1-thread and the 2-thread
    call back to back in alternating order (a change of the machine's load hits both);
    the speedup is the median of the per-round ratios.  The note gives the process CPU
    time ratio (1.0: the second thread adds no work; it hardly moves under load, the wall
    ratio does) and the load average."""
    load0 = os.getloadavg()[0]
    for n in (1, 2, 1, 2):
        with threads(n):
            fn()
    ts = {1: [], 2: []}
    cs = {1: [], 2: []}
    for r in range(max(1, repeat)):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            with threads(n):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                ts[n].append(time.perf_counter() - t0)
                cs[n].append(time.process_time() - c0)
    ratio = sorted(a / b for a, b in zip(ts[1], ts[2]))
    load1 = os.getloadavg()[0]
    cpu = float(np.median(cs[2]) / np.median(cs[1])) if np.median(cs[1]) > 0 else float("nan")
    two = sorted(ts[2])
    return {"speedup": ratio[len(ratio) // 2], 2: (two[len(two) // 2], two[0], two[-1]),
            "note": f"interleaved 1/2-thread rounds: {len(ratio)}; cpu time 2/1 {cpu:.2f}; "
                    f"load average {load0:.1f}-{load1:.1f}"
                    + ("; loaded machine: wall ratio not meaningful"
                       if max(load0, load1) > 0.75 * (os.cpu_count() or 1) else "")}


def _kind_kwargs(kind: str, shape_bt: tuple, step: bool = False) -> dict:
    """A valid call per kind: decays for mamba2, seeds for the random kinds."""
    if kind == "mamba2":
        return {"decay": -0.05 * np.ones(shape_bt)}
    if kind in ("performer", "rfa", "lavo"):
        return {"seed": 3}
    if kind == "cosformer":
        return {"horizon": 1 << 16}
    return {}


STEP_FEATURES = 64  # the random-feature kinds' F in the step rows: F = D


def _busy_process():
    """A Python busy loop pinned to the first CPU this process may use (another process
    that needs a core), as benchmarks/bench_threads.py starts it."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    return subprocess.Popen([sys.executable, "-c",
                             f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])


_OVERRIDE_CHILD = r"""
import linattn as la
la.set_num_threads(2)
print(la.get_num_threads(), la.info()["threads_source"])
"""


def _busy_core_rows(add, path: str, repeat: int, quick: bool) -> None:
    """The rows of the pool's sharing: a 2-thread call while another process keeps one
    core busy, as a multiple of the same call on 1 thread (the recurrent form on
    (4, 512, 64) and a decoding step at B*H = 32; target <= 1.1), and
    ``la.set_num_threads(2)`` in a process started with OMP_NUM_THREADS=1 (the count it
    reports over 2; target 1: it takes effect)."""
    pinnable = hasattr(os, "sched_getaffinity")  # Linux: the busy loop can be pinned
    cpus = len(os.sched_getaffinity(0)) if pinnable else (os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("LINATTN_NUM_THREADS", None)
    p = subprocess.run([sys.executable, "-c", _OVERRIDE_CHILD], env=env, capture_output=True,
                       text=True, timeout=120)
    got, source = (p.stdout.split() + ["0", "?"])[:2] if p.returncode == 0 else ("0", "error")
    want = min(2, cpus)
    add(path, "threads_override_omp", "set_num_threads(2)", float(got), "threads",
        f"min(2, CPUs) = {want}", want, float(got) / want, int(got), 0, 0,
        target=ROOFLINE_TARGETS["threads_override_omp"],
        note=f"OMP_NUM_THREADS=1 in the environment; get_num_threads() then, source "
             f"{source!r}")
    if cpus < 2 or not pinnable:
        return
    r = np.random.default_rng(0)
    small = [r.standard_normal((4, 512, 64)).astype(np.float32) * 0.5 for _ in range(3)]
    dec = _step_cases("elu", 32)["decoder"]
    steps = 20 if quick else 100

    def step_loop():
        for _ in range(steps):
            dec()

    cases = (("elu recurrent (4,512,64)", lambda: la.causal(*small, kind="elu",
                                                            mode="recurrent"), 4, 512),
             (f"elu Decoder.step B*H=32 x{steps}", step_loop, 32, 1))
    busy = _busy_process()
    try:
        time.sleep(0.2)
        for name, fn, bh, T_ in cases:
            res = _threads_2v1(fn, 3 if quick else 5 * repeat)
            ratio = 1.0 / res["speedup"]
            add(path, "busy_core_2v1", name, ratio, "x", "the 1-thread call", 1.0, ratio,
                2, T_, bh, res[2], ROOFLINE_TARGETS["busy_core_2v1"],
                "2-thread time / 1-thread time while a busy loop holds one core; "
                + res["note"])
    finally:
        busy.kill()
        busy.wait()


def _step_cases(kind: str, bh: int, features: int | None = STEP_FEATURES) -> dict:
    """The decode callables of one kind on a state after 8 tokens: ``la.step(...,
    inplace=True)`` (the decoding form), ``la.Decoder.step`` and the copying ``la.step``
    that returns a new state.  ``features`` sets ``num_features`` of performer and rfa
    (None: their defaults)."""
    q, k, v = qkv(9, bh)
    kw = _kind_kwargs(kind, (bh, 8))
    if kind in ("performer", "rfa") and features is not None:
        kw["num_features"] = features
    _, st = la.causal(q[:, :8], k[:, :8], v[:, :8], kind=kind, return_state=True, **kw)
    qt, kt, vt = q[:, 8], k[:, 8], v[:, 8]
    opts = {n: x for n, x in kw.items() if n != "decay"}
    g = {"decay": kw["decay"][:, 0].copy()} if "decay" in kw else {}  # per token: (...,)
    s_in = st.copy()
    dec = la.Decoder(kind, state=st.copy(), **opts)
    dargs = (qt, kt, vt, kw["decay"][:, 0]) if "decay" in kw else (qt, kt, vt)
    arrays = [st.S, st.z] + list((st.extra or {}).values())
    nbytes = sum(x.nbytes for x in arrays if isinstance(x, np.ndarray))
    return {"state_bytes": nbytes,
            "inplace": lambda: la.step(qt, kt, vt, s_in, kind=kind, inplace=True, **opts, **g),
            "decoder": lambda: dec.step(*dargs),
            "copy": lambda: la.step(qt, kt, vt, st, kind=kind, **opts, **g)}


def _per_call_us(fn, calls: int, repeat: int, clock: str = "wall") -> float:
    def loop():
        for _ in range(calls):
            fn()

    return _med(loop, repeat, clock)[0] / calls * 1e6


def _small_us(kind: str, calls: int, repeat: int, clock: str = "wall") -> float:
    q, k, v = qkv(16, 1)
    kw = _kind_kwargs(kind, (1, 16))
    return _per_call_us(lambda: la.causal(q, k, v, kind=kind, **kw), calls, repeat, clock)


def isa_paths(requested: str) -> tuple[list[str], list[str] | None]:
    """(the ISA paths this CPU runs, the requested ones: comma-separated, empty for all);
    the second is None, with a message on stderr, when one cannot run here."""
    from . import _core
    order = ("avx512", "avx2", "generic")
    simd = _core.simd()
    runnable = [x for x in order if order.index(x) >= order.index(simd["cpu"])
                and x in simd["compiled"]]
    paths = [x for x in (requested.split(",") if requested else runnable) if x]
    bad = [x for x in paths if x not in runnable]
    if bad:
        print(f"paths {bad} cannot run here (runnable: {runnable})", file=sys.stderr)
        return runnable, None
    return runnable, paths


def roofline(argv=None) -> int:
    """`python -m linattn bench --roofline [--quick] [--out DIR] [--paths ...]`."""
    from . import _core, _tuning

    p = argparse.ArgumentParser(prog="linattn bench --roofline",
                                description="kernel figures as fractions of this machine's "
                                            "limits, per ISA path")
    p.add_argument("--roofline", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="T = 2048 instead of 8192, fewer repeats and kinds (proves it works)")
    p.add_argument("--out", default="bench-results", help="output folder (roofline.csv)")
    p.add_argument("--paths", default="",
                   help="ISA paths, comma-separated (default: every path this CPU runs)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per figure")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="one-thread figures (and the np.matmul limit) timed by the wall "
                        "clock or the thread's CPU time (steadier on a shared machine, but "
                        "some VMs account CPU time wrongly: check that the FMA peak is "
                        "plausible)")
    a = p.parse_args(argv)
    repeat = 3 if a.quick else max(5, a.repeat)
    T = 2048 if a.quick else 8192
    T_seq = 8192 if a.quick else 65536
    os.makedirs(a.out, exist_ok=True)
    t_start = time.perf_counter()
    simd = _core.simd()
    runnable, paths = isa_paths(a.paths)
    if paths is None:
        return 2
    before = simd["active"]
    env = environment()
    cpu = _tuning.cpu_model()
    max_threads = _core.build_info()["max_threads"]

    # ---- the machine's limits, same run
    print("measuring the limits: FMA peak per path, np.matmul (subprocess) ...", flush=True)
    peaks = {x: _core.fma_peak(x, seconds=0.05 if a.quick else 0.2, reps=repeat, clock=a.clock)
             for x in runnable}
    peak = max(peaks.values())
    servers = {None: MatmulServer(a.clock)}
    mm = matmul_limit(repeat, a.clock, server=servers[None])
    mm_rate = mm["rate"]
    print(f"cpu={cpu}  FMA peak f32 1 core: " +
          ", ".join(f"{x} {v:.1f}" for x, v in peaks.items()) + " GFLOP/s;  np.matmul f32 "
          f"1024^3 1 thread: {mm_rate:.1f} GFLOP/s (best {mm['best']:.1f}; numpy BLAS "
          f"{mm['blas']}, core type {mm['corename']})", flush=True)
    # A forced AVX2 path stands for an AVX2-only CPU (docs/design/performance.md §0): its
    # kernels are judged against that CPU's limits, the AVX2 FMA peak and NumPy's OpenBLAS
    # on its Haswell (AVX2) kernels; the notes give the fractions of this CPU's best too.
    limits = {x: (peak, mm) for x in paths}
    if "avx2" in paths and peak > peaks["avx2"]:
        servers["Haswell"] = MatmulServer(a.clock, coretype="Haswell")
        mm2 = matmul_limit(repeat, a.clock, server=servers["Haswell"])
        limits["avx2"] = (peaks["avx2"], mm2)
        print(f"path avx2 judged as an AVX2-only CPU: FMA peak {peaks['avx2']:.1f} GFLOP/s, "
              f"np.matmul {mm2['rate']:.1f} GFLOP/s (core type {mm2['corename']})", flush=True)

    rows: list[dict] = []
    passes: dict = {}  # state bytes -> us of one in-place pass over them (the step's floor)

    def add(path, figure, kind, value, unit, limit_name, limit, fraction, threads_, T_, bh,
            t=(float("nan"),) * 3, target=None, note="", blas_core=None):
        op, thr = target if target is not None else ("", float("nan"))
        meets = "" if not op else ("yes" if (fraction >= thr if op == ">=" else fraction <= thr)
                                   else "no")
        rows.append({
            "cpu": cpu, "isa_path": path, "linattn_blas_corename": env["linattn_blas_corename"],
            "numpy_blas_corename": blas_core or limits[path][1]["corename"],
            "figure": figure, "kind": kind,
            "value": value, "unit": unit, "limit": limit_name, "limit_value": limit,
            "fraction": fraction, "target": f"{op} {thr}" if op else "", "meets": meets,
            "threads": threads_, "T": T_, "BH": bh, "D": D, "E": E, "dtype": "float32",
            "median_s": t[0], "min_s": t[1], "max_s": t[2], "clock": a.clock, "note": note})
        verdict = f"(target {op} {thr}: {meets})" if op else ""
        print(f"  {path:8s} {figure:26s} {kind:11s} {value:10.4g} {unit:10s} "
              f"{fraction:8.3f} of {limit_name} {verdict}", flush=True)

    # ---- NumPy quadratic reference: one head, scaled to B*H (on the avx2 path: NumPy's
    # OpenBLAS on its Haswell kernels, as on an AVX2-only CPU)
    t_np = _numpy_ref_seconds(T, repeat)
    t_np_path = {x: t_np for x in paths}
    if limits.get("avx2", (peak,))[0] < peak:
        t_np_path["avx2"] = _numpy_ref_seconds(T, repeat, coretype="Haswell")

    q, k, v = qkv(T, BH)
    fl_chunk = flops_chunked()(T, BH)
    fl_rec = flops_recurrent()(T, BH)
    try:
        for path in paths:
            got = _tuning.set_simd(path)
            assert got == path, (got, path)
            print(f"path {path}:", flush=True)
            p_peak, p_mm = limits[path]
            own = p_peak < peak
            mm_name = "np.matmul 1 thread" + (f" ({p_mm['corename']})" if own else "")
            with threads(1):
                for label, lim in (("tiles", -1), ("blas", 0)):
                    if path == "generic" and label == "tiles":
                        continue  # no register tiles on the generic path
                    # the BLAS products run on linattn's OpenBLAS at its own core type
                    # whatever the path: judged against np.matmul on the same kernels
                    own_l = own and label == "tiles"
                    srv = servers["Haswell" if own_l and "Haswell" in servers else None]
                    _core.set_tuning("tiles_max_dim", lim)
                    t, l_rate, pairs = _paired(
                        lambda: la.causal(q, k, v, kind="elu", mode="chunked"),
                        lambda s=srv: s.rates(1)[0], repeat, a.clock)
                    _core.set_tuning("tiles_max_dim", -1)
                    rate = fl_chunk / t[0] / 1e9
                    frac = _median(fl_chunk / tt / 1e9 / m for tt, m in pairs)
                    add(path, "chunked_vs_matmul", "elu", rate, "GFLOP/s",
                        mm_name if own_l else "np.matmul 1 thread", l_rate, frac, 1,
                        T, BH, t, ROOFLINE_TARGETS["chunked_vs_matmul"],
                        f"chunk products on {label}"
                        + (f" (linattn's OpenBLAS on {env['linattn_blas_corename']})"
                           if label == "blas" else "")
                        + f"; executed flops 4FE + 2C(F+E) per token; fraction: median "
                        f"of {len(pairs)} rounds, each the call's rate / that of an "
                        f"np.matmul timed just before it; "
                        f"{rate / (p_peak if own_l else peak):.3f} of the FMA peak"
                        + (f"; this CPU's best: {rate / mm_rate:.3f} of np.matmul "
                           f"({mm['corename']}), {rate / peak:.3f} of its FMA peak"
                           if own_l else ""),
                        blas_core=None if own_l else mm["corename"])
                peak_isa = path if own else max(peaks, key=peaks.get)
                t, r_peak, pairs = _paired(
                    lambda: la.causal(q, k, v, kind="elu", mode="recurrent"),
                    lambda i=peak_isa: _core.fma_peak(i, seconds=0.01, reps=2, clock=a.clock),
                    repeat, a.clock)
                ns = t[0] / (T * BH) * 1e9
                floor = 4 * D * E / r_peak  # ns per token and head at the FMA peak (GFLOP/s)
                frac = _median(tt / (T * BH) * 1e9 / (4 * D * E / pk) for tt, pk in pairs)
                add(path, "recurrent_vs_fma_floor", "elu", ns, "ns/token/head",
                    "FMA floor 4FE/peak" + (f" ({path} peak)" if own else ""), floor,
                    frac, 1, T, BH, t, ROOFLINE_TARGETS["recurrent_vs_fma_floor"],
                    f"fraction: median of {len(pairs)} rounds, each the call against the FMA "
                    f"peak timed just before it; {fl_rec / t[0] / 1e9 / p_peak:.3f} of the "
                    "FMA peak"
                    + (f"; vs this CPU's best peak {ns / (4 * D * E / peak):.2f}x" if own
                       else f"; vs this path's own peak {ns / (4 * D * E / peaks[path]):.2f}x"))
                t_auto = _med(lambda: la.causal(q, k, v, kind="elu"), repeat, a.clock)
                tn = t_np_path[path]
                add(path, "vs_numpy_reference", "elu", tn / t_auto[0], "x",
                    "NumPy tril(QK^T)V" + (f" ({p_mm['corename']})" if own else ""),
                    tn, tn / t_auto[0], 1, T, BH, t_auto,
                    ROOFLINE_TARGETS["vs_numpy_reference"], "mode=auto vs the quadratic "
                    "masked reference (one head timed, scaled to B*H; both on 1 thread)"
                    + (f"; {t_np / t_auto[0]:.1f}x NumPy on {mm['corename']}" if own else ""),
                    blas_core=None if own else mm["corename"])
            if max_threads >= 2:
                for mode in ("chunked", "recurrent"):
                    r = _threads_2v1(lambda: la.causal(q, k, v, kind="elu", mode=mode),
                                     repeat)
                    add(path, "threads_2v1", f"elu {mode}", r["speedup"], "x",
                        "2 threads ideal", 2.0, r["speedup"], 2, T, BH, r[2],
                        ROOFLINE_TARGETS["threads_2v1"], r["note"])
                qs, ks, vs = qkv(T_seq, 1)
                r = _threads_2v1(lambda: la.causal(qs, ks, vs, kind="elu", mode="chunked"),
                                 max(3, repeat // 2))
                add(path, "threads_2v1_seq_split", "elu chunked", r["speedup"], "x",
                    "2 threads ideal", 2.0, r["speedup"], 2, T_seq, 1, r[2],
                    ROOFLINE_TARGETS["threads_2v1_seq_split"], r["note"])
                del qs, ks, vs
                if path == paths[0]:  # the pool's behaviour does not depend on the ISA path
                    _busy_core_rows(add, path, repeat, a.quick)
            with threads(1):
                kinds = ("elu", "retnet") if a.quick else tuple(STEP_KINDS)
                calls = 100 if a.quick else 500
                for kind in kinds:
                    fns = _step_cases(kind, 32)
                    nb = -(-fns["state_bytes"] // 1024) * 1024  # whole KiB: one floor per size
                    if nb not in passes:
                        passes[nb] = _core.mem_pass(nb, seconds=0.005 if a.quick else 0.02,
                                                    reps=repeat, clock=a.clock) * 1e6
                        print(f"  the in-place pass over a {nb / 1024:.0f} KiB state (the "
                              f"steps' floor): {passes[nb]:.2f} us", flush=True)
                    floor_note = (f"; the state's in-place pass ({nb / 1024:.0f} KiB read and "
                                  f"written once, a C loop): {passes[nb]:.2f} us")
                    feat = (f"; num_features={STEP_FEATURES}" if kind in ("performer", "rfa")
                            else "")
                    for figure, case, what in (
                            ("step_per_call", "inplace", "la.step(..., inplace=True)"),
                            ("decoder_step_per_call", "decoder", "la.Decoder.step"),
                            ("step_copy_per_call", "copy", "la.step returning a new state")):
                        us = _per_call_us(fns[case], calls, repeat, a.clock)
                        tgt = STEP_KINDS[kind]
                        add(path, figure, kind, us, "us", "target", tgt, us / tgt, 1, 1, 32,
                            target=None if case == "copy" else ("<=", 1.0),
                            note=f"{what}, Python included; fraction = us / target{feat}"
                                 f"{floor_note}, this call {us / passes[nb]:.2f}x it"
                                 + ("; no target (the decoding forms are the in-place ones)"
                                    if case == "copy" else ""))
                    if kind in ("performer", "rfa") and not a.quick:
                        us = _per_call_us(_step_cases(kind, 32, None)["inplace"], calls // 5,
                                          repeat, a.clock)
                        add(path, "step_per_call_default_features", kind, us, "us", "target",
                            STEP_KINDS[kind], us / STEP_KINDS[kind], 1, 1, 32,
                            note="la.step(..., inplace=True) with the kind's default "
                                 "num_features (performer 256, rfa 128: 4x / 2x the state "
                                 "of F = 64); no target")
                kinds = ("elu", "linear", "mamba2") if a.quick else tuple(SMALL_KINDS)
                for kind in kinds:
                    us = _small_us(kind, 50 if a.quick else 300, repeat, a.clock)
                    add(path, "small_call_overhead", kind, us, "us", "target", SMALL_KINDS[kind],
                        us / SMALL_KINDS[kind], 1, 16, 1, target=("<=", 1.0),
                        note="la.causal T=16, B*H=1; fraction = us / target")
    finally:
        _tuning.set_simd(before)
        _core.set_tuning("tiles_max_dim", -1)
        for srv in servers.values():
            srv.close()

    path_csv = os.path.join(a.out, "roofline.csv")
    fields = list(rows[0]) if rows else []
    with open(path_csv, "w", newline="") as f:
        f.write(f"# linattn roofline {env['date']} cpu={cpu} linattn={env['linattn']} "
                f"numpy={env['numpy']} "
                f"fma_peak_f32_1core={ {x: round(v, 2) for x, v in peaks.items()} } "
                f"matmul_f32_1024_1thread={mm_rate:.2f} (best {mm['best']:.2f}) "
                f"numpy_blas={mm['blas']} numpy_blas_corename={mm['corename']} "
                f"linattn_blas={env['linattn_blas']} clock={a.clock}"
                + "".join(f" state_pass_us_{nb // 1024}KiB={us:.2f}"
                          for nb, us in sorted(passes.items()))
                + "".join(f" {x}_limits=(fma_peak {pk:.2f}, matmul {m['rate']:.2f} {m['corename']})"
                          for x, (pk, m) in limits.items() if pk < peak) + "\n")
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"wrote {path_csv} ({len(rows)} rows) in {time.perf_counter() - t_start:.0f} s")
    return 0
