"""Thread scaling and sharing: medians of 1-thread and 2-thread times, and their ratio.

    python benchmarks/bench_threads.py [--repeat 7] [--quick]

Rows (float32, D = E = 64, elu):

* ``busy-free``  recurrent, (4, 512, 64): 2 threads vs 1 on an idle machine;
* ``busy-core``  the same while another process keeps one core busy (a Python busy loop
  pinned to the first CPU this process may use): linattn's workers sleep instead of
  spinning, so 2 threads should cost at most ~1.1x the 1-thread time;
* ``BxH=8``      chunked and recurrent, B x H = 8, T = 8192 (target >= 1.9x);
* ``seq-split``  chunked, B x H = 1, T = 65536: the sequence is split over the threads
  (target >= 1.8x).

``speedup`` is t(1 thread) / t(2 threads).  ``cpu 2/1`` is the process's CPU time with 2
threads over that with 1 (all threads counted): 1.0 means the second thread adds no work
(no spinning, no duplicated work), so it bounds what 2 free cores can give, and unlike the
wall times it hardly moves when other processes load the machine.  Timings on a shared
machine are noisy: the median of ``--repeat`` runs, with min and max, is printed; the CPU
model and the load average head the table.
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


def median_time(fn, repeat: int) -> tuple[float, float, float, float]:
    """Median, min and max wall time, and the median CPU time of the whole process."""
    fn()  # warm up (starts the pool, touches the buffers)
    ts, cs = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    ts.sort()
    cs.sort()
    return ts[len(ts) // 2], ts[0], ts[-1], cs[len(cs) // 2]


def inputs(bh: int, T: int, d: int = 64, seed: int = 0):
    r = np.random.default_rng(seed)
    return [r.standard_normal((bh, T, d)).astype(np.float32) * 0.5 for _ in range(3)]


def busy_process():
    cpu = sorted(os.sched_getaffinity(0))[0]
    return subprocess.Popen([sys.executable, "-c",
                             f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])


def row(name: str, fn, repeat: int) -> dict:
    out = {"case": name}
    for n in (1, 2):
        la.set_num_threads(n)
        out[n] = median_time(fn, repeat)
    la.set_num_threads(0)
    out["speedup"] = out[1][0] / out[2][0]
    out["cpu"] = out[2][3] / out[1][3] if out[1][3] > 0 else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="shorter sequences (smoke run)")
    args = ap.parse_args()
    T8, T1 = (1024, 8192) if args.quick else (8192, 65536)
    rows = []
    small = inputs(4, 512)
    rec = lambda: la.causal(*small, kind="elu", mode="recurrent")  # noqa: E731
    rows.append(row("busy-free   recurrent (4,512,64)", rec, args.repeat))
    if len(os.sched_getaffinity(0)) >= 2:
        p = busy_process()
        try:
            time.sleep(0.2)
            rows.append(row("busy-core   recurrent (4,512,64)", rec, args.repeat))
        finally:
            p.kill()
            p.wait()
    x8 = inputs(8, T8)
    for mode in ("chunked", "recurrent"):
        rows.append(row(f"BxH=8       {mode} T={T8}",
                        lambda mode=mode: la.causal(*x8, kind="elu", mode=mode),
                        max(3, args.repeat // 2)))
    x1 = inputs(1, T1)
    rows.append(row(f"seq-split   chunked BxH=1 T={T1}",
                    lambda: la.causal(*x1, kind="elu", mode="chunked"),
                    max(3, args.repeat // 2)))
    i = la.info()
    pool = i.get("thread_pool", "openmp" if i.get("openmp") else "?")
    print(f"# {cpu_model()}; {os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))};"
          f" linattn {i['version']} simd={i['simd']} pool={pool};"
          f" load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':38s} {'1 thread ms (min-max)':>26s} {'2 threads ms (min-max)':>26s}"
          f" {'speedup':>8s} {'cpu 2/1':>8s}")
    for r in rows:
        cells = [f"{r[n][0] * 1e3:8.2f} ({r[n][1] * 1e3:.2f}-{r[n][2] * 1e3:.2f})"
                 for n in (1, 2)]
        print(f"{r['case']:38s} {cells[0]:>26s} {cells[1]:>26s} {r['speedup']:8.2f}"
              f" {r['cpu']:8.2f}")


if __name__ == "__main__":
    main()
