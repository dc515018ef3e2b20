"""Command line: ``python -m linattn {demo,bench,info} [--help]``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

# One entry per kind for the demo: (kind, causal?, extra keyword arguments).
DEMO_KINDS = [
    ("linear", True, {}),
    ("elu", True, {}),
    ("relu", True, {}),
    ("rfa", True, {}),
    ("performer", True, {}),
    ("transnormer", True, {}),
    ("lightning", True, {}),
    ("retnet", True, {}),
    ("mamba2", True, {"decay": "per-token"}),
    ("cosformer", True, {}),
    ("lavo", True, {}),
    ("lara", False, {}),
    ("ra", False, {}),
]


def demo_inputs(T: int = 512, H: int = 4, D: int = 64, seed: int = 0):
    """The embedded default input set: smooth-ish random sequences, logit std ~ 0.5."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((H, T, D)), axis=1) / np.sqrt(np.arange(1, T + 1))[:, None]
    q = (0.6 * walk + 0.4 * rng.standard_normal((H, T, D))).astype(np.float32)
    k = (0.6 * walk + 0.4 * rng.standard_normal((H, T, D))).astype(np.float32)
    v = rng.standard_normal((H, T, D)).astype(np.float32)
    return q, k, v


def _time(fn, repeat: int = 3) -> tuple[float, object]:
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_demo(args: argparse.Namespace) -> int:
    import linattn as la

    q, k, v = demo_inputs(T=args.T)
    H, T, D = q.shape
    print(f"linattn {la.__version__} demo: {H} heads, T = {T}, D = E = {D}, float32, "
          f"{la.get_num_threads()} thread(s)")
    print("error = ||o - softmax(q k^T / sqrt(D)) v|| / ||softmax ...|| on the same inputs\n")
    ref_c = la.softmax_attention(q, k, v, causal=True)
    ref_n = la.softmax_attention(q, k, v, causal=False)
    t_sm, _ = _time(lambda: la.softmax_attention(q, k, v, causal=True))
    rows = [("softmax (exact)", "causal", 0.0, t_sm)]
    for kind, causal, kw in DEMO_KINDS:
        kw = dict(kw)
        if kw.get("decay") == "per-token":
            kw["decay"] = np.full((H, T), -0.02)
        if causal:
            fn = lambda: la.causal(q, k, v, kind=kind, **kw)  # noqa: E731
            ref = ref_c
        else:
            fn = lambda: la.noncausal(q, k, v, kind=kind, **kw)  # noqa: E731
            ref = ref_n
        t, o = _time(fn)
        err = la.testing.relative_rms(o, ref)
        rows.append((kind, "causal" if causal else "noncausal", err, t))
    print(f"{'kind':<16} {'form':<10} {'error vs softmax':>17} {'time ms':>9}")
    for name, form, err, t in rows:
        print(f"{name:<16} {form:<10} {err:>17.3f} {t * 1e3:>9.2f}")
    print("\nlinear, lightning, retnet and mamba2 have no normaliser: they are not softmax "
          "estimates,\nso their error column only says how far their raw outputs are from it.")
    if args.png:
        try:
            from . import plot
            fig = plot.attention_matrix(q[0, :64], k[0, :64], kind=args.plot_kind, causal=True)
            fig.savefig(args.png, dpi=110, bbox_inches="tight")
            print(f"\nwrote {args.png} (implied attention of {args.plot_kind!r} next to "
                  f"softmax, first 64 tokens)")
        except ImportError as exc:
            print(f"\nno PNG written: {exc}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import linattn as la

    info = la.info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    if args.kinds:
        print()
        for name, d in la.kinds().items():
            forms = ", ".join(d["causal"] + (["noncausal"] if d["noncausal"] else []))
            print(f"{name:<12} {forms:<40} {d['doc'][:60]}")
    return 0


def run_bench(argv: list[str]) -> int:
    try:
        from . import _bench
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        print(f"benchmarks unavailable: {exc}", file=sys.stderr)
        return 1
    return int(_bench.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m linattn",
                                description="linattn: fast CPU linear attention for NumPy")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run every kind on an embedded input set; print a table of "
                                    "error vs exact softmax and time; write a PNG")
    d.add_argument("--T", type=int, default=512, help="sequence length (default 512)")
    d.add_argument("--png", default="linattn-demo.png",
                   help="where to write the attention-matrix PNG ('' to skip)")
    d.add_argument("--plot-kind", default="performer", help="kind drawn in the PNG")
    i = sub.add_parser("info", help="version, BLAS and its threading, SIMD level, threads, and the "
                                    "build configuration (compiler, ISA paths, OpenBLAS)")
    i.add_argument("--kinds", action="store_true", help="also list the kinds and their forms")
    sub.add_parser("bench", help="the benchmark suite (see `python -m linattn bench --help`)",
                   add_help=False)
    if argv and argv[0] == "bench":
        return run_bench(argv[1:])
    args = p.parse_args(argv)
    if args.cmd == "demo":
        return run_demo(args)
    return run_info(args)


if __name__ == "__main__":
    sys.exit(main())
