"""Gradient benchmark: backward / forward time of the generic operator.

Chunked form, T = 8192, B x H = 8, D = E = 64, float32, kind "elu" (div), by default
(docs/design/grad.md §6):

- ``causal_vjp`` forward vs ``la.causal`` (target <= 1.15);
- ``vjp(do)`` vs ``la.causal`` forward, 1 thread (target <= 2.5);
- ``vjp(do)`` at 2 threads vs 1 (target >= 1.9);
- forward + backward vs torch autograd through a torch chunked implementation of the same
  maths (batched matmuls, chunk 64, same thread count), when torch is installed
  (target >= 3x faster), and vs fast-transformers' ``CausalLinearAttention`` (its CPU
  ``CausalDotProduct``; target >= 5x) when that is installed.

Every figure is the median of ``--repeat`` runs, the calls being compared alternate
within each round (so load from other processes hits both alike), and every ratio comes
from one run.  Each line gives wall time and the process's CPU time (user + system, as
``perf stat -e task-clock``): at 1 thread CPU time is the steadier figure on a shared
machine; at 2 threads CPU / wall shows how busy the two threads were.  The CPU model and
the load average are printed first: figures taken under load are not comparable with
idle ones.

    python benchmarks/bench_grad.py [--T 8192] [--BH 8] [--D 64] [--repeat 7] [--kind elu]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import linattn as la
from linattn._tuning import cpu_model


def medians(fns: dict, repeat: int) -> dict:
    """{name: (median wall s, median CPU s)}; the calls alternate within each round."""
    for fn in fns.values():
        fn()  # warm up
    runs: dict = {name: ([], []) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs[name][1].append(time.process_time() - c0)
            runs[name][0].append(time.perf_counter() - w0)
    return {name: tuple(float(np.median(x)) for x in r) for name, r in runs.items()}


def fmt(t: tuple) -> str:
    return f"{t[0] * 1e3:8.2f} ms wall {t[1] * 1e3:8.2f} ms CPU"


def torch_chunked(torch, q, k, v, C: int, eps: float):
    """elu+1 features, div, no decay: docs/design/family.md §4.1 with batched matmuls (chunk C)."""
    F = torch.nn.functional
    BH, T, D = q.shape
    E = v.shape[-1]
    n = T // C
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    Q, K = fq.reshape(BH, n, C, D), fk.reshape(BH, n, C, D)
    Va = torch.cat([v, torch.ones(BH, T, 1, dtype=v.dtype)], -1).reshape(BH, n, C, E + 1)
    dS = K.transpose(-1, -2) @ Va
    S = torch.cumsum(dS, 1) - dS  # the state entering each chunk
    mask = torch.tril(torch.ones(C, C, dtype=q.dtype))
    N = ((Q @ K.transpose(-1, -2)) * mask) @ Va + Q @ S
    N = N.reshape(BH, T, E + 1)
    return N[..., :E] / (N[..., E:] + eps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, default=8192)
    p.add_argument("--BH", type=int, default=8)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--kind", default="elu")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--no-torch", action="store_true")
    a = p.parse_args()
    T, BH, D, C = a.T, a.BH, a.D, a.chunk
    rng = np.random.default_rng(0)
    q = (0.5 * rng.standard_normal((BH, T, D))).astype(np.float32)
    k = (0.5 * rng.standard_normal((BH, T, D))).astype(np.float32)
    v = rng.standard_normal((BH, T, D)).astype(np.float32)
    do = rng.standard_normal((BH, T, D)).astype(np.float32)
    kw = {"mode": "chunked", "chunk_size": C}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"linattn {la.__version__}; {cpu_model()}; {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; T={T} BxH={BH} D=E={D} C={C} float32 kind={a.kind}; medians of "
          f"{a.repeat}")
    _, vjp = la.causal_vjp(q, k, v, a.kind, **kw)
    steps = {"forward": lambda: la.causal(q, k, v, a.kind, **kw),
             "causal_vjp forward": lambda: la.causal_vjp(q, k, v, a.kind, **kw),
             "backward": lambda: vjp(do)}
    prev = la.get_num_threads()
    res = {}
    try:
        for th in (1, 2):
            la.set_num_threads(th)
            r = res[th] = medians(steps, a.repeat)
            print(f"threads={th}: " + "; ".join(f"{n} {fmt(t)}" for n, t in r.items()))
            for i, clock in enumerate(("wall", "CPU")):
                print(f"  {clock}: causal_vjp forward / forward "
                      f"{r['causal_vjp forward'][i] / r['forward'][i]:.2f} (target <= 1.15); "
                      f"backward / forward {r['backward'][i] / r['forward'][i]:.2f} "
                      f"(target <= 2.5)")
    finally:
        la.set_num_threads(prev)
    b1, b2 = res[1]["backward"], res[2]["backward"]
    print(f"backward 2 threads vs 1: {b1[0] / b2[0]:.2f}x wall (target >= 1.9); CPU at 2 "
          f"threads {b2[1] / b2[0]:.2f} x wall, {b2[1] / b1[1]:.2f} x the 1-thread CPU time")
    if a.no_torch or a.kind != "elu":
        return
    try:
        import torch
    except ImportError:
        print("torch not installed: torch comparison skipped")
        return
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    tdo = torch.tensor(do)

    def torch_fb():
        for x in (tq, tk, tv):
            x.grad = None
        o = torch_chunked(torch, tq, tk, tv, C, 1e-6)
        o.backward(tdo)

    def la_fb():
        _, vjp = la.causal_vjp(q, k, v, "elu", **kw)
        vjp(do)

    fns = {"linattn": la_fb, "torch": torch_fb}
    try:  # pip install --no-deps --no-build-isolation pytorch-fast-transformers (benchmarks/README.md)
        from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
        from fast_transformers.masking import LengthMask, TriangularCausalMask
    except ImportError:
        print("fast-transformers not installed: its comparison skipped")
    else:
        att = CausalLinearAttention(D, eps=1e-6)  # elu+1 features, div normaliser
        fq, fk, fv = (torch.tensor(x.transpose(1, 0, 2)[None].copy(), requires_grad=True)
                      for x in (q, k, v))  # (N = 1, L = T, H = BxH, D)
        fdo = torch.tensor(do.transpose(1, 0, 2)[None].copy())
        am, lm = TriangularCausalMask(T), LengthMask(torch.full((1,), T, dtype=torch.int64))

        def ft_fb():
            for x in (fq, fk, fv):
                x.grad = None
            att(fq, fk, fv, am, lm, lm).backward(fdo)
        fns["fast-transformers"] = ft_fb
    tprev = torch.get_num_threads()
    try:
        for th in (1, 2):
            torch.set_num_threads(th)
            la.set_num_threads(th)
            r = medians(fns, a.repeat)
            tl, tt = r["linattn"], r["torch"]
            print(f"threads={th}: forward+backward linattn {fmt(tl)}, torch "
                  f"{torch.__version__} chunked autograd {fmt(tt)}: {tt[0] / tl[0]:.2f}x "
                  f"wall, {tt[1] / tl[1]:.2f}x CPU (target >= 3)")
            if "fast-transformers" in r:
                tf = r["fast-transformers"]
                print(f"  fast-transformers CausalLinearAttention forward+backward {fmt(tf)}: "
                      f"{tf[0] / tl[0]:.2f}x wall, {tf[1] / tl[1]:.2f}x CPU (target >= 5)")
    finally:
        la.set_num_threads(prev)
        torch.set_num_threads(tprev)


if __name__ == "__main__":
    main()
