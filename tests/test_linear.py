"""kernels/linear: every elementwise kind x mode x dtype against linattn.reference
and against a direct quadratic NumPy computation written here."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

KINDS = ["linear", "elu", "relu"]
MODES = ["recurrent", "chunked", "parallel"]
DTYPES = [np.float32, np.float64]


def direct_quadratic(q, k, v, kind, normalize, eps=1e-6, g=None):
    """Written from the paper formulas, independent of linattn.reference."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    if kind == "elu":
        f = lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))  # noqa: E731
    elif kind == "relu":
        f = lambda x: np.maximum(x, 0)  # noqa: E731
    else:
        f = lambda x: x  # noqa: E731
    T = q.shape[-2]
    A = np.einsum("...td,...sd->...ts", f(q), f(k))
    A = A * np.tril(np.ones((T, T)))
    if g is not None:
        G = np.cumsum(g, axis=-1)
        lag = G[..., :, None] - G[..., None, :]
        A = A * np.exp(np.minimum(lag, 0)) * np.tril(np.ones((T, T)))
    num = A @ v
    if normalize == "div":
        den = A.sum(-1, keepdims=True)
        return num / (den + eps) if kind != "linear" else num / np.maximum(np.abs(den), eps)
    if normalize == "norm":
        return num / (np.sqrt((num**2).mean(-1, keepdims=True)) + 1e-8)
    return num


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 31, 32, 33, 100])
def test_parity_with_reference(rng, kind, mode, dtype, T):
    q, k, v = make_qkv(rng, T=T, D=7, E=5, dtype=dtype, scale=0.5)
    o = la.causal(q, k, v, kind=kind, mode=mode, chunk_size=32)
    assert o.dtype == dtype and o.shape == (2, 3, T, 5)
    assert_close(o, la.reference.causal(q, k, v, kind=kind), dtype)


@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_direct_quadratic(rng, kind, normalize, mode):
    q, k, v = make_qkv(rng, T=45, D=6, E=4, scale=0.5)
    if kind == "linear" and normalize == "div":
        q, k = np.abs(q), np.abs(k)  # keep |den| away from 0 for signed features
    o = la.causal(q, k, v, kind=kind, mode=mode, normalize=normalize, chunk_size=16)
    assert_close(o, direct_quadratic(q, k, v, kind, normalize), np.float64)


@pytest.mark.parametrize("D,E", [(1, 1), (3, 2), (64, 64), (96, 17)])
@pytest.mark.parametrize("mode", MODES)
def test_feature_sizes(rng, D, E, mode):
    q, k, v = make_qkv(rng, batch=(2,), T=70, D=D, E=E, dtype=np.float32, scale=0.3)
    o = la.causal(q, k, v, kind="elu", mode=mode)
    assert_close(o, la.reference.causal(q, k, v, kind="elu"), np.float32)


@pytest.mark.parametrize("per", ["head", "token"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk", [1, 16, 64, 100, 128, 500])
def test_decay(rng, per, mode, chunk):
    q, k, v = make_qkv(rng, T=130, D=8, E=6)
    g = -rng.uniform(0, 0.5, (2, 3) if per == "head" else (2, 3, 130))
    o = la.causal(q, k, v, kind="elu", mode=mode, decay=g, chunk_size=chunk)
    gt = np.broadcast_to(g[..., None], (2, 3, 130)) if per == "head" else g
    assert_close(o, direct_quadratic(q, k, v, "elu", "div", g=gt), np.float64)
    assert_close(o, la.reference.causal(q, k, v, kind="elu", decay=g), np.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_decay_is_diagonal(rng, mode, dtype):
    q, k, v = make_qkv(rng, T=150, D=8, E=5, dtype=dtype)
    g = np.full((2, 3, 150), -30.0)
    o = la.causal(q, k, v, kind="elu", mode=mode, decay=g, chunk_size=64, eps=0.0)
    assert np.isfinite(o).all()
    la.testing.assert_close(o, v, rtol=1e-6)
    on = la.causal(q, k, v, kind="linear", mode=mode, decay=g, chunk_size=64)
    diag = np.einsum("...td,...td->...t", q.astype(np.float64), k)[..., None] * v
    la.testing.assert_close(on, diag, rtol=1e-6)


def test_factorised_form_overflows_but_ours_does_not(rng):
    """docs/design/family.md §4.3 rule 1, negative control: exp(G_t) * exp(-G_s) overflows float32
    at a log-decay of -1.4 per token over a 64-token chunk; the difference form does not."""
    q, k, v = make_qkv(rng, batch=(1,), T=64, D=4, E=3, dtype=np.float32)
    g = np.full((1, 64), -1.4, np.float32)
    with np.errstate(over="ignore"):
        key_factor = np.exp(-np.cumsum(g, axis=-1))
    assert not np.isfinite(key_factor).all()
    o = la.causal(q, k, v, kind="elu", decay=g, mode="chunked", chunk_size=64)
    assert np.isfinite(o).all()
    assert_close(o, la.reference.causal(q, k, v, kind="elu", decay=g), np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_hard_reset(rng, mode):
    """-inf at token s: outputs from s on equal a fresh start at s."""
    q, k, v = make_qkv(rng, batch=(2,), T=90, D=5, E=4)
    g = -rng.uniform(0, 0.2, (2, 90))
    g[:, 40] = -np.inf
    o = la.causal(q, k, v, kind="elu", mode=mode, decay=g, chunk_size=16)
    fresh = la.causal(q[:, 40:], k[:, 40:], v[:, 40:], kind="elu", decay=g[:, 40:],
                      mode="recurrent")
    la.testing.assert_close(o[:, 40:], fresh, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_noncausal_and_cross_attention(rng, kind):
    q, k, v = make_qkv(rng, T=40, S=57, D=6, E=5, scale=0.5)
    if kind == "linear":
        o = la.noncausal(q, k, v, kind=kind)
        want = np.einsum("...td,...sd->...ts", q, k) @ v
    else:
        o = la.noncausal(q, k, v, kind=kind)
        f = (lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))) if kind == "elu" \
            else (lambda x: np.maximum(x, 0))
        A = np.einsum("...td,...sd->...ts", f(q), f(k))
        want = (A @ v) / (A.sum(-1, keepdims=True) + 1e-6)
    assert_close(o, want, np.float64)
    assert_close(o, la.reference.noncausal(q, k, v, kind=kind), np.float64)


def test_noncausal_blocked_equals_unblocked_and_permutation(rng):
    q, k, v = make_qkv(rng, T=30, S=301, D=6, E=5)
    a = la.noncausal(q, k, v, chunk_size=7)
    b = la.noncausal(q, k, v, chunk_size=1000)
    la.testing.assert_close(a, b, rtol=1e-12)
    p = rng.permutation(301)
    c = la.noncausal(q, k[..., p, :], v[..., p, :])
    la.testing.assert_close(a, c, rtol=1e-12)


def test_elu_convexity_and_prefix_mean(rng):
    q = np.zeros((1, 50, 4))
    k = np.zeros((1, 50, 4))
    v = rng.standard_normal((1, 50, 3))
    o = la.causal(q, k, v, kind="elu", eps=0.0)
    want = np.cumsum(v, axis=-2) / np.arange(1, 51)[:, None]
    la.testing.assert_close(o, want, rtol=1e-12)
    o = la.noncausal(q, k, v, kind="elu", eps=0.0)
    la.testing.assert_close(o, np.broadcast_to(v.mean(-2, keepdims=True), o.shape), rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_relu_all_negative_keys_give_zero(mode):
    q = np.ones((1, 10, 4))
    k = -np.ones((1, 10, 4))
    v = np.ones((1, 10, 3))
    for eps_mode in ("add", "clamp"):
        o = la.causal(q, k, v, kind="relu", mode=mode, eps_mode=eps_mode)
        assert np.array_equal(o, np.zeros_like(o))


def test_zero_length(rng):
    q, k, v = make_qkv(rng, T=0, D=4, E=3)
    for mode in MODES:
        o, st = la.causal(q, k, v, mode=mode, return_state=True)
        assert o.shape == (2, 3, 0, 3)
        assert st.t == 0 and np.array_equal(st.S, np.zeros((2, 3, 4, 3)))
    assert la.noncausal(q, k, v).shape == (2, 3, 0, 3)


def test_float16_in_float16_out(rng):
    q, k, v = make_qkv(rng, T=40, D=8, E=8, dtype=np.float16, scale=0.5)
    for mode in MODES:
        o = la.causal(q, k, v, mode=mode)
        assert o.dtype == np.float16
        ref = la.causal(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                        mode=mode)
        la.testing.assert_close(o, ref, rtol=1e-3)
    assert la.noncausal(q, k, v).dtype == np.float16


def test_promotion_and_lists():
    o = la.causal([[1.0, 2.0]], [[0.5, 0.1]], [[3.0]])
    assert o.dtype == np.float64 and o.shape == (1, 1)
    q = np.ones((3, 2), np.float32)
    assert la.causal(q, q, q.astype(np.float64)).dtype == np.float64


def test_scale_is_applied_to_q(rng):
    q, k, v = make_qkv(rng, T=20, D=4, E=3)
    a = la.causal(q, k, v, kind="linear", scale=0.1)
    b = la.causal(0.1 * q, k, v, kind="linear")
    la.testing.assert_close(a, b, rtol=1e-12)


def test_relu_scale_changes_output_only_through_eps(rng):
    q, k, v = make_qkv(rng, T=30, D=4, E=3)
    base = la.causal(q, k, v, kind="relu", eps=1e-12)
    for c in (1e-3, 1e3):
        la.testing.assert_close(la.causal(c * q, k, v, kind="relu", eps=1e-12), base,
                                rtol=1e-6)


def _value_layouts(v):
    """v (batch, T, E) in several memory layouts: contiguous, rows of a wider array,
    strided columns, reversed rows, column-major."""
    wide = np.zeros(v.shape[:-1] + (v.shape[-1] + 5,), v.dtype)
    wide[..., 2:2 + v.shape[-1]] = v
    cols = np.zeros(v.shape[:-1] + (2 * v.shape[-1],), v.dtype)
    cols[..., ::2] = v
    rev = np.ascontiguousarray(v[..., ::-1, :])
    fort = np.asfortranarray(np.swapaxes(v, -1, -2)).swapaxes(-1, -2)
    return {"contiguous": v, "wide_rows": wide[..., 2:2 + v.shape[-1]],
            "strided_columns": cols[..., ::2], "reversed_rows": rev[..., ::-1, :],
            "column_major": fort}


@pytest.mark.parametrize("products", ["tiles", "blas"])
@pytest.mark.parametrize("normalize", ["div", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("D,E,C,T", [(7, 5, 16, 15), (7, 5, 16, 17), (64, 64, 64, 63),
                                     (64, 64, 64, 65), (64, 65, 32, 97), (33, 64, 64, 130),
                                     (96, 17, 64, 1)])
def test_chunked_value_row_layouts(rng, products, normalize, dtype, D, E, C, T):
    """Every value layout gives the oracle's result within tolerance and the final
    state of la.transition, through the register tiles and through BLAS, at T = 1,
    C - 1, C + 1 and E != F, and leaves v as it was."""
    from linattn import _core
    q, k, v = make_qkv(rng, batch=(2,), T=T, D=D, E=E, dtype=dtype, scale=0.3)
    want = direct_quadratic(q, k, v, "elu", normalize)
    _core.set_tuning("tiles_max_dim", 0 if products == "blas" else -1)
    try:
        for name, vl in _value_layouts(v).items():
            before = vl.copy()
            o, st = la.causal(q, k, vl, kind="elu", mode="chunked", chunk_size=C,
                              normalize=normalize, return_state=True)
            assert np.array_equal(vl, before), name
            assert_close(o, want, dtype)
            # the final state: the transition from a zero state (div: the normaliser too)
            tr = la.transition(q, k, vl, kind="elu", normalize=normalize, chunk_size=C)
            assert_close(st.S, tr.S, dtype)
            assert_close(st.z, tr.z, dtype)
    finally:
        _core.set_tuning("tiles_max_dim", -1)
