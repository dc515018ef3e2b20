"""``linattn.torch.softmax_attention`` forward + backward vs torch's
``scaled_dot_product_attention(is_causal=True)`` forward + backward (target: not slower).

    python benchmarks/bench_torch.py                  # T = 2048, B = 1, H = 8, D = 64, float32
    python benchmarks/bench_torch.py --T 4096 --threads 2 --repeat 7

Both run with the same thread count (``torch.set_num_threads`` and ``la.set_num_threads``);
each figure is the best of ``--repeat`` runs after one warm-up.  Also prints the NumPy-level
split (``la.softmax_attention_vjp`` forward, ``vjp``) and the selective scan's forward +
backward through ``linattn.torch``.  Timings on a shared machine are noisy: compare ratios
from one run.
"""

from __future__ import annotations

import argparse
import platform
import time


CLOCK = time.perf_counter


def best(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        ts.append(CLOCK() - t)
    return min(ts)


def main(argv=None):
    import torch

    import linattn as la
    import linattn.torch as lt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: process CPU time (steadier on a loaded machine, 1 thread)")
    a = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    torch.set_num_threads(a.threads)
    la.set_num_threads(a.threads)
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(a.B, a.H, a.T, a.D, generator=g, dtype=dt).requires_grad_()
               for _ in range(3))
    do = torch.randn(a.B, a.H, a.T, a.D, generator=g, dtype=dt)

    def run(f):
        def go():
            for x in (q, k, v):
                x.grad = None
            f(q, k, v).backward(do)
        return go

    t_la = best(run(lambda q, k, v: lt.softmax_attention(q, k, v, causal=True)), a.repeat)
    t_sdpa = best(run(lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True)), a.repeat)
    qn, kn, vn, don = (x.detach().numpy() for x in (q, k, v, do))
    t_f = best(lambda: la.softmax_attention_vjp(qn, kn, vn), a.repeat)
    _, vjp = la.softmax_attention_vjp(qn, kn, vn)
    t_b = best(lambda: vjp(don), a.repeat)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor()) \
        if platform.system() == "Linux" else platform.processor()
    print(f"CPU: {cpu}; torch {torch.__version__}; linattn {la.__version__}; "
          f"threads {a.threads}; {a.dtype}; {a.clock} time; B={a.B} H={a.H} T={a.T} D={a.D}")
    print(f"linattn.torch.softmax_attention fwd+bwd : {t_la * 1e3:9.1f} ms")
    print(f"torch SDPA(is_causal=True) fwd+bwd      : {t_sdpa * 1e3:9.1f} ms")
    print(f"ratio linattn / torch                   : {t_la / t_sdpa:9.2f}  (target <= 1)")
    print(f"la.softmax_attention_vjp forward        : {t_f * 1e3:9.1f} ms")
    print(f"vjp(do)                                 : {t_b * 1e3:9.1f} ms  "
          f"(backward / forward {t_b / t_f:.2f})")

    # selective scan, a Mamba-1 layer's shapes
    Bb, Dc, L, N = 4, 128, 512, 16
    u, dl = (torch.randn(Bb, Dc, L, generator=g, dtype=dt).requires_grad_() for _ in range(2))
    A = (-torch.rand(Dc, N, generator=g, dtype=dt) - 0.1).requires_grad_()
    Bm, Cm = (torch.randn(Bb, N, L, generator=g, dtype=dt).requires_grad_() for _ in range(2))

    def scan():
        for x in (u, dl, A, Bm, Cm):
            x.grad = None
        lt.selective_scan(u, dl, A, Bm, Cm, delta_softplus=True).sum().backward()
    t_s = best(scan, a.repeat)
    un, dln, An, Bn, Cn = (x.detach().numpy() for x in (u, dl, A, Bm, Cm))
    t_sf = best(lambda: la.selective_scan(un, dln, An, Bn, Cn, delta_softplus=True), a.repeat)
    print(f"selective_scan fwd+bwd (b={Bb}, D={Dc}, L={L}, N={N}) : {t_s * 1e3:7.1f} ms "
          f"(forward alone {t_sf * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
