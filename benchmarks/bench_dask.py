"""linattn.dask targets in one run (docs/design/dask.md §6):

1. out of core: T tokens (default 2**27), B*H = 1, D = E = 64, float32, q/k/v produced
   lazily from a fixed seed, the output written to a zarr store by a 2-worker
   LocalCluster; peak RSS per worker; sampled output positions against a single-process
   streaming loop (``la.causal`` over the same blocks, carrying the state);
2. scale: one sequence (B*H = 1) on 2 single-thread workers vs 1;
3. the price of distribution: the 2-worker graph vs single-process ``la.causal`` with 2
   threads on the same (in-memory) input;
4. a fidelity sweep (kind x num_features x seed, 100 configurations) with ``client.map``
   and a plot.

    python benchmarks/bench_dask.py [--tokens 134217728] [--scale-tokens 16777216]
                                    [--block 262144] [--out results.json] [--plot sweep.png]

Ratios are taken inside one run.  Needs ``pip install "linattn[dask]" zarr psutil``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

import linattn as la


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cluster(n_workers: int, memory_limit: str = "4GiB"):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, memory_limit=memory_limit,
                           silence_logs=logging.ERROR)
    return cluster, Client(cluster)


def _inputs(T: int, block: int, seed: int, D: int = 64):
    """q, k, v of shape (1, T, D), float32, produced lazily block by block."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    shape, chunks = (1, T, D), (1, block, D)
    q = rng.standard_normal(shape, chunks=chunks, dtype=np.float32) * np.float32(0.5)
    k = rng.standard_normal(shape, chunks=chunks, dtype=np.float32) * np.float32(0.5)
    v = rng.standard_normal(shape, chunks=chunks, dtype=np.float32)
    return q, k, v


def out_of_core(T: int, block: int, kind: str, scan: str, samples: int, seed: int = 0):
    import dask.array as da
    import zarr  # noqa: F401  (to_zarr needs it)

    import linattn.dask as lad

    q, k, v = _inputs(T, block, seed)
    o = lad.causal(q, k, v, kind, scan=scan)
    path = tempfile.mkdtemp(prefix="linattn-dask-")
    store = os.path.join(path, "o.zarr")
    cluster, client = _cluster(2)
    try:
        t0 = time.perf_counter()
        da.to_zarr(o, store)
        wall = time.perf_counter() - t0
        rss = client.run(_peak_rss_mib)
    finally:
        client.close()
        cluster.close()
    # the single-process streaming loop over the same lazily produced blocks
    import zarr as _z

    out = _z.open_array(store, mode="r")
    rng = np.random.default_rng(1)
    nb = len(v.chunks[1])
    picked = set(rng.choice(nb, size=min(samples, nb), replace=False).tolist()) | {nb - 1}
    st = None
    got, want = [], []
    t0 = time.perf_counter()
    for j in range(nb):
        qb, kb, vb = (x.blocks[0, j, 0].compute(scheduler="synchronous") for x in (q, k, v))
        ob, st = la.causal(qb, kb, vb, kind, initial_state=st, return_state=True)
        if j in picked:
            a = j * block
            rows = rng.choice(ob.shape[1], size=min(8, ob.shape[1]), replace=False)
            want.append(ob[0, rows].astype(np.float64))
            got.append(np.asarray(out[0, a + rows, :], dtype=np.float64))
    stream = time.perf_counter() - t0
    err = la.testing.relative_rms(np.concatenate(got), np.concatenate(want))
    shutil.rmtree(path, ignore_errors=True)
    in_gib = 3 * T * 64 * 4 / 2**30
    return {"tokens": T, "block": block, "kind": kind, "scan": scan,
            "inputs_gib": round(in_gib, 3), "wall_s": round(wall, 3),
            "stream_loop_s": round(stream, 3),
            "peak_rss_mib_per_worker": {str(w): round(r, 1) for w, r in rss.items()},
            "sampled_rows": int(sum(len(g) for g in got)), "sampled_rel_rms": err}


def _time(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def scale(T: int, block: int, kind: str, repeat: int, seed: int = 0):
    """2 single-thread workers vs 1 on one sequence, and the 2-worker graph vs threaded
    la.causal (2 threads); inputs persisted on the workers first (not timed)."""
    import dask
    from distributed import wait

    import linattn.dask as lad

    q, k, v = _inputs(T, block, seed)
    qn, kn, vn = dask.compute(q, k, v, scheduler="threads")
    res = {"tokens": T, "block": block, "kind": kind}
    for n in (1, 2):
        cluster, client = _cluster(n)
        try:
            qd, kd, vd = client.persist([q, k, v])
            wait([qd, kd, vd])

            def run():
                o = lad.causal(qd, kd, vd, kind).persist()
                wait(o)
                del o
            res[f"graph_{n}_workers_s"] = _time(run, repeat)
        finally:
            client.close()
            cluster.close()
    prev = la.get_num_threads()
    la.set_num_threads(2)
    try:
        res["la_causal_2_threads_s"] = _time(lambda: la.causal(qn, kn, vn, kind), repeat)
    finally:
        la.set_num_threads(prev)
    res["speedup_2_vs_1_worker"] = res["graph_1_workers_s"] / res["graph_2_workers_s"]
    res["graph_2_workers_over_la_causal"] = res["graph_2_workers_s"] / \
        res["la_causal_2_threads_s"]
    return res


def _one_config(args, q, k, v):
    kind, m, seed = args
    r = la.approximation_error(q, k, v, kind, num_features=(m,), seeds=(seed,))
    return kind, m, seed, float(r["output_error"][0, 0]), float(r["attention_error"][0, 0])


def sweep(plot: str | None, T: int = 256, D: int = 64):
    """kind x num_features x seed = 2 x 5 x 10 configurations with client.map."""
    cluster, client = _cluster(2)
    try:
        rng = np.random.default_rng(0)
        q, k, v = (0.25 * rng.standard_normal((4, T, D)) for _ in range(3))
        qf, kf, vf = client.scatter([q, k, v], broadcast=True)
        configs = [(kind, m, s) for kind in ("performer", "rfa")
                   for m in (16, 32, 64, 128, 256) for s in range(10)]
        t0 = time.perf_counter()
        futs = client.map(_one_config, configs, q=qf, k=kf, v=vf, pure=True)
        rows = client.gather(futs)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    table = {}
    for kind, m, s, oe, ae in rows:
        table.setdefault(kind, {}).setdefault(m, []).append(oe)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for kind, by_m in table.items():
            ms = sorted(by_m)
            mean = [np.mean(by_m[m]) for m in ms]
            std = [np.std(by_m[m]) for m in ms]
            ax.errorbar(ms, mean, yerr=std, marker="o", capsize=3, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("num_features")
        ax.set_ylabel("relative output error vs softmax")
        ax.set_title("fidelity sweep: 100 configurations, client.map")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
    return {"configurations": len(rows), "wall_s": round(wall, 3),
            "mean_output_error": {kind: {int(m): float(np.mean(e)) for m, e in sorted(by.items())}
                                  for kind, by in table.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2**27, help="out-of-core sequence length")
    p.add_argument("--block", type=int, default=2**18, help="tokens per block")
    p.add_argument("--scale-tokens", type=int, default=2**24)
    p.add_argument("--scale-block", type=int, default=2**18)
    p.add_argument("--kind", default="elu")
    p.add_argument("--scan", default="auto", choices=("auto", "parallel", "sequential"))
    p.add_argument("--samples", type=int, default=16, help="blocks sampled for the check")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip", default="", help="comma list of: ooc,scale,sweep")
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--plot", default="bench_dask_sweep.png")
    a = p.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    import platform

    res = {"linattn": la.__version__, "python": sys.version.split()[0],
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        import dask

        res["dask"] = dask.__version__
    except ImportError:
        sys.exit("bench_dask needs dask: pip install \"linattn[dask]\" zarr")
    if "ooc" not in skip:
        res["out_of_core"] = out_of_core(a.tokens, a.block, a.kind, a.scan, a.samples)
        print(json.dumps(res["out_of_core"], indent=1), flush=True)
    if "scale" not in skip:
        res["scale"] = scale(a.scale_tokens, a.scale_block, a.kind, a.repeat)
        print(json.dumps(res["scale"], indent=1), flush=True)
    if "sweep" not in skip:
        res["sweep"] = sweep(a.plot)
        print(json.dumps(res["sweep"], indent=1), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
