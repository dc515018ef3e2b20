"""The chunked form's sequence split (docs/design/family.md §7): with fewer (batch, head)
slices than threads and a long sequence, the chunks of one slice are shared by the threads
(pass 1: each chunk's state increment, kept keys and values; the scan in chunk order;
pass 2: each chunk's outputs).  It performs the serial kernel's operations on the same
values, so its outputs and final state equal the 1-thread call bit for bit, for every
shape, stride, dtype, decay, normalisation and carried state, and both agree with the
NumPy oracle."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

CPUS = len(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(CPUS < 2, reason="the split needs 2 CPUs")


@pytest.fixture
def restore_threads(monkeypatch):
    """Both threads take part whatever the machine's load (LINATTN_LOAD_AWARE=0: on a
    machine without a free core calls would otherwise not split, and workers woken on
    the caller's core would leave it every step)."""
    monkeypatch.setenv("LINATTN_LOAD_AWARE", "0")
    yield
    la.set_num_threads(0)


def _both(fn):
    """fn() on 1 thread (the serial chunked kernel) and on 2 (the split)."""
    la.set_num_threads(1)
    one = fn()
    la.set_num_threads(2)
    two = fn()
    return one, two


def _equal(one, two):
    if isinstance(one, tuple):
        o1, s1 = one
        o2, s2 = two
        assert np.array_equal(o1, o2)
        assert np.array_equal(s1.S, s2.S) and np.array_equal(s1.z, s2.z) and s1.t == s2.t
    else:
        assert np.array_equal(one, two)


@needs_two
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("C,T", [(8, 64), (8, 65), (8, 63 + 8 * 9), (7, 7 * 40 - 1),
                                 (5, 5 * 300 + 1), (16, 16 * 8 + 15)])
def test_shapes_equal_serial_and_oracle(rng, restore_threads, dtype, C, T):
    """T at the split's threshold (4 chunks per thread), one past it, ragged last
    chunks (C - 1, C + 1 rows), odd D and E != D, more chunks than the ring holds."""
    q, k, v = make_qkv(rng, batch=(1,), T=T, D=5, E=3, dtype=dtype, scale=0.5)
    one, two = _both(lambda: la.causal(q, k, v, mode="chunked", chunk_size=C,
                                       return_state=True))
    _equal(one, two)
    assert_close(two[0], la.reference.causal(q, k, v), dtype)


@needs_two
@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
def test_options_and_carried_state(rng, restore_threads, normalize, decay):
    T, C = 613, 8
    q, k, v = make_qkv(rng, batch=(1,), T=T + 9, D=6, E=7, dtype=np.float32, scale=0.5)
    g = None if decay is None else (-rng.uniform(0, 0.3, (1,)) if decay == "head"
                                    else -rng.uniform(0, 0.3, (1, T + 9)))
    gs = (lambda a, b: None if g is None else (g if decay == "head" else g[:, a:b]))
    _, st0 = la.causal(q[:, :9], k[:, :9], v[:, :9], normalize=normalize, decay=gs(0, 9),
                       return_state=True)
    kw = dict(mode="chunked", chunk_size=C, normalize=normalize, decay=gs(9, T + 9),
              initial_state=st0, return_state=True)
    one, two = _both(lambda: la.causal(q[:, 9:], k[:, 9:], v[:, 9:], **kw))
    _equal(one, two)
    want = la.causal(q, k, v, mode="recurrent", normalize=normalize, decay=gs(0, T + 9))
    la.testing.assert_close(two[0], want[:, 9:], rtol=1e-4)


@needs_two
@pytest.mark.parametrize("kind", ["elu", "retnet", "mamba2", "transnormer"])
def test_kinds_through_the_generic_operator(rng, restore_threads, kind):
    T = 700
    q, k, v = make_qkv(rng, batch=(1, 1), T=T, D=8, E=8, dtype=np.float32, scale=0.5)
    kw = {"mamba2": {"decay": -rng.uniform(0, 0.2, (1, 1, T))}}.get(kind, {})
    one, two = _both(lambda: la.causal(q, k, v, kind, mode="chunked", chunk_size=16,
                                       return_state=True, **kw))
    _equal(one, two)


@needs_two
def test_strided_inputs_layout_and_out(rng, restore_threads):
    """Non-contiguous q, k, v (every other row and column), the bthd layout, out=: the
    inputs are left as they were and out= receives the split's result."""
    base = [rng.standard_normal((1, 2 * 520, 2 * 6)).astype(np.float32) for _ in range(3)]
    q, k, v = (x[:, ::2, ::2] for x in base)
    copies = [x.copy() for x in base]
    one, two = _both(lambda: la.causal(q, k, v, mode="chunked", chunk_size=8))
    _equal(one, two)
    for x, c in zip(base, copies):
        assert np.array_equal(x, c)
    qb, kb, vb = (np.ascontiguousarray(x[:, :, None, :]) for x in (q, k, v))
    out = np.full((1, 520, 1, 6), np.nan, np.float32)
    la.set_num_threads(2)
    r = la.causal(qb, kb, vb, mode="chunked", chunk_size=8, layout="bthd", out=out)
    assert r is out
    assert np.array_equal(out[:, :, 0], one)


@needs_two
def test_fewer_slices_than_threads_each_split(rng, restore_threads):
    """B x H = 1 and a batch that the runner would not split further: each slice of a
    call with slices < threads is split; bit-identical to 1 thread."""
    q, k, v = make_qkv(rng, batch=(1,), T=2000, D=4, E=4, dtype=np.float64)
    one, two = _both(lambda: la.causal(q, k, v, mode="chunked", chunk_size=4))
    _equal(one, two)


@needs_two
def test_concurrent_python_threads(rng, restore_threads):
    """Two Python threads split at once: one finds the pool busy and runs every share
    itself; both results equal the serial ones."""
    xs = [make_qkv(rng, batch=(1,), T=3000, D=8, E=8, dtype=np.float32) for _ in range(2)]
    la.set_num_threads(1)
    want = [la.causal(*x, mode="chunked", chunk_size=8) for x in xs]
    la.set_num_threads(2)
    got = [None, None]

    def run(i):
        for _ in range(5):
            got[i] = la.causal(*xs[i], mode="chunked", chunk_size=8)
            assert np.array_equal(got[i], want[i])

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


@needs_two
@pytest.mark.parametrize("load_aware", ["1", "0"])
def test_busy_core_still_bit_identical(rng, restore_threads, monkeypatch, load_aware):
    """A busy process on one core: load-aware, the call runs on the caller (no free
    core); forced to split, its workers wait for each other at most a short spin and
    then sleep.  Either way the results are bit-identical."""
    monkeypatch.setenv("LINATTN_LOAD_AWARE", load_aware)
    cpu = sorted(os.sched_getaffinity(0))[0]
    busy = subprocess.Popen([sys.executable, "-c",
                             f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        q, k, v = make_qkv(rng, batch=(1,), T=8192, D=16, E=16, dtype=np.float32)
        one, two = _both(lambda: la.causal(q, k, v, mode="chunked", chunk_size=16,
                                           return_state=True))
        _equal(one, two)
    finally:
        busy.kill()
        busy.wait()


@needs_two
def test_nonfinite_values_stay_where_they_are(rng, restore_threads):
    """A NaN key reaches every later output through the scan, in both forms alike."""
    q, k, v = make_qkv(rng, batch=(1,), T=1000, D=4, E=4, dtype=np.float32)
    k[0, 500, 1] = np.nan
    one, two = _both(lambda: la.causal(q, k, v, mode="chunked", chunk_size=8))
    assert np.array_equal(one, two, equal_nan=True)
    assert np.isfinite(two[0, :496]).all() and np.isnan(two[0, 504:]).all()


@needs_two
@pytest.mark.parametrize("products", ["tiles", "blas"])
@pytest.mark.parametrize("normalize", ["div", "none"])
def test_value_rows_of_a_wider_array_bit_identical(rng, restore_threads, products,
                                                   normalize):
    """Value rows of a wider array (row stride > E): the split stays bit-identical to
    the serial kernel, on the register tiles and on BLAS."""
    from linattn import _core
    T, C, D, E = 64 * 11 + 5, 64, 64, 64
    q, k, _ = make_qkv(rng, batch=(1,), T=T, D=D, E=E, dtype=np.float32, scale=0.3)
    wide = rng.standard_normal((1, T, E + 16)).astype(np.float32)
    v = wide[..., 3:3 + E]
    _core.set_tuning("tiles_max_dim", 0 if products == "blas" else -1)
    try:
        one, two = _both(lambda: la.causal(q, k, v, mode="chunked", chunk_size=C,
                                           normalize=normalize, return_state=True))
    finally:
        _core.set_tuning("tiles_max_dim", -1)
    _equal(one, two)
    assert_close(two[0], la.reference.causal(q, k, v, normalize=normalize), np.float32)
