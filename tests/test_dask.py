"""linattn.dask on the threaded scheduler: equality with the NumPy entry points for every
causal kind, chunkings, layouts, broadcasting, states; laziness; call-time errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import linattn as la

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
lad = pytest.importorskip("linattn.dask")

from _blockcases import (CASES, NONCAUSAL_CASES, SEQUENTIAL_CASES, TOL,  # noqa: E402
                         assert_states_close, case_id, make, time_slice, tslice)

# LAVO's memory_scope="before_local" runs the parallel scan too
BEFORE_LOCAL = [
    ("lavo", {"window": 5, "memory_scope": "before_local", "shared": True}),
    ("lavo", {"window": 5, "memory_scope": "before_local", "window_mode": "block",
              "shared": True}),
    ("lavo", {"window": 12, "memory_scope": "before_local"}),
]
SCAN_CASES = CASES + [c for c in BEFORE_LOCAL if c not in CASES]
CHAIN_CASES = [c for c in SEQUENTIAL_CASES if not la.parallel(c[0], **c[1])]


@pytest.fixture(autouse=True, scope="module")
def _limits_lifted_after_the_module():
    """Tasks keep the thread limits for a grace period after they end: lift them before
    the next module's tests look at thread counts."""
    yield
    import time

    end = time.monotonic() + 10
    while lad._LIMIT["limiter"] is not None and time.monotonic() < end:
        time.sleep(0.02)


CHUNKINGS = {
    "even": 10,
    "uneven": (7, 1, 13, 19),           # blocks shorter than the kernel chunk, and of 1 token
    "one-token": 1,
    "one-block": 40,
}


def _dask(x, tchunks, layout="...td", batch_chunks=None):
    if x is None:
        return None
    ch = list(x.shape)
    t_ax = x.ndim - 3 if layout == "bthd" else x.ndim - 2
    ch[t_ax] = tchunks
    if batch_chunks is not None:
        for ax, c in batch_chunks.items():
            if x.shape[ax] > 1:
                ch[ax] = c
    return da.from_array(x, chunks=tuple(ch))


def _to_dask(q, k, v, kw, tchunks, layout="...td", batch_chunks=None):
    shared = v is k
    qd, kd = _dask(q, tchunks, layout, batch_chunks), _dask(k, tchunks, layout, batch_chunks)
    vd = kd if shared else _dask(v, tchunks, layout, batch_chunks)
    kw = dict(kw)
    for n in ("decay", "gate"):
        x = kw.get(n)
        if isinstance(x, np.ndarray) and x.ndim == q.ndim - 1:
            t_ax = x.ndim - 2 if layout == "bthd" else x.ndim - 1
            ch = list(x.shape)
            ch[t_ax] = 3  # chunked differently from q: rechunked to v's blocks
            kw[n] = da.from_array(x, chunks=tuple(ch))
    return qd, kd, vd, kw


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("case", SCAN_CASES, ids=case_id)
def test_causal_equals_numpy(case, chunking, dtype, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng, dtype=dtype)
    ref = la.causal(q, k, v, kind, **kw)
    qd, kd, vd, kwd = _to_dask(q, k, v, kw, CHUNKINGS[chunking])
    o = lad.causal(qd, kd, vd, kind, **kwd)
    assert isinstance(o, da.Array) and o.shape == ref.shape and o.dtype == ref.dtype
    assert o.chunks[-2] == vd.chunks[-2]
    got = o.compute()
    la.testing.assert_close(got, ref, rtol=TOL[np.dtype(dtype)])


@pytest.mark.parametrize("case", SCAN_CASES, ids=case_id)
def test_sequential_scan_equals_numpy(case, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng)
    ref = la.causal(q, k, v, kind, **kw)
    qd, kd, vd, kwd = _to_dask(q, k, v, kw, (7, 1, 13, 19))
    la.testing.assert_close(lad.causal(qd, kd, vd, kind, scan="sequential", **kwd).compute(),
                            ref, rtol=1e-10)


@pytest.mark.parametrize("case", SCAN_CASES, ids=case_id)
def test_bthd_batch_blocks_initial_and_final_state(case, rng):
    """layout='bthd', heads in two blocks, resumed from a state, final state returned."""
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng, batch=(2, 3), layout="bthd")
    kw0, kw1 = time_slice(kw, 0, 9, "bthd"), time_slice(kw, 9, 40, "bthd")
    _, st0 = la.causal(tslice(q, 0, 9, "bthd"), tslice(k, 0, 9, "bthd"),
                       tslice(v, 0, 9, "bthd"), kind, return_state=True, layout="bthd", **kw0)
    q1, k1, v1 = (tslice(x, 9, 40, "bthd") for x in (q, k, v))
    if kind == "lavo" and "shared" in opts:
        v1 = k1
    o_ref, st_ref = la.causal(q1, k1, v1, kind, initial_state=st0, return_state=True,
                              layout="bthd", **kw1)
    qd, kd, vd, kwd = _to_dask(q1, k1, v1, kw1, (5, 1, 25), "bthd", {0: 1, 2: (2, 1)})
    o, st = lad.causal(qd, kd, vd, kind, initial_state=st0, return_state=True, layout="bthd",
                       **kwd)
    assert o.chunks[2] == (2, 1)
    o, st = dask.compute(o, st)
    la.testing.assert_close(o, o_ref, rtol=1e-10)
    assert_states_close(st, st_ref, np.float64)
    # a Delayed initial state
    o2 = lad.causal(qd, kd, vd, kind, initial_state=dask.delayed(st0), layout="bthd", **kwd)
    la.testing.assert_close(o2.compute(), o_ref, rtol=1e-10)


@pytest.mark.parametrize("kind", ["elu", "retnet", "performer", "cosformer", "mamba2"])
def test_broadcast_leading_axes(kind, rng):
    """k, v shared across heads (B, 1, T, D) and batch-chunked q."""
    B, H, T, D = 2, 4, 30, 8
    q = 0.5 * rng.standard_normal((B, H, T, D))
    k = 0.5 * rng.standard_normal((B, 1, T, D))
    v = rng.standard_normal((1, 1, T, 5))
    kw = {"performer": {"num_features": 16, "seed": 0}, "cosformer": {"horizon": 64},
          "mamba2": {"decay": -rng.uniform(0, 0.2, (B, 1, T))}}.get(kind, {})
    ref, st_ref = la.causal(q, k, v, kind, return_state=True, **kw)
    kwd = dict(kw)
    if "decay" in kw:
        kwd["decay"] = da.from_array(kw["decay"], chunks=(1, 1, 6))
    o, st = lad.causal(da.from_array(q, chunks=(1, 3, 11, D)),
                       da.from_array(k, chunks=(2, 1, 4, 3)),
                       da.from_array(v, chunks=(1, 1, 12, 5)), kind, return_state=True, **kwd)
    o, st = dask.compute(o, st)
    la.testing.assert_close(o, ref, rtol=1e-10)
    assert_states_close(st, st_ref, np.float64)


@pytest.mark.parametrize("case", CHAIN_CASES, ids=case_id)
def test_kinds_without_combine_run_a_chain(case, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng)
    qd, kd, vd, kwd = _to_dask(q, k, v, kw, (7, 1, 13, 19))
    o = lad.causal(qd, kd, vd, kind, **kwd).compute()
    if kind == "performer":
        # the published stabiliser is not split-invariant: equal to the stream over the
        # same blocks
        outs, st = [], None
        for a, b in [(0, 7), (7, 8), (8, 21), (21, 40)]:
            ob, st = la.causal(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :], kind,
                               initial_state=st, return_state=True, **kw)
            outs.append(ob)
        ref = np.concatenate(outs, axis=-2)
    else:
        ref = la.causal(q, k, v, kind, **kw)
    la.testing.assert_close(o, ref, rtol=1e-10)
    with pytest.raises(ValueError, match="scan='parallel' needs a state combine"):
        lad.causal(qd, kd, vd, kind, scan="parallel", **kwd)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", NONCAUSAL_CASES, ids=case_id)
def test_noncausal_key_blocks(case, dtype, rng):
    kind, opts = case
    S = 30 if kind in ("lavo", "transnormer") else 45
    q, k, v, kw = make(kind, opts, rng, T=30, S=S, dtype=dtype)
    ref = la.noncausal(q, k, v, kind, **kw)
    shared = v is k
    qd = da.from_array(q, chunks=(1, 2, (11, 19), 8))
    kch = (1, 16, S - 17)
    kd = da.from_array(k, chunks=(1, 1, kch, 8))
    vd = kd if shared else da.from_array(v, chunks=(1, 1, kch, v.shape[-1]))
    o = lad.noncausal(qd, kd, vd, kind, **kw)
    assert o.chunks[-2] == (11, 19) and o.dtype == ref.dtype
    la.testing.assert_close(o.compute(), ref, rtol=TOL[np.dtype(dtype)])


def test_noncausal_bthd(rng):
    q, k, v, kw = make("performer", {"num_features": 16, "seed": 0}, rng, T=20, S=33, layout="bthd")
    ref = la.noncausal(q, k, v, "performer", layout="bthd", **kw)
    o = lad.noncausal(da.from_array(q, chunks=(1, 7, 1, 8)), da.from_array(k, chunks=(1, 9, 2, 8)),
                      da.from_array(v, chunks=(1, 10, 2, 11)), "performer", layout="bthd", **kw)
    la.testing.assert_close(o.compute(), ref, rtol=1e-10)


def test_numpy_inputs_are_wrapped(rng):
    q, k, v, kw = make("elu", {}, rng)
    o = lad.causal(q, k, v, "elu", block_size=16)
    assert o.chunks[-2] == (16, 16, 8)
    la.testing.assert_close(o.compute(), la.causal(q, k, v, "elu"), rtol=1e-10)
    assert lad.causal(q, k, v, "elu").chunks[-2] == (40,)


def test_empty_sequence(rng):
    q, k, v, kw = make("elu", {}, rng, T=0)
    o, st = lad.causal(da.from_array(q), da.from_array(k), da.from_array(v), "elu",
                       return_state=True)
    assert o.shape == (1, 2, 0, 11)
    assert st.compute().t == 0


def test_random_draws_happen_once_on_the_client(rng, monkeypatch):
    q, k, v, kw = make("performer", {"num_features": 16, "seed": 0}, rng)
    qd, kd, vd, _ = _to_dask(q, k, v, {}, 5)
    calls = []
    import linattn._draws as draws

    real = draws.random_features
    monkeypatch.setattr(draws, "random_features",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    o = lad.causal(qd, kd, vd, "performer", num_features=16, seed=3)
    assert len(calls) == 1
    got = o.compute()
    assert len(calls) == 1  # blocks receive the projection, they do not draw
    la.testing.assert_close(got, la.causal(q, k, v, "performer", num_features=16, seed=3),
                            rtol=1e-10)


# ------------------------------------------------------------------- laziness --

def _refuse(*args, **kwargs):
    raise AssertionError("a task ran at graph-build time")


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_nothing_runs_at_call_time(scan, rng):
    q, k, v, kw = make("retnet", {}, rng)
    ran = []

    def touch(x):
        ran.append(1)
        return x
    qd = da.from_array(q, chunks=(1, 2, 10, 8)).map_blocks(touch)
    kd = da.from_array(k, chunks=(1, 2, 10, 8)).map_blocks(touch)
    vd = da.from_array(v, chunks=(1, 2, 10, 11)).map_blocks(touch)
    decay = da.from_array(-rng.uniform(0, 0.1, (1, 2, 40)), chunks=(1, 1, 5)).map_blocks(touch)
    ran.clear()  # map_blocks itself calls touch on empty arrays to learn the output type
    with dask.config.set(scheduler=_refuse):
        o, st = lad.causal(qd, kd, vd, "retnet", decay=decay, return_state=True, scan=scan)
        o2 = lad.noncausal(qd, kd, vd, "elu")
    assert ran == []
    assert o.shape == (1, 2, 40, 11) and o2.shape == (1, 2, 40, 11)
    dask.compute(o, st, o2)
    assert ran


# --------------------------------------------------------------------- errors --

def _bad_calls(rng):
    q, k, v, _ = make("elu", {}, rng)
    return [
        ("elu", (q, k[..., :7], v), {}),
        ("elu", (q, k[..., :30, :], v), {}),
        ("elu", (q.astype(np.int64), k, v), {}),
        ("elu", (q, k, v), {"layout": "thd"}),
        ("nope", (q, k, v), {}),
        ("lara", (q, k, v), {}),
        ("elu", (q, k, v), {"normalize": "nope"}),
        ("elu", (q, k, v), {"eps": -1.0}),
        ("elu", (q, k, v), {"scale": 0.0}),
        ("elu", (q, k, v), {"mode": "fast"}),
        ("elu", (q, k, v), {"chunk_size": 0}),
        ("elu", (q, k, v), {"foo": 1}),
        ("elu", (q, k, v), {"decay": np.full((1, 2, 40), 0.5)}),
        ("elu", (q, k, v), {"decay": np.zeros((1, 2, 39))}),
        ("elu", (q, k, v), {"decay": np.zeros((1, 3))}),
        ("elu", (q, k, v), {"num_features": 16, "seed": 0}),
        ("mamba2", (q, k, v), {}),
        ("mamba2", (q, k, v), {"decay": np.zeros(2)}),
        ("performer", (q, k, v), {"num_features": 0}),
        ("rfa", (q, k, v), {"num_features": 15}),
        ("cosformer", (q, k, v), {"horizon": 20}),
        ("cosformer", (q, k, v), {"return_state": True}),
        ("lavo", (q, k, v), {}),
        ("elu", (q, k, v), {"initial_state": "state"}),
        ("elu", (q, k, v), {"initial_state": la.State(np.zeros((3, 8, 11)), np.zeros((3, 8)), 0,
                                                      "elu")}),
        ("relu", (q, k, v), {"initial_state": la.State(np.zeros((8, 11)), np.zeros(8), 0,
                                                       "elu")}),
        ("rfa", (q, k, v), {"gate": np.full((1, 2, 40), 2.0)}),
        ("rfa", (q, k, v), {"gate": np.full((1, 2, 39), 0.5)}),
    ]


@pytest.mark.parametrize("i", range(28))
def test_causal_errors_at_call_time(i, rng):
    kind, args, kw = _bad_calls(rng)[i]
    with pytest.raises(Exception) as ref:
        la.causal(*args, kind, **kw)
    dargs = [da.from_array(a, chunks=(1, 1, 9, a.shape[-1])) for a in args]
    dkw = {n: (da.from_array(x, chunks=x.shape) if isinstance(x, np.ndarray)
               and n in ("decay", "gate") and x.ndim == 3 else x) for n, x in kw.items()}
    # values inside dask arrays are read when their blocks run (a test below)
    by_value = i in (12, 26)
    for a, kk in ((dargs, kw),) if by_value else ((dargs, dkw), (dargs, kw)):
        with dask.config.set(scheduler=_refuse):
            with pytest.raises(type(ref.value)) as got:
                lad.causal(*a, kind, **kk)
        assert str(got.value) == str(ref.value)


def test_dask_decay_values_are_checked_when_blocks_run(rng):
    q, k, v, _ = make("elu", {}, rng)
    qd, kd, vd, _ = _to_dask(q, k, v, {}, 10)
    o = lad.causal(qd, kd, vd, "elu", decay=da.full((1, 2, 40), 0.5, chunks=10))
    with pytest.raises(ValueError, match="decay is a log-decay and must be <= 0"):
        o.compute()


def test_noncausal_errors_at_call_time(rng):
    q, k, v, _ = make("elu", {}, rng, S=30)
    cases = [("elu", (q, k[..., :7], v), {}), ("retnet", (q, k, v), {}),
             ("elu", (q, k, v), {"decay": np.zeros(2)}), ("lavo", (q, k, k), {"window": 3}),
             ("cosformer", (q, k, v), {"horizon": 10}), ("elu", (q, k, v[..., :29, :]), {})]
    for kind, args, kw in cases:
        with pytest.raises(Exception) as ref:
            la.noncausal(*args, kind, **kw)
        dargs = [da.from_array(a, chunks=(1, 1, 9, a.shape[-1])) for a in args]
        if args[2] is args[1]:
            dargs[2] = dargs[1]
        with dask.config.set(scheduler=_refuse):
            with pytest.raises(type(ref.value)) as got:
                lad.noncausal(*dargs, kind, **kw)
        assert str(got.value) == str(ref.value)


def test_own_arguments_are_checked(rng):
    q, k, v, _ = make("elu", {}, rng)
    with pytest.raises(ValueError, match="scan must be one of"):
        lad.causal(q, k, v, scan="tree")
    with pytest.raises(TypeError, match="out= is not supported"):
        lad.causal(q, k, v, out=np.empty((1, 2, 40, 11)))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        lad.causal(q, k, v, block_size=0)


# -------------------------------------------------------------- engine rules --

def test_tasks_run_single_threaded_kernels(rng):
    """Kernels (linattn's thread pool, NumPy's BLAS) run on one thread inside tasks; the
    process's BLAS setting is restored afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info()
                      if i["user_api"] == "blas")
    _wait_lifted()  # an earlier test's tasks may still hold the limits
    before = blas()
    seen = []

    def probe(x):
        with lad._one_thread():
            seen.append((la.get_num_threads(), max(blas())))
        return x
    da.from_array(np.zeros(4), chunks=1).map_blocks(probe).compute(scheduler="threads")
    assert seen and set(seen) == {(1, 1)}
    _wait_lifted()
    assert blas() == before


def _wait_lifted(timeout=10.0):
    import time

    end = time.monotonic() + timeout
    while lad._LIMIT["limiter"] is not None and time.monotonic() < end:
        time.sleep(0.02)
    assert lad._LIMIT["limiter"] is None


def test_limits_are_lifted_after_a_grace_period(rng):
    """Tasks that follow each other keep the limits (lifting and setting OpenBLAS's limit
    between tasks is costly); they are lifted once no task has run for a while."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import time

    _wait_lifted()
    before = la.get_num_threads()
    blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    with lad._one_thread():
        pass
    limiter = lad._LIMIT["limiter"]
    assert limiter is not None and la.get_num_threads() == 1
    with lad._one_thread():
        assert lad._LIMIT["limiter"] is limiter  # the same limit, not set again
    time.sleep(lad._RESTORE_DELAY * 0.2)
    with lad._one_thread():
        assert lad._LIMIT["limiter"] is limiter
    _wait_lifted()
    assert la.get_num_threads() == before
    assert la.info()["thread_limit"] is None
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"] == blas


def test_state_pickles(rng):
    q, k, v, kw = make("lavo", {"window": 5, "shared": True}, rng)
    _, st = la.causal(q, k, k, "lavo", return_state=True, **kw)
    assert_states_close(pickle.loads(pickle.dumps(st)), st, np.float64)
    q, k, v, kw = make("performer", {"num_features": 16, "seed": 0}, rng)
    _, st = la.causal(q, k, v, "performer", return_state=True, **kw)
    back = pickle.loads(pickle.dumps(st))
    assert_states_close(back, st, np.float64)
    np.testing.assert_array_equal(back.extra["fingerprint"], st.extra["fingerprint"])


def test_parallel_scan_reads_out_only_the_blocks_asked_for(rng, monkeypatch):
    """Pass 3 of the parallel scan: a block's outputs need the states of the blocks before
    it, not their outputs; the sequential chain computes every earlier block."""
    from linattn import _algebra as alg

    q, k, v, kw = make("elu", {}, rng)
    qd, kd, vd, _ = _to_dask(q, k, v, {}, 5)
    calls = []
    real = alg.read_out
    monkeypatch.setattr(alg, "read_out", lambda *a, **kk: calls.append(1) or real(*a, **kk))
    ref = la.causal(q, k, v, "elu")
    for scan, want in (("parallel", 1), ("sequential", 8)):
        calls.clear()
        last = lad.causal(qd, kd, vd, "elu", scan=scan)[..., 35:, :].compute()
        la.testing.assert_close(last, ref[..., 35:, :], rtol=1e-10)
        assert len(calls) == want, scan


def test_float64_state_for_float32_inputs(rng):
    """A float64 initial state keeps the carried state in float64 (each block's own
    state is summed in the inputs' dtype, then added in float64)."""
    q, k, v, _ = make("elu", {}, rng, dtype=np.float32)
    st0 = la.State(np.zeros((8, 11)), np.zeros(8), 0, "elu")
    ref, st_ref = la.causal(q, k, v, "elu", initial_state=st0, return_state=True)
    qd, kd, vd, _ = _to_dask(q, k, v, {}, (7, 1, 13, 19))
    o, st = dask.compute(*lad.causal(qd, kd, vd, "elu", initial_state=st0, return_state=True))
    assert o.dtype == np.float32 and st.S.dtype == np.float64 == st_ref.S.dtype
    la.testing.assert_close(o, ref, rtol=1e-6)
    la.testing.assert_close(st.S, st_ref.S, rtol=1e-6)


def test_overlapping_tasks_leave_no_thread_limit_behind(rng, monkeypatch):
    """Tasks of a threaded scheduler overlap; the process-wide limits they set must all
    be lifted when the last one ends (here at once: no grace period)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import threading

    _wait_lifted()
    monkeypatch.setattr(lad, "_RESTORE_DELAY", 0)

    before = la.get_num_threads()
    blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    gate = threading.Barrier(4)

    def task():
        with lad._one_thread():
            gate.wait(timeout=10)

    threads = [threading.Thread(target=task) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert la.get_num_threads() == before
    assert la.info()["thread_limit"] is None
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"] == blas


@pytest.mark.parametrize("entry", ["causal", "noncausal"])
def test_eager_options_are_refused_at_call_time(entry, rng):
    q, k, v = (da.from_array(rng.standard_normal((1, 2, 8, 4)), chunks=(1, 2, 4, 4))
               for _ in range(3))
    fn = getattr(lad, entry)
    with pytest.raises(TypeError, match=r"out= is not supported by linattn.dask"):
        fn(q, k, v, "elu", out=np.empty((1, 2, 8, 4)))
    with pytest.raises(TypeError, match=rf"use la.{entry}\(\.\.\., check_finite=True\)"):
        fn(q, k, v, "elu", check_finite=True)
