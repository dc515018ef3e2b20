"""Second gradient oracle: torch autograd through a pure-torch transcription of
``la.reference`` (the quadratic form, float64), independent of the C backward."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la

torch = pytest.importorskip("torch")

FMAP = {"linear": "identity", "lightning": "identity", "retnet": "identity",
        "mamba2": "identity", "elu": "elu1", "relu": "relu"}


def phi(x, fmap):
    if fmap == "identity":
        return x
    if fmap == "elu1":
        return torch.where(x > 0, x + 1.0, torch.exp(torch.clamp(x, max=0.0)))
    return torch.clamp(x, min=0.0)


def guard(den, eps, mode):
    if mode == "add":
        return den + eps
    if mode == "clamp":
        return torch.where(den < eps, torch.full_like(den, eps), den)
    a = den.abs()
    return torch.where(a < eps, torch.full_like(a, eps), a)


def torch_causal(q, k, v, g, S0, z0, *, fmap, scale, normalize, eps, eps_mode):
    """la.reference.causal in torch; the mask is applied before exp (docs/design/grad.md §5)."""
    fq, fk = phi(scale * q, fmap), phi(k, fmap)
    T = q.shape[-2]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    if g is None:
        W = mask.to(q.dtype).expand(q.shape[:-2] + (T, T))
        eG = torch.ones(q.shape[:-1], dtype=q.dtype)
    else:
        G = torch.cumsum(torch.clamp(g, min=-1000.0), dim=-1)
        diff = G[..., :, None] - G[..., None, :]
        W = torch.where(mask, torch.exp(torch.where(mask, diff, torch.zeros_like(diff))),
                        torch.zeros_like(diff))
        eG = torch.exp(G)
    A = W * (fq @ fk.transpose(-1, -2))
    num = A @ v + eG[..., None] * (fq @ S0)
    den = A.sum(-1) + eG * (fq @ z0[..., None])[..., 0]
    if normalize == "div":
        o = num / guard(den, eps, eps_mode)[..., None]
    elif normalize == "norm":
        o = num / (torch.sqrt((num * num).mean(-1, keepdim=True)) + eps)
    else:
        o = num
    wl = W[..., -1, :]
    S = (fk * wl[..., None]).transpose(-1, -2) @ v + eG[..., -1, None, None] * S0
    z = (fk * wl[..., None]).sum(-2) + eG[..., -1, None] * z0
    return o, S, z


@pytest.mark.parametrize("kind", ["linear", "elu", "relu", "lightning", "retnet", "mamba2"])
@pytest.mark.parametrize("decay", [None, "head", "token"])
@pytest.mark.parametrize("backward", ["chunked", "recurrent"])
def test_torch_oracle(kind, decay, backward):
    rng = np.random.default_rng(7)
    B, H, T, D, E = 2, 3, 37, 5, 4
    q = rng.standard_normal((B, H, T, D))
    k = rng.standard_normal((B, H, T, D))
    v = rng.standard_normal((B, H, T, E))
    if kind == "relu":
        q, k = np.abs(q) + 0.2, np.abs(k) + 0.2
    if kind == "mamba2":
        decay = "token"
    kw = {"chunk_size": 8}
    g_full = None
    if decay == "head":
        kw["decay"] = -rng.uniform(0.05, 1.0, (H,))
        g_full = np.broadcast_to(kw["decay"][:, None], (B, H, T))
    elif decay == "token":
        kw["decay"] = -rng.uniform(0.05, 1.0, (B, H, T))
        kw["decay"][0, 0, 20] = -np.inf
        g_full = kw["decay"]
    elif kind in ("lightning", "retnet"):
        g_full = np.broadcast_to(la.decay_slopes(H, "tnl" if kind == "lightning" else "retnet")
                                 [:, None], (B, H, T))
    spec = la.kinds()[kind]["defaults"]
    normalize, eps, eps_mode = spec["normalize"], spec["eps"], spec["eps_mode"]
    scale = 1.0 / np.sqrt(D) if kind == "retnet" else 1.0
    div = normalize == "div"
    S0 = 0.3 * rng.standard_normal((B, H, D, E))
    z0 = np.abs(rng.standard_normal((B, H, D))) + 0.5
    st = la.State(S0, z0 if div else None, 3, kind)
    (o, s1), vjp = la.causal_vjp(q, k, v, kind, initial_state=st, return_state=True,
                                 backward=backward, **kw)
    do = rng.standard_normal(o.shape)
    dS = rng.standard_normal(s1.S.shape)
    dz = rng.standard_normal((B, H, D))
    g = vjp(do, dstate={"S": dS, "z": dz})

    t = {n: torch.tensor(np.ascontiguousarray(x), requires_grad=True)
         for n, x in (("q", q), ("k", k), ("v", v), ("S0", S0), ("z0", z0))}
    tg = None if g_full is None else torch.tensor(np.ascontiguousarray(g_full),
                                                  requires_grad=True)
    to, tS, tz = torch_causal(t["q"], t["k"], t["v"], tg, t["S0"],
                              t["z0"] if div else torch.zeros(B, H, D, dtype=torch.float64),
                              fmap=FMAP[kind], scale=scale, normalize=normalize, eps=eps,
                              eps_mode=eps_mode)
    assert np.abs(to.detach().numpy() - o).max() <= 1e-10
    L = (to * torch.tensor(do)).sum() + (tS * torch.tensor(dS)).sum()
    if div:
        L = L + (tz * torch.tensor(dz)).sum()
    L.backward()

    def rel(a, b):
        assert np.isfinite(a).all()
        return np.linalg.norm(a - b) / np.linalg.norm(b)
    for name in ("q", "k", "v"):
        assert rel(g[name], t[name].grad.numpy()) <= 1e-10, name
    assert rel(g["initial_state"].S, t["S0"].grad.numpy()) <= 1e-10
    if div:
        assert rel(g["initial_state"].z, t["z0"].grad.numpy()) <= 1e-10
    if "decay" in kw:
        want = tg.grad.numpy()
        want = np.where(np.isneginf(g_full), 0.0, want)
        if decay == "head":
            want = want.sum(axis=(0, 2))
        assert rel(g["decay"], want) <= 1e-10


@pytest.mark.parametrize("kind", ["linear", "elu", "relu"])
def test_torch_oracle_noncausal(kind):
    rng = np.random.default_rng(8)
    q = np.abs(rng.standard_normal((2, 9, 3))) + 0.2
    k = np.abs(rng.standard_normal((2, 13, 3))) + 0.2
    v = rng.standard_normal((2, 13, 4))
    spec = la.kinds()[kind]["defaults"]
    o, vjp = la.noncausal_vjp(q, k, v, kind, chunk_size=4)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    t = [torch.tensor(x, requires_grad=True) for x in (q, k, v)]
    fq, fk = phi(t[0], FMAP[kind]), phi(t[1], FMAP[kind])
    A = fq @ fk.transpose(-1, -2)
    num = A @ t[2]
    if spec["normalize"] == "div":
        to = num / guard(A.sum(-1), spec["eps"], spec["eps_mode"])[..., None]
    else:
        to = num
    (to * torch.tensor(do)).sum().backward()
    for name, x in zip("qkv", t):
        b = x.grad.numpy()
        assert np.linalg.norm(g[name] - b) / np.linalg.norm(b) <= 1e-10


@pytest.mark.parametrize("causal", [True, False])
def test_torch_oracle_cosformer(causal):
    """cosFormer: relu features re-weighted by cos((pi/2)(i - j)/M), 1-based positions."""
    rng = np.random.default_rng(9)
    B, H, T, D, E, M = 2, 2, 37, 5, 4, 50
    q, k = rng.standard_normal((B, H, T, D)), rng.standard_normal((B, H, T, D))
    v = rng.standard_normal((B, H, T, E))
    if causal:
        o, vjp = la.causal_vjp(q, k, v, "cosformer", horizon=M, chunk_size=8, scale=0.7)
    else:
        o, vjp = la.noncausal_vjp(q, k, v, "cosformer", horizon=M, chunk_size=8, scale=0.7)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    t = [torch.tensor(x, requires_grad=True) for x in (q, k, v)]
    pos = torch.arange(1, T + 1, dtype=torch.float64)
    W = torch.cos(0.5 * np.pi * (pos[:, None] - pos[None, :]) / M)
    A = (torch.clamp(0.7 * t[0], min=0) @ torch.clamp(t[1], min=0).transpose(-1, -2)) * W
    if causal:
        A = A * torch.tril(torch.ones(T, T, dtype=torch.float64))
    den = A.sum(-1)
    to = (A @ t[2]) / torch.where(den < 1e-6, torch.full_like(den, 1e-6), den)[..., None]
    assert np.abs(to.detach().numpy() - o).max() <= 1e-10
    (to * torch.tensor(do)).sum().backward()
    for name, x in zip("qkv", t):
        b = x.grad.numpy()
        assert np.linalg.norm(g[name] - b) / np.linalg.norm(b) <= 1e-10


@pytest.mark.parametrize("features", ["positive", "hyperbolic"])
@pytest.mark.parametrize("causal", [True, False])
def test_torch_oracle_performer(features, causal):
    """Performer: unshifted true features exp(l) in torch (moderate inputs), eps added to
    the true denominator; the library's prefix stabiliser must not change the gradient."""
    rng = np.random.default_rng(10)
    B, H, T, D, E, m = 2, 2, 37, 5, 4, 6
    q, k = rng.standard_normal((B, H, T, D)), rng.standard_normal((B, H, T, D))
    v = rng.standard_normal((B, H, T, E))
    W = rng.standard_normal((m, D))
    kw = {"projection": W, "features": features, "chunk_size": 8, "scale": 0.5}
    fn = la.causal_vjp if causal else la.noncausal_vjp
    o, vjp = fn(q, k, v, "performer", **kw)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    t = [torch.tensor(x, requires_grad=True) for x in (q, k, v)]
    Wt = torch.tensor(W)

    def feats(x):
        xs = np.sqrt(0.5) * x
        u = xs @ Wt.T
        h = 0.5 * (xs * xs).sum(-1, keepdim=True)
        if features == "hyperbolic":
            return torch.exp(torch.cat([u - h, -u - h], -1) - 0.5 * np.log(2 * m))
        return torch.exp(u - h - 0.5 * np.log(m))
    A = feats(t[0]) @ feats(t[1]).transpose(-1, -2)
    if causal:
        A = A * torch.tril(torch.ones(T, T, dtype=torch.float64))
    to = (A @ t[2]) / (A.sum(-1) + 1e-6)[..., None]
    assert np.abs(to.detach().numpy() - o).max() <= 1e-10
    (to * torch.tensor(do)).sum().backward()
    for name, x in zip("qkv", t):
        b = x.grad.numpy()
        assert np.linalg.norm(g[name] - b) / np.linalg.norm(b) <= 1e-10
