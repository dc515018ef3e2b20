"""LAVO's recurrent kernel (docs/design/lavo.md §9.1, §11) at the sizes its vector code
blocks on: the one-token step paths (Decoder.step, la.step in place, la.step returning a
new state) agree bit for bit, on contiguous and strided states; the recurrent form agrees
with the float64 oracle and the chunked form within the family tolerance
(docs/design/family.md §10) for T = 1, C - 1, C + 1, odd D, r not a multiple of 32,
float64, separate values and every window and memory option; keys-are-values calls carry
no value sums or value ring."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn import _core
from conftest import assert_close

DTYPES = [np.float32, np.float64]
OPTS = [{"window": 64}, {"window": 5, "window_mode": "block"},
        {"window": 6, "memory_scope": "before_local"},
        {"window": 4, "window_mode": "block", "memory_scope": "before_local"},
        {"window": 0}, {"window": 70}]


def _ortho(rng, r, d):
    qm, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return np.ascontiguousarray(qm.T[:r])


def _inputs(rng, B, T, D, dtype, scale=1.0):
    return tuple((rng.standard_normal(B + (T, D)) * scale).astype(dtype) for _ in range(3))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("D,r", [(64, None), (33, None), (17, 5), (64, 40)])
@pytest.mark.parametrize("sep", [False, True], ids=["kv", "sep"])
def test_step_paths_bit_identical(rng, dtype, D, r, sep):
    """Decoder.step == la.step(inplace=True) == la.step, outputs and states, for D at and
    around the vector blocks (64, 17 = 16 + 1, odd 33), r = 40 (a block of 32 and a
    scalar tail) and more tokens than the window."""
    B, T = (3,), 12
    kw = {"window": 7, "position_bias": rng.standard_normal(7)}
    if r is not None:
        kw["bases"] = _ortho(rng, r, D)
    q, k, v = _inputs(rng, B, T, D, dtype)
    if not sep:
        v = k
    E = D if sep else None  # a state with separate values has E
    dec = la.Decoder("lavo", B, D, E, dtype=dtype, **kw)
    st_ip = la.State.zeros("lavo", B, D, E, dtype=dtype, **kw)
    st_new = la.State.zeros("lavo", B, D, E, dtype=dtype, **kw)
    for t in range(T):
        vt = v[..., t, :] if sep else k[..., t, :]
        o_dec = dec.step(q[..., t, :], k[..., t, :], vt)
        o_ip, _ = la.step(q[..., t, :], k[..., t, :], vt, st_ip, inplace=True, **kw)
        o_new, st_new = la.step(q[..., t, :], k[..., t, :], vt, st_new, **kw)
        np.testing.assert_array_equal(o_dec, o_new)
        np.testing.assert_array_equal(o_ip, o_new)
    assert sorted(st_new.extra) == sorted(["sums", "ring_k", "fill"] +
                                          (["value_sums", "ring_v"] if sep else []))
    for st in (dec.state, st_ip):
        for key, val in st_new.extra.items():
            np.testing.assert_array_equal(np.asarray(st.extra[key]), np.asarray(val))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_strided_state_and_tokens_same_bits(rng, dtype):
    """A state whose rings have strided columns (the kernel copies them) and tokens with
    strided features give the bits of contiguous ones, in place and returning a new
    state; the strided state is updated where it is."""
    B, T, D = (2,), 9, 16
    kw = {"window": 4}
    q, k, v = _inputs(rng, B, T, D, dtype)
    st_c = la.State.zeros("lavo", B, D, D, dtype=dtype, **kw)
    for t in range(5):
        la.step(q[..., t, :], k[..., t, :], v[..., t, :], st_c, inplace=True, **kw)
    st_s = st_c.copy()
    for name in ("ring_k", "ring_v"):
        wide = np.zeros(st_c.extra[name].shape[:-1] + (2 * D,), dtype)
        wide[..., ::2] = st_c.extra[name]
        st_s.extra[name] = wide[..., ::2]  # column stride 2
    st_n = st_s.copy()
    qs, ks, vs = (np.repeat(x, 2, axis=-1)[..., ::2] for x in (q, k, v))
    for t in range(5, T):
        o_c, _ = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st_c, inplace=True, **kw)
        o_s, _ = la.step(qs[..., t, :], ks[..., t, :], vs[..., t, :], st_s, inplace=True,
                         **kw)
        o_n, st_n = la.step(qs[..., t, :], ks[..., t, :], vs[..., t, :], st_n, **kw)
        np.testing.assert_array_equal(o_s, o_c)
        np.testing.assert_array_equal(o_n, o_c)
    for key in ("sums", "ring_k", "value_sums", "ring_v"):
        np.testing.assert_array_equal(np.asarray(st_s.extra[key]), st_c.extra[key])
        np.testing.assert_array_equal(np.asarray(st_n.extra[key]), st_c.extra[key])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("opts", OPTS, ids=lambda o: "-".join(f"{v}" for v in o.values()))
@pytest.mark.parametrize("T", [1, 63, 65])
@pytest.mark.parametrize("sep", [False, True], ids=["kv", "sep"])
def test_recurrent_parity(rng, dtype, opts, T, sep):
    """The recurrent form against the float64 oracle and the chunked form (chunk 64:
    T = C - 1, C + 1), D = E = 64, default bases (r = 64), biases on both branches."""
    B, D = (2,), 64
    w = opts["window"]
    kw = dict(opts, position_bias=rng.standard_normal(w) if w else None,
              memory_bias=rng.standard_normal(64))
    q, k, v = _inputs(rng, B, T, D, dtype)
    if not sep:
        v = k
    o_rec = la.causal(q, k, v, "lavo", mode="recurrent", **kw)
    o_chk = la.causal(q, k, v, "lavo", mode="chunked", chunk_size=64, **kw)
    ref = la.reference.causal(*(x.astype(np.float64) for x in (q, k, v)), kind="lavo",
                              bases=la.lavo_bases(64, D, seed=0), **kw)
    assert o_rec.dtype == dtype
    assert_close(o_rec, ref, dtype)
    assert_close(o_rec, o_chk, dtype)


def test_float32_long_stream_error(rng):
    """float32 arithmetic in the recurrent kernel (float64 sums, logits and Z): a
    2000-token stream of large logits stays well inside the float32 tolerance."""
    B, T, D = (2,), 2000, 64
    q, k, _ = _inputs(rng, B, T, D, np.float64, scale=3.0)
    ref = la.causal(q, k, k, "lavo", window=16, mode="recurrent")
    o = la.causal(q.astype(np.float32), k.astype(np.float32), k.astype(np.float32), "lavo",
                  window=16, mode="recurrent")
    err = np.linalg.norm(o - ref) / np.linalg.norm(ref)
    assert err < 1e-6, err  # measured 1.2e-7..3e-7; the family tolerance is 1e-5


def test_separate_values_e_must_equal_d(rng):
    q, k, _ = _inputs(rng, (2,), 3, 8, np.float64)
    v = rng.standard_normal((2, 3, 5))
    with pytest.raises(ValueError, match="E == d"):
        la.causal(q, k, v, "lavo", window=2)
    st = la.State.zeros("lavo", (2,), 8, dtype=np.float64, window=2)
    with pytest.raises(ValueError):
        la.step(q[:, 0], k[:, 0], v[:, 0], st, window=2)


def test_kernel_value_state_sizes_checked(rng):
    """The causal gufunc reads the value sums and ring only with separate values: they
    are empty for keys-are-values calls, and must be (r) and (w, e) otherwise."""
    d, r, w = 4, 3, 2
    q, k, v = (rng.standard_normal((1, d)) for _ in range(3))
    B = _ortho(rng, r, d)
    pb, mb = np.zeros(w), np.zeros(r)
    args = (q, k, v, B, pb, mb, np.zeros(r))
    tail = (np.int64(0), 0.5)
    o, s1, vs1, rk1, rv1 = _core._lavo_causal(*args, np.zeros(0), np.zeros((w, d)),
                                              np.zeros((0, d)), *tail, np.int64(8),
                                              np.int64(64))
    assert vs1.shape == (0,) and rv1.shape == (0, d) and rk1.shape == (w, d)
    want = la.causal(q, k, k, "lavo", bases=B, window=w, scale=0.5)
    np.testing.assert_allclose(o, want, rtol=1e-14)
    with pytest.raises(ValueError):
        _core._lavo_causal(*args, np.zeros(0), np.zeros((w, d)), np.zeros((0, d)), *tail,
                           np.int64(8 | 4), np.int64(64))
    o2 = _core._lavo_causal(*args, np.zeros(r), np.zeros((w, d)), np.zeros((w, d)), *tail,
                            np.int64(8 | 4), np.int64(64))[0]
    np.testing.assert_allclose(o2, la.causal(q, k, v, "lavo", bases=B, window=w, scale=0.5),
                               rtol=1e-14)
