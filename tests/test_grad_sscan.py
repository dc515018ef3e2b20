"""``la.selective_scan_vjp``: the selective-scan backward in C (states recomputed from a
checkpoint every 64 tokens).

Oracles: float64 central finite differences (directional) through
``la.reference.selective_scan``; torch autograd through a pure-torch transcription of
that reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn.reference.sscan import selective_scan as ref_scan

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def rrms(actual, desired, floor=0.05) -> float:
    a, d = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    return float(np.sqrt(np.mean((a - d) ** 2)) / max(np.sqrt(np.mean(d ** 2)), floor))


def make(rng, b=2, D=4, L=70, N=3, bc="tv", softplus=False, optional=True,
         dtype=np.float64):
    """Inputs of a scan; ``bc``: time-invariant ("ti"), per-batch ("tv"), grouped B
    with 2 and C with 4 groups ("grp")."""
    BC = {"ti": lambda: rng.standard_normal((D, N)),
          "tv": lambda: rng.standard_normal((b, N, L)),
          "grp": None}[bc]
    x = dict(u=rng.standard_normal((b, D, L)),
             delta=rng.standard_normal((b, D, L)) if softplus else rng.uniform(0.1, 1, (b, D, L)),
             A=-rng.uniform(0.1, 1.0, (D, N)))
    if bc == "grp":
        x["B"], x["C"] = rng.standard_normal((b, 2, N, L)), rng.standard_normal((b, 4, N, L))
    else:
        x["B"], x["C"] = BC(), BC()
    if optional:
        x.update(D=rng.standard_normal(D), z=rng.standard_normal((b, D, L)),
                 delta_bias=0.1 * rng.standard_normal(D),
                 initial_state=rng.standard_normal((b, D, N)))
    return {n: v.astype(dtype) for n, v in x.items()}


def loss(x, do, ds, softplus):
    o, h = ref_scan(**x, delta_softplus=softplus, return_state=True)
    return np.sum(o * do) + (np.sum(h * ds) if ds is not None else 0.0)


@pytest.mark.parametrize("bc", ["ti", "tv", "grp"])
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("L", [1, 9, 63, 64, 65, 130])
def test_directional_finite_differences(rng, bc, softplus, L):
    x = make(rng, L=L, bc=bc, softplus=softplus)
    (o, h), vjp = la.selective_scan_vjp(**x, delta_softplus=softplus, return_state=True)
    do, ds = rng.standard_normal(o.shape), rng.standard_normal(h.shape)
    g = vjp(do, ds)
    eps = 1e-6
    for n in NAMES:
        assert g[n].shape == x[n].shape and g[n].dtype == np.float64, n
        d = rng.standard_normal(x[n].shape)
        fp = loss({**x, n: x[n] + eps * d}, do, ds, softplus)
        fm = loss({**x, n: x[n] - eps * d}, do, ds, softplus)
        fd = (fp - fm) / (2 * eps)
        got = float(np.sum(g[n] * d))
        assert abs(got - fd) <= 1e-6 * max(abs(fd), 1.0), (n, got, fd)


def test_elementwise_finite_differences(rng):
    x = make(rng, b=1, D=2, L=5, N=2, bc="tv", softplus=True)
    o, vjp = la.selective_scan_vjp(**x, delta_softplus=True)
    do = rng.standard_normal(o.shape)
    g = vjp(do)
    for n in NAMES:
        fd = np.zeros_like(x[n])
        for i in np.ndindex(x[n].shape):
            xp, xm = x[n].copy(), x[n].copy()
            xp[i] += 1e-6
            xm[i] -= 1e-6
            fd[i] = (loss({**x, n: xp}, do, None, True) - loss({**x, n: xm}, do, None, True)) / 2e-6
        assert rrms(g[n], fd) <= 1e-6, n


def test_optional_inputs_absent_give_none(rng):
    x = make(rng, optional=False, L=20)
    out, vjp = la.selective_scan_vjp(**x)
    np.testing.assert_array_equal(out, la.selective_scan(**x))
    g = vjp(np.ones_like(out))
    for n in ("D", "z", "delta_bias", "initial_state"):
        assert g[n] is None, n
    do = np.ones_like(out)
    for n in ("u", "delta", "A", "B", "C"):
        d = rng.standard_normal(x[n].shape)
        fd = (loss({**x, n: x[n] + 1e-6 * d}, do, None, False)
              - loss({**x, n: x[n] - 1e-6 * d}, do, None, False)) / 2e-6
        assert abs(np.sum(g[n] * d) - fd) <= 1e-6 * max(abs(fd), 1.0), n


def test_forward_is_bit_identical(rng):
    x = make(rng, bc="grp", L=65)
    (o, h), _ = la.selective_scan_vjp(**x, delta_softplus=True, return_state=True)
    o2, h2 = la.selective_scan(**x, delta_softplus=True, return_state=True)
    np.testing.assert_array_equal(o, o2)
    np.testing.assert_array_equal(h, h2)


@pytest.mark.parametrize("bc", ["ti", "tv", "grp"])
def test_float32_close_to_float64(rng, bc):
    x = make(rng, L=200, bc=bc, softplus=True)
    (o, h), vjp = la.selective_scan_vjp(**x, delta_softplus=True, return_state=True)
    do, ds = rng.standard_normal(o.shape), rng.standard_normal(h.shape)
    g64 = vjp(do, ds)
    x32 = {n: v.astype(np.float32) for n, v in x.items()}
    (o32, _), vjp32 = la.selective_scan_vjp(**x32, delta_softplus=True, return_state=True)
    g32 = vjp32(do.astype(np.float32), ds.astype(np.float32))
    for n in NAMES:
        assert g32[n].dtype == np.float32
        assert rrms(g32[n], g64[n]) <= 1e-5, (n, rrms(g32[n], g64[n]))


def test_split_and_resume_chains_dstate(rng):
    x = make(rng, L=130, bc="tv", softplus=True)
    (o, h), vjp = la.selective_scan_vjp(**x, delta_softplus=True, return_state=True)
    do, ds = rng.standard_normal(o.shape), rng.standard_normal(h.shape)
    g = vjp(do, ds)
    cut = 65
    x1 = {n: (x[n][..., :cut] if n in ("u", "delta", "z", "B", "C") else x[n]) for n in x}
    (o1, h1), vjp1 = la.selective_scan_vjp(**x1, delta_softplus=True, return_state=True)
    x2 = {n: (x[n][..., cut:] if n in ("u", "delta", "z", "B", "C") else x[n]) for n in x}
    x2["initial_state"] = h1
    (o2, _), vjp2 = la.selective_scan_vjp(**x2, delta_softplus=True, return_state=True)
    g2 = vjp2(do[..., cut:], ds)
    g1 = vjp1(do[..., :cut], g2["initial_state"])
    for n in ("u", "delta", "z", "B", "C"):
        np.testing.assert_allclose(np.concatenate([g1[n], g2[n]], -1), g[n], rtol=1e-12,
                                   atol=1e-12)
    for n in ("A", "D", "delta_bias"):
        np.testing.assert_allclose(g1[n] + g2[n], g[n], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g1["initial_state"], g["initial_state"], rtol=1e-12, atol=1e-12)


def test_inputs_untouched_float16_and_errors(rng):
    x = make(rng, L=20, bc="tv")
    copies = {n: v.copy() for n, v in x.items()}
    out, vjp = la.selective_scan_vjp(**x)
    do = np.ones_like(out)
    vjp(do)
    for n in x:
        np.testing.assert_array_equal(x[n], copies[n])
    with pytest.raises(ValueError, match="dout"):
        vjp(np.ones(out.shape[:-1] + (3,)))
    with pytest.raises(ValueError, match="dstate"):
        vjp(do, np.ones((1, 2, 3)))
    x16 = {n: v.astype(np.float16) for n, v in x.items()}
    out16, vjp16 = la.selective_scan_vjp(**x16)
    g16 = vjp16(np.ones_like(out16))
    g = la.selective_scan_vjp(**{n: v.astype(np.float64) for n, v in x16.items()})[1](do)
    for n in NAMES:
        assert g16[n].dtype == np.float16
        assert rrms(g16[n], g[n]) < 5e-3, n


def test_extreme_delta_stays_finite(rng):
    x = make(rng, L=130, bc="tv")
    x["delta"][:, :, 40] = 1e4  # exp(dt A) underflows to 0: a reset
    (o, h), vjp = la.selective_scan_vjp(**x, return_state=True)
    do = np.ones_like(o)
    g = vjp(do, np.ones_like(h))
    for n in NAMES:
        assert np.isfinite(g[n]).all(), n
    do[..., :41] = 0  # only outputs after the reset: nothing reaches the initial state
    g = vjp(do, np.ones_like(h))
    np.testing.assert_array_equal(g["initial_state"], 0)


def _torch_scan(torch, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus):
    """The reference scan (la.reference.selective_scan), transcribed to torch."""
    b, dim, L = u.shape
    N = A.shape[1]
    delta = delta + delta_bias[:, None]
    if softplus:
        delta = torch.nn.functional.softplus(delta)

    def at(X, t):
        if X.dim() == 2:
            return X.expand(b, dim, N)
        if X.dim() == 3:
            return X[:, None, :, t].expand(b, dim, N)
        return X[:, :, :, t].repeat_interleave(dim // X.shape[1], dim=1)

    h = initial_state
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A[None])
        h = dA * h + (delta[:, :, t] * u[:, :, t])[..., None] * at(B, t)
        ys.append((h * at(C, t)).sum(-1))
    out = torch.stack(ys, -1) + u * D[:, None]
    return out * (z * torch.sigmoid(z)), h


@pytest.mark.parametrize("bc", ["ti", "tv", "grp"])
def test_torch_autograd_oracle(rng, bc):
    torch = pytest.importorskip("torch")
    x = make(rng, L=70, bc=bc, softplus=True)
    (o, h), vjp = la.selective_scan_vjp(**x, delta_softplus=True, return_state=True)
    do, ds = rng.standard_normal(o.shape), rng.standard_normal(h.shape)
    g = vjp(do, ds)
    t = {n: torch.tensor(v, requires_grad=True) for n, v in x.items()}
    to, th = _torch_scan(torch, **t, softplus=True)
    ((to * torch.tensor(do)).sum() + (th * torch.tensor(ds)).sum()).backward()
    np.testing.assert_allclose(o, to.detach().numpy(), rtol=1e-10, atol=1e-12)
    for n in NAMES:
        assert rrms(g[n], t[n].grad.numpy()) <= 1e-10, n


def test_bit_identical_across_thread_counts(rng):
    x = {n: v.astype(np.float32) for n, v in make(rng, L=70, bc="grp").items()}
    do = rng.standard_normal(x["u"].shape).astype(np.float32)
    n0 = la.get_num_threads()
    try:
        gs = []
        for n in (1, 2):
            la.set_num_threads(n)
            gs.append(la.selective_scan_vjp(**x, delta_softplus=True)[1](do))
    finally:
        la.set_num_threads(n0)
    for name in NAMES:
        np.testing.assert_array_equal(gs[0][name], gs[1][name])
