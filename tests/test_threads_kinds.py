"""Threads across kinds: many Python threads calling different kinds at once
give bit-identical results to serial calls; results are bit-identical across runs at a
fixed thread count, within tolerance across thread counts; changing the thread count
while other threads compute is safe.  docs/reliability.md lists which kinds are
bit-identical across thread counts (checked here)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import linattn as la

# Kinds whose result does not depend on the thread count (each (batch, head) slice is one
# task with its own scratch; threads only split the slices).
BIT_IDENTICAL_ACROSS_THREADS = sorted(la.kinds())


def _jobs():
    r = np.random.default_rng(11)
    q, k, v = (r.standard_normal((3, 4, 80, 8)).astype(np.float32) for _ in range(3))
    jobs = []
    for kind, d in sorted(la.kinds().items()):
        kw = {"cosformer": {"horizon": 128}, "performer": {"num_features": 16, "seed": 0},
              "rfa": {"num_features": 16, "seed": 0},
              "mamba2": {"decay": np.full((3, 4, 80), -0.05)},
              "lara": {"landmarks": 8}}.get(kind, {})
        if d["causal"]:
            for mode in ("recurrent", "chunked"):
                if mode in d["causal"]:
                    jobs.append((f"{kind}-{mode}", lambda kind=kind, kw=kw, mode=mode:
                                 la.causal(q, k, v, kind, mode=mode, chunk_size=16, **kw)))
        if d["noncausal"]:
            jobs.append((f"{kind}-nc", lambda kind=kind, kw=kw:
                         la.noncausal(q, k, v, kind, chunk_size=32, **kw)))
    jobs.append(("softmax", lambda: la.softmax_attention(q, k, v)))
    return jobs


@pytest.fixture
def restore_threads():
    n = la.get_num_threads()
    yield
    la.set_num_threads(0)
    assert n >= 1


def test_concurrent_kinds_equal_serial(restore_threads):
    la.set_num_threads(2)
    jobs = _jobs()
    serial = {name: f() for name, f in jobs}
    with ThreadPoolExecutor(6) as ex:
        for _ in range(2):
            futs = {name: ex.submit(f) for name, f in jobs * 1}
            for name, fut in futs.items():
                assert np.array_equal(fut.result(), serial[name]), name


@pytest.mark.parametrize("nthreads", [1, 2])
def test_bit_identical_across_runs(nthreads, restore_threads):
    la.set_num_threads(nthreads)
    jobs = _jobs()
    a = {name: f() for name, f in jobs}
    b = {name: f() for name, f in jobs}
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_across_thread_counts(restore_threads):
    jobs = _jobs()
    la.set_num_threads(1)
    one = {name: f() for name, f in jobs}
    la.set_num_threads(2)
    two = {name: f() for name, f in jobs}
    for name in one:
        kind = name.split("-")[0]
        if kind in BIT_IDENTICAL_ACROSS_THREADS:
            assert np.array_equal(one[name], two[name]), name
        else:
            la.testing.assert_close(two[name], one[name], rtol=1e-5)


def test_set_num_threads_under_load(restore_threads):
    jobs = _jobs()
    la.set_num_threads(1)
    ref = {name: f() for name, f in jobs}
    stop = threading.Event()

    def flipper():
        n = 0
        while not stop.is_set():
            la.set_num_threads(n % 3)  # 0 (runtime default), 1, 2
            n += 1

    t = threading.Thread(target=flipper)
    t.start()
    try:
        with ThreadPoolExecutor(4) as ex:
            futs = [(name, ex.submit(f)) for name, f in jobs * 2]
            for name, fut in futs:
                np.testing.assert_array_equal(fut.result(), ref[name], err_msg=name)
    finally:
        stop.set()
        t.join()
