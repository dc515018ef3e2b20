"""Gradients of ``kind="transnormer"``: NormAttention (the operator backward with the norm)
and DiagAttention (``_core._diag_attention_bwd``).

Oracles independent of the C backward: central finite differences of the public forward
(``la.causal`` / ``la.noncausal`` in float64, h = 1e-6), a NumPy transcription of the
block-diagonal forward differentiated by hand (docs/design/grad.md §3), and torch
autograd's gradcheck through ``linattn.torch``.  Tolerances from docs/design/grad.md §5.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from _fd import fd_elementwise, rel


def qkv(rng, B=1, H=2, T=9, D=3, E=4, S=None, dtype=np.float64):
    S = T if S is None else S
    return (rng.standard_normal((B, H, T, D)).astype(dtype),
            rng.standard_normal((B, H, S, D)).astype(dtype),
            rng.standard_normal((B, H, S, E)).astype(dtype))


def diag_cache(rng, B, H, D, E, t0, w):
    """A DiagAttention state at position t0 (its block cache holds t0 mod w rows)."""
    c = t0 % w
    return la.State(None, None, t0, "transnormer",
                    {"keys": rng.standard_normal((B, H, c, D)),
                     "values": rng.standard_normal((B, H, c, E)),
                     "diag_block": np.array(w, np.int64)})


def causal_loss(q, k, v, do, dstate=None, **kw):
    """<do, o> (+ <dstate, returned state>) through the public forward."""
    if dstate is None:
        return float((la.causal(q, k, v, "transnormer", **kw) * do).sum())
    o, st = la.causal(q, k, v, "transnormer", return_state=True, **kw)
    total = float((o * do).sum())
    if "S" in dstate:
        total += float((st.S * dstate["S"]).sum())
    for name in ("keys", "values"):
        if name in dstate:
            total += float((st.extra[name] * dstate[name]).sum())
    return total


def check_fd(g, args, f, names=("q", "k", "v"), tol=1e-6):
    for name in names:
        def fx(x, name=name):
            return f(**dict(args, **{name: x}))
        assert rel(g[name], fd_elementwise(fx, args[name]), floor=1e-3) <= tol, name


# ------------------------------------------------------------ NormAttention --

@pytest.mark.parametrize("variant", ["t2", "t1"])
@pytest.mark.parametrize("backward", ["chunked", "recurrent"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
@pytest.mark.parametrize("T", [1, 9])
def test_norm_fd(rng, variant, backward, decay, T):
    """q, k, v, decay and the initial state, with a state cotangent; T = 9 crosses the
    chunk edges of chunk_size=4."""
    B, H, D, E = 1, 2, 3, 4
    q, k, v = qkv(rng, B, H, T, D, E)
    kw = {"variant": variant, "chunk_size": 4}
    if decay == "head":
        kw["decay"] = -rng.uniform(0.05, 1.0, (H,))
    elif decay == "token":
        kw["decay"] = -rng.uniform(0.05, 1.0, (B, H, T))
    st = la.State(0.3 * rng.standard_normal((B, H, D, E)), None, 3, "transnormer")
    kw["initial_state"] = st
    (o, s1), vjp = la.causal_vjp(q, k, v, "transnormer", return_state=True, backward=backward,
                                 **kw)
    do = rng.standard_normal(o.shape)
    dS = rng.standard_normal(s1.S.shape)
    g = vjp(do, dstate={"S": dS})
    args = {"q": q, "k": k, "v": v}

    def f(q, k, v):
        return causal_loss(q, k, v, do, {"S": dS}, **kw)
    check_fd(g, args, f)

    def fS(S):
        return causal_loss(q, k, v, do, {"S": dS}, **dict(kw, initial_state=la.State(
            S, None, 3, "transnormer")))
    assert rel(g["initial_state"].S, fd_elementwise(fS, st.S)) <= 1e-6
    if decay is not None:
        def fg(x):
            return causal_loss(q, k, v, do, {"S": dS}, **dict(kw, decay=x))
        assert rel(g["decay"], fd_elementwise(fg, kw["decay"])) <= 1e-6
    else:
        assert g["decay"] is None
    assert vjp.nondiff == ()


@pytest.mark.parametrize("variant", ["t2", "t1"])
@pytest.mark.parametrize("S", [7, 9, 14])
def test_norm_noncausal_fd_cross(rng, variant, S):
    q, k, v = qkv(rng, 1, 2, 9, 3, 4, S=S)
    kw = {"variant": variant}
    o, vjp = la.noncausal_vjp(q, k, v, "transnormer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    check_fd(g, {"q": q, "k": k, "v": v},
             lambda q, k, v: float((la.noncausal(q, k, v, "transnormer", **kw) * do).sum()))
    assert set(g) == {"q", "k", "v"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_norm_forms_agree(rng, dtype):
    """chunked == recurrent == parallel (C in {1, 16, 64, >= T}); float32 vs float64."""
    q, k, v = qkv(rng, 2, 3, 70, 5, 6, dtype=dtype)
    decay = -rng.uniform(0.01, 0.5, (2, 3, 70))
    do = rng.standard_normal((2, 3, 70, 6)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    ref = la.causal_vjp(q, k, v, "transnormer", decay=decay, backward="parallel")[1](do)
    for C in (1, 16, 64, 100):
        for bw in ("chunked", "recurrent"):
            g = la.causal_vjp(q, k, v, "transnormer", decay=decay, chunk_size=C,
                              backward=bw)[1](do)
            for name in ("q", "k", "v", "decay"):
                assert rel(g[name], ref[name]) <= tol, (C, bw, name)
    if dtype == np.float32:
        g64 = la.causal_vjp(*(x.astype(np.float64) for x in (q, k, v)), "transnormer",
                            decay=decay)[1](do.astype(np.float64))
        g32 = la.causal_vjp(q, k, v, "transnormer", decay=decay)[1](do)
        for name in ("q", "k", "v"):
            assert g32[name].dtype == np.float32
            assert rel(g32[name], g64[name]) <= 1e-5, name


# ------------------------------------------------------------ DiagAttention --

DIAG_CASES = [("t2", None), ("t1", None), ("t1", "none")]


@pytest.mark.parametrize("variant,normalize", DIAG_CASES)
@pytest.mark.parametrize("w", [1, 4, 64])
@pytest.mark.parametrize("T", [1, 9])
def test_diag_causal_fd(rng, variant, normalize, w, T):
    """q, k, v, the carried block cache and cotangents of the returned cache."""
    B, H, D, E = 1, 2, 3, 4
    q, k, v = qkv(rng, B, H, T, D, E)
    kw = {"variant": variant, "diag_block": w}
    if normalize is not None:
        kw["normalize"] = normalize
    st = diag_cache(rng, B, H, D, E, t0=6, w=w)
    kw["initial_state"] = st
    (o, s1), vjp = la.causal_vjp(q, k, v, "transnormer", return_state=True, **kw)
    do = rng.standard_normal(o.shape)
    ds = {"keys": rng.standard_normal(s1.extra["keys"].shape),
          "values": rng.standard_normal(s1.extra["values"].shape)}
    g = vjp(do, dstate=ds)
    args = {"q": q, "k": k, "v": v}
    check_fd(g, args, lambda q, k, v: causal_loss(q, k, v, do, ds, **kw))
    g0 = g["initial_state"]
    assert g0.S is None and g0.z is None and g0.t == st.t
    for name in ("keys", "values"):
        def fc(x, name=name):
            extra = dict(st.extra, **{name: x})
            return causal_loss(q, k, v, do, ds, **dict(kw, initial_state=la.State(
                None, None, st.t, "transnormer", extra)))
        assert g0.extra[name].shape == st.extra[name].shape
        if st.extra[name].size:
            assert rel(g0.extra[name], fd_elementwise(fc, st.extra[name])) <= 1e-6, name
    assert g["decay"] is None


@pytest.mark.parametrize("variant,normalize", DIAG_CASES)
@pytest.mark.parametrize("T,S", [(9, 9), (9, 7), (9, 14), (1, 5)])
def test_diag_noncausal_fd_cross(rng, variant, normalize, T, S):
    """Query block b meets key block b; keys past the queries' blocks get 0."""
    q, k, v = qkv(rng, 1, 2, T, 3, 4, S=S)
    kw = {"variant": variant, "diag_block": 4}
    if normalize is not None:
        kw["normalize"] = normalize
    o, vjp = la.noncausal_vjp(q, k, v, "transnormer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    check_fd(g, {"q": q, "k": k, "v": v},
             lambda q, k, v: float((la.noncausal(q, k, v, "transnormer", **kw) * do).sum()))
    nb = -(-T // 4) * 4
    if S > nb:
        assert not g["k"][..., nb:, :].any() and not g["v"][..., nb:, :].any()


def _diag_numpy_vjp(q, k, v, do, w, scale, variant, causal, eps=1e-8, norm=True):
    """Block-diagonal attention and its backward (docs/design/grad.md §3) in NumPy."""
    T, S = q.shape[-2], k.shape[-2]
    i, j = np.arange(T)[:, None], np.arange(S)[None, :]
    mask = (i // w) == (j // w)
    if causal:
        mask &= j <= i
    Z = scale * q @ np.swapaxes(k, -1, -2)
    if variant == "t2":
        Zm = np.where(mask, Z, -np.inf)
        m = Zm.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        P = np.where(mask, np.exp(Zm - m), 0.0)
        s = P.sum(axis=-1, keepdims=True)
        P = np.where(s > 0, P / np.where(s > 0, s, 1.0), 0.0)
        dP = do @ np.swapaxes(v, -1, -2)
        dZ = P * (dP - (P * dP).sum(axis=-1, keepdims=True))
        dv = np.swapaxes(P, -1, -2) @ do
    else:
        R = np.where(mask, np.maximum(Z, 0.0), 0.0)
        num = R @ v
        dn = do
        if norm:
            E = v.shape[-1]
            r = np.sqrt((num * num).mean(axis=-1, keepdims=True))
            rho = r + eps
            c = np.where(r > 0, (do * num).sum(-1, keepdims=True)
                         / (E * np.where(r > 0, r, 1.0) * rho), 0.0)
            dn = (do - c * num) / rho
        dZ = (dn @ np.swapaxes(v, -1, -2)) * (R > 0)
        dv = np.swapaxes(R, -1, -2) @ dn
    return scale * dZ @ k, scale * np.swapaxes(dZ, -1, -2) @ q, dv


@pytest.mark.parametrize("variant,normalize", DIAG_CASES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_diag_matches_numpy_backward(rng, variant, normalize, causal, dtype):
    """Long sequences (several blocks, a short last one): the C kernel against the NumPy
    transcription in float64 (1e-10), float32 within 1e-5."""
    T, w = 70, 16
    q, k, v = qkv(rng, 2, 3, T, 5, 6, dtype=dtype)
    do = rng.standard_normal((2, 3, T, 6)).astype(dtype)
    kw = {"variant": variant, "diag_block": w}
    if normalize is not None:
        kw["normalize"] = normalize
    vj = la.causal_vjp if causal else la.noncausal_vjp
    g = vj(q, k, v, "transnormer", **kw)[1](do)
    ref = _diag_numpy_vjp(*(x.astype(np.float64) for x in (q, k, v, do)), w, 5 ** -0.5,
                          variant, causal, norm=normalize is None)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for name, r in zip("qkv", ref):
        assert g[name].dtype == dtype
        assert rel(g[name], r) <= tol, name


@pytest.mark.parametrize("mode", ["recurrent", "chunked", "parallel"])
def test_diag_forward_bit_identical_every_mode(rng, mode):
    q, k, v = qkv(rng, 1, 2, 20, 4, 3)
    o, vjp = la.causal_vjp(q, k, v, "transnormer", diag_block=8, mode=mode)
    np.testing.assert_array_equal(o, la.causal(q, k, v, "transnormer", diag_block=8,
                                               mode=mode))
    g = vjp(np.ones_like(o))
    g2 = la.causal_vjp(q, k, v, "transnormer", diag_block=8)[1](np.ones_like(o))
    for name in "qkv":
        np.testing.assert_array_equal(g[name], g2[name])


@pytest.mark.parametrize("diag_block", [None, 8])
@pytest.mark.parametrize("cut", [1, 7, 8, 9, 13])
def test_split_and_resume_chained(rng, diag_block, cut):
    """vjp1(do1, dstate=vjp2(do2, dstate)["initial_state"]) equals one call (split at
    1, w-1, w, w+1 and elsewhere)."""
    T, D, E = 21, 3, 4
    q, k, v = qkv(rng, 1, 2, T, D, E)
    kw = {"diag_block": diag_block, "chunk_size": 4}
    do = rng.standard_normal((1, 2, T, E))
    (_, sT), vjp = la.causal_vjp(q, k, v, "transnormer", return_state=True, **kw)
    if diag_block is None:
        ds = {"S": rng.standard_normal(sT.S.shape)}
    else:
        ds = {n: rng.standard_normal(sT.extra[n].shape) for n in ("keys", "values")}
    g = vjp(do, dstate=ds)
    a, b = slice(0, cut), slice(cut, T)
    (_, s1), vjp1 = la.causal_vjp(q[..., a, :], k[..., a, :], v[..., a, :], "transnormer",
                                  return_state=True, **kw)
    _, vjp2 = la.causal_vjp(q[..., b, :], k[..., b, :], v[..., b, :], "transnormer",
                            initial_state=s1, return_state=True, **kw)
    g2 = vjp2(do[..., b, :], dstate=ds)
    g1 = vjp1(do[..., a, :], dstate=g2["initial_state"])
    for name in ("q", "k", "v"):
        assert rel(np.concatenate([g1[name], g2[name]], axis=-2), g[name]) <= 1e-12, name


def test_diag_broadcast_layout_strides_threads(rng):
    """k, v shared by the heads (B, 1, T, D) get summed gradients; bthd and strided
    inputs agree with the default layout; results do not depend on the thread count."""
    B, H, T, D, E = 2, 3, 19, 4, 5
    q = rng.standard_normal((B, H, T, D))
    k = rng.standard_normal((B, 1, T, D))
    v = rng.standard_normal((B, 1, T, E))
    do = rng.standard_normal((B, H, T, E))
    kw = {"diag_block": 6}
    g = la.causal_vjp(q, k, v, "transnormer", **kw)[1](do)
    ge = la.causal_vjp(q, np.repeat(k, H, 1), np.repeat(v, H, 1), "transnormer", **kw)[1](do)
    assert g["k"].shape == k.shape
    assert rel(g["k"], ge["k"].sum(axis=1, keepdims=True)) <= 1e-12
    assert rel(g["v"], ge["v"].sum(axis=1, keepdims=True)) <= 1e-12
    sw = lambda x: np.ascontiguousarray(np.swapaxes(x, 1, 2))  # noqa: E731
    kk, vv = np.repeat(k, H, 1), np.repeat(v, H, 1)
    gb = la.causal_vjp(sw(q), sw(kk), sw(vv), "transnormer", layout="bthd", **kw)[1](sw(do))
    for name in "qkv":
        assert rel(gb[name], sw(ge[name])) <= 1e-12
    qs = np.zeros((B, H, T, 2 * D))
    qs[..., ::2] = q
    dos = np.zeros((B, H, T, 2 * E))
    dos[..., 1::2] = do
    gs = la.causal_vjp(qs[..., ::2], kk, vv, "transnormer", **kw)[1](dos[..., 1::2])
    for name in "qkv":
        assert rel(gs[name], ge[name]) <= 1e-12
    prev = la.get_num_threads()
    try:
        la.set_num_threads(1)
        g1 = la.causal_vjp(q, kk, vv, "transnormer", **kw)[1](do)
        la.set_num_threads(2)
        g2 = la.causal_vjp(q, kk, vv, "transnormer", **kw)[1](do)
    finally:
        la.set_num_threads(prev)
    for name in "qkv":
        np.testing.assert_array_equal(g1[name], g2[name])


@pytest.mark.parametrize("diag_block", [None, 4])
def test_inputs_untouched(rng, diag_block):
    q, k, v = qkv(rng, 1, 2, 9, 3, 4)
    st = diag_cache(rng, 1, 2, 3, 4, 6, 4) if diag_block else \
        la.State(rng.standard_normal((1, 2, 3, 4)), None, 2, "transnormer")
    keep = [x.copy() for x in (q, k, v)]
    keep_st = st.copy()
    do = rng.standard_normal((1, 2, 9, 4))
    keep_do = do.copy()
    _, vjp = la.causal_vjp(q, k, v, "transnormer", diag_block=diag_block,
                           initial_state=st, return_state=True)
    vjp(do)
    vjp(do)
    for a, b in zip((q, k, v, do), keep + [keep_do]):
        np.testing.assert_array_equal(a, b)
    if diag_block:
        for n in ("keys", "values"):
            np.testing.assert_array_equal(st.extra[n], keep_st.extra[n])
    else:
        np.testing.assert_array_equal(st.S, keep_st.S)


def test_registry_and_errors(rng):
    info = la.kinds()["transnormer"]["grad"]
    assert info == {"wrt": ["q", "k", "v", "decay", "initial_state"], "nondiff": []}
    assert "transnormer" in la.grad.grad_kinds()
    q, k, v = qkv(rng, 1, 1, 9, 3, 4)
    o, vjp = la.causal_vjp(q, k, v, "transnormer", diag_block=4)
    with pytest.raises(ValueError, match=r"\bdo\b"):
        vjp(np.ones((2,) + o.shape))
    with pytest.raises(ValueError, match="keys"):
        vjp(np.ones(o.shape), dstate={"keys": np.ones((1, 1, 3, 3))})
    with pytest.raises(ValueError, match="S and z"):
        vjp(np.ones(o.shape), dstate=la.State(np.ones((3, 4)), None, 9, "transnormer"))
    with pytest.raises(TypeError, match="dstate"):
        la.noncausal_vjp(q, k, v, "transnormer", diag_block=4)[1](np.ones(o.shape),
                                                                  dstate={})
    with pytest.raises(TypeError, match="decay"):
        la.causal_vjp(q, k, v, "transnormer", diag_block=4, decay=-np.ones(9))
    with pytest.raises(TypeError, match="out="):
        la.causal_vjp(q, k, v, "transnormer", out=np.empty_like(o))


# ----------------------------------------------------------------- torch --

@pytest.mark.parametrize("kw", [{}, {"variant": "t1"}, {"diag_block": 4},
                                {"diag_block": 4, "variant": "t1"}])
@pytest.mark.parametrize("causal", [True, False])
def test_torch_gradcheck(kw, causal):
    torch = pytest.importorskip("torch")
    lt = pytest.importorskip("linattn.torch")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, n, generator=gen, dtype=torch.float64).requires_grad_()
               for n in (4, 4, 5))
    fn = lt.causal if causal else lt.noncausal
    assert torch.autograd.gradcheck(lambda q, k, v: fn(q, k, v, "transnormer", **kw),
                                    (q, k, v), atol=1e-8, rtol=1e-6)
