"""Forms agree; split-and-resume with the state equals one call; la.step."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

MODES = ["recurrent", "chunked", "parallel"]


@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
@pytest.mark.parametrize("chunk", [1, 16, 64, 100, 128, 400])
def test_forms_agree(rng, normalize, decay, chunk):
    q, k, v = make_qkv(rng, T=200, D=9, E=7, scale=0.5)
    g = None if decay is None else -rng.uniform(0, 0.3, (2, 3) if decay == "head" else (2, 3, 200))
    outs = [la.causal(q, k, v, kind="elu", mode=m, chunk_size=chunk, decay=g,
                      normalize=normalize) for m in MODES]
    ref = la.reference.causal(q, k, v, kind="elu", decay=g, normalize=normalize)
    for o in outs:
        assert_close(o, ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", [1, 15, 16, 17, 77])
@pytest.mark.parametrize("decay", [False, True])
def test_split_and_resume(rng, dtype, mode, split, decay):
    T, C = 120, 16
    q, k, v = make_qkv(rng, T=T, D=6, E=5, dtype=dtype, scale=0.5)
    g = -rng.uniform(0, 0.3, (2, 3, T)) if decay else None
    full, st = la.causal(q, k, v, mode=mode, chunk_size=C, decay=g, return_state=True)
    o1, s1 = la.causal(q[..., :split, :], k[..., :split, :], v[..., :split, :], mode=mode,
                       chunk_size=C, decay=None if g is None else g[..., :split],
                       return_state=True)
    o2, s2 = la.causal(q[..., split:, :], k[..., split:, :], v[..., split:, :], mode=mode,
                       chunk_size=C, decay=None if g is None else g[..., split:],
                       initial_state=s1, return_state=True)
    assert s1.t == split and s2.t == T
    assert_close(np.concatenate([o1, o2], axis=-2), full, dtype)
    assert_close(s2.S, st.S, dtype)
    assert_close(s2.z, st.z, dtype)


def test_final_state_is_the_definition(rng):
    q, k, v = make_qkv(rng, T=50, D=4, E=3)
    g = -rng.uniform(0, 0.3, (2, 3, 50))
    for mode in MODES:
        _, st = la.causal(q, k, v, kind="elu", mode=mode, decay=g, chunk_size=16,
                          return_state=True)
        G = np.cumsum(g, axis=-1)
        w = np.exp(G[..., -1:] - G)
        fk = la.reference.linear.phi(k, "elu1")
        S = np.einsum("...s,...sf,...se->...fe", w, fk, v)
        la.testing.assert_close(st.S, S, rtol=1e-12)
        la.testing.assert_close(st.z, np.einsum("...s,...sf->...f", w, fk), rtol=1e-12)


@pytest.mark.parametrize("kind", ["elu", "linear", "relu"])
def test_step_equals_batch(rng, kind):
    q, k, v = make_qkv(rng, T=30, D=5, E=4, scale=0.5)
    full, st_full = la.causal(q, k, v, kind=kind, return_state=True)
    state = None
    outs = []
    for t in range(30):
        o, state = la.step(q[..., t, :], k[..., t, :], v[..., t, :], state, kind=kind)
        outs.append(o)
    assert_close(np.stack(outs, axis=-2), full, np.float64)
    assert_close(state.S, st_full.S, np.float64)
    assert state.t == 30


def test_state_structure_same_for_t1_and_tn(rng):
    q, k, v = make_qkv(rng, T=10, D=5, E=4)
    _, s1 = la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None)
    _, sn = la.causal(q, k, v, return_state=True)
    assert type(s1) is type(sn)
    assert s1.S.shape == sn.S.shape and s1.z.shape == sn.z.shape
    assert set(s1.extra) == set(sn.extra) and s1.kind == sn.kind


def test_prefix_consistency(rng):
    q, k, v = make_qkv(rng, T=100, D=6, E=4)
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    q2[..., 60:, :] += 1
    k2[..., 60:, :] *= 3
    v2[..., 60:, :] -= 2
    g = -rng.uniform(0, 0.3, (2, 3, 100))
    for mode in MODES:
        a = la.causal(q, k, v, mode=mode, decay=g, chunk_size=16)
        b = la.causal(q2, k2, v2, mode=mode, decay=g, chunk_size=16)
        if mode == "recurrent":
            assert np.array_equal(a[..., :60, :], b[..., :60, :])
        else:
            np.testing.assert_allclose(a[..., :60, :], b[..., :60, :], rtol=0, atol=1e-13)


def test_float64_state_with_float32_inputs(rng):
    q, k, v = make_qkv(rng, T=40, D=4, E=3, dtype=np.float32)
    _, st = la.causal(q[..., :20, :], k[..., :20, :], v[..., :20, :], return_state=True)
    st64 = la.State(st.S.astype(np.float64), st.z.astype(np.float64), st.t, st.kind)
    o, st2 = la.causal(q[..., 20:, :], k[..., 20:, :], v[..., 20:, :], initial_state=st64,
                       return_state=True)
    assert o.dtype == np.float32 and st2.S.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("normalize", ["div", "none"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
def test_sequence_parallel_is_bit_identical(rng, dtype, normalize, decay, monkeypatch):
    """One slice, two threads: the chunked form splits the sequence (docs/design/family.md §7) and
    must give exactly the serial chunked result, state included."""
    monkeypatch.setenv("LINATTN_LOAD_AWARE", "0")  # split even on a loaded machine
    T = 16 * 100 + 7  # not a multiple of the chunk; more than one window of chunks
    q, k, v = make_qkv(rng, batch=(1,), T=T, D=5, E=4, dtype=dtype, scale=0.5)
    g = None if decay is None else (-rng.uniform(0, 0.2, (1,)) if decay == "head"
                                    else -rng.uniform(0, 0.2, (1, T)))
    _, st0 = la.causal(q[:, :5], k[:, :5], v[:, :5], normalize=normalize, return_state=True,
                       decay=None if g is None or decay == "head" else g[:, :5])
    kw = dict(mode="chunked", chunk_size=4, normalize=normalize, decay=g, initial_state=st0,
              return_state=True)
    before = la.get_num_threads()
    try:
        la.set_num_threads(1)
        o1, s1 = la.causal(q, k, v, **kw)
        la.set_num_threads(2)
        o2, s2 = la.causal(q, k, v, **kw)
    finally:
        la.set_num_threads(0 if before == la.info()["max_threads"] else before)
    assert np.array_equal(o1, o2) and np.array_equal(s1.S, s2.S)
    assert_close(o1, la.reference.causal(q, k, v, normalize=normalize, decay=g,
                                         initial_state=st0), dtype)


def test_generic_paths_match_simd_paths(tmp_path):
    """LINATTN_NO_SIMD=1 forces the generic C loop of the recurrent update and BLAS for
    the chunk products; both paths agree with the oracle (the AVX-512 ones run everywhere
    else in this suite)."""
    import subprocess
    import sys

    script = (
        "import numpy as np, linattn as la\n"
        "rng = np.random.default_rng(0)\n"
        "for dt in (np.float32, np.float64):\n"
        "    for E in (3, 64, 70):\n"
        "        q, k, v = (rng.standard_normal((2, 40, 9)).astype(dt) * 0.5 for _ in range(3))\n"
        "        v = rng.standard_normal((2, 40, E)).astype(dt)\n"
        "        g = -rng.uniform(0, 0.3, (2, 40))\n"
        "        for dec in (None, g):\n"
        "            for mode in ('recurrent', 'chunked'):\n"
        "                o = la.causal(q, k, v, mode=mode, decay=dec, chunk_size=16)\n"
        "                la.testing.assert_close(o, la.reference.causal(q, k, v, decay=dec),\n"
        "                                        rtol=la.testing.tolerance(dt))\n"
        "print('ok')\n")
    import os

    env = dict(os.environ, LINATTN_NO_SIMD="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
