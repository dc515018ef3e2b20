"""Gradients of the generic operator: la.causal_vjp / la.noncausal_vjp.

Oracles independent of the C backward: central finite differences of the forward
(``la.causal`` in float64), and (when torch is installed) torch autograd through a
pure-torch transcription of ``la.reference`` (tests/test_grad_torch.py).  Tolerances
from docs/design/grad.md §5.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from _fd import H_FD, fd_directional, fd_elementwise, rel

KINDS = ("linear", "elu", "relu", "lightning", "retnet", "mamba2")


def inputs(rng, kind, B=2, H=3, T=9, D=3, E=4, dtype=np.float64, positive=False):
    q = rng.standard_normal((B, H, T, D))
    k = rng.standard_normal((B, H, T, D))
    v = rng.standard_normal((B, H, T, E))
    if kind == "relu" or positive:
        # keep ReLU away from its kink and the denominators >= 0.3 (docs/design/grad.md §5)
        q = np.abs(q) + 0.2
        k = np.abs(k) + 0.2
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def kw_for(kind, rng, shape, decay):
    """Keyword arguments: decay None / per head / per token (mamba2 needs per token)."""
    B, H, T = shape
    if kind == "mamba2":
        decay = "token"
    if decay == "head":
        return {"decay": -rng.uniform(0.05, 1.0, (H,))}
    if decay == "token":
        return {"decay": -rng.uniform(0.05, 1.0, (B, H, T))}
    return {}


def loss(kind, q, k, v, do, dS=None, dz=None, **kw):
    """<do, o> + <dS, S_T> + <dz, z_T> through the public forward."""
    if dS is None:
        return float((la.causal(q, k, v, kind, **kw) * do).sum())
    o, st = la.causal(q, k, v, kind, return_state=True, **kw)
    total = float((o * do).sum() + (st.S * dS).sum())
    if dz is not None and st.z is not None:
        total += float((st.z * dz).sum())
    return total


def make_state(rng, kind, B, H, D, E, div):
    S = 0.3 * rng.standard_normal((B, H, D, E))
    z = np.abs(rng.standard_normal((B, H, D))) + 0.5 if div else None
    return la.State(S, z, 5, kind)


def is_div(kind):
    return la.kinds()[kind]["defaults"]["normalize"] == "div"


# ------------------------------------------------------ finite differences --

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backward", ["chunked", "recurrent"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
def test_fd_elementwise(rng, kind, backward, decay):
    B, H, T, D, E = 1, 2, 9, 3, 4
    q, k, v = inputs(rng, kind, B, H, T, D, E)
    kw = kw_for(kind, rng, (B, H, T), decay)
    div = is_div(kind)
    st = make_state(rng, kind, B, H, D, E, div)
    kw.update(chunk_size=4, initial_state=st)
    (o, s1), vjp = la.causal_vjp(q, k, v, kind, return_state=True, backward=backward, **kw)
    do = rng.standard_normal(o.shape)
    dS = rng.standard_normal(s1.S.shape)
    dz = rng.standard_normal(s1.z.shape) if div else None
    g = vjp(do, dstate=la.State(dS, dz, s1.t, kind))
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss(kind, a["q"], a["k"], a["v"], do, dS, dz, **kw)
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name
    if "decay" in kw:
        def fdec(x):
            return loss(kind, q, k, v, do, dS, dz, **dict(kw, decay=x))
        assert g["decay"].shape == kw["decay"].shape
        assert rel(g["decay"], fd_elementwise(fdec, kw["decay"])) <= 1e-6
    else:
        assert g["decay"] is None
    gs = g["initial_state"]
    assert isinstance(gs, la.State) and gs.kind == kind and gs.t == st.t

    def fS(x):
        return loss(kind, q, k, v, do, dS, dz, **dict(kw, initial_state=la.State(x, st.z, 5,
                                                                                 kind)))
    assert rel(gs.S, fd_elementwise(fS, st.S)) <= 1e-6
    if div:
        def fz(x):
            return loss(kind, q, k, v, do, dS, dz,
                        **dict(kw, initial_state=la.State(st.S, x, 5, kind)))
        assert rel(gs.z, fd_elementwise(fz, st.z)) <= 1e-6
    else:
        assert gs.z is None


@pytest.mark.parametrize("T", [1, 37, 63, 64, 65, 70])
@pytest.mark.parametrize("normalize,eps_mode", [("div", "add"), ("div", "clamp"),
                                                ("div", "abs_clamp"), ("none", None),
                                                ("norm", None)])
@pytest.mark.parametrize("decay", [None, "token"])
def test_fd_directional_normalize(rng, T, normalize, eps_mode, decay):
    """Across chunk edges (C = 16), odd D, E != D, every normaliser and guard."""
    B, H, D, E = 1, 2, 5, 3
    q, k, v = inputs(rng, "linear", B, H, T, D, E, positive=normalize == "div")
    kw = kw_for("linear", rng, (B, H, T), decay)
    kw.update(normalize=normalize, chunk_size=16)
    if eps_mode:
        kw["eps_mode"] = eps_mode
    o, vjp = la.causal_vjp(q, k, v, "linear", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        d = rng.standard_normal(args[name].shape)

        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("linear", a["q"], a["k"], a["v"], do, **kw)
        want = fd_directional(f, args[name], d)
        assert abs(float((g[name] * d).sum()) - want) <= 1e-6 * max(1.0, abs(want)), name
    if decay:
        d = rng.standard_normal(kw["decay"].shape) * 0.1
        want = fd_directional(lambda x: loss("linear", q, k, v, do, **dict(kw, decay=x)),
                              kw["decay"], d)
        assert abs(float((g["decay"] * d).sum()) - want) <= 1e-6 * max(1.0, abs(want))


# ------------------------------------------------------- forms and splits --

@pytest.mark.parametrize("kind", ["elu", "linear", "retnet"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forms_agree(rng, kind, decay, dtype):
    B, H, T, D, E = 2, 3, 70, 5, 7
    q, k, v = inputs(rng, kind, B, H, T, D, E, dtype=dtype)
    kw = kw_for(kind, rng, (B, H, T), decay)
    div = is_div(kind)
    st = make_state(rng, kind, B, H, D, E, div)
    st = la.State(st.S.astype(dtype), None if st.z is None else st.z.astype(dtype), 0, kind)
    do = rng.standard_normal((B, H, T, E)).astype(dtype)
    ds = {"S": rng.standard_normal((B, H, D, E)).astype(dtype)}
    ref = None
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for backward, C in [("recurrent", 16), ("chunked", 1), ("chunked", 16), ("chunked", 64),
                        ("chunked", 100), ("parallel", 16)]:
        _, vjp = la.causal_vjp(q, k, v, kind, chunk_size=C, backward=backward,
                               initial_state=st, **kw)
        g = vjp(do, dstate=ds)
        assert g["q"].dtype == dtype
        if ref is None:
            ref = g
            continue
        for name in ("q", "k", "v", "decay"):
            if ref[name] is not None:
                assert rel(g[name], ref[name]) <= tol, (backward, C, name)
        assert rel(g["initial_state"].S, ref["initial_state"].S) <= tol


@pytest.mark.parametrize("split", [1, 15, 16, 17, 29])
def test_split_and_resume(rng, split):
    """Two pieces with the state carried, dstate chained back through initial_state."""
    kind, B, H, T, D, E, C = "elu", 1, 2, 45, 3, 5, 16
    q, k, v = inputs(rng, kind, B, H, T, D, E)
    dec = -rng.uniform(0.01, 0.5, (B, H, T))
    do = rng.standard_normal((B, H, T, E))
    dS = rng.standard_normal((B, H, D, E))
    dz = rng.standard_normal((B, H, D))
    (o, s), vjp = la.causal_vjp(q, k, v, kind, decay=dec, chunk_size=C, return_state=True)
    g = vjp(do, dstate={"S": dS, "z": dz})
    a, b = slice(0, split), slice(split, T)
    (o1, s1), vjp1 = la.causal_vjp(q[..., a, :], k[..., a, :], v[..., a, :], kind,
                                   decay=dec[..., a], chunk_size=C, return_state=True)
    (o2, s2), vjp2 = la.causal_vjp(q[..., b, :], k[..., b, :], v[..., b, :], kind,
                                   decay=dec[..., b], chunk_size=C, initial_state=s1,
                                   return_state=True)
    g2 = vjp2(do[..., b, :], dstate={"S": dS, "z": dz})
    g1 = vjp1(do[..., a, :], dstate=g2["initial_state"])
    for name in ("q", "k", "v", "decay"):
        joined = np.concatenate([g1[name], g2[name]], axis=-2 if name != "decay" else -1)
        assert rel(joined, g[name]) <= 1e-12, name


# ---------------------------------------------------------- broadcasting --

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_broadcast_kv_and_head_decay(rng, dtype):
    B, H, T, D, E = 2, 3, 40, 4, 5
    q = rng.standard_normal((B, H, T, D)).astype(dtype)
    k = rng.standard_normal((B, 1, T, D)).astype(dtype)
    v = rng.standard_normal((B, 1, T, E)).astype(dtype)
    dec = -rng.uniform(0.05, 0.5, (H,))
    o, vjp = la.causal_vjp(q, k, v, "elu", decay=dec, chunk_size=16)
    do = rng.standard_normal(o.shape).astype(dtype)
    g = vjp(do)
    assert g["k"].shape == k.shape and g["v"].shape == v.shape and g["decay"].shape == (H,)
    kx = np.ascontiguousarray(np.broadcast_to(k, (B, H, T, D)))
    vx = np.ascontiguousarray(np.broadcast_to(v, (B, H, T, E)))
    dx = np.ascontiguousarray(np.broadcast_to(dec[:, None], (B, H, T)))
    _, vjpx = la.causal_vjp(q, kx, vx, "elu", decay=dx, chunk_size=16)
    gx = vjpx(do)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert rel(g["q"], gx["q"]) <= tol
    assert rel(g["k"], gx["k"].sum(axis=1, keepdims=True)) <= tol
    assert rel(g["v"], gx["v"].sum(axis=1, keepdims=True)) <= tol
    assert rel(g["decay"], gx["decay"].sum(axis=(0, 2))) <= tol


def test_bthd_layout_and_strides(rng):
    B, H, T, D, E = 2, 3, 50, 4, 6
    q, k, v = inputs(rng, "elu", B, H, T, D, E)
    dec = -rng.uniform(0.05, 0.5, (B, H, T))
    do = rng.standard_normal((B, H, T, E))
    _, vjp = la.causal_vjp(q, k, v, "elu", decay=dec, chunk_size=16)
    g = vjp(do)
    sw = lambda x: np.swapaxes(x, 1, 2)  # noqa: E731 (views: strided inputs)
    _, vjpb = la.causal_vjp(sw(q), sw(k), sw(v), "elu", decay=np.swapaxes(dec, 1, 2),
                            chunk_size=16, layout="bthd")
    gb = vjpb(sw(do))
    for name in ("q", "k", "v"):
        assert gb[name].shape == sw(g[name]).shape
        assert rel(gb[name], sw(g[name])) <= 1e-12
    assert rel(gb["decay"], np.swapaxes(g["decay"], 1, 2)) <= 1e-12
    # reversed strides and a strided cotangent
    _, vjpr = la.causal_vjp(q[..., ::-1, :], k[..., ::-1, :], v[..., ::-1, :], "elu",
                            chunk_size=16)
    gr = vjpr(np.asfortranarray(do))
    _, vjpc = la.causal_vjp(q[..., ::-1, :].copy(), k[..., ::-1, :].copy(),
                            v[..., ::-1, :].copy(), "elu", chunk_size=16)
    gc = vjpc(do)
    for name in ("q", "k", "v"):
        assert rel(gr[name], gc[name]) <= 1e-12


# ------------------------------------------------------------- extremes --

def direct_decay_grad(q, k, v, g, do):
    """docs/design/grad.md §2.4's direct form dg_t = a_t <S_{t-1}, dS_t>, float64, identity maps,
    normalize none, one slice."""
    T, D = q.shape
    E = v.shape[1]
    S = np.zeros((T + 1, D, E))
    a = np.exp(np.maximum(g, -1000.0))
    for t in range(T):
        S[t + 1] = a[t] * S[t] + np.outer(k[t], v[t])
    dS = np.zeros((D, E))
    dg = np.zeros(T)
    for t in range(T - 1, -1, -1):
        dS += np.outer(q[t], do[t])
        dg[t] = 0.0 if g[t] < -1000 else a[t] * (S[t] * dS).sum()
        dS *= a[t]
    return dg


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_decay_minus30(rng, dtype):
    T, D, E = 130, 4, 3
    q, k, v = (rng.standard_normal((1, T, n)) for n in (D, D, E))
    g = np.full((1, T), -30.0)
    do = rng.standard_normal((1, T, E))
    o, vjp = la.causal_vjp(q.astype(dtype), k.astype(dtype), v.astype(dtype), "linear",
                           decay=g, chunk_size=64, backward="chunked")
    gr = vjp(do.astype(dtype))
    for x in gr.values():
        assert x is None or np.isfinite(x).all()
    want = direct_decay_grad(q[0], k[0], v[0], g[0], do[0])
    assert rel(gr["decay"][0], want) <= (1e-10 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("backward", ["chunked", "recurrent"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_resets_block_gradients(rng, backward, dtype):
    """-inf resets: finite, dg = 0 there, no gradient crosses a reset."""
    B, H, T, D, E, r = 1, 2, 70, 3, 4, 40
    q, k, v = inputs(rng, "elu", B, H, T, D, E, dtype=dtype)
    g = -rng.uniform(0.0, 0.2, (B, H, T))
    g[..., r] = -np.inf
    g[..., 10] = -1e4
    do = rng.standard_normal((B, H, T, E)).astype(dtype)
    do[..., :r, :] = 0  # only outputs from the reset on
    _, vjp = la.causal_vjp(q, k, v, "elu", decay=g, chunk_size=16, backward=backward)
    gr = vjp(do)
    for name in ("q", "k", "v", "decay"):
        assert np.isfinite(gr[name]).all()
    assert gr["decay"][..., r].tolist() == [[0.0, 0.0]]
    assert gr["decay"][..., 10].tolist() == [[0.0, 0.0]]
    for name in ("q", "k", "v"):
        assert not gr[name][..., :r, :].any(), name
    assert not gr["decay"][..., :r + 1].any()


def test_zero_denominator_finite(rng):
    """ReLU features of all-negative keys: den = 0, guarded; gradients finite."""
    q = np.abs(rng.standard_normal((1, 20, 3)))
    k = -np.abs(rng.standard_normal((1, 20, 3)))
    v = rng.standard_normal((1, 20, 2))
    for backward in ("chunked", "recurrent"):
        for eps_mode in ("add", "clamp"):
            _, vjp = la.causal_vjp(q, k, v, "relu", chunk_size=8, backward=backward,
                                   eps_mode=eps_mode)
            g = vjp(np.ones((1, 20, 2)))
            for name in ("q", "k", "v"):
                assert np.isfinite(g[name]).all()


# ------------------------------------------------------------- precision --

@pytest.mark.parametrize("kind", ["elu", "retnet", "mamba2"])
def test_float32_matches_float64(rng, kind):
    B, H, T, D, E = 2, 2, 200, 8, 6
    q, k, v = inputs(rng, kind, B, H, T, D, E)
    kw = kw_for(kind, rng, (B, H, T), None)
    do = rng.standard_normal((B, H, T, E))
    _, v64 = la.causal_vjp(q, k, v, kind, **kw)
    _, v32 = la.causal_vjp(*(x.astype(np.float32) for x in (q, k, v)), kind, **kw)
    g64, g32 = v64(do), v32(do.astype(np.float32))
    for name in ("q", "k", "v"):
        assert g32[name].dtype == np.float32
        assert rel(g32[name], g64[name]) <= 1e-5, name


def test_float16_gradients_have_input_dtype(rng):
    q, k, v = (x.astype(np.float16) for x in inputs(rng, "elu", 1, 2, 20, 4, 4))
    o, vjp = la.causal_vjp(q, k, v, "elu")
    g = vjp(np.ones(o.shape, np.float16))
    assert o.dtype == np.float16
    assert all(g[n].dtype == np.float16 and np.isfinite(g[n]).all() for n in "qkv")


def test_python_float_decay(rng):
    q, k, v = inputs(rng, "linear", 1, 1, 12, 3, 3)
    o, vjp = la.causal_vjp(q[0, 0], k[0, 0], v[0, 0], "linear", decay=-0.3)
    g = vjp(np.ones_like(o))
    assert g["decay"].shape == () and g["decay"].dtype == np.float64
    want = (la.causal(q[0, 0], k[0, 0], v[0, 0], "linear", decay=-0.3 + H_FD).sum()
            - la.causal(q[0, 0], k[0, 0], v[0, 0], "linear", decay=-0.3 - H_FD).sum())
    assert abs(float(g["decay"]) - want / (2 * H_FD)) <= 1e-6 * max(1, abs(want))


# ------------------------------------------------------------------ API --

def test_forward_is_bit_identical_and_residuals(rng):
    q, k, v = inputs(rng, "elu", 2, 2, 70, 4, 5)
    kept = [x.copy() for x in (q, k, v)]
    o, vjp = la.causal_vjp(q, k, v, "elu")
    assert np.array_equal(o, la.causal(q, k, v, "elu"))
    do = rng.standard_normal(o.shape)
    do_kept = do.copy()
    g = vjp(do)
    for x, y in zip((q, k, v, do), kept + [do_kept]):
        assert np.array_equal(x, y)  # inputs and cotangents untouched
    o[...] = 123.0  # the returned output is not a residual
    g2 = vjp(do)
    for name in ("q", "k", "v"):
        assert np.array_equal(g[name], g2[name])  # repeatable, and o's edit is harmless
    q[0, 0, 0, 0] += 1.0  # the inputs are residuals (documented): the gradient moves
    assert not np.array_equal(vjp(do)["k"], g["k"])


def test_dstate_forms_agree(rng):
    q, k, v = inputs(rng, "elu", 1, 2, 30, 3, 4)
    (o, s), vjp = la.causal_vjp(q, k, v, "elu", return_state=True)
    do = rng.standard_normal(o.shape)
    dS, dz = rng.standard_normal(s.S.shape), rng.standard_normal(s.z.shape)
    a = vjp(do, dstate=la.State(dS, dz, s.t, "elu"))
    b = vjp(do, dstate={"S": dS, "z": dz})
    c = vjp(do, dstate={"S": dS})
    d = vjp(do, dstate={"S": dS, "z": np.zeros_like(dz)})
    for name in ("q", "k", "v"):
        assert np.array_equal(a[name], b[name])
        assert np.array_equal(c[name], d[name])
    assert a["initial_state"] is None


def test_bad_cotangents_name_do(rng):
    q, k, v = inputs(rng, "elu", 1, 2, 10, 3, 4)
    o, vjp = la.causal_vjp(q, k, v, "elu")
    with pytest.raises(ValueError, match=r"\bdo\b"):
        vjp(np.ones(o.shape[:-1] + (5,)))
    with pytest.raises(ValueError, match=r"\bdo\b"):
        vjp(np.ones(o.shape[1:]))
    with pytest.raises(TypeError, match=r"\bdo\b"):
        vjp(np.ones(o.shape, dtype=np.int64))
    with pytest.raises(ValueError, match="dstate"):
        vjp(np.ones(o.shape), dstate={"S": np.ones((3, 5))})
    with pytest.raises(TypeError, match="dstate"):
        vjp(np.ones(o.shape), dstate=3)
    o2, vjpn = la.noncausal_vjp(q, k, v, "elu")
    with pytest.raises(ValueError, match=r"\bdo\b"):
        vjpn(np.ones((2,) + o2.shape))


@pytest.mark.parametrize("kind", ["lavo", "lara", "ra"])
def test_out_of_scope_kinds_raise(rng, kind):
    q, k, v = inputs(rng, "elu", 1, 1, 8, 4, 4)
    with pytest.raises(NotImplementedError, match=kind):
        la.causal_vjp(q, k, v, kind)
    with pytest.raises(NotImplementedError, match=kind):
        la.noncausal_vjp(q, k, v, kind)


def test_threads_bit_identical(rng):
    q, k, v = inputs(rng, "elu", 4, 2, 150, 8, 8)
    do = rng.standard_normal((4, 2, 150, 8))
    prev = la.get_num_threads()
    try:
        la.set_num_threads(1)
        g1 = la.causal_vjp(q, k, v, "elu")[1](do)
        la.set_num_threads(2)
        g2 = la.causal_vjp(q, k, v, "elu")[1](do)
    finally:
        la.set_num_threads(prev)
    for name in ("q", "k", "v"):
        assert np.array_equal(g1[name], g2[name])


# ------------------------------------------------------------ non-causal --

@pytest.mark.parametrize("kind", ["linear", "elu", "relu"])
@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
def test_noncausal_fd(rng, kind, normalize):
    """Cross-attention (S != T), key blocks smaller than S."""
    B, T, S, D, E = 2, 7, 11, 3, 4
    q = np.abs(rng.standard_normal((B, T, D))) + 0.2
    k = np.abs(rng.standard_normal((B, S, D))) + 0.2
    v = rng.standard_normal((B, S, E))
    kw = {"normalize": normalize, "chunk_size": 4}
    o, vjp = la.noncausal_vjp(q, k, v, kind, **kw)
    assert np.array_equal(o, la.noncausal(q, k, v, kind, **kw))
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return float((la.noncausal(a["q"], a["k"], a["v"], kind, **kw) * do).sum())
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name


def test_noncausal_float32_and_broadcast(rng):
    B, H, T, D, E = 2, 3, 40, 5, 6
    q = rng.standard_normal((B, H, T, D))
    k = rng.standard_normal((B, 1, T, D))
    v = rng.standard_normal((B, 1, T, E))
    do = rng.standard_normal((B, H, T, E))
    g64 = la.noncausal_vjp(q, k, v, "elu")[1](do)
    g32 = la.noncausal_vjp(*(x.astype(np.float32) for x in (q, k, v)), "elu")[1](
        do.astype(np.float32))
    kx = np.broadcast_to(k, (B, H, T, D)).copy()
    vx = np.broadcast_to(v, (B, H, T, E)).copy()
    gx = la.noncausal_vjp(q, kx, vx, "elu")[1](do)
    assert g64["k"].shape == k.shape
    assert rel(g64["k"], gx["k"].sum(axis=1, keepdims=True)) <= 1e-12
    for name in ("q", "k", "v"):
        assert rel(g32[name], g64[name]) <= 1e-5


# ------------------------------------------------------------- cosFormer --

@pytest.mark.parametrize("backward", ["chunked", "recurrent"])
def test_cosformer_fd(rng, backward):
    """The re-weighting's map backward, resumed at t = 4 with a state cotangent."""
    B, H, T, D, E, M = 1, 2, 11, 3, 4, 40
    q, k, v = inputs(rng, "elu", B, H, T, D, E)
    st = la.State(0.3 * rng.standard_normal((B, H, 2 * D, E)),
                  np.abs(rng.standard_normal((B, H, 2 * D))) + 0.5, 4, "cosformer",
                  {"horizon": np.array(M)})
    kw = {"horizon": M, "chunk_size": 4, "scale": 0.8, "initial_state": st}
    (o, s1), vjp = la.causal_vjp(q, k, v, "cosformer", return_state=True, backward=backward,
                                 **kw)
    do = rng.standard_normal(o.shape)
    dS, dz = rng.standard_normal(s1.S.shape), rng.standard_normal(s1.z.shape)
    g = vjp(do, dstate={"S": dS, "z": dz})
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("cosformer", a["q"], a["k"], a["v"], do, dS, dz, **kw)
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name

    def fS(x):
        return loss("cosformer", q, k, v, do, dS, dz,
                    **dict(kw, initial_state=la.State(x, st.z, 4, "cosformer", st.extra)))
    assert rel(g["initial_state"].S, fd_elementwise(fS, st.S)) <= 1e-6


def test_cosformer_noncausal_cross_bthd(rng):
    B, T, S, H, D, E = 1, 9, 7, 2, 3, 4
    q = rng.standard_normal((B, T, H, D))
    k = rng.standard_normal((B, S, H, D))
    v = rng.standard_normal((B, S, H, E))
    kw = {"layout": "bthd", "chunk_size": 4}
    o, vjp = la.noncausal_vjp(q, k, v, "cosformer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return float((la.noncausal(a["q"], a["k"], a["v"], "cosformer", **kw) * do).sum())
        assert g[name].shape == args[name].shape
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name


def test_cosformer_long_float32(rng):
    """Chunked over many chunks, float32 against float64, bthd against the default."""
    B, H, T, D, E = 2, 2, 300, 8, 6
    q, k, v = inputs(rng, "elu", B, H, T, D, E)
    do = rng.standard_normal((B, H, T, E))
    g64 = la.causal_vjp(q, k, v, "cosformer", horizon=T)[1](do)
    g32 = la.causal_vjp(*(x.astype(np.float32) for x in (q, k, v)), "cosformer",
                        horizon=T)[1](do.astype(np.float32))
    sw = lambda x: np.swapaxes(x, 1, 2)  # noqa: E731
    gb = la.causal_vjp(sw(q), sw(k), sw(v), "cosformer", horizon=T, layout="bthd")[1](sw(do))
    for name in ("q", "k", "v"):
        assert rel(g32[name], g64[name]) <= 1e-5
        assert rel(gb[name], sw(g64[name])) <= 1e-12


# ------------------------------------------------------------- Performer --

@pytest.mark.parametrize("features", ["positive", "hyperbolic"])
@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
def test_performer_fd(rng, features, normalize):
    """Prefix stabiliser: the shifts cancel, so FD of the forward is the oracle."""
    B, H, T, D, E = 1, 2, 11, 3, 4
    q, k, v = inputs(rng, "elu", B, H, T, D, E)
    kw = {"num_features": 8, "seed": 1, "chunk_size": 4, "features": features,
          "normalize": normalize}
    o, vjp = la.causal_vjp(q, k, v, "performer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("performer", a["q"], a["k"], a["v"], do, **kw)
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name
    assert vjp.nondiff == ("projection",)


def test_performer_resume_and_chain(rng):
    """State cotangents refer to the stored state with extra['max'] constant: exact for a
    loss that resumes the state, so a chained split equals one call."""
    B, H, T, D, E, cut = 1, 2, 23, 3, 4, 9
    q, k, v = inputs(rng, "elu", B, H, T, D, E)
    kw = {"num_features": 8, "seed": 1, "chunk_size": 4}
    do = rng.standard_normal((B, H, T, E))
    g = la.causal_vjp(q, k, v, "performer", **kw)[1](do)
    a, b = slice(0, cut), slice(cut, T)
    (_, s1), vjp1 = la.causal_vjp(q[..., a, :], k[..., a, :], v[..., a, :], "performer",
                                  return_state=True, **kw)
    _, vjp2 = la.causal_vjp(q[..., b, :], k[..., b, :], v[..., b, :], "performer",
                            initial_state=s1, **kw)
    g2 = vjp2(do[..., b, :])
    g1 = vjp1(do[..., a, :], dstate=g2["initial_state"])
    for name in ("q", "k", "v"):
        assert rel(np.concatenate([g1[name], g2[name]], axis=-2), g[name]) <= 1e-10, name

    def f(S):
        st = la.State(S, s1.z, s1.t, "performer", s1.extra)
        return loss("performer", q[..., b, :], k[..., b, :], v[..., b, :], do[..., b, :],
                    initial_state=st, **kw)
    assert rel(g2["initial_state"].S, fd_elementwise(f, s1.S)) <= 1e-6


def test_performer_noncausal_bthd_and_large_inputs(rng):
    B, T, S, H, D, E = 1, 9, 7, 2, 3, 4
    q = rng.standard_normal((B, T, H, D))
    k = rng.standard_normal((B, S, H, D))
    v = rng.standard_normal((B, S, H, E))
    kw = {"num_features": 8, "seed": 2, "layout": "bthd"}
    o, vjp = la.noncausal_vjp(q, k, v, "performer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return float((la.noncausal(a["q"], a["k"], a["v"], "performer", **kw) * do).sum())
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name
    # large norms (|x| up to 50) stay finite in float32: the shifts bound every feature
    big = [(x * 50 / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
           for x in inputs(rng, "elu", 1, 2, 70, 8, 4)]
    o, vjp = la.causal_vjp(*big, "performer", chunk_size=16)
    g = vjp(np.ones(o.shape, np.float32))
    assert all(np.isfinite(g[n]).all() for n in "qkv")


# ------------------------------------------------------------------- RFA --

@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
def test_rfa_fd(rng, gated, normalize):
    """sin/cos features through the normalised input; gated RFA's gate gradient."""
    B, H, T, D, E, F = 1, 2, 11, 3, 4, 8
    q, k, v = inputs(rng, "elu", B, H, T, D, E)
    kw = {"num_features": F, "seed": 1, "chunk_size": 4, "normalize": normalize}
    if gated:
        kw["gate"] = rng.uniform(0.2, 0.9, (B, H, T))
    div = normalize == "div"
    st = la.State(0.3 * rng.standard_normal((B, H, F, E)),
                  np.abs(rng.standard_normal((B, H, F))) + 3 if div else None, 2, "rfa")
    kw["initial_state"] = st
    (o, s1), vjp = la.causal_vjp(q, k, v, "rfa", return_state=True, **kw)
    do = rng.standard_normal(o.shape)
    dS = rng.standard_normal(s1.S.shape)
    dz = rng.standard_normal(s1.S.shape[:-1]) if div else None
    g = vjp(do, dstate={"S": dS, "z": dz} if div else {"S": dS})
    args = {"q": q, "k": k, "v": v}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("rfa", a["q"], a["k"], a["v"], do, dS, dz, **kw)
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name

    def fS(x):
        return loss("rfa", q, k, v, do, dS, dz, **dict(kw, initial_state=la.State(
            x, st.z, 2, "rfa")))
    assert rel(g["initial_state"].S, fd_elementwise(fS, st.S)) <= 1e-6
    if gated:
        def fg(x):
            return loss("rfa", q, k, v, do, dS, dz, **dict(kw, gate=x))
        assert rel(g["gate"], fd_elementwise(fg, kw["gate"])) <= 1e-6
    else:
        assert "gate" not in g


def test_rfa_bthd_gate_and_noncausal(rng):
    B, T, H, D, E = 1, 40, 2, 4, 3
    q, k, v = (rng.standard_normal((B, T, H, n)) for n in (D, D, E))
    gate = rng.uniform(0.3, 0.95, (B, T, H))
    do = rng.standard_normal((B, T, H, E))
    kw = {"num_features": 16, "seed": 3, "chunk_size": 8}
    gb = la.causal_vjp(q, k, v, "rfa", gate=gate, layout="bthd", **kw)[1](do)
    sw = lambda x: np.swapaxes(x, 1, 2)  # noqa: E731
    gd = la.causal_vjp(sw(q), sw(k), sw(v), "rfa", gate=np.swapaxes(gate, 1, 2), **kw)[1](
        sw(do))
    for name in ("q", "k", "v"):
        assert rel(gb[name], sw(gd[name])) <= 1e-12
    assert gb["gate"].shape == gate.shape
    assert rel(gb["gate"], np.swapaxes(gd["gate"], 1, 2)) <= 1e-12
    o, vjp = la.noncausal_vjp(q, k[:, :7], v[:, :7], "rfa", layout="bthd", num_features=8,
                              seed=1, normalize="none")
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k[:, :7], "v": v[:, :7]}
    for name in ("q", "k", "v"):
        def f(x, name=name):
            a = dict(args, **{name: x})
            return float((la.noncausal(a["q"], a["k"], a["v"], "rfa", layout="bthd",
                                       num_features=8, seed=1, normalize="none") * do).sum())
        assert rel(g[name], fd_elementwise(f, args[name])) <= 1e-6, name


def test_backward_memory_is_gradients_plus_small(rng):
    """No T x F x E buffer: the NumPy-side peak of vjp(do) is about the gradients' size
    (tracemalloc sees NumPy's allocations; the kernels' scratch is O(T/C F E))."""
    import tracemalloc

    B, H, T, D = 2, 2, 2048, 32
    q, k, v = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3))
    dec = -rng.uniform(0.01, 0.1, (B, H, T))
    do = rng.standard_normal((B, H, T, D)).astype(np.float32)
    _, vjp = la.causal_vjp(q, k, v, "elu", decay=dec)
    vjp(do)
    grads = 3 * q.nbytes + dec.nbytes
    tracemalloc.start()
    try:
        g = vjp(do)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert g["q"].nbytes == q.nbytes
    assert peak <= 1.5 * grads, (peak, grads)
    assert peak < B * H * T * D * D * 4 / 4  # far below one T x F x E buffer


@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sequence_parallel_bit_identical(rng, normalize, dtype):
    """One slice, two threads: the backward splits the sequence over the threads (three
    parallel passes and two scans) and equals the serial chunked backward bit for bit."""
    T, D, E, C = 301, 5, 4, 16
    q, k, v = (x.astype(dtype) for x in inputs(rng, "linear", 1, 1, T, D, E,
                                                 positive=normalize == "div"))
    dec = -rng.uniform(0.0, 0.3, (1, 1, T))
    dec[..., 150] = -np.inf
    st = la.State((0.3 * rng.standard_normal((1, 1, D, E))).astype(dtype),
                  (np.abs(rng.standard_normal((1, 1, D))) + 1).astype(dtype)
                  if normalize == "div" else None, 0, "linear")
    do = rng.standard_normal((1, 1, T, E)).astype(dtype)
    ds = {"S": rng.standard_normal((1, 1, D, E)).astype(dtype)}
    kw = {"decay": dec, "chunk_size": C, "normalize": normalize, "initial_state": st,
          "backward": "chunked"}
    prev = la.get_num_threads()
    try:
        la.set_num_threads(1)
        g1 = la.causal_vjp(q, k, v, "linear", **kw)[1](do, dstate=ds)
        la.set_num_threads(2)
        if la.get_num_threads() < 2:
            pytest.skip("one thread only")
        g2 = la.causal_vjp(q, k, v, "linear", **kw)[1](do, dstate=ds)
    finally:
        la.set_num_threads(prev)
    for name in ("q", "k", "v", "decay"):
        assert np.array_equal(g1[name], g2[name]), name
    assert np.array_equal(g1["initial_state"].S, g2["initial_state"].S)


def test_gradient_buffers_reused_only_when_free():
    """The backward's dq, dk, dv come from a pool: a gradient (or a view of it) still held
    is never overwritten by a later call; dropped ones are reused."""
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((4, 4096, 64)).astype(np.float32) for _ in range(4))
    _, vjp = la.causal_vjp(q, k, v, "elu")

    def base(a):
        return a if a.base is None else a.base

    g1 = vjp(do)
    ref = {n: g1[n].copy() for n in "qkv"}
    g2 = vjp(2 * do)
    assert all(np.array_equal(g1[n], ref[n]) for n in "qkv")  # held: untouched
    view = g2["q"][1:]
    ids = {id(base(g2[n])) for n in "qkv"}
    del g2
    g3 = vjp(do)
    np.testing.assert_allclose(view, 2 * ref["q"][1:], rtol=1e-4, atol=1e-4)  # a view keeps it
    assert all(np.array_equal(g3[n], ref[n]) for n in "qkv")
    assert len(ids & {id(base(g3[n])) for n in "qkv"}) == 2  # dk, dv reused
