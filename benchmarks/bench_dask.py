"""linattn.dask targets in one run (docs/design/dask.md §6), each part selectable:

--ooc    out of core: T tokens (default 2**27: 96 GiB of q, k, v, 32 GiB of output),
         B*H = 1, D = E = 64, float32, q/k/v produced lazily block by block from a fixed
         seed (a generator per block, seeded by (seed, input, block), drawing rows of a
         pool of normal rows with a random sign and scale each), the output written
         to a zarr store in a temporary directory by a 2-worker LocalCluster; peak RSS per
         worker (target <= 2 GiB); sampled output rows against a single-process streaming
         loop (la.causal over the same blocks, carrying a float64 state) within the float32
         tolerance of docs/design/family.md §10 (1e-5, times sqrt(T / 65536) beyond 65536
         tokens without decay); the time projected to 2**27 tokens from this run;
--scale  one sequence (B*H = 1, T = 2**24 by default) on 2 single-thread workers vs 1
         (target >= 1.6x; dask's work stealing off unless --stealing: it moves a block's
         tasks away from their inputs);
--price  the 2-worker graph vs single-process ``la.causal`` with 2 threads on the same
         in-memory input (target: within 1.3x);
--sweep  a fidelity sweep (kind x num_features x seed, 100 configurations) with
         ``client.map``, and a plot.

No part flag: all four.  ``--tokens 1048576`` runs the out-of-core part in about a
minute.  Ratios are taken inside one run; the CPU model and every figure are printed as
they come, and the total time at the end.

    python benchmarks/bench_dask.py [--ooc] [--scale] [--price] [--sweep]
        [--tokens 134217728] [--block 262144] [--scale-tokens 16777216]
        [--scale-block 262144] [--tmpdir DIR] [--out results.json] [--plot sweep.png]

Needs ``pip install "linattn[dask]" zarr psutil``.  Memory: --scale and --price hold
q, k, v and the output of ``--scale-tokens`` tokens (16 GiB at 2**24) in one process at
a time; --ooc needs free disk for the output (32 GiB at 2**27, checked first).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import math
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

import linattn as la
from linattn._tuning import cpu_model

D = 64  # features (D = E)


def _say(name: str, value) -> None:
    print(f"{name}: {value}", flush=True)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _cluster(n_workers: int, memory_limit, local_directory: str | None = None):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", memory_limit=memory_limit,
                           local_directory=local_directory, silence_logs=logging.ERROR)
    return cluster, Client(cluster)


# ------------------------------------------------------------------ inputs --

POOL_ROWS = 65537  # a prime: a block's rows walk the pool with any stride


@functools.lru_cache(maxsize=8)
def _pool(which: int, seed: int) -> np.ndarray:
    """Normal rows drawn once per process for input ``which`` (0 q, 1 k, 2 v)."""
    x = np.random.default_rng([seed, which]).standard_normal((POOL_ROWS, D), dtype=np.float32)
    if which < 2:
        x *= np.float32(0.5)
    return x


def _block(which: int, j: int, rows: int, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """Block ``j`` (``rows`` tokens) of input ``which``, shape (1, rows, D) float32: a
    generator per block seeded by (seed, which, j) picks a start and a stride through a
    pool of normal rows and a random sign and scale (0.5 to 1.5) per row, so any block is
    produced on its own, in any process, in any order, at the cost of a gather (drawing
    every value from a normal generator would cost more than the attention itself)."""
    rng = np.random.default_rng([seed, which, j])
    start, stride = (int(x) for x in rng.integers(1, POOL_ROWS, size=2))
    idx = np.arange(rows, dtype=np.int64)
    idx *= stride
    idx += start
    idx %= POOL_ROWS
    scale = rng.uniform(0.5, 1.5, rows).astype(np.float32)
    scale *= np.where(rng.random(rows) < 0.5, np.float32(-1), np.float32(1))
    x = np.take(_pool(which, seed), idx, axis=0, out=None if out is None else out[0])
    x *= scale[:, None]
    return x[None]


def _gen(block_info=None, seed: int = 0):
    """Block j of q, k and v at once, shape (3, 1, rows, D): the three inputs of a block
    are produced by one task, so they live on one worker (a block's pass-3 task reads
    all three; produced apart they land on different workers and a task moves up to
    128 MiB between them)."""
    info = block_info[None]
    j, rows = info["chunk-location"][2], info["chunk-shape"][2]
    out = np.empty((3, 1, rows, D), np.float32)
    for i in range(3):
        _block(i, j, rows, seed, out=out[i])
    return out


def _tchunks(T: int, block: int) -> tuple[int, ...]:
    n, r = divmod(T, block)
    return (block,) * n + ((r,) if r else ())


def lazy_inputs(T: int, block: int, seed: int):
    """q, k, v of shape (1, T, D), float32, produced lazily block by block."""
    import dask.array as da

    chunks = ((3,), (1,), _tchunks(T, block), (D,))
    x = da.map_blocks(_gen, seed=seed, chunks=chunks, dtype=np.float32,
                      meta=np.empty((0, 0, 0, 0), np.float32),
                      name=f"bench-inputs-{seed}-{T}-{block}")
    return [x[i] for i in range(3)]


def numpy_inputs(T: int, block: int, seed: int):
    """The same q, k, v, in memory."""
    out = [np.empty((1, T, D), np.float32) for _ in range(3)]
    a = 0
    for j, rows in enumerate(_tchunks(T, block)):
        for i in range(3):
            out[i][:, a:a + rows] = _block(i, j, rows, seed)
        a += rows
    return out


def f32_tolerance(T: int) -> float:
    """docs/design/family.md §10: float32, no decay."""
    return 1e-5 * max(1.0, math.sqrt(T / 65536))


# ------------------------------------------------------------- out of core --

def out_of_core(T: int, block: int, kind: str, scan: str, samples: int, seed: int,
                tmpdir: str, memory_limit: str):
    import dask.array as da
    import zarr

    import linattn.dask as lad

    need = T * D * 4
    free = shutil.disk_usage(tmpdir).free
    if free < 1.05 * need:
        raise SystemExit(f"--ooc needs {need / 2**30:.1f} GiB of free disk in {tmpdir} for "
                         f"the output, {free / 2**30:.1f} GiB free; pass --tmpdir")
    q, k, v = lazy_inputs(T, block, seed)
    o = lad.causal(q, k, v, kind, scan=scan)
    path = tempfile.mkdtemp(prefix="linattn-dask-", dir=tmpdir)
    store = os.path.join(path, "o.zarr")
    res = {"tokens": T, "block": block, "kind": kind, "scan": scan,
           "inputs_gib": round(3 * T * D * 4 / 2**30, 3),
           "output_gib": round(need / 2**30, 3)}
    _say("ooc inputs (GiB, produced lazily)", res["inputs_gib"])
    try:
        cluster, client = _cluster(2, memory_limit, os.path.join(path, "workers"))
        try:
            # warm-up (imports, thread controllers, first allocations), not timed
            wq, wk, wv = lazy_inputs(2 * min(block, 4096), min(block, 4096), seed)
            lad.causal(wq, wk, wv, kind, scan=scan).compute()
            cpu0, sched0 = client.run(_cpu_s), client.run_on_scheduler(_cpu_s)
            t0 = time.perf_counter()
            da.to_zarr(o, store, compressors=None)
            res["wall_s"] = round(time.perf_counter() - t0, 3)
            cpu1, sched1 = client.run(_cpu_s), client.run_on_scheduler(_cpu_s)
            rss = client.run(_peak_rss_mib)
        finally:
            client.close()
            cluster.close()
        res["peak_rss_mib_per_worker"] = [round(r, 1) for r in rss.values()]
        res["worker_cpu_s"] = [round(cpu1[w] - cpu0[w], 2) for w in cpu0]
        res["scheduler_cpu_s"] = round(sched1 - sched0, 2)
        # on an idle machine the run takes about the busier worker's CPU time
        res["projected_wall_2^27_s"] = round(max(res["worker_cpu_s"]) * 2**27 / T, 1)
        _say("ooc wall (s), 2 workers, output to zarr", res["wall_s"])
        _say("ooc CPU time per worker (s); scheduler",
             f"{res['worker_cpu_s']}; {res['scheduler_cpu_s']}")
        _say("ooc peak RSS per worker (MiB; target <= 2048)", res["peak_rss_mib_per_worker"])
        _say("ooc projected wall at 2**27 tokens on an idle machine (s; busier worker's "
             "CPU time scaled)", res["projected_wall_2^27_s"])

        # the single-process streaming loop over the same blocks, carrying the state
        out = zarr.open_array(store, mode="r")
        rng = np.random.default_rng(1)
        tch = _tchunks(T, block)
        nb = len(tch)
        picked = set(rng.choice(nb, size=min(samples, nb), replace=False).tolist()) | {nb - 1}
        # the reference carries a float64 state: a float32 one loses the increments of an
        # undecayed stream once its normaliser passes ~2**24 (7e-3 relative at 2**27 tokens
        # against a float64 stream, where per-block states summed with la.combine give 9e-5)
        st, got, want, a = la.State.zeros(kind, (1,), D, dtype=np.float64), [], [], 0
        t0 = time.perf_counter()
        c0 = _cpu_s()
        gen_s = gen_cpu = att_cpu = 0.0
        for j, n in enumerate(tch):
            t1, c1 = time.perf_counter(), _cpu_s()
            qb, kb, vb = (_block(i, j, n, seed) for i in range(3))
            c2 = _cpu_s()
            gen_s += time.perf_counter() - t1
            gen_cpu += c2 - c1
            ob, st = la.causal(qb, kb, vb, kind, initial_state=st, return_state=True)
            att_cpu += _cpu_s() - c2
            if j in picked:
                rows = np.sort(rng.choice(n, size=min(8, n), replace=False))
                want.append(ob[0, rows].astype(np.float64))
                got.append(np.asarray(out[0, a + rows, :], dtype=np.float64))
            a += n
        res["stream_loop_s"] = round(time.perf_counter() - t0, 3)
        res["stream_loop_cpu_s"] = round(_cpu_s() - c0, 2)
        res["stream_loop_generation_s"] = round(gen_s, 3)
        # idle machine: the generation's CPU time (one thread) plus la.causal's split
        # over the threads (it splits one sequence, about 1.7x on 2)
        threads = la.get_num_threads()
        res["projected_stream_loop_2^27_s"] = round(
            (gen_cpu + att_cpu / (1.0 if threads < 2 else 0.85 * threads)) * 2**27 / T, 1)
        err = la.testing.relative_rms(np.concatenate(got), np.concatenate(want))
        tol = f32_tolerance(T)
        res.update(sampled_rows=int(sum(len(g) for g in got)), sampled_rel_rms=err,
                   tolerance=tol, equal=bool(err <= tol))
        _say("ooc streaming loop (s; of which generating inputs; CPU s)",
             f"{res['stream_loop_s']} ({res['stream_loop_generation_s']}; "
             f"{res['stream_loop_cpu_s']})")
        _say("ooc sampled rows vs streaming loop: rel RMS (tolerance)",
             f"{err:.3g} ({tol:.3g}) -> {'equal' if err <= tol else 'DIFFERENT'}")
        res["projected_total_2^27_s"] = round(res["projected_wall_2^27_s"] +
                                              res["projected_stream_loop_2^27_s"], 1)
        _say("ooc projected at 2**27 on an idle machine: graph + streaming check (s)",
             res["projected_total_2^27_s"])
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return res


# ------------------------------------------------------------------- scale --

def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def graph_time(n_workers: int, T: int, block: int, kind: str, scan: str, repeat: int,
               seed: int, stealing: bool = False) -> float:
    """The lad.causal graph on ``n_workers`` single-thread workers; inputs produced and
    kept on the workers first (not timed); outputs kept until the run ends.  Work
    stealing is off unless ``stealing``: it moves a block's task with its 128-192 MiB of
    inputs to the other worker when their progress differs (measured at 2**22 tokens, 16
    blocks: 832 MiB moved between the 2 workers per run with stealing, 384 MiB without)."""
    import dask
    from distributed import wait

    import linattn.dask as lad

    with dask.config.set({"distributed.scheduler.work-stealing": stealing}):
        cluster, client = _cluster(n_workers, 0)
    try:
        qd, kd, vd = client.persist(lazy_inputs(T, block, seed))
        wait([qd, kd, vd])

        def run():
            o = lad.causal(qd, kd, vd, kind, scan=scan).persist()
            wait(o)
            del o
        return _time(run, repeat)
    finally:
        client.close()
        cluster.close()


def la_causal_time(T: int, block: int, kind: str, threads: int, repeat: int,
                   seed: int) -> float:
    q, k, v = numpy_inputs(T, block, seed)
    prev = la.get_num_threads()
    la.set_num_threads(threads)
    try:
        return _time(lambda: la.causal(q, k, v, kind), repeat)
    finally:
        la.set_num_threads(prev)
        del q, k, v
        gc.collect()


def pass_costs(block: int, kind: str, seed: int, repeat: int = 5) -> dict:
    """One thread, one block: pass 1 (``la.transition``) and pass 3 (``la.read_out`` from
    a non-empty entering state, before and after ``2**21`` tokens, where a float32
    read-out takes the chunked form) against a forward (``la.causal``), CPU time (less
    sensitive to other processes than wall time), best of ``repeat`` interleaved runs;
    the scan does ``p1 + p3`` forwards of work in all."""
    from threadpoolctl import threadpool_limits

    q, k, v = (_block(i, 1, block, seed) for i in range(3))
    _, entering = la.causal(q, k, v, kind, return_state=True)
    prev = la.get_num_threads()
    la.set_num_threads(1)
    blas = threadpool_limits(limits=1)
    late = la.State(entering.S, entering.z, max(entering.t, 2**21), entering.kind,
                    entering.extra)  # past 2**21 tokens: a float32 read-out is chunked
    best = {"forward": math.inf, "pass1": math.inf, "pass3": math.inf, "pass3_late": math.inf}
    runs = {"forward": lambda: la.causal(q, k, v, kind),
            "pass1": lambda: la.transition(q, k, v, kind, start=block),
            "pass3": lambda: la.read_out(q, k, v, entering, kind),
            "pass3_late": lambda: la.read_out(q, k, v, late, kind)}
    try:
        for fn in runs.values():
            fn()
        for _ in range(repeat):
            for name, fn in runs.items():
                t0 = time.process_time()
                fn()
                best[name] = min(best[name], time.process_time() - t0)
    finally:
        la.set_num_threads(prev)
        blas.restore_original_limits()
    res = {"block": block, "forward_s": best["forward"],
           "pass1_over_forward": best["pass1"] / best["forward"],
           "pass3_over_forward": best["pass3"] / best["forward"],
           "pass3_late_over_forward": best["pass3_late"] / best["forward"]}
    _say("one thread, one block: forward (CPU s); pass 1 / forward; pass 3 / forward "
         "(entering before 2**21 tokens; from 2**21 on)",
         f"{best['forward']:.4f}; {res['pass1_over_forward']:.3f}; "
         f"{res['pass3_over_forward']:.3f}; {res['pass3_late_over_forward']:.3f}")
    return res


def scale(T, block, kind, scan, repeat, seed, price: bool, speedup: bool,
          stealing: bool = False):
    res = {"tokens": T, "block": block, "kind": kind, "scan": scan, "work_stealing": stealing}
    res["passes"] = pass_costs(block, kind, seed)
    if price:  # first, so that the client's copy is freed before the clusters start
        res["la_causal_2_threads_s"] = la_causal_time(T, block, kind, 2, repeat, seed)
        _say("la.causal, one process, 2 threads (s)", round(res["la_causal_2_threads_s"], 3))
    res["graph_2_workers_s"] = graph_time(2, T, block, kind, scan, repeat, seed, stealing)
    _say("lad.causal graph, 2 single-thread workers (s)", round(res["graph_2_workers_s"], 3))
    if speedup:
        res["graph_1_worker_s"] = graph_time(1, T, block, kind, scan, repeat, seed, stealing)
        _say("lad.causal graph, 1 single-thread worker (s)", round(res["graph_1_worker_s"], 3))
        res["speedup_2_vs_1_worker"] = res["graph_1_worker_s"] / res["graph_2_workers_s"]
        _say("speedup 2 workers vs 1 (target >= 1.6)", round(res["speedup_2_vs_1_worker"], 3))
    if price:
        res["graph_2_workers_over_la_causal"] = res["graph_2_workers_s"] / \
            res["la_causal_2_threads_s"]
        _say("2-worker graph / la.causal 2 threads (target <= 1.3)",
             round(res["graph_2_workers_over_la_causal"], 3))
    return res


# ------------------------------------------------------------------- sweep --

def _one_config(args, q, k, v):
    kind, m, seed = args
    r = la.approximation_error(q, k, v, kind, num_features=(m,), seeds=(seed,))
    return kind, m, seed, float(r["output_error"][0, 0]), float(r["attention_error"][0, 0])


def sweep(plot: str | None, T: int = 256):
    """kind x num_features x seed = 2 x 5 x 10 configurations with client.map."""
    cluster, client = _cluster(2, "4GiB")
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
    table: dict = {}
    for kind, m, s, oe, ae in rows:
        table.setdefault(kind, {}).setdefault(m, []).append(oe)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for kind, by_m in table.items():
            ms = sorted(by_m)
            ax.errorbar(ms, [np.mean(by_m[m]) for m in ms], yerr=[np.std(by_m[m]) for m in ms],
                        marker="o", capsize=3, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("num_features")
        ax.set_ylabel("relative output error vs softmax")
        ax.set_title("fidelity sweep: 100 configurations, client.map")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
    res = {"configurations": len(rows), "wall_s": round(wall, 3),
           "mean_output_error": {kind: {int(m): float(np.mean(e)) for m, e in sorted(by.items())}
                                 for kind, by in table.items()}}
    _say("sweep: configurations, wall (s)", f"{res['configurations']}, {res['wall_s']}")
    return res


# -------------------------------------------------------------------- main --

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ooc", action="store_true", help="the out-of-core run")
    p.add_argument("--scale", action="store_true", help="2 workers vs 1 on one sequence")
    p.add_argument("--price", action="store_true",
                   help="the 2-worker graph vs la.causal with 2 threads")
    p.add_argument("--sweep", action="store_true", help="the client.map fidelity sweep")
    p.add_argument("--tokens", type=int, default=2**27, help="out-of-core sequence length")
    p.add_argument("--block", type=int, default=2**18, help="out-of-core tokens per block")
    p.add_argument("--scale-tokens", type=int, default=2**24)
    p.add_argument("--scale-block", type=int, default=2**18)
    p.add_argument("--stealing", action="store_true",
                   help="--scale/--price: keep dask's work stealing on (off by default)")
    p.add_argument("--kind", default="elu")
    p.add_argument("--scan", default="auto", choices=("auto", "parallel", "sequential"))
    p.add_argument("--samples", type=int, default=16, help="blocks sampled for the check")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-limit", default="4GiB", help="per worker, out-of-core run")
    p.add_argument("--tmpdir", default=tempfile.gettempdir())
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--plot", default="bench_dask_sweep.png")
    a = p.parse_args(argv)
    parts = {n for n in ("ooc", "scale", "price", "sweep") if getattr(a, n)} or \
        {"ooc", "scale", "price", "sweep"}
    try:
        import dask
        import distributed
    except ImportError:
        sys.exit("bench_dask needs dask: pip install \"linattn[dask]\" zarr psutil")
    t_start = time.perf_counter()
    res = {"linattn": la.__version__, "python": sys.version.split()[0],
           "dask": dask.__version__, "distributed": distributed.__version__,
           "cpu": cpu_model(), "cores": os.cpu_count()}
    try:
        import psutil

        res["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    res["load_average_start"] = _load()
    for n in ("cpu", "cores", "memory_gib", "linattn", "dask", "load_average_start"):
        if n in res:
            _say(n, res[n])
    if "ooc" in parts:
        res["out_of_core"] = out_of_core(a.tokens, a.block, a.kind, a.scan, a.samples,
                                         a.seed, a.tmpdir, a.memory_limit)
    if parts & {"scale", "price"}:
        res["scale"] = scale(a.scale_tokens, a.scale_block, a.kind, a.scan, a.repeat, a.seed,
                             "price" in parts, "scale" in parts, a.stealing)
    if "sweep" in parts:
        res["sweep"] = sweep(a.plot)
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    res["load_average_end"] = _load()
    _say("load average at the end (1, 5, 15 min)", res["load_average_end"])
    _say("total time (s)", res["total_s"])
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
