"""Gradients of the Performer forms the prefix-stabiliser backward does not cover (ReLU
features, the published ``stabilizer="global"``) and of gated RFA at gates of exactly 0.

Oracles: central finite differences of the public forward in float64 (h = 1e-6); for
the global stabiliser, whose maxima are held constant by convention (the form is not
invariant to them), finite differences of a NumPy transcription of the published
features with the forward's maxima frozen; for RFA gates of exactly 0 (the state reset,
``log 0 = -inf``), the one-sided second-order difference from the ``g > 0`` side.
Tolerances from docs/design/grad.md §5.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from _fd import H_FD, fd_elementwise, rel


def qkv(rng, B=1, H=2, T=9, D=3, E=4, S=None):
    S = T if S is None else S
    return (rng.standard_normal((B, H, T, D)), rng.standard_normal((B, H, S, D)),
            rng.standard_normal((B, H, S, E)))


def loss(kind, q, k, v, do, ds=None, **kw):
    if ds is None:
        return float((la.causal(q, k, v, kind, **kw) * do).sum())
    o, st = la.causal(q, k, v, kind, return_state=True, **kw)
    total = float((o * do).sum() + (st.S * ds["S"]).sum())
    if ds.get("z") is not None:
        total += float((st.z * ds["z"]).sum())
    return total


# ------------------------------------------------------- Performer ReLU --

@pytest.mark.parametrize("normalize", ["div", "none", "norm"])
@pytest.mark.parametrize("T", [1, 7, 9])
def test_performer_relu_fd(rng, normalize, T):
    """q, k, v and the initial state with a state cotangent (T = 7: recurrent, T = 9:
    chunked across the edges of chunk_size=4)."""
    B, H, D, E, F = 1, 2, 3, 4, 8
    q, k, v = qkv(rng, B, H, T, D, E)
    kw = {"features": "relu", "num_features": F, "seed": 1, "chunk_size": 4,
          "normalize": normalize}
    div = normalize == "div"
    _, st = la.causal(*qkv(rng, B, H, 5, D, E), "performer", return_state=True, **kw)
    kw["initial_state"] = st
    (o, s1), vjp = la.causal_vjp(q, k, v, "performer", return_state=True, **kw)
    do = rng.standard_normal(o.shape)
    ds = {"S": rng.standard_normal(s1.S.shape),
          "z": rng.standard_normal(s1.S.shape[:-1]) if div else None}
    g = vjp(do, dstate=ds)
    args = {"q": q, "k": k, "v": v}
    for name, x0 in args.items():
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("performer", a["q"], a["k"], a["v"], do, ds, **kw)
        assert rel(g[name], fd_elementwise(f, x0)) <= 1e-6, name

    def fS(x):
        return loss("performer", q, k, v, do, ds, **dict(kw, initial_state=la.State(
            x, st.z, st.t, "performer", st.extra)))
    assert rel(g["initial_state"].S, fd_elementwise(fS, st.S)) <= 1e-6
    assert vjp.nondiff == ("projection",)


def test_performer_relu_noncausal_cross_bthd(rng):
    B, T, S, H, D, E = 1, 9, 7, 2, 3, 4
    q = rng.standard_normal((B, T, H, D))
    k = rng.standard_normal((B, S, H, D))
    v = rng.standard_normal((B, S, H, E))
    kw = {"features": "relu", "num_features": 8, "seed": 2, "layout": "bthd"}
    o, vjp = la.noncausal_vjp(q, k, v, "performer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name, x0 in args.items():
        def f(x, name=name):
            a = dict(args, **{name: x})
            return float((la.noncausal(a["q"], a["k"], a["v"], "performer", **kw) * do).sum())
        assert rel(g[name], fd_elementwise(f, x0)) <= 1e-6, name


# ------------------------------------------------- Performer, global stabiliser --

def _published(x, W, features, scale, eps, shift, M=None):
    """The published features with their maxima as constants: (features, maxima)."""
    xs = np.sqrt(scale) * x
    h = 0.5 * (xs * xs).sum(-1, keepdims=True)
    u = xs @ W.T
    if features == "hyperbolic":
        u = np.concatenate([u, -u], axis=-1)
    c = u.shape[-1] ** -0.5
    ell = u - h
    if M is None:  # the published shift: the maximum of u (not of u - h)
        M = u.max(-1, keepdims=True) if shift == "row" else u.max(axis=(-2, -1),
                                                                   keepdims=True)
    return c * (np.exp(ell - M) + eps), M


def _operator(fq, fk, v, normalize, causal, eps_norm=1e-8):
    A = fq @ np.swapaxes(fk, -1, -2)
    if causal:
        A = np.tril(A)
    num = A @ v
    if normalize == "div":
        return num / A.sum(-1, keepdims=True)
    if normalize == "norm":
        r = np.sqrt((num * num).mean(-1, keepdims=True))
        return num / (r + eps_norm)
    return num


@pytest.mark.parametrize("features", ["positive", "hyperbolic"])
@pytest.mark.parametrize("normalize", ["div", "none"])
@pytest.mark.parametrize("causal", [True, False])
def test_performer_global_frozen_maxima_oracle(rng, features, normalize, causal):
    """The global stabiliser's gradient is the published estimator's with the maxima
    held constant: FD of a NumPy transcription with the forward's maxima frozen.  The
    transcription must first reproduce the forward (so the maxima are the forward's)."""
    B, H, T, D, E, m = 1, 2, 9, 3, 4, 5
    q, k, v = qkv(rng, B, H, T, D, E)
    W = rng.standard_normal((m, D))
    eps, scale = 1e-2, D ** -0.5  # a large eps: the maxima matter
    kw = {"features": features, "stabilizer": "global", "projection": W, "eps": eps,
          "normalize": normalize, "chunk_size": 4}
    vj = la.causal_vjp if causal else la.noncausal_vjp
    o, vjp = vj(q, k, v, "performer", **kw)
    kshift = "global"
    _, Mq = _published(q, W, features, scale, eps, "row")
    _, Mk = _published(k, W, features, scale, eps, kshift)

    def oracle(q, k, v):
        fq, _ = _published(q, W, features, scale, eps, "row", Mq)
        fk, _ = _published(k, W, features, scale, eps, kshift, Mk)
        return _operator(fq, fk, v, normalize, causal)
    assert rel(o, oracle(q, k, v)) <= 1e-12
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name, x0 in args.items():
        def f(x, name=name):
            a = dict(args, **{name: x})
            return float((oracle(a["q"], a["k"], a["v"]) * do).sum())
        assert rel(g[name], fd_elementwise(f, x0)) <= 1e-6, name


@pytest.mark.parametrize("features", ["positive", "hyperbolic"])
def test_performer_global_eps0_is_invariant_and_state(rng, features):
    """With eps = 0 the maxima cancel: FD of the public forward is the oracle; the
    carried state (rescaled by exp(max_prev - M) in the forward) gets its cotangent."""
    B, H, T, D, E = 1, 2, 9, 3, 4
    q, k, v = qkv(rng, B, H, T, D, E)
    kw = {"features": features, "stabilizer": "global", "num_features": 6, "seed": 1,
          "eps": 0.0, "chunk_size": 4}
    _, st = la.causal(*qkv(rng, B, H, 5, D, E), "performer", return_state=True, **kw)
    kw["initial_state"] = st
    o, vjp = la.causal_vjp(q, k, v, "performer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    args = {"q": q, "k": k, "v": v}
    for name, x0 in args.items():
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("performer", a["q"], a["k"], a["v"], do, **kw)
        assert rel(g[name], fd_elementwise(f, x0)) <= 1e-6, name
    for part in ("S", "z"):
        def fS(x, part=part):
            s = st.copy()
            setattr(s, part, x)
            return loss("performer", q, k, v, do, **dict(kw, initial_state=s))
        assert rel(getattr(g["initial_state"], part),
                   fd_elementwise(fS, getattr(st, part))) <= 1e-6, part


def test_performer_published_float32(rng):
    q, k, v = (x.astype(np.float32) for x in qkv(rng, 2, 3, 70, 8, 5))
    do = rng.standard_normal((2, 3, 70, 5)).astype(np.float32)
    for kw in ({"features": "relu"}, {"stabilizer": "global"},
               {"stabilizer": "global", "features": "hyperbolic"}):
        kw = dict(kw, num_features=16, seed=0, chunk_size=16)
        g32 = la.causal_vjp(q, k, v, "performer", **kw)[1](do)
        g64 = la.causal_vjp(*(x.astype(np.float64) for x in (q, k, v)), "performer",
                            **kw)[1](do.astype(np.float64))
        for name in "qkv":
            assert g32[name].dtype == np.float32
            assert rel(g32[name], g64[name]) <= 1e-5, (kw, name)


def test_performer_every_variant_in_scope():
    assert la.kinds()["performer"]["grad"]["wrt"] == ["q", "k", "v", "initial_state"]


# ------------------------------------------------------ RFA, gates of exactly 0 --

def _gate_fd(f, gate):
    """Central differences where g > 0; at g = 0 the one-sided second-order difference
    from the g > 0 side (the forward is defined for g >= 0 only)."""
    out = np.zeros_like(gate)
    for i in np.ndindex(gate.shape):
        if gate[i] == 0:
            g1, g2 = gate.copy(), gate.copy()
            g1[i], g2[i] = H_FD, 2 * H_FD
            out[i] = (-3 * f(gate) + 4 * f(g1) - f(g2)) / (2 * H_FD)
        else:
            gp, gm = gate.copy(), gate.copy()
            gp[i] += H_FD
            gm[i] -= H_FD
            out[i] = (f(gp) - f(gm)) / (2 * H_FD)
    return out


@pytest.mark.parametrize("backward", ["chunked", "recurrent"])
@pytest.mark.parametrize("normalize", ["div", "none"])
@pytest.mark.parametrize("T", [1, 13])
def test_rfa_zero_gate_fd(rng, backward, normalize, T):
    """Zero gates at the first token, inside a chunk, on a chunk edge and at the last
    token, differing by slice; initial state and state cotangents."""
    B, H, D, E, F = 1, 2, 3, 4, 8
    q, k, v = qkv(rng, B, H, T, D, E)
    gate = rng.uniform(0.2, 0.9, (B, H, T))
    gate[0, 0, 0] = 0.0
    if T > 1:
        gate[0, 0, 5] = gate[0, 1, 8] = gate[0, 1, T - 1] = 0.0
    div = normalize == "div"
    st = la.State(0.3 * rng.standard_normal((B, H, F, E)),
                  np.abs(rng.standard_normal((B, H, F))) + 3 if div else None, 2, "rfa")
    kw = {"num_features": F, "seed": 1, "chunk_size": 4, "normalize": normalize,
          "initial_state": st}
    (o, s1), vjp = la.causal_vjp(q, k, v, "rfa", gate=gate, return_state=True,
                                 backward=backward, **kw)
    do = rng.standard_normal(o.shape)
    ds = {"S": rng.standard_normal(s1.S.shape),
          "z": rng.standard_normal(s1.S.shape[:-1]) if div else None}
    g = vjp(do, dstate=ds)
    assert rel(g["gate"], _gate_fd(lambda x: loss("rfa", q, k, v, do, ds, gate=x, **kw),
                                   gate)) <= 1e-6
    args = {"q": q, "k": k, "v": v}
    for name, x0 in args.items():
        def f(x, name=name):
            a = dict(args, **{name: x})
            return loss("rfa", a["q"], a["k"], a["v"], do, ds, gate=gate, **kw)
        assert rel(g[name], fd_elementwise(f, x0)) <= 1e-6, name

    def fS(x):
        return loss("rfa", q, k, v, do, ds, gate=gate, **dict(kw, initial_state=la.State(
            x, st.z, 2, "rfa")))
    gS = g["initial_state"].S
    assert rel(gS, fd_elementwise(fS, st.S)) <= 1e-6
    # a reset at token 0 of a slice: nothing reaches that slice's initial state
    assert not gS[0, 0].any()


def test_rfa_zero_gate_limit_bthd_float32(rng):
    """The gradient at g = 0 is the limit of the g > 0 one; bthd gates; float32."""
    B, T, H, D, E = 1, 40, 2, 4, 3
    q, k, v = (rng.standard_normal((B, T, H, n)) for n in (D, D, E))
    gate = rng.uniform(0.3, 0.95, (B, T, H))
    gate[0, 17, 0] = gate[0, 31, 1] = 0.0
    do = rng.standard_normal((B, T, H, E))
    kw = {"num_features": 16, "seed": 3, "chunk_size": 8, "layout": "bthd"}
    g0 = la.causal_vjp(q, k, v, "rfa", gate=gate, **kw)[1](do)
    near = np.where(gate == 0, 1e-9, gate)
    gn = la.causal_vjp(q, k, v, "rfa", gate=near, **kw)[1](do)
    assert g0["gate"].shape == gate.shape
    assert rel(g0["gate"], gn["gate"]) <= 1e-6
    for name in "qkv":
        assert rel(g0[name], gn[name]) <= 1e-6
    g32 = la.causal_vjp(*(x.astype(np.float32) for x in (q, k, v)), "rfa",
                        gate=gate.astype(np.float32), **kw)[1](do.astype(np.float32))
    assert g32["gate"].dtype == np.float32
    for name in ("q", "k", "v", "gate"):
        assert rel(g32[name], g0[name]) <= 1e-5, name


def test_rfa_registry_slot_takes_zero_gates(rng):
    """The kind's backward slot (la.kinds()['rfa']['grad']) goes through the same path."""
    from linattn import _registry as reg

    q, k, v = qkv(rng, 1, 1, 6, 3, 4)
    gate = np.array([[[0.5, 0.0, 0.7, 0.0, 0.4, 0.9]]])
    o, vjp = reg.get("rfa").backward(q, k, v, gate=gate, num_features=8, seed=0)
    assert np.isfinite(vjp(np.ones_like(o))["gate"]).all()
    assert "gate" in la.kinds()["rfa"]["grad"]["wrt"]


@pytest.mark.parametrize("kw", [{"features": "relu"},
                                {"stabilizer": "global", "eps": 0.0},
                                {"stabilizer": "global", "features": "hyperbolic",
                                 "eps": 0.0}])
@pytest.mark.parametrize("causal", [True, False])
def test_performer_published_torch_gradcheck(kw, causal):
    """torch autograd's gradcheck through linattn.torch (eps = 0 for the global
    stabiliser: there its maxima cancel, so the forward's numerical Jacobian is the
    oracle)."""
    torch = pytest.importorskip("torch")
    lt = pytest.importorskip("linattn.torch")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, n, generator=gen, dtype=torch.float64).requires_grad_()
               for n in (4, 4, 5))
    fn = lt.causal if causal else lt.noncausal
    kw = dict(kw, num_features=8, seed=0)
    assert torch.autograd.gradcheck(lambda q, k, v: fn(q, k, v, "performer", **kw),
                                    (q, k, v), atol=1e-8, rtol=1e-6)
