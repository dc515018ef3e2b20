"""Messages that point to the fix: each keeps the argument / expected / actual contract
and adds the hint a new user needs (plain numbers, log-decay, did-you-mean, la.noncausal,
step's token axis, the bthd decay layout, grouped-query attention)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la


@pytest.fixture
def qkv():
    r = np.random.default_rng(0)
    return (r.standard_normal((2, 4, 6, 3)) for _ in range(3))


def test_positive_decay_plain_numbers_and_log_hint(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError) as e:
        la.causal(q, k, v, decay=np.full(4, np.float64(0.9)))
    msg = str(e.value)
    assert "got 0.9 at index (0,)" in msg
    assert "np.float64" not in msg and "np.int64" not in msg
    assert "pass np.log(gamma)" in msg


def test_scalar_numbers_plain(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match=r"scale must be finite and > 0, got -2.0$"):
        la.causal(q, k, v, scale=np.float64(-2.0))
    with pytest.raises(ValueError, match=r"gate values must lie in \[0, 1\], got 1.5 at "
                                         r"index \(0, 0, 0\)"):
        la.causal(q, k, v, "rfa", seed=0, gate=np.full((2, 4, 6), 1.5))


@pytest.mark.parametrize("kind, hint", [("performr", "performer"), ("ELU", "elu"),
                                        ("lightening", "lightning")])
def test_unknown_kind_did_you_mean(qkv, kind, hint):
    q, k, v = qkv
    with pytest.raises(ValueError, match=f"did you mean '{hint}'"):
        la.causal(q, k, v, kind)


def test_unknown_kind_without_near_match_lists_kinds(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError) as e:
        la.causal(q, k, v, "xyz")
    assert "kind must be one of" in str(e.value) and "did you mean" not in str(e.value)


def test_unknown_mode_did_you_mean_and_noncausal(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="did you mean 'chunked'"):
        la.causal(q, k, v, mode="chunk")
    with pytest.raises(ValueError, match=r"use la\.noncausal"):
        la.causal(q, k, v, mode="noncausal")


def test_unknown_option_did_you_mean(qkv):
    q, k, v = qkv
    with pytest.raises(TypeError, match="did you mean 'window'"):
        la.causal(q, k, k, "lavo", windw=3)


def test_step_with_a_time_axis(qkv):
    q, k, v = qkv
    st = la.State.zeros("elu", (2, 4), 3)
    with pytest.raises(ValueError, match="la.step takes one token without the T axis"):
        la.step(q[..., :1, :], k[..., :1, :], v[..., :1, :], st)


def test_bthd_shaped_decay_without_layout(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match=r"layout='bthd'.*np\.swapaxes\(decay, -1, -2\)"):
        la.causal(q, k, v, "linear", decay=np.full((2, 6, 4), -0.1))


@pytest.mark.parametrize("layout", ["...td", "bthd"])
def test_grouped_query_hint(layout):
    r = np.random.default_rng(1)
    q, k = r.standard_normal((2, 8, 5, 3)), r.standard_normal((2, 2, 5, 3))
    if layout == "bthd":
        q, k = np.swapaxes(q, 1, 2), np.swapaxes(k, 1, 2)
    with pytest.raises(ValueError) as e:
        la.causal(q, k, k, layout=layout)
    msg = str(e.value)
    assert "do not broadcast" in msg  # the contract: argument, expected, actual
    assert "grouped-query attention (2 groups of 4 query heads" in msg
    assert "(B, 2, 4, T, D)" in msg and "(B, 2, 1, T, D)" in msg


def test_grouped_query_as_the_hint_says_works():
    r = np.random.default_rng(2)
    B, G, R, T, D = 2, 2, 3, 7, 4
    q = r.standard_normal((B, G * R, T, D))
    k, v = r.standard_normal((B, G, T, D)), r.standard_normal((B, G, T, D))
    o = la.causal(q.reshape(B, G, R, T, D), k[:, :, None], v[:, :, None])
    rep = la.causal(q, np.repeat(k, R, axis=1), np.repeat(v, R, axis=1))
    np.testing.assert_allclose(o.reshape(B, G * R, T, D), rep, rtol=1e-12, atol=1e-12)
