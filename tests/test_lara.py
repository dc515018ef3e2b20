"""kinds "ra" and "lara" (docs/design/lara.md): worked examples, invariants 1-8 and
statistical tests 9-10 of its §7, parity with the NumPy oracle, large-norm inputs and errors."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close

DTYPES = [np.float32, np.float64]
Q2 = np.array([[.5, -1], [1, 0], [0, 1], [-1, .5], [.3, .3]])
K2 = np.array([[1, .2], [-.5, 1], [0, -1], [.7, .7], [-1, 0]])
V2 = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10.0]])


def rfa_estimate(q, k, v, omega, scale):
    """Performer-style positive random features, eps = 0, written from the formula:
    xi(x, w) = exp(w.x - |x|^2/2) on sqrt(scale)-scaled q and k."""
    s = np.sqrt(scale)
    q, k = s * q, s * k
    fq = np.exp(q @ omega.T - 0.5 * (q * q).sum(-1, keepdims=True))
    fk = np.exp(k @ omega.T - 0.5 * (k * k).sum(-1, keepdims=True))
    return (fq @ (fk.T @ v)) / (fq @ fk.sum(0))[:, None]


# -------------------------------------------------------------- worked examples --

def test_example1():
    I2 = np.eye(2)
    exp = {0: 0.685355, 1: 0.716401, 2: 0.741870}
    for a, e in exp.items():
        o = la.noncausal(I2, I2, I2, kind="lara", landmarks=2, sampling="mean", alpha_coeff=a)
        np.testing.assert_allclose(o, [[e, 1 - e], [1 - e, e]], atol=1e-6)
    o = la.noncausal(I2, I2, I2, kind="lara", landmarks=2, sampling="mean", alpha="bh")
    np.testing.assert_allclose(o[0], [0.685355, 0.314645], atol=1e-6)


def test_example2():
    kw = dict(kind="lara", landmarks=2)
    np.testing.assert_allclose(la.noncausal(Q2, K2, V2, sampling="mean", **kw)[:, 0],
                               [4.556524, 4.542850, 4.884287, 5.021855, 4.738000], atol=1e-6)
    o = la.noncausal(Q2, K2, V2, noise=[[0.1, -0.2], [0.3, 0.4]], **kw)
    np.testing.assert_allclose(o[:, 0], [4.347684, 4.405837, 4.689916, 4.731674, 4.553561],
                               atol=1e-6)
    np.testing.assert_allclose(o[:, 1], o[:, 0] + 1, atol=1e-12)
    ra = la.noncausal(Q2, K2, V2, kind="ra", component="mean", sampling="mean")
    np.testing.assert_allclose(ra[:, 0], [4.637359, 4.085957, 4.730176, 5.689717, 4.647617],
                               atol=1e-6)
    P = np.array([[.5, -.5], [1, .25], [-.3, .8]])
    rfa = la.noncausal(Q2, K2, V2, kind="lara", landmarks=(np.zeros((3, 2)), np.zeros((3, 2))),
                       alpha="const", noise=P)
    np.testing.assert_allclose(rfa[:, 0], [4.522834, 4.474108, 4.699741, 4.824661, 4.590356],
                               atol=1e-6)


# ------------------------------------------------------------------ parity --

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("alpha", ["opt", "bh", "const"])
@pytest.mark.parametrize("NM", [(37, 37), (300, 300), (20, 45), (9, 4)])
def test_lara_parity(rng, dtype, alpha, NM):
    N, M = NM
    q = (0.7 * rng.standard_normal((2, N, 8))).astype(dtype)
    k = (0.7 * rng.standard_normal((2, M, 8))).astype(dtype)
    v = rng.standard_normal((2, M, 5)).astype(dtype)
    kw = dict(kind="lara", landmarks=min(6, M), alpha=alpha, alpha_coeff=1.5, seed=4,
              samples_per_proposal=2, antithetic=True, mixed_landmarks=alpha == "opt")
    o = la.noncausal(q, k, v, **kw)
    assert o.shape == (2, N, 5) and o.dtype == dtype
    assert_close(o, la.reference.noncausal(q, k, v, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("component", ["sample", "mean", "keymean"])
def test_ra_parity(rng, dtype, component):
    q = rng.standard_normal((2, 11, 4)).astype(dtype)
    k = rng.standard_normal((2, 13, 4)).astype(dtype)
    v = rng.standard_normal((2, 13, 3)).astype(dtype)
    kw = dict(kind="ra", samples=3, component=component, seed=9, noise_std="code")
    assert_close(la.noncausal(q, k, v, **kw), la.reference.noncausal(q, k, v, **kw), dtype)


def test_layout(rng):
    q, k, v = (rng.standard_normal((2, 10, 3, 4)) for _ in range(3))
    o = la.noncausal(q, k, v, kind="lara", landmarks=3, layout="bthd")
    ref = la.noncausal(*(np.swapaxes(x, 1, 2) for x in (q, k, v)), kind="lara", landmarks=3)
    assert_close(o, np.swapaxes(ref, 1, 2), np.float64)


# ----------------------------------------------------------- invariants --

@pytest.mark.parametrize("alpha", ["const", "bh"])
def test_inv1_reduction_to_rfa(rng, alpha):
    q, k, v = rng.standard_normal((20, 6)), rng.standard_normal((20, 6)), \
        rng.standard_normal((20, 3))
    eps = rng.standard_normal((16, 6))
    z = np.zeros((16, 6))
    o = la.noncausal(q, k, v, kind="lara", landmarks=(z, z), alpha=alpha, noise=eps)
    np.testing.assert_allclose(o, rfa_estimate(q, k, v, eps, 6 ** -0.5), atol=1e-12)


def test_inv2_opt_coeff0_is_bh(rng):
    q, k, v = (rng.standard_normal((2, 30, 4)) for _ in range(3))
    a = la.noncausal(q, k, v, kind="lara", landmarks=5, alpha_coeff=0.0)
    b = la.noncausal(q, k, v, kind="lara", landmarks=5, alpha="bh")
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_inv3_one_landmark(rng):
    q, k, v = (rng.standard_normal((30, 4)) for _ in range(3))
    o = la.noncausal(q, k, v, kind="lara", landmarks=1)
    assert np.ptp(o, axis=0).max() == 0


def test_inv4_convexity(rng):
    q, k = rng.standard_normal((25, 4)), rng.standard_normal((25, 4))
    v = rng.standard_normal((25, 3))
    o = la.noncausal(q, k, v, kind="lara", landmarks=4)
    assert np.all(o >= v.min(0) - 1e-12) and np.all(o <= v.max(0) + 1e-12)
    c = np.array([0.3, -2.0, 5.0])
    np.testing.assert_allclose(la.noncausal(q, k, np.tile(c, (25, 1)), kind="lara",
                                            landmarks=4), np.tile(c, (25, 1)), atol=1e-14)
    v2 = np.stack([v[:, 0], v[:, 0] + 1], -1)
    o2 = la.noncausal(q, k, v2, kind="lara", landmarks=4)
    np.testing.assert_allclose(o2[:, 1], o2[:, 0] + 1, atol=1e-14)


@pytest.mark.parametrize("kind", ["lara", "ra"])
def test_inv5_scale_consistency(rng, kind):
    q, k, v = (rng.standard_normal((15, 4)) for _ in range(3))
    s = 0.8
    a = la.noncausal(s * q, s * k, v, kind=kind, scale=1.0)
    b = la.noncausal(q, k, v, kind=kind, scale=s * s)
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("kind", ["lara", "ra"])
def test_inv6_determinism(rng, kind):
    q, k, v = (rng.standard_normal((8, 3, 40, 4)) for _ in range(3))
    n0 = la.get_num_threads()
    try:
        la.set_num_threads(1)
        a = la.noncausal(q, k, v, kind=kind, seed=5)
        la.set_num_threads(4)
        b = la.noncausal(q, k, v, kind=kind, seed=5)
    finally:
        la.set_num_threads(n0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, la.noncausal(q, k, v, kind=kind, seed=6))
    m1 = la.noncausal(q, k, v, kind=kind, sampling="mean", seed=1,
                      **({"component": "mean"} if kind == "ra" else {}))
    m2 = la.noncausal(q, k, v, kind=kind, sampling="mean", seed=2,
                      **({"component": "mean"} if kind == "ra" else {}))
    assert np.array_equal(m1, m2)


def test_inv7_lara_core_reduces_to_ra(rng):
    """Through the section-2 core: C = N samples omega_n ~ p_n, offsets 0 on the diagonal
    and -inf elsewhere give f_n(omega_n), i.e. RA."""
    from linattn.reference import lara as rl
    N, d = 7, 3
    q, k, v = rng.standard_normal((N, d)), rng.standard_normal((N, d)), \
        rng.standard_normal((N, 2))
    u, z = rng.random((N, 1)), rng.standard_normal((N, 1, d))
    ra = rl.ra_core(q, k, v, z, u)
    lg = q @ k.T
    pi = np.exp(lg - lg.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    m = [min(int(np.searchsorted(np.cumsum(pi[n]), u[n, 0])), N - 1) for n in range(N)]
    om = q + k[m] + z[:, 0]
    lk = om @ k.T - 0.5 * (k * k).sum(-1)
    f = np.exp(lk - lk.max(-1, keepdims=True))
    f = (f / f.sum(-1, keepdims=True)) @ v
    a = np.where(np.eye(N, dtype=bool), 0.0, -np.inf)
    logw = a + q @ om.T
    w = np.exp(logw - logw.max(-1, keepdims=True))
    y = (w / w.sum(-1, keepdims=True)) @ f
    np.testing.assert_allclose(y, ra, atol=1e-12)


def test_inv8_cross_attention(rng):
    q = rng.standard_normal((2, 9, 4))
    k, v = rng.standard_normal((2, 23, 4)), rng.standard_normal((2, 23, 3))
    for kind in ("lara", "ra"):
        o = la.noncausal(q, k, v, kind=kind, **({"landmarks": 4} if kind == "lara" else {}))
        ref = la.reference.noncausal(q, k, v, kind=kind,
                                     **({"landmarks": 4} if kind == "lara" else {}))
        assert o.shape == (2, 9, 3)
        assert_close(o, ref, np.float64)


# ------------------------------------------------------ statistical tests --

def _problem():
    rng = np.random.default_rng(42)
    N, d = 64, 16
    q = rng.standard_normal((N, d)) * 0.5 * d ** 0.25
    k = rng.standard_normal((N, d)) * 0.5 * d ** 0.25
    v = rng.standard_normal((N, d))
    return q, k, v, la.softmax_attention(q, k, v, causal=False)


def test_ra_unbiased_mse_falls():
    q, k, v, exact = _problem()
    mse = {S: np.mean((la.noncausal(q, k, v, kind="ra", samples=S, seed=S) - exact) ** 2)
           for S in (16, 1024)}
    assert mse[1024] < mse[16] / 32


def test_ra_code_noise_negative_control():
    q, k, v, exact = _problem()
    paper = np.mean((la.noncausal(q, k, v, kind="ra", samples=1024, seed=3) - exact) ** 2)
    code = np.mean((la.noncausal(q, k, v, kind="ra", samples=1024, seed=3,
                                 noise_std="code") - exact) ** 2)
    comp_only = np.mean((la.noncausal(q, k, v, kind="ra", samples=1024, seed=3,
                                      sampling="mean") - exact) ** 2)
    assert code > 3 * paper and comp_only > 3 * paper


def test_large_norm_inputs_finite(rng):
    q, k, v = rng.standard_normal((40, 8)) * 100, rng.standard_normal((40, 8)) * 100, \
        rng.standard_normal((40, 3))
    for dtype in DTYPES:
        for kind in ("lara", "ra"):
            o = la.noncausal(q.astype(dtype), k.astype(dtype), v.astype(dtype), kind=kind)
            assert np.all(np.isfinite(o))


# ---------------------------------------------------------------- errors --

def test_errors(rng):
    q, k, v = (rng.standard_normal((10, 4)) for _ in range(3))
    with pytest.raises(ValueError, match="landmarks"):
        la.noncausal(q, k, v, kind="lara", landmarks=0)
    with pytest.raises(ValueError, match="landmarks"):
        la.noncausal(q, k, v, kind="lara", landmarks=11)
    with pytest.raises(ValueError, match="landmarks"):
        la.noncausal(q, k, v, kind="lara", landmarks=(np.zeros((3, 4)), np.zeros((2, 4))))
    with pytest.raises(ValueError, match="noise"):
        la.noncausal(q, k, v, kind="lara", landmarks=3, noise=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="noise"):
        la.noncausal(q, k, v, kind="ra", samples=2, noise=np.zeros((10, 1, 4)))
    with pytest.raises(ValueError, match="uniforms"):
        la.noncausal(q, k, v, kind="ra", uniforms=np.zeros((9, 1)) + 0.5)
    with pytest.raises(ValueError, match="uniforms"):
        la.noncausal(q, k, v, kind="ra", uniforms=np.ones((10, 1)))
    with pytest.raises(ValueError, match="antithetic"):
        la.noncausal(q, k, v, kind="lara", antithetic=True, samples_per_proposal=3)
    with pytest.raises(ValueError, match="alpha"):
        la.noncausal(q, k, v, kind="lara", alpha="biased")
    with pytest.raises(ValueError, match="noise_std"):
        la.noncausal(q, k, v, kind="lara", noise_std="paper")
    with pytest.raises(TypeError):
        la.noncausal(q, k, v, kind="lara", normalize="div")
    with pytest.raises(ValueError, match="causal"):
        la.causal(q, k, v, kind="lara")
    with pytest.raises(ValueError, match="causal"):
        la.causal(q, k, v, kind="ra")
