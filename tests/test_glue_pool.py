"""linattn's thread pool: the count obeys set_num_threads / LINATTN_NUM_THREADS whatever
OMP_NUM_THREADS says, is capped by the CPUs the process may use, survives fork(), and a
busy process on one core breaks nothing.  Behaviour only: no timing thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import linattn as la
from conftest import make_qkv

CPUS = len(os.sched_getaffinity(0))

PROBE = textwrap.dedent("""
    import json, os, sys
    {pre}
    import numpy as np
    import linattn as la
    {post}
    r = np.random.default_rng(0)
    q, k, v = (r.standard_normal((8, 600, 32)).astype(np.float32) for _ in range(3))
    la.causal(q, k, v, mode="chunked")
    i = la.info()
    print(json.dumps({{"threads": la.get_num_threads(), "source": i["threads_source"],
                      "max": i["max_threads"],
                      "workers": la._core.build_info()["pool_workers"]}}))
""")


def _probe(env=None, pre="", post=""):
    e = {k: v for k, v in os.environ.items()
         if k not in ("OMP_NUM_THREADS", "LINATTN_NUM_THREADS")}
    e["LINATTN_LOAD_AWARE"] = "0"  # workers join even on a loaded machine
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", PROBE.format(pre=pre, post=post)], env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_default_follows_the_cpus():
    got = _probe()
    assert got["threads"] == CPUS == got["max"] and got["source"] == "cpu_affinity"


def test_omp_num_threads_is_the_default_only():
    got = _probe({"OMP_NUM_THREADS": "1"})
    assert got["threads"] == 1 and got["source"] == "OMP_NUM_THREADS"
    assert got["workers"] == 0  # nothing started


@pytest.mark.skipif(CPUS < 2, reason="needs 2 CPUs")
def test_set_num_threads_wins_over_omp_num_threads():
    got = _probe({"OMP_NUM_THREADS": "1"}, post="la.set_num_threads(2)")
    assert got["threads"] == 2 and got["source"] == "set_num_threads"
    assert got["workers"] >= 1  # the call really ran on a second thread


@pytest.mark.skipif(CPUS < 2, reason="needs 2 CPUs")
def test_linattn_num_threads_wins_over_omp_num_threads():
    got = _probe({"OMP_NUM_THREADS": "1", "LINATTN_NUM_THREADS": "2"})
    assert got["threads"] == 2 and got["source"] == "LINATTN_NUM_THREADS"
    assert got["workers"] >= 1


def test_capped_by_cpu_affinity():
    cpu = sorted(os.sched_getaffinity(0))[0]
    got = _probe({"LINATTN_NUM_THREADS": "8"}, pre=f"os.sched_setaffinity(0, {{{cpu}}})",
                 post="la.set_num_threads(4)")
    assert got["threads"] == 1 and got["max"] == 1 and got["source"] == "cpu_affinity"


def test_pool_after_fork(rng):
    la.set_num_threads(2)
    try:
        q, k, v = make_qkv(rng, batch=(8,), T=300, D=16, E=16, dtype=np.float32)
        want = la.causal(q, k, v, mode="chunked")  # starts the pool in this process
        pid = os.fork()
        if pid == 0:  # the child: a fresh pool, same results
            ok = np.array_equal(la.causal(q, k, v, mode="chunked"), want)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        la.set_num_threads(0)


@pytest.mark.skipif(CPUS < 2, reason="needs 2 CPUs")
def test_busy_process_on_one_core_breaks_nothing(rng):
    """Another process keeps one core busy: 2-thread results still equal 1-thread ones
    for every form, including the sequence split (B x H = 1)."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    busy = subprocess.Popen([sys.executable, "-c",
                             f"import os; os.sched_setaffinity(0, {{{cpu}}})\\nwhile True: pass"])
    try:
        cases = [(make_qkv(rng, batch=(4,), T=512, D=64, E=64, dtype=np.float32), m, 64)
                 for m in ("recurrent", "chunked")]
        cases.append((make_qkv(rng, batch=(1,), T=4096, D=16, E=16, dtype=np.float32),
                      "chunked", 64))
        for (q, k, v), mode, chunk in cases:
            la.set_num_threads(1)
            one = la.causal(q, k, v, mode=mode, chunk_size=chunk)
            la.set_num_threads(2)
            for _ in range(3):
                assert np.array_equal(la.causal(q, k, v, mode=mode, chunk_size=chunk), one)
    finally:
        la.set_num_threads(0)
        busy.kill()
        busy.wait()


def test_many_python_threads_share_the_pool(rng):
    """Callers that find the pool busy run their shares themselves: same results."""
    from concurrent.futures import ThreadPoolExecutor

    la.set_num_threads(2)
    try:
        xs = [make_qkv(rng, batch=(6,), T=200, D=16, E=16) for _ in range(8)]
        want = [la.causal(*x, mode="chunked") for x in xs]
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda x: la.causal(*x, mode="chunked"), xs))
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    finally:
        la.set_num_threads(0)
