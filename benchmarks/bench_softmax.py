"""Exact causal softmax attention: ``linattn`` against torch's
``scaled_dot_product_attention(is_causal=True)``, forward, backward and both.

    python benchmarks/bench_softmax.py                       # T = 2048, B x H = 8, D = 64
    python benchmarks/bench_softmax.py --threads 1 2 --repeat 7 --clock cpu

For each thread count (``torch.set_num_threads`` and ``la.set_num_threads`` set alike)
it times, interleaved run by run so that load on a shared machine hits both sides:

* ``linattn.torch.softmax_attention`` forward, backward (``.backward(do)``) and both;
* ``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)`` alike;
* the NumPy entry points ``la.softmax_attention`` and ``la.softmax_attention_vjp``'s
  ``vjp(do)``.

Each figure is the median of ``--repeat`` runs after one warm-up; ratios are taken
within the run.  ``--clock cpu`` uses process CPU time (``time.process_time``): steadier
on a loaded machine, meaningful at 1 thread (with several threads it sums their time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from linattn._tuning import cpu_model


def main(argv=None):
    import numpy as np
    import torch

    import linattn as la
    import linattn.torch as lt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--noncausal", action="store_true")
    a = ap.parse_args(argv)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    causal = not a.noncausal
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(a.B, a.H, a.T, a.D, generator=g, dtype=dt).requires_grad_()
               for _ in range(3))
    do = torch.randn(a.B, a.H, a.T, a.D, generator=g, dtype=dt)
    qn, kn, vn, don = (x.detach().numpy() for x in (q, k, v, do))

    def sides():
        ours = lambda: lt.softmax_attention(q, k, v, causal=causal)  # noqa: E731
        sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
            q, k, v, is_causal=causal)
        return {"linattn.torch": ours, "torch SDPA": sdpa}

    print(f"CPU: {cpu_model()}; torch {torch.__version__}; linattn {la.__version__}; "
          f"{a.dtype}; {a.clock} clock; median of {a.repeat}; B={a.B} H={a.H} T={a.T} "
          f"D={a.D}; causal={causal}")
    for nth in a.threads:
        torch.set_num_threads(nth)
        la.set_num_threads(nth)
        times = {(s, p): [] for s in sides() for p in ("fwd", "bwd", "fwd+bwd")}
        np_f, np_b = [], []
        _, vjp = la.softmax_attention_vjp(qn, kn, vn, causal=causal)
        for it in range(a.repeat + 1):
            for name, f in sides().items():
                for x in (q, k, v):
                    x.grad = None
                with torch.no_grad():
                    t0 = clock()
                    f()
                    t1 = clock()
                t2 = clock()
                out = f()
                t3 = clock()
                out.backward(do)
                t4 = clock()
                if it:
                    times[name, "fwd"].append(t1 - t0)
                    times[name, "bwd"].append(t4 - t3)
                    times[name, "fwd+bwd"].append(t4 - t2)
            t0 = clock()
            la.softmax_attention(qn, kn, vn, causal=causal)
            t1 = clock()
            vjp(don)
            t2 = clock()
            if it:
                np_f.append(t1 - t0)
                np_b.append(t2 - t1)
        med = {key: statistics.median(ts) for key, ts in times.items()}
        print(f"threads {nth}:")
        for part in ("fwd", "bwd", "fwd+bwd"):
            ours, ref = med["linattn.torch", part], med["torch SDPA", part]
            print(f"  {part:8s} linattn.torch {ours * 1e3:8.1f} ms   SDPA {ref * 1e3:8.1f} ms"
                  f"   ratio {ours / ref:5.2f}")
        print(f"  NumPy: la.softmax_attention {statistics.median(np_f) * 1e3:.1f} ms, "
              f"vjp(do) {statistics.median(np_b) * 1e3:.1f} ms")
    del np
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
