"""linattn.dask.selective_scan on the threaded scheduler: equality with la.selective_scan
(float32/float64, B and C time-invariant, time-varying and grouped, any chunking along
time, batch and channels), states, the scan choice, laziness, call-time errors."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
lad = pytest.importorskip("linattn.dask")

@pytest.fixture(autouse=True, scope="module")
def _limits_lifted_after_the_module():
    """Tasks keep the thread limits for a grace period after they end: lift them before
    the next module's tests look at thread counts."""
    yield
    import time

    end = time.monotonic() + 10
    while lad._LIMIT["limiter"] is not None and time.monotonic() < end:
        time.sleep(0.02)


TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5,
       np.dtype(np.float16): 1e-5}
CHUNKINGS = {"even": 10, "uneven": (7, 1, 13, 19), "one-token": 1, "one-block": 40}


def make(rng, bc="varying", dtype=np.float64, Bb=2, Dc=6, N=4, L=40, G=3, options=True):
    """(u, delta, A, B, C, D, z, delta_bias, h0) of la.selective_scan."""
    def r(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)
    u, delta = r(Bb, Dc, L), r(Bb, Dc, L, s=0.5)
    A = (-np.exp(rng.standard_normal((Dc, N)))).astype(dtype)
    if bc == "invariant":
        B, C = r(Dc, N), r(Dc, N)
    elif bc == "varying":
        B, C = r(Bb, N, L), r(Bb, N, L)
    else:  # grouped, B and C with different group counts
        B, C = r(Bb, G, N, L), r(Bb, 1, N, L)
    if not options:
        return u, delta, A, B, C, None, None, None, None
    return u, delta, A, B, C, r(Dc), r(Bb, Dc, L), r(Dc), r(Bb, Dc, N)


def _chunked(x, chunks):
    return None if x is None else da.from_array(x, chunks=chunks)


def _run(args, softplus, chunks, scan, *, state=True, return_state=True):
    u, delta, A, B, C, D, z, bias, h0 = args
    ud = _chunked(u, chunks)
    dd = _chunked(delta, (1, 2, 9))  # chunked differently: rechunked to u's blocks
    zd = _chunked(z, (2, 3, 5))
    Bd = B if B.ndim == 2 else _chunked(B, B.shape[:-1] + (11,))
    return lad.selective_scan(ud, dd, A, Bd, C, D, zd, bias, softplus,
                              h0 if state else None, return_state, scan=scan)


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("bc", ["invariant", "varying", "grouped"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_numpy(dtype, bc, chunking, scan, rng):
    args = make(rng, bc, dtype, L=12 if chunking == "one-token" else 40)
    ref, h_ref = la.selective_scan(*args[:8], True, args[8], True)
    cch = (3, 3) if bc == "grouped" else (4, 2)
    o, h = _run(args, True, (1, cch, CHUNKINGS[chunking]), scan)
    assert isinstance(o, da.Array) and o.shape == ref.shape and o.dtype == ref.dtype
    assert o.chunks[2] == da.from_array(args[0], chunks=(1, cch,
                                                        CHUNKINGS[chunking])).chunks[2]
    assert isinstance(h, da.Array) and h.shape == h_ref.shape and h.dtype == h_ref.dtype
    o, h = dask.compute(o, h)
    la.testing.assert_close(o, ref, rtol=TOL[np.dtype(dtype)])
    la.testing.assert_close(h, h_ref, rtol=TOL[np.dtype(dtype)])


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_without_options_and_softplus(scan, rng):
    args = make(rng, "varying", options=False)
    ref, h_ref = la.selective_scan(*args[:5], return_state=True)
    o, h = _run(args, False, (2, 6, (7, 1, 13, 19)), scan)
    o, h = dask.compute(o, h)
    la.testing.assert_close(o, ref, rtol=1e-10)
    la.testing.assert_close(h, h_ref, rtol=1e-10)
    o = _run(args, False, (2, 6, 3), scan, return_state=False)
    la.testing.assert_close(o.compute(), ref, rtol=1e-10)


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_float64_state_keeps_the_scan_in_float64(scan, rng):
    """A float64 initial state with float32 inputs: la.selective_scan then scans in
    float64 (the state stays float64, the output float32); so does every block."""
    args = list(make(rng, "varying", np.float32))
    args[8] = args[8].astype(np.float64)
    ref, h_ref = la.selective_scan(*args[:8], True, args[8], True)
    assert h_ref.dtype == np.float64 and ref.dtype == np.float32
    o, h = _run(args, True, (1, 6, (7, 1, 13, 19)), scan)
    assert h.dtype == np.float64 and o.dtype == np.float32
    o, h = dask.compute(o, h)
    la.testing.assert_close(o, ref, rtol=1e-6)
    la.testing.assert_close(h, h_ref, rtol=1e-10)


def test_float16_inputs(rng):
    args = make(rng, "invariant", np.float16)
    ref, h_ref = la.selective_scan(*args[:8], True, args[8], True)
    o, h = _run(args, True, (2, 6, (7, 1, 13, 19)), "parallel")
    assert o.dtype == ref.dtype == np.float16 and h.dtype == h_ref.dtype
    o, h = dask.compute(o, h)
    la.testing.assert_close(o, ref, rtol=1e-3)
    la.testing.assert_close(h, h_ref, rtol=1e-5)


def test_dask_parameters_and_state(rng):
    """A, D, delta_bias, time-invariant B and C and the initial state as dask arrays."""
    args = make(rng, "invariant")
    u, delta, A, B, C, D, z, bias, h0 = args
    ref, h_ref = la.selective_scan(*args[:8], True, h0, True)
    o, h = lad.selective_scan(_chunked(u, (1, 4, 9)), delta, _chunked(A, (1, 2)),
                              _chunked(B, 3), _chunked(C, (6, 4)), _chunked(D, 5), z,
                              _chunked(bias, 2), True, _chunked(h0, (1, 1, 2)), True)
    o, h = dask.compute(o, h)
    la.testing.assert_close(o, ref, rtol=1e-10)
    la.testing.assert_close(h, h_ref, rtol=1e-10)


def test_grouped_channel_blocks_not_covering_groups(rng):
    """Channel blocks that split a group: the channel axis is rechunked to one block."""
    args = make(rng, "grouped", G=3)
    ref = la.selective_scan(*args[:8], True, args[8])
    o = _run(args, True, (1, (1, 5), 10), "auto", return_state=False)
    assert o.chunks[1] == (6,)
    la.testing.assert_close(o.compute(), ref, rtol=1e-10)


def test_auto_scan_choice(rng, monkeypatch):
    """auto: the parallel scan when batch and channels are one block (a chain would run
    one block at a time), the chain when they give parallelism."""
    calls = []
    real = lad._task_ss_transition

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(lad, "_task_ss_transition", spy)
    args = make(rng, "varying")
    ref = la.selective_scan(*args[:8], True, args[8])
    for chunks, parallel in (((2, 6, 10), True), ((1, 6, 10), False), ((2, 3, 10), False),
                             ((2, 6, 40), False)):
        calls.clear()
        o = _run(args, True, chunks, "auto", return_state=False)
        la.testing.assert_close(o.compute(scheduler="sync"), ref, rtol=1e-10)
        assert bool(calls) == parallel, chunks


def test_numpy_inputs_are_wrapped(rng):
    args = make(rng, "varying")
    ref = la.selective_scan(*args[:8], True, args[8])
    o = lad.selective_scan(*args[:8], True, args[8], block_size=16)
    assert o.chunks == ((2,), (6,), (16, 16, 8))
    la.testing.assert_close(o.compute(), ref, rtol=1e-10)
    assert lad.selective_scan(*args[:5]).chunks[2] == (40,)


def test_empty_sequence(rng):
    args = make(rng, "invariant", L=0)
    ref, h_ref = la.selective_scan(*args[:8], True, args[8], True)
    o, h = lad.selective_scan(*args[:8], True, args[8], True)
    assert o.shape == ref.shape and o.dtype == ref.dtype
    np.testing.assert_array_equal(h.compute(), h_ref)
    o, h = lad.selective_scan(*args[:5], return_state=True)
    assert h.shape == (2, 6, 4) and not h.compute().any()


def _refuse(*args, **kwargs):
    raise AssertionError("a task ran at graph-build time")


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_nothing_runs_at_call_time(scan, rng):
    u, delta, A, B, C, D, z, bias, h0 = make(rng, "varying")
    ran = []

    def touch(x):
        ran.append(1)
        return x
    ud = da.from_array(u, chunks=(1, 6, 10)).map_blocks(touch)
    Bd = da.from_array(B, chunks=(1, 4, 10)).map_blocks(touch)
    ran.clear()
    with dask.config.set(scheduler=_refuse):
        o, h = lad.selective_scan(ud, delta, A, Bd, C, D, z, bias, True, h0, True, scan=scan)
    assert ran == []
    dask.compute(o, h)
    assert ran


def _bad_calls(rng):
    u, delta, A, B, C, D, z, bias, h0 = make(rng, "varying")
    Bg = rng.standard_normal((2, 4, 4, 40))
    return [
        ((u, delta[..., :39], A, B, C), {}),
        ((u, delta[:1], A, B, C), {}),
        ((u[0], delta[0], A, B[0], C[0]), {}),
        ((u.astype(np.int64), delta, A, B, C), {}),
        ((u.astype(np.complex128), delta, A, B, C), {}),
        ((u, delta, -A, B, C), {}),
        ((u, delta, A[:5], B, C), {}),
        ((u, delta, A, B[..., :39], C), {}),
        ((u, delta, A, B, C[:, :3]), {}),
        ((u, delta, A, Bg, C), {}),
        ((u, delta, A, B[:, 0], C), {}),
        ((u, delta, A, B, C), {"D": D[:5]}),
        ((u, delta, A, B, C), {"z": z[..., :39]}),
        ((u, delta, A, B, C), {"delta_bias": bias[None]}),
        ((u, delta, A, B, C), {"initial_state": h0[:, :, :3]}),
        ((u, delta, A.astype(np.complex64), B, C), {}),
    ]


@pytest.mark.parametrize("i", range(16))
def test_errors_at_call_time(i, rng):
    """The messages of la.selective_scan, raised when the graph is built."""
    args, kw = _bad_calls(rng)[i]
    with pytest.raises(Exception) as ref:
        la.selective_scan(*args, **kw)
    timed = [a.ndim == 3 or (j >= 3 and a.ndim == 4) for j, a in enumerate(args)]
    dargs = [da.from_array(a, chunks=a.shape[:-1] + (9,)) if t and j != 2 else a
             for j, (a, t) in enumerate(zip(args, timed))]
    dkw = {n: (da.from_array(x, chunks=x.shape[:-1] + (9,)) if n == "z" else x)
           for n, x in kw.items()}
    for a, k in ((dargs, dkw), (args, kw)):
        with dask.config.set(scheduler=_refuse):
            with pytest.raises(type(ref.value)) as got:
                lad.selective_scan(*a, **k)
        assert str(got.value) == str(ref.value)


def test_dask_A_values_are_checked_when_blocks_run(rng):
    u, delta, A, B, C, *_ = make(rng, "varying")
    o = lad.selective_scan(u, delta, da.from_array(-A), B, C)
    with pytest.raises(ValueError, match="A must be real and <= 0"):
        o.compute()


def test_own_arguments(rng):
    u, delta, A, B, C, *_ = make(rng, "varying")
    with pytest.raises(TypeError, match="check_finite= is not supported by linattn.dask"):
        lad.selective_scan(u, delta, A, B, C, check_finite=True)
    with pytest.raises(ValueError, match="scan must be one of"):
        lad.selective_scan(u, delta, A, B, C, scan="tree")
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        lad.selective_scan(u, delta, A, B, C, block_size=0)
