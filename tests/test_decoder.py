"""la.Decoder: the decoding loop's front end, bit for bit la.step's full path."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn import _registry
from linattn.testing import assert_close

KW = {"cosformer": {"horizon": 64}, "rfa": {"seed": 0, "num_features": 16},
      "performer": {"seed": 0, "num_features": 16}, "lavo": {"window": 4},
      "lightning": {"slopes": "fla", "layer": 1, "num_layers": 4}}
STEP_KINDS = sorted(n for n in la.kinds() if _registry.get(n).causal_modes)
B, T, D = (2, 3), 7, 8


def _inputs(dtype, seed=0):
    r = np.random.default_rng(seed)
    q, k, v = (r.standard_normal(B + (T, D)).astype(dtype) * 0.5 for _ in range(3))
    g = -0.1 * np.abs(r.standard_normal(B + (T,)))
    return q, k, v, g


def test_every_causal_kind_is_covered():
    assert {"linear", "elu", "relu", "lightning", "retnet", "mamba2", "rfa", "performer",
            "cosformer", "transnormer", "lavo"} <= set(STEP_KINDS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", STEP_KINDS)
def test_decoder_is_bit_identical_to_the_full_step_path(kind, dtype):
    """Decoder.step and la.step(inplace=True) (both fast paths) against la.step with
    inplace=False (the full path: every check, a new state per step)."""
    q, k, v, g = _inputs(dtype)
    kw = KW.get(kind, {})
    dec = la.Decoder(kind, B, D, D, dtype=dtype, **kw)
    st_ip = la.State.zeros(kind, B, D, D, dtype=dtype, **kw)
    st_new = st_ip.copy()
    S_id = None if dec.state.S is None else id(dec.state.S)
    for t in range(T):
        dk = {"decay": g[..., t]} if kind == "mamba2" else {}
        o_dec = dec.step(q[..., t, :], k[..., t, :], v[..., t, :], **dk)
        o_ip, st_ip2 = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st_ip, inplace=True,
                               **kw, **dk)
        o_new, st_new = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st_new, **kw, **dk)
        assert st_ip2 is st_ip
        assert o_dec.dtype == o_new.dtype == dtype and o_dec.shape == B + (D,)
        np.testing.assert_array_equal(o_dec, o_new)
        np.testing.assert_array_equal(o_ip, o_new)
    assert dec.state.t == st_new.t == T and dec.t == T
    for name in ("S", "z"):
        a, b = getattr(dec.state, name), getattr(st_new, name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(getattr(st_ip, name), b)
    for key, val in st_new.extra.items():
        np.testing.assert_array_equal(np.asarray(dec.state.extra[key]), np.asarray(val))
    if S_id is not None:
        assert id(dec.state.S) == S_id  # updated where it is


@pytest.mark.parametrize("kind", ["elu", "retnet", "mamba2", "cosformer", "rfa", "performer",
                                  "lavo"])
def test_decoder_matches_causal(kind):
    q, k, v, g = _inputs(np.float64, 1)
    kw = KW.get(kind, {})
    full_kw = dict(kw, decay=g) if kind == "mamba2" else kw
    ref = la.causal(q, k, v, kind, **full_kw)
    dec = la.Decoder(kind, B, D, D, dtype=np.float64, **kw)
    outs = [dec.step(q[..., t, :], k[..., t, :], v[..., t, :],
                     *((g[..., t],) if kind == "mamba2" else ())) for t in range(T)]
    assert_close(np.stack(outs, -2), ref, 1e-12)


def test_decoder_fast_path_is_taken():
    for kind in ("linear", "elu", "relu", "lightning", "retnet", "mamba2", "transnormer",
                 "cosformer", "rfa", "performer", "lavo"):
        dec = la.Decoder(kind, (4,), 8, dtype=np.float32, **KW.get(kind, {}))
        assert dec._plan is not None, kind
    assert la.Decoder("transnormer", (4,), 8, diag_block=4)._plan is None  # la.step path


def _three_paths(kind, dtype, steps, **kw):
    """Outputs and final states of Decoder.step, la.step(inplace=True) and la.step (the
    full path), which must agree bit for bit."""
    q, k, v, _ = _inputs(dtype, 11)
    dec = la.Decoder(kind, B, D, D, dtype=dtype, **kw)
    st_ip = la.State.zeros(kind, B, D, D, dtype=dtype, **kw)
    st_new = st_ip.copy()
    for t in range(steps):
        o_dec = dec.step(q[..., t, :], k[..., t, :], v[..., t, :])
        o_ip, _ = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st_ip, inplace=True, **kw)
        o_new, st_new = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st_new, **kw)
        np.testing.assert_array_equal(o_dec, o_new)
        np.testing.assert_array_equal(o_ip, o_new)
    for st in (dec.state, st_ip):
        for name in ("S", "z"):
            a, b = getattr(st, name), getattr(st_new, name)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
        for key, val in st_new.extra.items():
            np.testing.assert_array_equal(np.asarray(st.extra[key]), np.asarray(val))
    return dec, st_new


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", [{"features": "hyperbolic"}, {"normalize": "none"},
                                  {"normalize": "norm"}, {"num_features": 12},
                                  {"projection": "fortran"}])
def test_performer_step_paths_agree_for_every_option(opts, dtype):
    """The in-place Performer step (its kernel's one-token path on the state where it is)
    against la.step's full path, for the feature maps, normalisers, a width that is not
    a multiple of 16 and a projection in either memory order; and la.causal within
    tolerance."""
    kw = dict(opts)
    if kw.pop("projection", None):
        kw["projection"] = np.asfortranarray(la.random_features(D, 20, seed=3))
    else:
        kw.setdefault("num_features", 16)
        kw["seed"] = 0
    dec, st = _three_paths("performer", dtype, T, **kw)
    assert dec._plan is not None
    q, k, v, _ = _inputs(dtype, 11)
    assert_close(la.causal(q, k, v, "performer", **kw)[..., -1, :],
                 la.step(q[..., T - 1, :], k[..., T - 1, :], v[..., T - 1, :],
                         la.causal(q[..., :T - 1, :], k[..., :T - 1, :], v[..., :T - 1, :],
                                   "performer", return_state=True, **kw)[1], **kw)[0],
                 1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", [{"window": 3}, {"window": 4, "window_mode": "block"},
                                  {"window": 2, "memory_scope": "before_local"},
                                  {"window": 0}, {"window": 9}])
def test_lavo_step_paths_agree_for_every_option(opts, dtype):
    """The in-place LAVO step (rings read and shifted where they are) against la.step's
    full path, with windows shorter and longer than the stream."""
    dec, _ = _three_paths("lavo", dtype, T, **opts)
    assert dec._plan is not None
    # a keys-are-values stream (k_t is v_t), and its rejection of other values
    q, k, _, _ = _inputs(dtype, 14)
    dec = la.Decoder("lavo", B, D, dtype=dtype, **opts)
    st = la.State.zeros("lavo", B, D, dtype=dtype, **opts)
    assert dec._plan is not None and "ring_v" not in st.extra
    for t in range(T):
        o = dec.step(q[..., t, :], k[..., t, :], k[..., t, :])
        o_ref, st = la.step(q[..., t, :], k[..., t, :], k[..., t, :], st, **opts)
        np.testing.assert_array_equal(o, o_ref)
    for key, val in st.extra.items():
        np.testing.assert_array_equal(np.asarray(dec.state.extra[key]), np.asarray(val))
    with pytest.raises(ValueError, match="lacks"):
        dec.step(q[..., 0, :], k[..., 0, :], k[..., 0, :].copy())


def test_random_feature_rows_do_not_depend_on_the_projection_layout():
    """One token's features (the step's path) have the same bits for a projection in
    either memory order; a block of tokens agrees with them within rounding."""
    r = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        x = r.standard_normal((5, 1, 24)).astype(dtype)
        W = la.random_features(24, 40, seed=1).astype(dtype)
        a = la.features.rfa(x, W)
        np.testing.assert_array_equal(a, la.features.rfa(x, np.asfortranarray(W)))
        xs = np.concatenate([x, x], axis=1)
        assert_close(la.features.rfa(xs, W)[:, :1], a, 1e-6 if dtype == np.float32 else 1e-14)


def test_plans_follow_replaced_extra_arrays():
    """Performer's running maximum and LAVO's rings replaced from outside (or by a step
    that took la.step's path): the plans check and use the new arrays."""
    q, k, v, _ = _inputs(np.float64, 13)
    for kind, kw in (("performer", {"seed": 0, "num_features": 16}), ("lavo", {"window": 3})):
        dec = la.Decoder(kind, B, D, D, **kw)
        ref = la.State.zeros(kind, B, D, D, **kw)
        for t in range(T):
            if t == 2:
                for key in list(dec.state.extra):
                    dec.state.extra[key] = np.array(dec.state.extra[key])  # fresh copies
            if t == 4:
                key = "max" if kind == "performer" else "ring_k"
                dec.state.extra[key] = dec.state.extra[key].copy()
                dec.state.extra[key].flags.writeable = False  # la.step replaces it
            o = dec.step(q[..., t, :], k[..., t, :], v[..., t, :])
            o_ref, ref = la.step(q[..., t, :], k[..., t, :], v[..., t, :], ref, **kw)
            np.testing.assert_array_equal(o, o_ref)
        assert dec._plan is not None and dec.state.t == T
        for key, val in ref.extra.items():
            np.testing.assert_array_equal(np.asarray(dec.state.extra[key]), np.asarray(val))


def test_decoder_continues_a_state_and_takes_its_kind():
    q, k, v, _ = _inputs(np.float64, 2)
    ref = la.causal(q, k, v, "retnet")
    o0, st = la.causal(q[..., :3, :], k[..., :3, :], v[..., :3, :], "retnet",
                       return_state=True)
    dec = la.Decoder(state=st)
    assert dec.kind == "retnet" and dec.state is st
    outs = [dec.step(q[..., t, :], k[..., t, :], v[..., t, :]) for t in range(3, T)]
    np.testing.assert_allclose(np.stack(outs, -2), ref[..., 3:, :], rtol=1e-12, atol=1e-12)
    # a random-feature state does not tell D: the first step learns it
    q, k, v, _ = _inputs(np.float64, 3)
    _, st = la.causal(q[..., :2, :], k[..., :2, :], v[..., :2, :], "rfa", return_state=True,
                      seed=1, num_features=8)
    dec = la.Decoder(state=st, seed=1, num_features=8)
    ref = la.causal(q, k, v, "rfa", seed=1, num_features=8)
    outs = [dec.step(q[..., t, :], k[..., t, :], v[..., t, :]) for t in range(2, T)]
    assert dec._plan is not None
    np.testing.assert_allclose(np.stack(outs, -2), ref[..., 2:, :], rtol=1e-12, atol=1e-12)


def test_other_shapes_and_dtypes_take_la_step():
    q, k, v, _ = _inputs(np.float64, 4)
    dec = la.Decoder("elu", B, D)
    st = la.State.zeros("elu", B, D)
    kb = k[:, :1]  # one key head for every head: broadcasts
    o = dec.step(q[..., 0, :], kb[..., 0, :], v[..., 0, :])
    o_ref, st = la.step(q[..., 0, :], kb[..., 0, :], v[..., 0, :], st)
    np.testing.assert_array_equal(o, o_ref)
    ql = q[..., 1, :].tolist()  # lists are arrays too
    np.testing.assert_array_equal(dec.step(ql, k[..., 1, :], v[..., 1, :]),
                                  la.step(ql, k[..., 1, :], v[..., 1, :], st)[0])
    dec32 = la.Decoder("elu", B, D, dtype=np.float32)  # float64 tokens: la.step's error
    with pytest.raises(ValueError, match="inplace=True needs a writeable, aligned state.S"):
        dec32.step(q[..., 2, :], k[..., 2, :], v[..., 2, :])
    assert dec32.state.t == 0


def test_decoder_errors_and_rejections_leave_the_state_intact():
    with pytest.raises(ValueError, match="did you mean 'relu'"):
        la.Decoder("relus", (2,), 4)
    with pytest.raises(TypeError, match="does not accept"):
        la.Decoder("elu", (2,), 4, window=3)
    with pytest.raises(ValueError, match="horizon"):
        la.Decoder("cosformer", (2,), 4)
    with pytest.raises(TypeError, match="needs D"):
        la.Decoder("elu", (2,))
    st = la.State.zeros("elu", (2,), 4)
    with pytest.raises(TypeError, match="not both"):
        la.Decoder("elu", (2,), 4, state=st)
    with pytest.raises(ValueError, match="state comes from kind 'elu', not 'relu'"):
        la.Decoder("relu", state=st)
    with pytest.raises(TypeError, match="must be a linattn.State"):
        la.Decoder(state={"S": 1})
    q, k, v, g = _inputs(np.float64, 5)
    dec = la.Decoder("mamba2", B, D)
    dec.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], g[..., 0])
    before = dec.state.copy()
    bad = g[..., 1].copy()
    bad[1, 2] = 0.5
    with pytest.raises(ValueError, match="decay is a log-decay and must be <= 0"):
        dec.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], bad)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="decay must not contain NaN"):
        dec.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], bad)
    with pytest.raises(ValueError, match="requires decay"):
        dec.step(q[..., 1, :], k[..., 1, :], v[..., 1, :])
    with pytest.raises(ValueError, match="k has 5 features but q has 8"):
        dec.step(q[..., 1, :], k[..., 1, :5], v[..., 1, :], g[..., 1])
    with pytest.raises(TypeError, match="k_t must be a float32, float64 or float16 array"):
        dec.step(q[..., 1, :], k[..., 1, :].astype(int), v[..., 1, :], g[..., 1])
    assert dec.state.t == before.t
    np.testing.assert_array_equal(dec.state.S, before.S)
    dec32 = la.Decoder("retnet", B, D, dtype=np.float32, decay=-0.1)
    with pytest.raises(TypeError, match="per-step decay is not taken as well"):
        dec32.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], g[..., 0])
    with pytest.raises(ValueError, match="horizon=3 is too small"):
        c = la.Decoder("cosformer", (1,), 2, horizon=3)
        for _ in range(5):
            c.step(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)))
    assert c.state.t == 4


def test_replaced_state_arrays_are_checked_again():
    q, k, v, _ = _inputs(np.float64, 6)
    dec = la.Decoder("elu", B, D)
    dec.step(q[..., 0, :], k[..., 0, :], v[..., 0, :])
    dec.state.S = dec.state.S.copy()
    dec.state.S.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        dec.step(q[..., 1, :], k[..., 1, :], v[..., 1, :])
    dec.state.S = dec.state.S.copy()  # writeable again: a fresh array, updated from now on
    dec.step(q[..., 1, :], k[..., 1, :], v[..., 1, :])
    ref = la.causal(q[..., :3, :], k[..., :3, :], v[..., :3, :])
    o = dec.step(q[..., 2, :], k[..., 2, :], v[..., 2, :])
    assert dec._plan is not None and dec.state.t == 3
    assert_close(o, ref[..., 2, :], 1e-12)


def test_step_cache_follows_options_and_state():
    """la.step(inplace=True)'s per-state plan: other options, a replaced array, another
    kind's state, check_finite=True: each goes through the full checks again."""
    q, k, v, _ = _inputs(np.float64, 7)
    st = la.State.zeros("elu", B, D)
    la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], st, inplace=True)
    ref = st.copy()
    o1, _ = la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], st, inplace=True, scale=0.5)
    o2, _ = la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], ref, scale=0.5)
    np.testing.assert_array_equal(o1, o2)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        la.step(q[..., 2, :], k[..., 2, :], v[..., 2, :], st, inplace=True, scale=-1.0)
    with pytest.raises(TypeError, match="scale must be a real number"):
        la.step(q[..., 2, :], k[..., 2, :], v[..., 2, :], st, inplace=True, scale="1")
    bad = q[..., 2, :].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="q_t contains a non-finite value"):
        la.step(bad, k[..., 2, :], v[..., 2, :], st, inplace=True, check_finite=True)
    la.step(q[..., 2, :], k[..., 2, :], v[..., 2, :], st, inplace=True)  # cached again
    S, z = st.S.copy(), st.z.copy()
    st.t = -1
    with pytest.raises(ValueError, match="state.t must be >= 0"):
        la.step(q[..., 2, :], k[..., 2, :], v[..., 2, :], st, inplace=True)
    assert st.t == -1
    np.testing.assert_array_equal(st.S, S)
    st.t = 3
    st.kind = "relu"  # another kind's state now: its own plan
    o3, _ = la.step(q[..., 3, :], k[..., 3, :], v[..., 3, :], st, inplace=True)
    ref = la.State(S, z, 3, "relu")
    np.testing.assert_array_equal(o3, la.step(q[..., 3, :], k[..., 3, :], v[..., 3, :], ref)[0])


def test_step_plans_leave_with_their_states():
    import gc
    import weakref

    from linattn import _api

    refs = []
    for _ in range(5):
        st = la.State.zeros("elu", (2,), 4)
        la.step(np.ones((2, 4)), np.ones((2, 4)), np.ones((2, 4)), st, inplace=True)
        refs.append(weakref.ref(st))
        assert id(st) in _api._STEP_PLANS
        del st
    gc.collect()
    assert all(r() is None for r in refs)
    assert not any(ent[0]() is None for ent in _api._STEP_PLANS.values())


def test_checked_decays_are_cached_by_value_not_by_array():
    """A per-head decay seen before is reused by value: writing new values into the
    same array changes the result, and a rejected value still raises."""
    q, k, v, _ = _inputs(np.float64, 8)
    g = np.full(B, -0.2)
    o1 = la.causal(q, k, v, "linear", decay=g)
    g[...] = -0.7
    o2 = la.causal(q, k, v, "linear", decay=g)
    assert_close(o2, la.causal(q, k, v, "linear", decay=np.full(B, -0.7)), 0)
    assert not np.allclose(o1, o2)
    g[0, 1] = 0.3
    with pytest.raises(ValueError, match="decay is a log-decay and must be <= 0"):
        la.causal(q, k, v, "linear", decay=g)
    g[0, 1] = np.nan
    with pytest.raises(ValueError, match="decay must not contain NaN"):
        la.causal(q, k, v, "linear", decay=g)
    np.testing.assert_array_equal(la.causal(q, k, v, "retnet"), la.causal(q, k, v, "retnet"))


@pytest.mark.parametrize("kind", ["elu", "lightning", "retnet", "transnormer"])
def test_per_step_decay_is_bit_identical(kind):
    """A per-token decay given to each step (it overrides lightning's and retnet's
    presets, as in la.step) and a per-head decay fixed at construction."""
    q, k, v, g = _inputs(np.float32, 9)
    dec = la.Decoder(kind, B, D, dtype=np.float32)
    fixed = la.Decoder(kind, B, D, dtype=np.float32, decay=g[..., 0])
    st = la.State.zeros(kind, B, D, dtype=np.float32)
    st2 = st.copy()
    for t in range(T):
        o = dec.step(q[..., t, :], k[..., t, :], v[..., t, :], g[..., t])
        o_ref, st = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, decay=g[..., t])
        np.testing.assert_array_equal(o, o_ref)
        of = fixed.step(q[..., t, :], k[..., t, :], v[..., t, :])
        of_ref, st2 = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st2, decay=g[..., 0])
        np.testing.assert_array_equal(of, of_ref)
    assert dec._plan is not None and fixed._plan is not None
