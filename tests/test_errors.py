"""Every rejected input raises before any kernel runs, naming the argument; inputs,
out= and states are never modified (docs/design/api.md, Errors)."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import make_qkv


@pytest.fixture
def qkv(rng):
    return make_qkv(rng, T=10, D=4, E=3)


def snapshot(*arrays):
    return [a.copy() for a in arrays]


def unchanged(before, *arrays):
    return all(np.array_equal(b, a, equal_nan=True) for b, a in zip(before, arrays))


@pytest.mark.parametrize("bad,exc,match", [
    (lambda q, k, v: (q, k[..., :3], v), ValueError, r"k has 3 features but q has 4"),
    (lambda q, k, v: (q, k, v[..., :7, :]), ValueError, r"v has 7 tokens but k has 10"),
    (lambda q, k, v: (q, k[..., :8, :], v[..., :8, :]), ValueError, r"k has 8 tokens but q has 10"),
    (lambda q, k, v: (q[0, 0, 0], k, v), ValueError, r"q must have at least 2 dimensions"),
    (lambda q, k, v: (q, k[:, :2], v), ValueError, r"batch dimensions"),
    (lambda q, k, v: (q.astype(np.int64), k, v), TypeError, r"q must be a float32, float64"),
    (lambda q, k, v: (q, k.astype(np.complex128), v), TypeError, r"k must be a float32"),
    (lambda q, k, v: (q, k, v.astype(object)), TypeError, r"v must be a float32"),
    (lambda q, k, v: (q, k, v > 0), TypeError, r"v must be a float32"),
])
def test_bad_qkv(qkv, bad, exc, match):
    q, k, v = qkv
    before = snapshot(q, k, v)
    args = bad(q, k, v)
    with pytest.raises(exc, match=match):
        la.causal(*args)
    assert unchanged(before, q, k, v)


@pytest.mark.parametrize("kw,exc,match", [
    ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
    ({"chunk_size": -3}, ValueError, "chunk_size must be >= 1"),
    ({"chunk_size": 2.5}, TypeError, "chunk_size must be an integer"),
    ({"chunk_size": True}, TypeError, "chunk_size must be an integer"),
    ({"mode": "fast"}, ValueError, "mode must be"),
    ({"normalize": "softmax"}, ValueError, "normalize must be one of"),
    ({"scale": 0.0}, ValueError, "scale must be finite and > 0"),
    ({"scale": -1.0}, ValueError, "scale must be finite and > 0"),
    ({"scale": float("nan")}, ValueError, "scale must be finite and > 0"),
    ({"eps": -1e-6}, ValueError, "eps must be finite and >= 0"),
    ({"eps_mode": "max"}, ValueError, "eps_mode must be one of"),
    ({"layout": "bhtd"}, ValueError, "layout must be one of"),
    ({"decay": 0.5}, ValueError, "decay is a log-decay and must be <= 0"),
    ({"decay": np.array([0.0, np.nan, 0.0])}, ValueError, "decay must not contain NaN"),
    ({"decay": np.zeros((2, 3, 11))}, ValueError, r"per-token decay must have shape"),
    ({"decay": np.zeros((2, 3, 10, 1, 1))}, ValueError, r"decay must be per head"),
    ({"decay": np.zeros((4,))}, ValueError, r"per-head decay of shape \(4,\)"),
    ({"horizon": 10}, TypeError, r"horizon= does not apply to kind 'elu'"),
    ({"num_features": 10}, TypeError, r"num_features= does not apply"),
    ({"window": 3}, TypeError, r"option\(s\) \['window'\].*'elu' does not accept"),
])
def test_bad_options(qkv, kw, exc, match):
    q, k, v = qkv
    before = snapshot(q, k, v)
    with pytest.raises(exc, match=match):
        la.causal(q, k, v, mode=kw.pop("mode", "chunked"), **kw)
    assert unchanged(before, q, k, v)


def test_unknown_kind(qkv):
    with pytest.raises(ValueError, match="kind must be one of"):
        la.causal(*qkv, kind="nope")


def test_noncausal_rejects_decay(qkv):
    with pytest.raises(TypeError, match="decay= is causal only"):
        la.noncausal(*qkv, decay=np.zeros(()))


@pytest.mark.parametrize("layout", ["...td", "bthd"])
def test_out_takes_the_batch_a_decay_or_a_state_widens(rng, layout):
    """A per-head or per-token decay, or an initial state, with more batch entries than
    q, k, v widens the output (the kernels broadcast them): out= of that shape is filled
    with the same values, and one of the inputs' shape is refused naming both shapes."""
    bthd = layout == "bthd"
    shape = (1, 6, 3, 4) if bthd else (1, 3, 6, 4)
    q, k, v = (rng.standard_normal(shape) for _ in range(3))
    wide = (2, 6, 3, 4) if bthd else (2, 3, 6, 4)
    st = la.causal(*(rng.standard_normal(wide) for _ in range(3)), kind="elu",
                   layout=layout, return_state=True)[1]
    cases = [("elu", {"initial_state": st}),
             ("lightning", {"decay": -0.1 * np.ones((2, 3))}),
             ("mamba2", {"decay": -0.1 * np.ones((2, 6, 3) if bthd else (2, 3, 6))})]
    for kind, kw in cases:
        want = la.causal(q, k, v, kind=kind, layout=layout, **kw)
        assert want.shape == wide
        out = np.full(wide, 7.0)
        assert la.causal(q, k, v, kind=kind, layout=layout, out=out, **kw) is out
        np.testing.assert_array_equal(out, want)
        narrow = np.full(shape, 7.0)
        with pytest.raises(ValueError, match=r"out has shape .*, expected \(2, "):
            la.causal(q, k, v, kind=kind, layout=layout, out=narrow, **kw)
        assert np.all(narrow == 7.0)


def test_bad_out(qkv):
    q, k, v = qkv
    good = np.full((2, 3, 10, 3), 7.0)
    cases = [
        (np.zeros((2, 3, 10, 4)), ValueError, r"out has shape \(2, 3, 10, 4\), expected"),
        (np.zeros((2, 3, 10, 3), np.float32), TypeError, "out has dtype float32, expected float64"),
        ([0.0], TypeError, "out must be a numpy.ndarray"),
        (v, ValueError, "out overlaps the input v"),
    ]
    for out, exc, match in cases:
        before = snapshot(q, k, v)
        with pytest.raises(exc, match=match):
            la.causal(q, k, v, out=out)
        assert unchanged(before, q, k, v)
    ro = good.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        la.causal(q, k, v, out=ro)
    assert np.all(ro == 7.0)
    r = la.causal(q, k, v, out=good)
    assert r is good
    la.testing.assert_close(good, la.causal(q, k, v), rtol=1e-15)


def test_bad_state(qkv):
    q, k, v = qkv
    _, st = la.causal(q, k, v, return_state=True)
    saved = st.copy()
    with pytest.raises(TypeError, match="initial_state must be a linattn.State"):
        la.causal(q, k, v, initial_state={"S": st.S})
    with pytest.raises(ValueError, match="initial_state comes from kind 'elu', not 'relu'"):
        la.causal(q, k, v, kind="relu", initial_state=st)
    with pytest.raises(ValueError, match=r"initial_state.S has core shape \(4, 3\), expected"):
        la.causal(q, k, v[..., :2], initial_state=st)
    with pytest.raises(ValueError, match="do not broadcast"):
        la.causal(q[:, :2], k[:, :2], v[:, :2], initial_state=st)
    nz = la.State(st.S, None, st.t, "elu")
    with pytest.raises(ValueError, match="no denominator state z"):
        la.causal(q, k, v, initial_state=nz)
    assert np.array_equal(st.S, saved.S) and np.array_equal(st.z, saved.z) and st.t == saved.t


def test_corrupted_state_dict(qkv):
    _, st = la.causal(*qkv, return_state=True)
    d = st.to_dict()
    bad = dict(d)
    del bad["kind"]
    with pytest.raises(ValueError, match="must hold 'kind' and 't'"):
        la.State.from_dict(bad)
    bad = dict(d, t=np.array(-1))
    with pytest.raises(ValueError, match="'t' must be >= 0"):
        la.State.from_dict(bad)
    bad = dict(d, z=np.zeros(3))
    with pytest.raises(ValueError, match="'z' has shape"):
        la.State.from_dict(bad)
    bad = dict(d, S=d["S"].astype(np.int64))
    with pytest.raises(ValueError, match="'S' must be float32 or float64"):
        la.State.from_dict(bad)


def test_step_errors(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="q_t must have at least 1 dimension"):
        la.step(np.float64(1.0), k[..., 0, :], v[..., 0, :])
    with pytest.raises(TypeError, match="step\\(\\) does not take"):
        la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None, mode="chunked")


def test_set_num_threads_rejects_negative():
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        la.set_num_threads(-1)
