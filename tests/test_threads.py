"""Threads: results equal serial results; kernels release the GIL; the pool is visible."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import linattn as la
from conftest import make_qkv


@pytest.fixture
def restore_threads():
    n = la.get_num_threads()
    yield
    la.set_num_threads(0)
    assert la.get_num_threads() >= 1 and n >= 1


def test_thread_pool_equals_serial(rng):
    inputs = [make_qkv(rng, T=300, D=16, E=16, dtype=np.float32) for _ in range(6)]
    modes = ["recurrent", "chunked", "parallel"]
    serial = [la.causal(*x, mode=modes[i % 3]) for i, x in enumerate(inputs)]
    with ThreadPoolExecutor(4) as ex:
        par = list(ex.map(lambda ix: la.causal(*ix[1], mode=modes[ix[0] % 3]),
                          enumerate(inputs)))
    for a, b in zip(serial, par):
        assert np.array_equal(a, b)


def test_bit_identical_across_runs_and_within_tolerance_across_threads(rng, restore_threads):
    q, k, v = make_qkv(rng, batch=(8,), T=500, D=32, E=32, dtype=np.float32)
    la.set_num_threads(2)
    a = la.causal(q, k, v, mode="chunked")
    b = la.causal(q, k, v, mode="chunked")
    assert np.array_equal(a, b)
    la.set_num_threads(1)
    c = la.causal(q, k, v, mode="chunked")
    # each (batch, head) slice is computed by one thread in a fixed order
    assert np.array_equal(a, c)


def test_two_python_threads_run_kernels_concurrently(rng, restore_threads):
    """Two threads each run a kernel; the GIL is released, so a Python thread can make
    progress while a kernel runs (a counter advances during the kernel call)."""
    la.set_num_threads(1)
    q, k, v = make_qkv(rng, batch=(1,), T=20000, D=64, E=64, dtype=np.float32)
    ticks = []
    done = threading.Event()

    def counter():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)

    t = threading.Thread(target=counter, daemon=True)
    start = time.perf_counter()
    t.start()
    try:
        la.causal(q, k, v, mode="recurrent")
        end = time.perf_counter()
    finally:
        done.set()
        t.join()
    inside = [x for x in ticks if start < x < end]
    assert len(inside) > 10


def test_set_num_threads_under_load(rng, restore_threads):
    x = make_qkv(rng, batch=(4,), T=400, D=16, E=16)
    want = la.causal(*x, mode="chunked")
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            la.set_num_threads(1 + i % 2)
            i += 1

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    try:
        for _ in range(20):
            assert np.array_equal(la.causal(*x, mode="chunked"), want)
    finally:
        stop.set()
        t.join()


def test_threadpoolctl_sees_openblas_and_the_pool(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    info = threadpoolctl.threadpool_info()
    libs = [i for i in info if "scipy_openblas" in i.get("filepath", "")
            and "linattn" in i.get("filepath", "")]
    assert libs, f"linattn's OpenBLAS not found in {info}"
    assert libs[0]["num_threads"] == 1
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl < 3.5 takes no third-party controllers")
    pool = [i for i in info if i["user_api"] == "linattn"]
    assert pool and pool[0]["num_threads"] == la.get_num_threads(), info
    la.set_num_threads(0)
    before = la.get_num_threads()
    with threadpoolctl.threadpool_limits(1):
        assert la.get_num_threads() == 1
        if before > 1:
            assert la.info()["threads_source"] == "threadpoolctl"
            assert la.info()["thread_limit"] == 1
    assert la.get_num_threads() == before
    assert la.info()["thread_limit"] is None
    with threadpoolctl.threadpool_limits(1, user_api="linattn"):
        assert la.get_num_threads() == 1
    assert la.get_num_threads() == before
