"""``la.transition`` of the linear kernel's kinds runs in C (``_core._linear_transition``:
the chunked kernel's key features, increments and state steps, no outputs).  Parity with
a float64 NumPy reference of the block state (docs/design/family.md §7):
``S = sum_s exp(G_{T-1} - G_s) phi(k_s) v_s^T``, ``z = sum_s exp(G_{T-1} - G_s) phi(k_s)``,
``log_decay = G_{T-1}``, over dtypes, lengths around the chunk, odd widths, decay kinds and
normalisation modes."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn import _core

C = 64  # the kernel's default chunk for D > 32
PHI = {
    "linear": lambda x: x,
    "elu": lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0))),
    "relu": lambda x: np.maximum(x, 0),
    "t1": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
}
# (kind, options, feature map, decay: None | "per_token" | "per_head" | "preset", z kept)
CASES = [
    ("linear", {}, "linear", None, False),
    ("linear", {"normalize": "div", "eps": 1e-6}, "linear", None, True),
    ("elu", {}, "elu", None, True),
    ("elu", {"normalize": "none"}, "elu", None, False),
    ("relu", {"normalize": "norm"}, "relu", None, False),
    ("elu", {}, "elu", "per_token", True),
    ("elu", {}, "elu", "per_head", True),
    ("lightning", {}, "linear", "preset", False),
    ("retnet", {}, "linear", "preset", False),
    ("mamba2", {}, "linear", "per_token", False),
    ("transnormer", {}, "elu", None, False),
    ("transnormer", {"variant": "t1"}, "t1", "per_head", False),
]


def _reference(k, v, phi, g):
    """float64 block state from the definition; g: (..., T) log-decays or None."""
    kf = PHI[phi](k.astype(np.float64))
    if g is not None:
        G = np.cumsum(g, axis=-1)
        w = np.exp(G[..., -1:] - G) if g.shape[-1] else np.ones_like(G)
        kf = kf * w[..., None]
    S = np.einsum("...tf,...te->...fe", kf, v.astype(np.float64))
    return S, kf.sum(axis=-2), (g.sum(axis=-1) if g is not None else None)


def _case(case, T, D, E, dtype, rng):
    kind, opts, phi, decay, _ = case
    H = 3
    q, k = (0.5 * rng.standard_normal((2, H, T, D)) for _ in range(2))
    v = rng.standard_normal((2, H, T, E))
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    opts = dict(opts)
    g = None
    if decay == "per_token":
        g = -0.2 * rng.random((2, H, T))
        opts["decay"] = g
    elif decay == "per_head":
        gh = -0.05 * (1 + np.arange(H, dtype=np.float64))
        opts["decay"] = gh
        g = np.broadcast_to(gh[:, None], (2, H, T))
    elif decay == "preset":
        from linattn import _algebra, _draws

        o = _algebra._opts(kind, {})  # the kind's default preset (slopes of the heads)
        gh = (_draws.decay_slopes(H, "retnet") if kind == "retnet" else
              _draws.decay_slopes(H, o["slopes"], o["layer"], o["num_layers"]))[:H]
        g = np.broadcast_to(np.asarray(gh, np.float64)[:, None], (2, H, T))
    return q, k, v, opts, g


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("T", [1, C - 1, C + 1, 3 * C + 5])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0] + "-" + "-".join(
    f"{k}={v}" for k, v in c[1].items()) + f"-{c[3]}")
def test_transition_matches_the_reference(case, T, dtype):
    rng = np.random.default_rng(T)
    D, E = 67, 5  # odd widths; D > 32: chunks of 64
    q, k, v, opts, g = _case(case, T, D, E, dtype, rng)
    st = la.transition(q, k, v, case[0], start=11, **opts)
    kc = k.astype(np.float32) if dtype == np.float16 else k
    vc = v.astype(np.float32) if dtype == np.float16 else v
    S, z, gamma = _reference(kc, vc, case[2], g)
    comp = np.float64 if dtype == np.float64 else np.float32
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert st.S.dtype == comp and st.S.shape == (2, 3, D, E) and st.t == 11 + T
    assert la.testing.relative_rms(st.S, S) <= tol
    if case[4]:
        assert st.z.dtype == comp and st.z.shape == (2, 3, D)
        assert la.testing.relative_rms(st.z, z) <= tol
    else:
        assert st.z is None
    if gamma is None:
        assert "log_decay" not in st.extra
    else:
        np.testing.assert_allclose(st.extra["log_decay"], gamma, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transition_is_the_chunked_forward_state(dtype):
    """The same chunks, increments and float64 state steps as la.causal's chunked form:
    the state after a block is the forward's final state, bit for bit."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 700, 40)).astype(dtype) for _ in range(3))
    g = -0.1 * rng.random((2, 700))
    for opts in ({}, {"decay": g}, {"chunk_size": 48}):
        st = la.transition(q, k, v, "elu", **opts)
        _, ref = la.causal(q, k, v, "elu", mode="chunked", return_state=True, **opts)
        np.testing.assert_array_equal(st.S, ref.S)
        np.testing.assert_array_equal(st.z, ref.z)


def test_transition_strided_and_broadcast_inputs():
    """Non-contiguous k, v (a transposed layout) and keys shared by the heads."""
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 3, 130, 9))
    k = rng.standard_normal((2, 1, 130, 9))
    v = np.swapaxes(rng.standard_normal((2, 1, 7, 130)), -1, -2)
    st = la.transition(q, k, v, "elu")
    S, z, _ = _reference(k, v, "elu", None)
    assert st.S.shape == (2, 3, 9, 7) and st.z.shape == (2, 3, 9)
    np.testing.assert_allclose(st.S, np.broadcast_to(S, (2, 3, 9, 7)), rtol=1e-12)
    np.testing.assert_allclose(st.z, np.broadcast_to(z, (2, 3, 9)), rtol=1e-12)
    bthd = la.transition(np.swapaxes(q, 1, 2), np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2),
                         "elu", layout="bthd")
    np.testing.assert_allclose(bthd.S, st.S, rtol=1e-12)


def test_transition_gufunc_without_tokens():
    k, v = np.zeros((0, 6)), np.zeros((0, 4))
    S, z = _core._linear_transition(k, v, np.zeros(0), np.int64(0x110), np.int64(64))
    assert S.shape == (6, 4) and z.shape == (6,) and not S.any() and not z.any()
