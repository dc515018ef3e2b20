"""linattn.dask on a dask.distributed LocalCluster (2 worker processes, 1 thread each):
results, states crossing processes, thread counts, and a worker killed mid-graph."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

import linattn as la

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
lad = pytest.importorskip("linattn.dask")

from _blockcases import assert_states_close  # noqa: E402

# the workers cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    # the dashboard on any free port: another cluster on the machine (holding the default
    # 8787) must not fail these tests
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.CRITICAL,
                                  worker_dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _qkv(rng, T=2048, D=16, E=16, B=(1, 2)):
    q = 0.5 * rng.standard_normal(B + (T, D))
    k = 0.5 * rng.standard_normal(B + (T, D))
    v = rng.standard_normal(B + (T, E))
    return q, k, v


@pytest.mark.parametrize("kind,kw", [
    ("elu", {}), ("retnet", {}), ("performer", {"num_features": 32, "seed": 0}),
    ("mamba2", {"decay": "dask"}), ("lavo", {"window": 8}),
    ("performer", {"num_features": 32, "seed": 0, "stabilizer": "global"}),
])
def test_cluster_equals_numpy_with_state(client, kind, kw, rng):
    q, k, v = _qkv(rng)
    if kind == "lavo":
        v = k
    kw = dict(kw)
    if kw.get("decay") == "dask":
        kw["decay"] = -rng.uniform(0, 0.05, (1, 2, 2048))
    ref, st_ref = la.causal(q, k, v, kind, return_state=True, **kw)
    dkw = dict(kw)
    if "decay" in kw:
        dkw["decay"] = da.from_array(kw["decay"], chunks=(1, 1, 300))
    qd, kd = da.from_array(q, chunks=(1, 2, 500, 16)), da.from_array(k, chunks=(1, 2, 500, 16))
    vd = kd if kind == "lavo" else da.from_array(v, chunks=(1, 2, 500, 16))
    o, st = lad.causal(qd, kd, vd, kind, return_state=True, **dkw)
    o, st = client.compute([o, st], sync=True)
    if kw.get("stabilizer") == "global":
        outs, s = [], None
        for a in range(0, 2048, 500):
            b = min(a + 500, 2048)
            ob, s = la.causal(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :], kind,
                              initial_state=s, return_state=True, **kw)
            outs.append(ob)
        ref, st_ref = np.concatenate(outs, axis=-2), s
    la.testing.assert_close(o, ref, rtol=1e-10)
    assert isinstance(st, la.State) and st.t == 2048
    assert_states_close(st, st_ref, np.float64)


def test_cluster_noncausal(client, rng):
    q, k, v = _qkv(rng)
    ref = la.noncausal(q, k[..., :1500, :], v[..., :1500, :], "performer", num_features=32,
                       seed=0)
    o = lad.noncausal(da.from_array(q, chunks=(1, 1, 512, 16)),
                      da.from_array(k[..., :1500, :], chunks=(1, 2, 400, 16)),
                      da.from_array(v[..., :1500, :], chunks=(1, 2, 400, 16)), "performer",
                      num_features=32, seed=0)
    la.testing.assert_close(client.compute(o, sync=True), ref, rtol=1e-10)


def _threads_in_task():
    with lad._one_thread():
        return la.get_num_threads()


def test_worker_kernels_follow_the_worker_threads(client):
    pytest.importorskip("threadpoolctl")
    got = client.run(_threads_in_task)
    assert set(got.values()) == {1}


def test_states_cross_processes(client, rng):
    q, k, v = _qkv(rng, T=64)
    _, st = la.causal(q, k, v, "performer", num_features=16, seed=0, return_state=True)
    back = client.submit(lambda s: s, st, pure=False).result()
    assert isinstance(back, la.State) and back.t == st.t
    np.testing.assert_array_equal(back.S, st.S)
    np.testing.assert_array_equal(back.extra["max"], st.extra["max"])


def _slow(x):
    time.sleep(0.25)
    return x


def test_worker_killed_while_the_graph_runs(client, rng):
    """Kill one worker process mid-graph: dask reruns its tasks (kernels are pure), the
    result still equals the NumPy entry point."""
    q, k, v = _qkv(rng, T=4096)
    ref = la.causal(q, k, v, "elu")
    qd = da.from_array(q, chunks=(1, 2, 256, 16)).map_blocks(_slow, meta=np.empty((0,) * 4))
    o = lad.causal(qd, da.from_array(k, chunks=(1, 2, 256, 16)),
                   da.from_array(v, chunks=(1, 2, 256, 16)), "elu")
    before = client.run(os.getpid)
    fut = client.compute(o)
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until some work is done, none finished
        held = sum(len(keys) for keys in client.has_what().values())
        if held >= 4:
            break
        time.sleep(0.05)
    assert not fut.done()
    victim = sorted(before.values())[0]
    os.kill(victim, signal.SIGKILL)
    got = fut.result(timeout=90)
    la.testing.assert_close(got, ref, rtol=1e-10)
    after = client.run(os.getpid)
    assert victim not in after.values()
