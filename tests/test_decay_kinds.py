"""kinds "lightning" / "retnet" (docs/design/kinds.md §7), la.decay_slopes, and "linear" as
the gated linear attention of de Brebisson & Vincent (docs/design/kinds.md §1)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv

MODES = ["recurrent", "chunked", "parallel"]
DTYPES = [np.float32, np.float64]
PRESETS = [("lightning", {}), ("lightning", {"slopes": "fla"}),
           ("lightning", {"layer": 3, "num_layers": 12}), ("retnet", {})]
PID = ["tnl", "fla", "tnl-layer3", "retnet"]


def explicit(q, k, v, log_lambda, scale=1.0):
    """Direct quadratic with an explicit lambda^(t-s) matrix per head."""
    T = q.shape[-2]
    lag = np.subtract.outer(np.arange(T), np.arange(T)).astype(float)
    W = np.where(lag >= 0, np.exp(np.asarray(log_lambda)[:, None, None] * np.maximum(lag, 0)),
                 0.0)
    return (W * (scale * q @ np.swapaxes(k, -1, -2))) @ v


# ------------------------------------------------------------------ decay_slopes --

def test_decay_slopes_table_h8():
    tnl = la.decay_slopes(8, "tnl", layer=0, num_layers=12)
    np.testing.assert_allclose(tnl, -(2.0 ** -np.arange(1, 9)) * (1 + 1e-5), rtol=1e-15)
    np.testing.assert_allclose(np.exp(tnl[[0, 1, -1]]),
                               np.exp([-0.5, -0.25, -1 / 256]), rtol=1e-4)
    fla = la.decay_slopes(8, "fla", layer=0, num_layers=12)
    np.testing.assert_array_equal(fla, -np.arange(8.0))
    assert not np.signbit(fla[0])
    ret = la.decay_slopes(8, "retnet")
    np.testing.assert_allclose(np.exp(ret), 1 - 2.0 ** (-5 - np.arange(8)), rtol=1e-15)
    np.testing.assert_allclose(ret[[0, -1]], [-0.0317, -0.000244], rtol=1e-2)
    for a in (tnl, fla, ret):
        assert a.shape == (8,) and a.dtype == np.float64 and (a <= 0).all()


def test_decay_slopes_layers():
    np.testing.assert_allclose(la.decay_slopes(4, "tnl", layer=11, num_layers=12),
                               -(2.0 ** (-2.0 * np.arange(1, 5))) * 1e-5, rtol=1e-12)
    np.testing.assert_allclose(la.decay_slopes(4, "fla", layer=6, num_layers=12),
                               -(8 / 4) * 0.5 * np.arange(4), rtol=1e-15)
    # L = 1: the l/(L-1) term is 0
    np.testing.assert_allclose(la.decay_slopes(2), -np.array([0.0625, 0.00390625]) * (1 + 1e-5))


def test_decay_slopes_non_power_of_two():
    s = -la.decay_slopes(12, "tnl") / (1 + 1e-5)
    p8 = 2.0 ** (-np.arange(1, 9))               # rule for 8
    p16 = 2.0 ** (-0.5 * np.arange(1, 17))       # rule for 16
    np.testing.assert_allclose(s, np.concatenate([p8, p16[0::2][:4]]), rtol=1e-14)
    np.testing.assert_allclose(s[8:], 2.0 ** -np.array([0.5, 1.5, 2.5, 3.5]), rtol=1e-14)
    s6 = -la.decay_slopes(6, "tnl") / (1 + 1e-5)
    np.testing.assert_allclose(s6, [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3], rtol=1e-14)


def test_decay_slopes_errors():
    with pytest.raises(ValueError, match="preset"):
        la.decay_slopes(8, "alibi")
    with pytest.raises(ValueError, match="layer"):
        la.decay_slopes(8, layer=3, num_layers=2)
    with pytest.raises(ValueError, match="H"):
        la.decay_slopes(0)
    with pytest.raises(TypeError, match="H"):
        la.decay_slopes(2.5)


# ----------------------------------------------------------------------- parity --

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind,opts", PRESETS, ids=PID)
def test_parity(rng, kind, opts, mode, dtype):
    q, k, v = make_qkv(rng, batch=(2, 8), T=45, D=7, E=5, dtype=dtype, scale=0.5)
    o = la.causal(q, k, v, kind=kind, mode=mode, chunk_size=16, **opts)
    assert o.dtype == dtype and o.shape == (2, 8, 45, 5)
    assert_close(o, la.reference.causal(q, k, v, kind=kind, **opts), dtype)
    preset = "retnet" if kind == "retnet" else opts.get("slopes", "tnl")
    g = la.decay_slopes(8, preset, opts.get("layer", 0), opts.get("num_layers", 1))
    scale = 7 ** -0.5 if kind == "retnet" else 1.0
    assert_close(o, explicit(q.astype(float), k.astype(float), v.astype(float), g, scale),
                 dtype)


@pytest.mark.parametrize("kind,opts", PRESETS, ids=PID)
@pytest.mark.parametrize("chunk", [1, 5, 16, 33, 64, 100, 128, 300])
def test_chunked_equals_recurrent(rng, kind, opts, chunk):
    q, k, v = make_qkv(rng, batch=(1, 8), T=130, D=6, E=4, scale=0.5)
    rec = la.causal(q, k, v, kind=kind, mode="recurrent", **opts)
    for mode in ("chunked", "parallel"):
        assert_close(la.causal(q, k, v, kind=kind, mode=mode, chunk_size=chunk, **opts), rec,
                     np.float64)


def test_bthd_and_decay_override(rng):
    q, k, v = make_qkv(rng, batch=(2, 4), T=40, D=6, E=3)
    o = la.causal(q, k, v, kind="lightning", chunk_size=8)
    ob = la.causal(*(np.swapaxes(x, 1, 2) for x in (q, k, v)), kind="lightning",
                   layout="bthd", chunk_size=8)
    assert_close(np.swapaxes(ob, 1, 2), o, np.float64)
    g = -rng.uniform(0, 0.2, 4)
    o2 = la.causal(q, k, v, kind="retnet", decay=g, scale=1.0)
    assert_close(o2, explicit(q, k, v, g), np.float64)
    # 2-D input: one head, the preset's first slope
    o3 = la.causal(q[0, 0], k[0, 0], v[0, 0], kind="lightning")
    assert_close(o3, explicit(q[0, 0], k[0, 0], v[0, 0], la.decay_slopes(1))[0], np.float64)


def test_decay_zero_is_linear(rng):
    q, k, v = make_qkv(rng, T=70, D=5, E=4)
    for kind in ("lightning", "retnet"):
        o = la.causal(q, k, v, kind=kind, decay=np.zeros(3), scale=1.0)
        assert_close(o, la.causal(q, k, v, kind="linear"), np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
def test_extreme_decay_is_diagonal(rng, mode, dtype):
    q, k, v = make_qkv(rng, T=150, D=6, E=4, dtype=dtype)
    o = la.causal(q, k, v, kind="lightning", decay=np.full(3, -30.0), mode=mode, chunk_size=64)
    assert np.isfinite(o).all()
    diag = np.sum(q * k, -1, keepdims=True, dtype=np.float64) * v
    la.testing.assert_close(o, diag, rtol=1e-6)


@pytest.mark.parametrize("kind", ["lightning", "retnet"])
@pytest.mark.parametrize("split", [1, 15, 16, 17, 50])
def test_split_and_resume(rng, kind, split):
    q, k, v = make_qkv(rng, batch=(2, 4), T=90, D=5, E=3)
    full, st = la.causal(q, k, v, kind=kind, chunk_size=16, return_state=True)
    o1, s1 = la.causal(q[..., :split, :], k[..., :split, :], v[..., :split, :], kind=kind,
                       chunk_size=16, return_state=True)
    o2, s2 = la.causal(q[..., split:, :], k[..., split:, :], v[..., split:, :], kind=kind,
                       chunk_size=16, initial_state=s1, return_state=True)
    assert_close(np.concatenate([o1, o2], -2), full, np.float64)
    assert_close(s2.S, st.S, np.float64)
    assert s2.t == 90 and s2.z is None
    # la.step, one token at a time
    s, outs = None, []
    for t in range(20):
        o_t, s = la.step(q[..., t, :], k[..., t, :], v[..., t, :], s, kind=kind)
        outs.append(o_t)
    assert_close(np.stack(outs, -2), full[..., :20, :], np.float64)


def test_norm_mode(rng):
    q, k, v = make_qkv(rng, batch=(1, 2), T=30, D=4, E=6)
    o = la.causal(q, k, v, kind="retnet", normalize="norm")
    assert_close(o, la.reference.causal(q, k, v, kind="retnet", normalize="norm"), np.float64)


def test_errors(rng):
    q, k, v = make_qkv(rng, T=10, D=4, E=3)
    with pytest.raises(ValueError, match="decay"):
        la.causal(q, k, v, kind="lightning", decay=np.array([0.1, -0.1, 0.0]))
    with pytest.raises(ValueError, match="no non-causal form"):
        la.noncausal(q, k, v, kind="retnet")
    with pytest.raises(TypeError, match="slopes"):
        la.causal(q, k, v, kind="retnet", slopes="fla")
    with pytest.raises(ValueError, match="slopes"):
        la.causal(q, k, v, kind="lightning", slopes="alibi")
    with pytest.raises(ValueError, match="layer"):
        la.causal(q, k, v, kind="lightning", layer=5, num_layers=2)
    with pytest.raises(TypeError, match="horizon"):
        la.causal(q, k, v, kind="lightning", horizon=10)
    assert la.kinds()["lightning"]["causal"] == MODES
    assert not la.kinds()["retnet"]["noncausal"]


# ---------------------------------------- "linear": gated linear attention (paper) --

def test_linear_gated_variant_forget_gate(rng):
    """de Brebisson & Vincent 2016: C = sum_i h_i h_i^T, r = C q.  Their gated members
    control what is written into C; the forget-gate form C_t = a_t C_{t-1} + h_t h_t^T is
    kind="linear" with a per-token decay = log a_t.  Whether this is the paper's exact
    parameterisation is unverified (docs/design/kinds.md §1)."""
    T, k_ = 60, 6
    h = rng.standard_normal((2, T, k_))
    q = rng.standard_normal((2, T, k_))
    a = 1 / (1 + np.exp(-rng.standard_normal((2, T))))          # sigmoid forget gates
    g = np.log(a)
    o, st = la.causal(q, h, h, kind="linear", decay=g, return_state=True, chunk_size=16)
    C = np.zeros((2, k_, k_))
    ref = np.zeros((2, T, k_))
    for t in range(T):
        C = a[:, t, None, None] * C + np.einsum("bi,bj->bij", h[:, t], h[:, t])
        ref[:, t] = np.einsum("bij,bj->bi", C, q[:, t])
    assert_close(o, ref, np.float64)
    assert_close(st.S, C, np.float64)
    np.testing.assert_allclose(st.S, np.swapaxes(st.S, -1, -2), rtol=1e-12)
    # decay = 0 reproduces the ungated mechanism r = H^T (H q)
    o0 = la.causal(q, h, h, kind="linear", decay=np.zeros((2, T)))
    assert_close(o0, la.causal(q, h, h, kind="linear"), np.float64)
    Hq = la.noncausal(q, h, h, kind="linear")
    assert_close(Hq, np.einsum("bsi,bsj,btj->bti", h, h, q), np.float64)


def test_linear_write_gates(rng):
    """Write gates by pre-scaling: a scalar write weight gamma enters linearly
    (k = gamma h, v = h), a gate on the written vector squared (k = v = gamma h)."""
    T, k_ = 40, 5
    h = rng.standard_normal((T, k_))
    q = rng.standard_normal((T, k_))
    gam = rng.uniform(0.1, 1, T)
    o1 = la.noncausal(q, gam[:, None] * h, h, kind="linear")
    assert_close(o1, q @ (h.T @ np.diag(gam) @ h).T, np.float64)
    o2 = la.noncausal(q, gam[:, None] * h, gam[:, None] * h, kind="linear")
    assert_close(o2, q @ (h.T @ np.diag(gam**2) @ h).T, np.float64)
