"""Foundation benchmark: D = E = 64, T = 8192, B x H = 8, float32.

Prints recurrent / chunked / parallel times, the NumPy reference's time and the
chunked form's executed GFLOP/s as a fraction of the same run's np.matmul
float32 rate (1024^3), at 1 and 2 threads.  Medians of several runs.

    python benchmarks/bench_foundation.py [--T 8192] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import linattn as la


def median_time(fn, repeat: int) -> tuple[float, float, float]:
    fn()  # warm up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


def matmul_rate(threads: int, repeat: int) -> float:
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        t, _, _ = median_time(lambda: a @ a, repeat)
    return 2 * 1024**3 / t / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, default=8192)
    p.add_argument("--BH", type=int, default=8)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    T, BH, D, E, C = a.T, a.BH, a.D, a.D, a.chunk
    rng = np.random.default_rng(0)
    q = (0.5 * rng.standard_normal((BH, T, D))).astype(np.float32)
    k = (0.5 * rng.standard_normal((BH, T, D))).astype(np.float32)
    v = rng.standard_normal((BH, T, E)).astype(np.float32)
    info = la.info()
    print(f"linattn {info['version']}  BLAS {info['blas']} ({info['blas_corename']})  "
          f"SIMD {info['simd']}  numpy {np.__version__}")
    print(f"shape: B*H={BH} T={T} D=E={D} chunk={C} float32, kind='elu'\n")
    flops_dense = BH * T * (4 * D * E + 2 * C * (D + E))  # executed by the dense chunked form
    t_np, _, _ = median_time(lambda: la.reference.linear.causal(
        la.reference.linear.phi(q[:1], "elu1"), la.reference.linear.phi(k[:1], "elu1"),
        v[:1]), 1) if T <= 8192 else (float("nan"), 0, 0)
    t_np *= BH
    print(f"{'threads':>7} {'form':>10} {'median ms':>10} {'min':>8} {'max':>8} "
          f"{'ns/tok/head':>12} {'GFLOP/s':>8} {'x matmul':>9} {'vs numpy':>9}")
    for threads in (1, 2):
        la.set_num_threads(threads)
        mm = matmul_rate(threads, a.repeat)
        for mode in ("recurrent", "chunked", "parallel"):
            if mode == "parallel" and T > 16384:
                continue
            r = a.repeat if mode != "parallel" else max(1, a.repeat // 2)
            t, lo, hi = median_time(lambda: la.causal(q, k, v, kind="elu", mode=mode,
                                                      chunk_size=C), r)
            gf = flops_dense / t / 1e9 if mode == "chunked" else float("nan")
            print(f"{threads:>7} {mode:>10} {t * 1e3:>10.2f} {lo * 1e3:>8.2f} {hi * 1e3:>8.2f} "
                  f"{t / (BH * T) * 1e9:>12.1f} {gf:>8.1f} {gf / mm:>9.2f} {t_np / t:>9.0f}")
        print(f"{threads:>7} {'np.matmul':>10}  1024^3 float32: {mm:.1f} GFLOP/s")
    la.set_num_threads(0)
    print(f"\nNumPy quadratic reference (float64, tril(QK^T)V): {t_np * 1e3:.0f} ms for all "
          f"{BH} heads (timed on one head x {BH})")


if __name__ == "__main__":
    main()
