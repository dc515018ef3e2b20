"""Decoding and small calls: la.step, la.Decoder.step and a T = 16 la.causal, every kind.

    python benchmarks/bench_decode.py [--calls 300] [--repeat 7] [--kinds elu,lavo]
                                      [--threads 1,2] [--bh 32] [--d 64] [--clock cpu]

Rows (float32, B x H = ``--bh`` (32), D = E = ``--d`` (64), per call, Python included):

* ``la.step``     ``la.step(q_t, k_t, v_t, state, inplace=True)`` (its per-state plan);
* ``Decoder``     ``dec.step(q_t, k_t, v_t)`` of a ``la.Decoder`` made once;
* ``la.step copy`` ``o_t, state = la.step(q_t, k_t, v_t, state)``, the default copying
  step (a new state every call, the old one left as it was);
* ``causal T=16`` ``la.causal(q, k, v, kind)`` with T = 16 and B x H = 1.

Each figure is the median over ``--repeat`` runs of the mean time of ``--calls`` calls
(after a warm-up), in microseconds, with the minimum of the runs; ``--threads`` pins
``la.set_num_threads`` for each column.  The machine is often shared: the load average
and the CPU model head the table, and the minimum shows what an idle core gives.
``--clock cpu`` times the process's CPU time instead of the wall clock: on a loaded
machine it leaves out the time other processes hold the core (not their cache damage),
and with more than one thread it adds the workers' time.

Targets (docs/design/performance.md §3): la.step <= 10 us for linear, elu, relu,
lightning, retnet, mamba2; <= 20 us for rfa, performer, cosformer, transnormer; <= 40 us
for lavo.  la.causal T = 16, B x H = 1: <= 15 us for the elementwise and decay kinds,
<= 40 us for the others.  The copying la.step: within about 1.5x the in-place one.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import linattn as la
from linattn._tuning import cpu_model

KINDS = ["linear", "elu", "relu", "lightning", "retnet", "mamba2", "rfa", "performer",
         "cosformer", "transnormer", "lavo"]
OPTIONS = {"cosformer": {"horizon": 1 << 20}, "rfa": {"seed": 0, "num_features": 64},
           "performer": {"seed": 0, "num_features": 64}}
STEP_TARGET = {"linear": 10, "elu": 10, "relu": 10, "lightning": 10, "retnet": 10,
               "mamba2": 10, "rfa": 20, "performer": 20, "cosformer": 20,
               "transnormer": 20, "lavo": 40}
CAUSAL_TARGET = {k: (15 if k in ("linear", "elu", "relu", "lightning", "retnet", "mamba2")
                     else 40) for k in KINDS}


def per_call(fn, calls: int, repeat: int, clock=time.perf_counter) -> tuple[float, float]:
    """(median, min) over ``repeat`` runs of the mean time of ``calls`` calls, in us."""
    for _ in range(max(calls // 10, 3)):
        fn()
    runs = []
    for _ in range(repeat):
        t0 = clock()
        for _ in range(calls):
            fn()
        runs.append((clock() - t0) / calls * 1e6)
    runs.sort()
    return runs[len(runs) // 2], runs[0]


def cases(kind: str, bh: int, d: int, seed: int = 0):
    """The three callables of one kind (inputs and states made outside the timing)."""
    r = np.random.default_rng(seed)
    kw = OPTIONS.get(kind, {})
    q, k, v = (r.standard_normal((bh, d)).astype(np.float32) * 0.5 for _ in range(3))
    g = np.full((bh,), -0.05)
    per_step = {"decay": g} if kind == "mamba2" else {}
    st = la.State.zeros(kind, (bh,), d, d, dtype=np.float32, **kw)
    dec = la.Decoder(kind, (bh,), d, d, dtype=np.float32, **kw)
    Q, K, V = (r.standard_normal((1, 16, d)).astype(np.float32) * 0.5 for _ in range(3))
    ckw = dict(kw, decay=np.full((1, 16), -0.05)) if kind == "mamba2" else kw
    dec_args = (q, k, v, g) if kind == "mamba2" else (q, k, v)
    chain = [la.State.zeros(kind, (bh,), d, d, dtype=np.float32, **kw)]

    def copying():
        chain[0] = la.step(q, k, v, chain[0], **kw, **per_step)[1]

    return {
        "la.step": lambda: la.step(q, k, v, st, inplace=True, **kw, **per_step),
        "Decoder": lambda: dec.step(*dec_args),
        "la.step copy": copying,
        "causal T=16": lambda: la.causal(Q, K, V, kind, **ckw),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--bh", type=int, default=32)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    a = ap.parse_args(argv)
    clock = time.perf_counter if a.clock == "wall" else time.process_time
    threads = [int(x) for x in a.threads.split(",")]
    info = la.info()
    print(f"# linattn {la.__version__}, numpy {np.__version__}, CPU {cpu_model()}, "
          f"{os.cpu_count()} CPUs, simd {info.get('simd', '?')}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# float32, B x H = {a.bh}, D = E = {a.d} (causal: B x H = 1, T = 16); "
          f"median of {a.repeat} runs of {a.calls} calls, us per call (min), "
          f"{a.clock} clock")
    X = np.ones((1, 16, a.d), np.float32)
    base, base_lo = per_call(lambda: np.add(X, X), a.calls, a.repeat, clock)
    print(f"# same-run baseline for the causal T=16 rows: np.add of two (1, 16, {a.d}) float32 "
          f"arrays {base:.2f} us ({base_lo:.2f}); under load both grow alike")
    head = f"{'kind':12s} {'case':13s}" + "".join(f" {f'threads={n}':>20s}" for n in threads)
    print(head + "  target")
    for kind in a.kinds.split(","):
        fns = cases(kind, a.bh, a.d)
        for case, fn in fns.items():
            cells = []
            for n in threads:
                la.set_num_threads(n)
                med, lo = per_call(fn, a.calls, a.repeat, clock)
                cells.append(f"{med:9.1f} ({lo:7.1f})")
            target = (CAUSAL_TARGET if case.startswith("causal") else STEP_TARGET)[kind]
            if case == "la.step copy":
                target = "1.5x la.step"  # the copying step's: within ~1.5x the in-place one
            print(f"{kind:12s} {case:13s}" + "".join(f" {c:>20s}" for c in cells)
                  + f"  <= {target}", flush=True)
    la.set_num_threads(0)


if __name__ == "__main__":
    main()
