"""Kernel figures as fractions of this machine's own limits, per ISA path.

Same as ``python -m linattn bench --roofline``: measures in one run the 1-core float32 FMA
peak (a C loop in the extension, ``linattn._core.fma_peak``), NumPy's ``np.matmul``
float32 1024^3 rate on one thread with its OpenBLAS at the core type it picks itself (a
subprocess with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset; threadpoolctl reports the
kernels), and linattn's kernels under each ISA path this CPU runs (avx512, avx2, generic),
then writes ``<out>/roofline.csv`` with the CPU model, ISA path and BLAS core types.

    python benchmarks/bench_roofline.py [--quick] [--out DIR] [--paths avx2,generic]
                                        [--clock cpu]

Run it on a quiet machine: on a shared one use ``--clock cpu`` (one-thread figures and the
np.matmul limit timed by the thread's CPU time) and read the two-thread rows with care.

The recurrent rows alone, in more detail (``<out>/recurrent.csv``):

    python benchmarks/bench_roofline.py --recurrent [--quick] [--out DIR] [--paths ...]
                                        [--clock cpu] [--repeat N]

one thread, float32, D = E = 64, B*H = 8, T = 8192 (2048 with --quick), per ISA path:
ns per token and head of the recurrent form for the elementwise kinds with a denominator
(elu, linear), without one (``linear`` with ``normalize=None``) and the decay kinds
(lightning, retnet, mamba2); each as a fraction of the FMA floor 4 F E / peak, with the
best path's peak (the figure the roofline target reads) and with the path's own; and the
part of an elu token spent in its feature map (``la.features.elu1`` on 2 x 64 features a
token, rows resident in L2 as inside the kernel) for the same floor.  Three more elu
figures split its time: ``elu, out= given`` (the output preallocated: the difference to
``elu`` is the first touch of a fresh output, the kernel zeroing its pages), and ``elu`` and
``linear/no-norm`` with ``inputs in L2`` (one head of 1024 tokens called T * B*H / 1024
times, less as many 16-token calls for the per-call overhead: the arithmetic and the
per-token overheads without streaming q, k, v and the output through memory, about 1 KiB
a token).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from linattn._bench import roofline

REC_KINDS = (("elu", {}), ("linear", {}), ("linear", {"normalize": None}),
             ("lightning", {}), ("retnet", {}), ("mamba2", {}))


def recurrent_rows(argv=None) -> int:
    """``--recurrent``: the recurrent form's ns per token and head against the FMA floor."""
    import linattn as la
    from linattn import _core, _tuning
    from linattn._bench import (BH, D, E, _kind_kwargs, _med, environment, isa_paths, qkv,
                                threads)

    p = argparse.ArgumentParser(prog="bench_roofline.py --recurrent")
    p.add_argument("--recurrent", action="store_true")
    p.add_argument("--quick", action="store_true", help="T = 2048, 3 repeats")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--paths", default="")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    a = p.parse_args(argv)
    T = 2048 if a.quick else 8192
    repeat = 3 if a.quick else max(3, a.repeat)
    simd = _core.simd()
    runnable, paths = isa_paths(a.paths)
    if paths is None:
        return 2
    env = environment()
    cpu = _tuning.cpu_model()
    peaks = {x: _core.fma_peak(x, seconds=0.05 if a.quick else 0.2, reps=repeat,
                               clock=a.clock) for x in runnable}
    best = max(peaks.values())
    print(f"cpu={cpu}  FMA peak f32 1 core: " +
          ", ".join(f"{x} {v:.1f}" for x, v in peaks.items()) + f" GFLOP/s  (clock {a.clock})")
    q, k, v = qkv(T, BH)
    fq = np.empty_like(q)
    rows = []
    before = simd["active"]
    try:
        with threads(1):
            for path in paths:
                _tuning.set_simd(path)
                floor_best = 4 * D * E / best      # ns per token and head at the peak
                floor_own = 4 * D * E / peaks[path]
                figs = []
                for kind, extra in REC_KINDS:
                    kw = {**_kind_kwargs(kind, (BH, T)), **extra}
                    t = _med(lambda: la.causal(q, k, v, kind=kind, mode="recurrent", **kw),
                             repeat, a.clock)
                    label = kind + ("/no-norm" if "normalize" in extra else "")
                    figs.append((label, t))
                # where an elu token's time goes besides the arithmetic: the same call
                # into a preallocated output (no page faults on a fresh one), and on
                # inputs resident in L2 (one head of RT tokens, 3 x 256 KiB, called
                # T * BH / RT times: no streaming from memory either)
                ob = np.empty_like(v)
                t = _med(lambda: la.causal(q, k, v, kind="elu", mode="recurrent", out=ob),
                         repeat, a.clock)
                figs.append(("elu, out= given", t))
                RT = 1024
                qr, kr, vr = q[:1, :RT].copy(), k[:1, :RT].copy(), v[:1, :RT].copy()
                obr = np.empty_like(vr)
                for label, kw in (("elu, inputs in L2", {}),
                                  ("linear/no-norm, inputs in L2", {"normalize": None})):
                    kind = label.split(",")[0].split("/")[0]

                    def resident(n, kind=kind, kw=kw):
                        for _ in range(T * BH // RT):
                            la.causal(qr[:, :n], kr[:, :n], vr[:, :n], kind=kind,
                                      mode="recurrent", out=obr[:, :n], **kw)

                    # less the same number of 16-token calls (the per-call overhead of
                    # la.causal, tens of microseconds, 16 tokens' arithmetic aside)
                    t = _med(lambda: resident(RT), repeat, a.clock)
                    t0 = _med(lambda: resident(16), repeat, a.clock)[0]
                    figs.append((label, tuple(x - t0 for x in t)))
                # 1024 rows (256 KiB, in L2 as inside the kernel) 64 times: 2 rows a token
                xr, yr = q[0, :1024].reshape(-1), fq[0, :1024].reshape(-1)  # one row of 64K

                def feats():
                    for _ in range(64):
                        la.features.elu1(xr, out=yr)

                t = _med(feats, repeat, a.clock)
                scale = T * BH / (64 * 1024 / 2)
                figs.append(("elu1 features of q and k", tuple(x * scale for x in t)))
                for label, t in figs:
                    ns = t[0] / (T * BH) * 1e9
                    rows.append({"cpu": cpu, "isa_path": path, "figure": label,
                                 "ns_per_token_head": ns, "floor_ns": floor_best,
                                 "x_floor": ns / floor_best, "x_own_path_floor": ns / floor_own,
                                 "T": T, "BH": BH, "D": D, "E": E, "dtype": "float32",
                                 "threads": 1, "median_s": t[0], "min_s": t[1],
                                 "max_s": t[2], "clock": a.clock})
                    print(f"  {path:8s} {label:30s} {ns:8.1f} ns/token/head  "
                          f"{ns / floor_best:5.2f}x floor  ({ns / floor_own:5.2f}x this "
                          f"path's)", flush=True)
    finally:
        _tuning.set_simd(before)
    os.makedirs(a.out, exist_ok=True)
    out = os.path.join(a.out, "recurrent.csv")
    with open(out, "w", newline="") as f:
        f.write(f"# linattn recurrent rows {env['date']} cpu={cpu} linattn={env['linattn']} "
                f"fma_peak_f32_1core={ {x: round(v, 2) for x, v in peaks.items()} } "
                f"clock={a.clock}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if "--recurrent" in sys.argv[1:]:
        raise SystemExit(recurrent_rows(sys.argv[1:]))
    raise SystemExit(roofline(["--roofline", *sys.argv[1:]]))
