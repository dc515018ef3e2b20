"""The block-state primitives: la.transition, la.combine, la.read_out (and the non-causal
key-block states): a scan over blocks equals one la.causal / la.noncausal call."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import linattn as la
from linattn import _algebra as alg

from _blockcases import (CASES, NONCAUSAL_CASES, SEQUENTIAL_CASES, TOL, assert_states_close,
                         case_id, make, time_slice, tslice)

SPLITS = [0, 1, 7, 8, 21, 33, 40]  # blocks of 1, 6, 1, 13, 12, 7 tokens
# LAVO's memory_scope="before_local" has a combine (the ring's rows enter memory when they
# leave the window, projected through the bases): windows shorter and longer than blocks
BEFORE_LOCAL = [
    ("lavo", {"window": 5, "memory_scope": "before_local", "shared": True}),
    ("lavo", {"window": 5, "memory_scope": "before_local", "window_mode": "block",
              "shared": True}),
    ("lavo", {"window": 12, "memory_scope": "before_local"}),
    ("lavo", {"window": 3, "memory_scope": "before_local", "window_mode": "block"}),
]
SCAN_CASES = CASES + [c for c in BEFORE_LOCAL if c not in CASES]
CHAIN_CASES = [c for c in SEQUENTIAL_CASES if not la.parallel(c[0], **c[1])]


def _scan(q, k, v, kind, opts, splits, layout="...td", initial=None):
    """Pass 1 (every block's transition), the scan (combine), pass 3 (read_out)."""
    t0 = 0 if initial is None else initial.t
    deltas = [la.transition(tslice(q, a, b, layout), tslice(k, a, b, layout),
                            tslice(v, a, b, layout), kind, start=t0 + a, layout=layout,
                            **time_slice(opts, a, b, layout))
              for a, b in zip(splits[:-1], splits[1:])]
    state, outs = initial, []
    for (a, b), d in zip(zip(splits[:-1], splits[1:]), deltas):
        outs.append(la.read_out(tslice(q, a, b, layout), tslice(k, a, b, layout),
                                tslice(v, a, b, layout), state, kind, layout=layout,
                                **time_slice(opts, a, b, layout)))
        state = la.combine(state, d)
    return np.concatenate(outs, axis=-3 if layout == "bthd" else -2), alg.strip(state), deltas


def test_every_causal_kind_has_a_case():
    causal = {n for n, d in la.kinds().items() if d["causal"]}
    assert causal <= {c[0] for c in CASES}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SCAN_CASES, ids=case_id)
def test_scan_equals_one_call(case, dtype, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng, dtype=dtype)
    assert la.parallel(kind, **{n: x for n, x in kw.items() if n not in ("decay", "gate")})
    o_ref, st_ref = la.causal(q, k, v, kind, return_state=True, **kw)
    o, st, _ = _scan(q, k, v, kind, kw, SPLITS)
    la.testing.assert_close(o, o_ref, rtol=TOL[np.dtype(dtype)])
    assert o.dtype == o_ref.dtype
    assert_states_close(st, st_ref, dtype)


@pytest.mark.parametrize("case", SCAN_CASES, ids=case_id)
def test_scan_layout_bthd_and_initial_state(case, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng, layout="bthd")
    kw0, kw1 = time_slice(kw, 0, 9, "bthd"), time_slice(kw, 9, 40, "bthd")
    _, st0 = la.causal(tslice(q, 0, 9, "bthd"), tslice(k, 0, 9, "bthd"),
                       tslice(v, 0, 9, "bthd"), kind, return_state=True, layout="bthd", **kw0)
    q1, k1, v1 = (tslice(x, 9, 40, "bthd") for x in (q, k, v))
    o_ref, st_ref = la.causal(q1, k1, v1, kind, initial_state=st0, return_state=True,
                              layout="bthd", **kw1)
    o, st, _ = _scan(q1, k1, v1, kind, kw1, [0, 5, 6, 31], layout="bthd", initial=st0)
    la.testing.assert_close(o, o_ref, rtol=1e-10)
    assert_states_close(st, st_ref, np.float64)


@pytest.mark.parametrize("case", SCAN_CASES, ids=case_id)
def test_combine_is_associative(case, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng)
    _, _, d = _scan(q, k, v, kind, kw, [0, 3, 17, 40])
    left = la.combine(la.combine(d[0], d[1]), d[2])
    right = la.combine(d[0], la.combine(d[1], d[2]))
    assert_states_close(alg.strip(left), alg.strip(right), np.float64)
    if "log_decay" in d[2].extra:
        np.testing.assert_allclose(left.extra["log_decay"], right.extra["log_decay"])


@pytest.mark.parametrize("case", [c for c in SCAN_CASES if alg._fast_ok(
    c[0], alg._opts(c[0], c[1]), c[1])], ids=case_id)
@pytest.mark.parametrize("layout", ["...td", "bthd"])
def test_fast_transition_equals_the_kernels_state(case, layout, rng):
    """The one-GEMM transition (key features, no outputs) equals la.causal's state."""
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng, T=70, layout=layout)
    _, st_ref = la.causal(q, k, v, kind, return_state=True, layout=layout, **kw)
    st = la.transition(q, k, v, kind, start=0, layout=layout, **kw)
    assert_states_close(alg.strip(st), st_ref, np.float64)
    with pytest.raises(type(ValueError())):
        la.transition(q, k[..., :5], v, kind, layout=layout, **kw)


def test_fast_transition_checks_every_token(rng):
    q, k, v, kw = make("rfa", {"num_features": 16, "seed": 0, "gate": "gate"}, rng)
    kw["gate"][0, 1, 30] = 1.5
    with pytest.raises(ValueError) as ref:
        la.causal(q, k, v, "rfa", **kw)
    with pytest.raises(ValueError) as got:
        la.transition(q, k, v, "rfa", **kw)
    assert str(got.value) == str(ref.value)
    q, k, v, kw = make("cosformer", {"horizon": 50}, rng)
    with pytest.raises(ValueError, match="horizon=50 is too small: positions 1..60"):
        la.transition(q, k, v, "cosformer", start=20, **kw)


def test_log_decay_is_the_sum_of_clamped_log_decays(rng):
    q, k, v, kw = make("mamba2", {"decay": "per_token"}, rng)
    kw["decay"][0, 1, 3] = -np.inf
    st = la.transition(q, k, v, "mamba2", **kw)
    want = np.maximum(kw["decay"], -1000.0).sum(-1)
    np.testing.assert_allclose(st.extra["log_decay"], want)


def test_positions_reach_the_kernels_through_start(rng):
    """cosFormer: a block's transition at start p equals the state a stream gives that
    block when entering it with a zero state at p."""
    q, k, v, kw = make("cosformer", {"horizon": 256}, rng)
    st = la.transition(q, k, v, "cosformer", start=100, **kw)
    F, E = 16, v.shape[-1]
    zero = la.State(np.zeros((F, E)), np.zeros(F), 100, "cosformer",
                    {"horizon": np.array(256)})
    _, want = la.causal(q, k, v, "cosformer", initial_state=zero, return_state=True, **kw)
    assert st.t == 140
    assert_states_close(st, want, np.float64)
    assert not np.allclose(st.S, la.transition(q, k, v, "cosformer", start=0, **kw).S)


@pytest.mark.parametrize("case", CHAIN_CASES, ids=case_id)
def test_kinds_without_combine(case, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng)
    assert not la.parallel(kind, **kw)
    if kind == "performer":
        d = la.transition(q, k, v, kind, **kw)
        with pytest.raises(ValueError, match="no state combine"):
            la.combine(d, d)


def test_parallel_flags():
    assert la.parallel("elu") and la.parallel("performer")
    assert not la.parallel("performer", stabilizer="global")
    assert la.parallel("performer", stabilizer="global", features="relu")
    assert la.parallel("lavo") and la.parallel("lavo", memory_scope="before_local")
    assert not la.parallel("lara")
    with pytest.raises(ValueError, match="kind must be one of"):
        la.parallel("nope")


def test_lavo_before_local_bookkeeping(rng):
    """The transition keeps the bases and the window mode for the combine; strip removes
    them, and the stripped state resumes la.causal."""
    q, k, v, kw = make("lavo", BEFORE_LOCAL[1][1], rng)
    d = la.transition(q[..., :9, :], k[..., :9, :], k[..., :9, :], "lavo", **kw)
    assert d.extra["memory_bases"].shape == (8, 8)
    assert str(d.extra["memory_window"]) == "block"
    st = alg.strip(d)
    assert "memory_bases" not in st.extra and "memory_window" not in st.extra
    back = pickle.loads(pickle.dumps(d))
    np.testing.assert_array_equal(back.extra["memory_bases"], d.extra["memory_bases"])
    o_ref = la.causal(q, k, k, "lavo", **kw)[..., 9:, :]
    o = la.causal(q[..., 9:, :], k[..., 9:, :], k[..., 9:, :], "lavo", initial_state=st, **kw)
    la.testing.assert_close(o, o_ref, rtol=1e-10)
    # rows of a one-token block enter memory in later blocks: sums grow only then
    one = la.transition(q[..., 9:10, :], k[..., 9:10, :], k[..., 9:10, :], "lavo", start=9,
                        **kw)
    assert not np.asarray(one.extra["sums"]).any()


def test_state_with_log_decay_pickles(rng):
    q, k, v, kw = make("retnet", {}, rng)
    st = la.transition(q, k, v, "retnet", start=3, **kw)
    back = pickle.loads(pickle.dumps(st))
    assert_states_close(back, st, np.float64)
    np.testing.assert_array_equal(back.extra["log_decay"], st.extra["log_decay"])
    assert back.t == 43


def test_errors_are_the_entry_points(rng):
    q, k, v, kw = make("elu", {}, rng)
    for args, kwargs in [((q, k[..., :7], v), {}), ((q, k, v), {"decay": np.ones(2)}),
                         ((q, k, v), {"normalize": "nope"}), ((q, k, v), {"foo": 1})]:
        with pytest.raises(Exception) as ref:
            la.causal(*args, "elu", **kwargs)
        with pytest.raises(type(ref.value)) as got:
            la.transition(*args, "elu", **kwargs)
        assert str(got.value) == str(ref.value)
    with pytest.raises(ValueError, match="start must be"):
        la.transition(q, k, v, "elu", start=-1)
    with pytest.raises(ValueError, match="kinds 'elu' and 'relu'"):
        la.combine(la.transition(q, k, v, "elu"), la.transition(q, k, v, "relu"))


def test_slice_and_join_states(rng):
    q, k, v, kw = make("performer", {"num_features": 16, "seed": 0}, rng, batch=(3, 4))
    _, st = la.causal(q, k, v, "performer", return_state=True, **kw)
    grid = np.empty((2, 2), dtype=object)
    for i, rows in enumerate((slice(0, 2), slice(2, 3))):
        for j, cols in enumerate((slice(0, 1), slice(1, 4))):
            grid[i, j] = alg.slice_state(st, (rows, cols), (3, 4))
    assert grid[1, 1].S.shape == (1, 3, 16, v.shape[-1])
    assert_states_close(alg.join_states(grid), st, np.float64)


# ------------------------------------------------------------------ non-causal --

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", NONCAUSAL_CASES, ids=case_id)
def test_noncausal_key_blocks(case, dtype, rng):
    kind, opts = case
    q, k, v, kw = make(kind, opts, rng, T=30, S=30 if kind in ("lavo", "transnormer") else 45,
                       dtype=dtype)
    ref = la.noncausal(q, k, v, kind, **kw)
    S = k.shape[-2]
    if kind == "cosformer":
        kw["horizon"] = max(q.shape[-2], S)  # one call's default, explicit per block
    if not la.noncausal_reduces(kind, **kw):
        assert kind in ("lavo", "lara", "ra", "transnormer") or \
            kw.get("stabilizer") == "global"
        return
    state = None
    for a, b in [(0, 1), (1, 17), (17, S)]:
        d = la.transition(None, k[..., a:b, :], v[..., a:b, :], kind, start=a, causal=False,
                          **kw)
        state = la.combine(state, d)
    o = np.concatenate([la.read_out(q[..., a:b, :], None, None, state, kind, causal=False,
                                    start=a, **kw) for a, b in [(0, 11), (11, 30)]], axis=-2)
    la.testing.assert_close(o, ref, rtol=TOL[np.dtype(dtype)])
    assert o.dtype == ref.dtype


def test_noncausal_performer_large_logits_stay_finite(rng):
    """Key blocks on different maxima: the rescaled combine neither overflows nor
    underflows where one call does not."""
    q, k, v, kw = make("performer", {"num_features": 16, "seed": 0}, rng, T=20, S=40)
    k[..., 20:, :] *= 12.0
    ref = la.noncausal(q, k, v, "performer", **kw)
    a = la.transition(None, k[..., :20, :], v[..., :20, :], "performer", causal=False, **kw)
    b = la.transition(None, k[..., 20:, :], v[..., 20:, :], "performer", start=20,
                      causal=False, **kw)
    o = la.read_out(q, None, None, la.combine(a, b), "performer", causal=False, **kw)
    assert np.isfinite(o).all()
    la.testing.assert_close(o, ref, rtol=1e-10)


@pytest.mark.parametrize("kind", ["performer", "rfa"])
def test_primitives_need_fixed_random_features(kind, rng):
    """seed=None is fresh entropy in the entry points: each block would get its own
    projection, so the primitives ask for a seed or a projection instead."""
    q, k, v = (rng.standard_normal((1, 8, 4)) for _ in range(3))
    with pytest.raises(ValueError, match="pass seed= \\(or projection=\\)"):
        la.transition(q, k, v, kind)
    with pytest.raises(ValueError, match="pass seed= \\(or projection=\\)"):
        la.read_out(q, k, v, None, kind)
    la.transition(q, k, v, kind, seed=1)


# ------------------------------------------------------------- selective scan --

def _sscan_args(rng, Bb=2, Dc=5, N=3, L=30):
    u = rng.standard_normal((Bb, Dc, L))
    delta = 0.5 * rng.standard_normal((Bb, Dc, L))
    A = -np.exp(rng.standard_normal((Dc, N)))
    B, C = rng.standard_normal((Bb, N, L)), rng.standard_normal((Bb, N, L))
    return u, delta, A, B, C, rng.standard_normal(Dc)


@pytest.mark.parametrize("softplus", [False, True])
def test_sscan_block_scan_equals_one_call(softplus, rng):
    """Selective-scan time blocks: (final state from zero, A sum dt) per block, combined,
    give la.selective_scan's state; each block read out from its entering state gives its
    outputs; the combine is associative."""
    u, delta, A, B, C, bias = _sscan_args(rng)
    h0 = rng.standard_normal((2, 5, 3))
    ref, h_ref = la.selective_scan(u, delta, A, B, C, None, None, bias, softplus, h0, True)
    splits = [0, 1, 9, 10, 30]
    parts = [alg.sscan_transition(u[..., a:b], delta[..., a:b], A, B[..., a:b], C[..., a:b],
                                  bias, softplus) for a, b in zip(splits[:-1], splits[1:])]
    state, outs = (h0, None), []
    for (a, b), p in zip(zip(splits[:-1], splits[1:]), parts):
        outs.append(la.selective_scan(u[..., a:b], delta[..., a:b], A, B[..., a:b],
                                      C[..., a:b], None, None, bias, softplus, state[0]))
        state = alg.sscan_combine(state, p)
    la.testing.assert_close(np.concatenate(outs, axis=-1), ref, rtol=1e-10)
    la.testing.assert_close(state[0], h_ref, rtol=1e-10)
    left = alg.sscan_combine(alg.sscan_combine(parts[0], parts[1]), parts[2])
    right = alg.sscan_combine(parts[0], alg.sscan_combine(parts[1], parts[2]))
    la.testing.assert_close(left[0], right[0], rtol=1e-12)
    np.testing.assert_allclose(left[1], right[1], rtol=1e-12)
    # the log-decay is A times the summed steps (softplus'd, biased)
    dt = delta[..., :1] + bias[:, None]
    if softplus:
        dt = np.logaddexp(0.0, dt)
    np.testing.assert_allclose(parts[0][1], A[None] * dt.sum(-1)[..., None], rtol=1e-12)
