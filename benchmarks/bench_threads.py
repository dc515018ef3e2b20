"""Thread scaling and sharing: 1-thread and 2-thread times of the same call, interleaved.

    python benchmarks/bench_threads.py [--repeat 7] [--quick]

Rows (float32, D = E = 64, elu):

* ``busy-free``  recurrent, (4, 512, 64): 2 threads vs 1 on an idle machine;
* ``busy-core``  the same while another process keeps one core busy (a Python busy loop
  pinned to the first CPU this process may use): a worker that the scheduler wakes on the
  caller's core leaves its share to the caller, and idle workers sleep instead of
  spinning, so 2 threads should cost at most ~1.1x the 1-thread time;
* ``BxH=8``      chunked and recurrent, B x H = 8, T = 8192 (target >= 1.9x);
* ``seq-split``  chunked, B x H = 1, T = 65536: the sequence is split over the threads
  (target >= 1.8x).

How it measures (the same as the threads rows of ``python -m linattn bench --roofline``):
after two warm-up calls per thread count, each round times the 1-thread and the 2-thread
call back to back, in alternating order, so a change of the machine's load during the run
hits both alike; ``speedup`` is the median over rounds of t(1 thread) / t(2 threads).

Columns that hardly move when other processes load the machine (wall ratios on a shared
machine do): ``cpu 2/1`` is the process's CPU time with 2 threads over that with 1 (all
threads counted; 1.0: the second thread adds no work, no spinning, no duplicated work);
``workers`` is the share of the 2-thread call's CPU time spent on pool workers (0.5: an
even split; about 0 where the workers left their shares to the caller, as they do when the
scheduler wakes them on the caller's core); ``cpu bound`` is the 1-thread CPU time over the
largest per-thread CPU time of the 2-thread call (Linux: per-thread schedstat), the
speedup two free cores would give if wall time followed CPU time.  The CPU model, the ISA
path and the load average before and after head the table; with a load average above 3/4
of the CPUs (1.5 on a 2-core machine) read only the CPU columns.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

import linattn as la
from linattn._tuning import cpu_model


def thread_cpu_ns() -> dict[int, int]:
    """CPU time of every thread of this process (ns; empty where schedstat is missing)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def one_call(fn, n: int) -> tuple[float, float, list[float]]:
    """Wall and process CPU seconds of fn() on n threads, and each thread's CPU seconds
    (the calling thread first)."""
    la.set_num_threads(n)
    me = __import__("threading").get_native_id()
    a = thread_cpu_ns()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    b = thread_cpu_ns()
    per = {tid: (b[tid] - a.get(tid, 0)) / 1e9 for tid in b}
    threads = [per.pop(me, cpu)] + sorted((x for x in per.values() if x > 0), reverse=True)
    return wall, cpu, threads


def interleaved(fn, repeat: int) -> dict:
    """1-thread and 2-thread calls alternated; medians and the per-round ratio."""
    for n in (1, 2, 1, 2):
        one_call(fn, n)
    rounds = {1: [], 2: []}
    for r in range(repeat):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            rounds[n].append(one_call(fn, n))
    la.set_num_threads(0)

    def med(xs):
        return float(np.median(xs))

    out = {}
    for n in (1, 2):
        w = [x[0] for x in rounds[n]]
        out[n] = (med(w), min(w), max(w), med([x[1] for x in rounds[n]]))
    out["speedup"] = med([a[0] / b[0] for a, b in zip(rounds[1], rounds[2])])
    out["cpu"] = out[2][3] / out[1][3] if out[1][3] > 0 else float("nan")
    two = rounds[2]
    tot = sum(sum(x[2]) for x in two)
    out["workers"] = sum(sum(x[2][1:]) for x in two) / tot if tot > 0 else float("nan")
    top = med([max(x[2]) for x in two])
    out["bound"] = out[1][3] / top if top > 0 else float("nan")
    return out


def inputs(bh: int, T: int, d: int = 64, seed: int = 0):
    r = np.random.default_rng(seed)
    return [r.standard_normal((bh, T, d)).astype(np.float32) * 0.5 for _ in range(3)]


def busy_process():
    cpu = sorted(os.sched_getaffinity(0))[0]
    return subprocess.Popen([sys.executable, "-c",
                             f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="shorter sequences (smoke run)")
    args = ap.parse_args()
    T8, T1 = (1024, 8192) if args.quick else (8192, 65536)
    load0 = os.getloadavg()[0]
    rows = []
    small = inputs(4, 512)
    rec = lambda: la.causal(*small, kind="elu", mode="recurrent")  # noqa: E731
    rows.append(("busy-free   recurrent (4,512,64)", interleaved(rec, 5 * args.repeat)))
    if len(os.sched_getaffinity(0)) >= 2:
        p = busy_process()
        try:
            time.sleep(0.2)
            rows.append(("busy-core   recurrent (4,512,64)", interleaved(rec, 5 * args.repeat)))
        finally:
            p.kill()
            p.wait()
    x8 = inputs(8, T8)
    for mode in ("chunked", "recurrent"):
        rows.append((f"BxH=8       {mode} T={T8}",
                     interleaved(lambda mode=mode: la.causal(*x8, kind="elu", mode=mode),
                                 args.repeat)))
    x1 = inputs(1, T1)
    rows.append((f"seq-split   chunked BxH=1 T={T1}",
                 interleaved(lambda: la.causal(*x1, kind="elu", mode="chunked"), args.repeat)))
    i = la.info()
    pool = i.get("thread_pool", "openmp" if i.get("openmp") else "?")
    load1 = os.getloadavg()[0]
    print(f"# {cpu_model()}; {os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))};"
          f" linattn {i['version']} simd={i['simd']} pool={pool};"
          f" load average {load0:.1f} before, {load1:.1f} after")
    if max(load0, load1) > 0.75 * (os.cpu_count() or 1):
        print("# the machine was loaded: wall times and speedups are not meaningful, read the"
              " cpu columns")
    print(f"{'case':38s} {'1 thread ms (min-max)':>26s} {'2 threads ms (min-max)':>26s}"
          f" {'speedup':>8s} {'cpu 2/1':>8s} {'workers':>8s} {'cpu bound':>9s}")
    for name, r in rows:
        cells = [f"{r[n][0] * 1e3:8.2f} ({r[n][1] * 1e3:.2f}-{r[n][2] * 1e3:.2f})"
                 for n in (1, 2)]
        print(f"{name:38s} {cells[0]:>26s} {cells[1]:>26s} {r['speedup']:8.2f}"
              f" {r['cpu']:8.2f} {r['workers']:8.2f} {r['bound']:9.2f}")


if __name__ == "__main__":
    main()
