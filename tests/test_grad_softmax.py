"""``la.softmax_attention_vjp``: the exact softmax backward in C (saved log-sum-exp,
scores recomputed per block of queries).

Oracles: float64 central finite differences through ``la.reference.softmax_attention``;
the quadratic NumPy backward written out below (P materialised, docs/design/grad.md §3);
torch autograd through a pure-torch transcription of the reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import linattn as la
from linattn.reference.linear import softmax_attention as ref_softmax


def relative_rms(actual, desired) -> float:
    """RMS error over the RMS of ``desired`` floored at 0.05 (gradients here are O(1);
    some are exactly 0, e.g. dq at T = 1)."""
    a, d = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.sqrt(np.mean((a - d) ** 2)) / max(np.sqrt(np.mean(d ** 2)), 0.05))

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def _qkv(rng, batch=(2, 3), T=9, S=None, D=3, E=5, dtype=np.float64):
    S = T if S is None else S
    return (rng.standard_normal(batch + (T, D)).astype(dtype),
            rng.standard_normal(batch + (S, D)).astype(dtype),
            rng.standard_normal(batch + (S, E)).astype(dtype))


def ref_vjp(q, k, v, do, causal, scale):
    """Quadratic float64 backward: P whole, dZ = P o (dP - rowsum(dO o O))."""
    q, k, v, do = (np.asarray(x, np.float64) for x in (q, k, v, do))
    z = scale * q @ np.swapaxes(k, -1, -2)
    if causal:
        T, S = z.shape[-2:]
        z = np.where(np.tril(np.ones((T, S), bool)), z, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    dz = p * (dp - (do * o).sum(-1, keepdims=True))
    return scale * dz @ k, scale * np.swapaxes(dz, -1, -2) @ q, dv


def _check(g, want, dtype):
    for n, w in zip("qkv", want):
        assert g[n].shape == w.shape and g[n].dtype == np.dtype(dtype), n
        assert np.isfinite(g[n]).all(), n
        err = relative_rms(g[n], w)
        assert err <= TOL[np.dtype(dtype).type], (n, err)


@pytest.mark.parametrize("causal", [True, False])
def test_finite_differences_elementwise(rng, causal):
    q, k, v = _qkv(rng, batch=(2,), T=9, S=9 if causal else 7)
    o, vjp = la.softmax_attention_vjp(q, k, v, causal=causal, scale=0.7)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    h = 1e-6
    for n, x in (("q", q), ("k", k), ("v", v)):
        fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            args = {"q": q, "k": k, "v": v}
            fp = np.sum(ref_softmax(**{**args, n: xp}, causal=causal, scale=0.7) * do)
            fm = np.sum(ref_softmax(**{**args, n: xm}, causal=causal, scale=0.7) * do)
            fd[i] = (fp - fm) / (2 * h)
        assert relative_rms(g[n], fd) <= 1e-6, n


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T", [1, 9, 37, 63, 64, 65, 70, 130])
def test_matches_quadratic_backward(rng, dtype, causal, T):
    D, E = (1, 3, 5)[T % 3], 4
    S = T if causal else T + 3
    q, k, v = _qkv(rng, T=T, S=S, D=D, E=E, dtype=dtype)
    o, vjp = la.softmax_attention_vjp(q, k, v, causal=causal)
    np.testing.assert_array_equal(o, la.softmax_attention(q, k, v, causal=causal))
    do = rng.standard_normal(o.shape).astype(dtype)
    _check(vjp(do), ref_vjp(q, k, v, do, causal, 1 / np.sqrt(D)), dtype)


# The backward works in tiles of 64 queries x 256 keys: lengths around a key tile, several
# key tiles, cross attention with Tq != Tk on either side of a tile.
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T", [255, 256, 257, 520])
def test_matches_quadratic_backward_across_key_tiles(rng, dtype, causal, T):
    q, k, v = _qkv(rng, batch=(2,), T=T, D=7, E=3, dtype=dtype)
    o, vjp = la.softmax_attention_vjp(q, k, v, causal=causal, scale=0.6)
    np.testing.assert_array_equal(o, la.softmax_attention(q, k, v, causal=causal, scale=0.6))
    do = rng.standard_normal(o.shape).astype(dtype)
    _check(vjp(do), ref_vjp(q, k, v, do, causal, 0.6), dtype)


@pytest.mark.parametrize("T, S", [(5, 600), (300, 7), (65, 257)])
def test_cross_attention_backward_across_key_tiles(rng, T, S):
    q, k, v = _qkv(rng, batch=(2,), T=T, S=S, D=4, E=6)
    o, vjp = la.softmax_attention_vjp(q, k, v, causal=False)
    do = rng.standard_normal(o.shape)
    _check(vjp(do), ref_vjp(q, k, v, do, False, 0.5), np.float64)


def test_bthd_layout_and_strides(rng):
    q, k, v = (np.swapaxes(x, -3, -2) for x in _qkv(rng, T=37, D=5, E=3))  # (2, 37, 3, .)
    qs = np.repeat(q, 2, axis=-1)[..., ::2]  # strided
    o, vjp = la.softmax_attention_vjp(qs, k, v, layout="bthd")
    np.testing.assert_array_equal(o, la.softmax_attention(q, k, v, layout="bthd"))
    do = rng.standard_normal(o.shape + (2,))[..., 0]  # strided cotangent
    g = vjp(do)
    want = ref_vjp(*(np.swapaxes(x, -3, -2) for x in (q, k, v, do)), True, 5 ** -0.5)
    _check({n: np.swapaxes(g[n], -3, -2) for n in "qkv"}, want, np.float64)


def test_broadcast_keys_shared_by_heads(rng):
    q, _, _ = _qkv(rng, batch=(2, 3), T=20)
    _, k, v = _qkv(rng, batch=(2, 1), T=20)
    o, vjp = la.softmax_attention_vjp(q, k, v)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    assert g["k"].shape == k.shape and g["v"].shape == v.shape
    kx, vx = (np.broadcast_to(x, q.shape[:-1] + x.shape[-1:]).copy() for x in (k, v))
    gx = la.softmax_attention_vjp(q, kx, vx)[1](do)
    for n in "kv":
        np.testing.assert_allclose(g[n], gx[n].sum(axis=1, keepdims=True), rtol=1e-12,
                                   atol=1e-14)
    np.testing.assert_allclose(g["q"], gx["q"], rtol=1e-12, atol=1e-14)


def test_float16_inputs_give_float16_gradients(rng):
    q, k, v = _qkv(rng, T=20, dtype=np.float16)
    o, vjp = la.softmax_attention_vjp(q, k, v)
    assert o.dtype == np.float16
    g = vjp(np.ones(o.shape, np.float16))
    want = ref_vjp(q, k, v, np.ones(o.shape), True, 3 ** -0.5)
    for n, w in zip("qkv", want):
        assert g[n].dtype == np.float16
        assert relative_rms(g[n], w) < 3e-3


def test_inputs_untouched_and_vjp_repeatable(rng):
    q, k, v = _qkv(rng, T=30)
    copies = [x.copy() for x in (q, k, v)]
    o, vjp = la.softmax_attention_vjp(q, k, v)
    do = rng.standard_normal(o.shape)
    do0 = do.copy()
    g1, g2 = vjp(do), vjp(do)
    for x, c in zip((q, k, v, do), copies + [do0]):
        np.testing.assert_array_equal(x, c)
    for n in "qkv":
        np.testing.assert_array_equal(g1[n], g2[n])
    assert vjp.nondiff == ()


def test_bad_cotangents_name_do(rng):
    q, k, v = _qkv(rng, T=10)
    o, vjp = la.softmax_attention_vjp(q, k, v)
    with pytest.raises(ValueError, match=r"\bdo\b.*shape"):
        vjp(np.zeros(o.shape[:-1] + (o.shape[-1] + 1,)))
    with pytest.raises(ValueError, match=r"\bdo\b"):
        vjp(np.zeros(o.shape[1:]))
    with pytest.raises(TypeError, match="dstate"):
        vjp(np.zeros(o.shape), dstate=np.zeros(3))
    with pytest.raises(ValueError, match="keys"):
        la.softmax_attention_vjp(q, k[..., :5, :], v[..., :5, :])


def test_extreme_logits_stay_finite(rng):
    q, k, v = _qkv(rng, T=70)
    q *= 300.0  # saturated rows: P one-hot, lse large
    o, vjp = la.softmax_attention_vjp(q, k, v)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    want = ref_vjp(q, k, v, do, True, 3 ** -0.5)
    for n, w in zip("qkv", want):
        assert np.isfinite(g[n]).all()
        np.testing.assert_allclose(g[n], w, atol=1e-8 * max(1.0, np.abs(w).max()))


def test_numpy_memory_is_linear_in_t(rng):
    """Python-level allocations of forward + backward (tracemalloc sees NumPy's) grow
    linearly in T: doubling T at most ~doubles the peak, never quadruples it."""
    peaks = []
    for T in (512, 1024):
        q, k, v = _qkv(rng, batch=(1,), T=T, D=4, E=4)
        tracemalloc.start()
        o, vjp = la.softmax_attention_vjp(q, k, v)
        vjp(np.ones_like(o))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= 2.5 * peaks[0], peaks
    assert peaks[1] < 40 * 1024 * 8, peaks  # O(T (D + E)) items, far below T^2 = 8 MiB


def test_c_scratch_is_linear_in_t():
    """The C scratch is malloc'd (invisible to tracemalloc): run T = 16384 (a T x T
    float64 matrix would be 2 GiB) under an address-space limit of +768 MiB."""
    if not sys.platform.startswith("linux"):
        pytest.skip("RLIMIT_AS check written for Linux")
    code = textwrap.dedent("""
        import resource
        import numpy as np
        import linattn as la
        la.set_num_threads(1)
        r = np.random.default_rng(0)
        T = 16384
        q, k, v = (r.standard_normal((1, T, 1)) for _ in range(3))
        la.softmax_attention_vjp(q[:, :8], k[:, :8], v[:, :8])[1](np.ones((1, 8, 1)))
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0]
                 .split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (768 << 20), resource.RLIM_INFINITY))
        o, vjp = la.softmax_attention_vjp(q, k, v)
        g = vjp(np.ones_like(o))
        assert np.isfinite(g["q"]).all()
        print("ok")
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_torch_autograd_oracle(rng):
    torch = pytest.importorskip("torch")
    for causal, (T, S) in ((True, (37, 37)), (False, (37, 20))):
        q, k, v = _qkv(rng, T=T, S=S, D=5, E=3)
        o, vjp = la.softmax_attention_vjp(q, k, v, causal=causal, scale=0.4)
        do = rng.standard_normal(o.shape)
        g = vjp(do)
        tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
        z = 0.4 * tq @ tk.transpose(-1, -2)
        if causal:
            z = z.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), float("-inf"))
        to = torch.softmax(z, -1) @ tv
        to.backward(torch.tensor(do))
        np.testing.assert_allclose(o, to.detach().numpy(), rtol=1e-12, atol=1e-13)
        for n, t in zip("qkv", (tq, tk, tv)):
            assert relative_rms(g[n], t.grad.numpy()) <= 1e-10, n


def test_bit_identical_across_thread_counts(rng):
    q, k, v = _qkv(rng, batch=(2, 3), T=70, dtype=np.float32)
    _, k1, v1 = _qkv(rng, batch=(2, 1), T=70, dtype=np.float32)
    do = rng.standard_normal(q.shape[:-1] + (5,)).astype(np.float32)
    n0 = la.get_num_threads()
    try:
        gs = []
        for n in (1, 2):
            la.set_num_threads(n)
            gs.append(la.softmax_attention_vjp(q, k1, v1)[1](do))
    finally:
        la.set_num_threads(n0)
    for name in "qkv":
        np.testing.assert_array_equal(gs[0][name], gs[1][name])


def test_one_slice_split_over_threads_matches_single_pass(rng):
    """One slice and several threads: the backward runs dk, dv by key tiles and dq by
    query blocks on separate threads; the gradients are those of one thread, bit for
    bit, and match the quadratic backward."""
    q, k, v = _qkv(rng, batch=(1,), T=600, D=6, E=5, dtype=np.float32)
    do = rng.standard_normal(q.shape[:-1] + (5,)).astype(np.float32)
    n0 = la.get_num_threads()
    try:
        gs = []
        for n in (1, 2, 3):
            la.set_num_threads(n)
            gs.append(la.softmax_attention_vjp(q, k, v)[1](do))
    finally:
        la.set_num_threads(n0)
    for g in gs[1:]:
        for name in "qkv":
            np.testing.assert_array_equal(gs[0][name], g[name])
    _check(gs[0], ref_vjp(q, k, v, do, True, 1 / np.sqrt(6)), np.float32)
