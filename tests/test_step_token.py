"""The one-token C entry (``_core._step_token``) behind la.Decoder.step, la.step(inplace=True)
and the copying la.step of the elementwise and decay kinds.

Every fast path must give the bits of the full path (la.step with check_finite=True, which
runs the gufuncs after every check), whatever the kind, decay, normaliser, eps, dtype,
shapes (odd D, E != D) and token strides; the copying step must leave the old state as it
was; and a loop of steps must agree with la.causal (another form, computed by GEMMs)
within the family tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from linattn import _api, _core
from conftest import assert_close

B, H, T = 2, 3, 5

# (kind, options of every step, whether the kind takes a per-token decay)
CASES = [
    ("linear", {}, False),
    ("elu", {}, False),
    ("relu", {}, False),
    ("lightning", {}, False),
    ("retnet", {}, False),
    ("mamba2", {}, True),
    ("transnormer", {}, False),
    ("elu", {"normalize": "none"}, False),
    ("elu", {"eps": 1e-2}, False),
    ("linear", {"normalize": "div", "eps": 1e-3}, False),
    ("elu", {}, True),  # the generic decay= of a kind without its own
    ("retnet", {"normalize": "div"}, False),
    ("lightning", {"layer": 3, "num_layers": 8}, False),
]


def _tokens(rng, dtype, D, E, strided):
    """q, k (B, H, T, D), v (B, H, T, E): views with strided rows (and, with strided,
    every other column of a wider array)."""
    w = 2 if strided else 1
    q, k = ((rng.standard_normal((B, H, T, w * D)) * 0.5).astype(dtype)[..., ::w]
            for _ in range(2))
    v = (rng.standard_normal((B, H, T, w * E)) * 0.5).astype(dtype)[..., ::w]
    return q, k, v


def _run(kind, opts, per_token, dtype, D, E, strided, rng, monkeypatch):
    q, k, v = _tokens(rng, dtype, D, E, strided)
    g = -rng.uniform(0.0, 0.5, (B, H, T))
    dkw = (lambda t: {"decay": g[..., t]}) if per_token else (lambda t: {})
    taken = []
    fast = _api._step_copy_fast

    def spy(*a):
        got = fast(*a)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(_api, "_step_copy_fast", spy)
    st_copy = la.State.zeros(kind, (B, H), D, E, dtype=dtype, **opts)
    st_in = la.State.zeros(kind, (B, H), D, E, dtype=dtype, **opts)
    st_full = la.State.zeros(kind, (B, H), D, E, dtype=dtype, **opts)
    dec = la.Decoder(kind, (B, H), D, E, dtype=dtype, **opts)
    S_in = st_in.S
    outs = {"copy": [], "inplace": [], "decoder": [], "full": []}
    for t in range(T):
        qt, kt, vt = q[..., t, :], k[..., t, :], v[..., t, :]
        old = st_copy.copy()
        o, new = la.step(qt, kt, vt, st_copy, **opts, **dkw(t))
        # the copying step reads the old state and leaves it as it was
        assert new is not st_copy and new.S is not st_copy.S
        assert np.array_equal(st_copy.S, old.S) and st_copy.t == old.t
        assert (st_copy.z is None) == (old.z is None)
        if old.z is not None:
            assert np.array_equal(st_copy.z, old.z)
        st_copy = new
        outs["copy"].append(o)
        o, same = la.step(qt, kt, vt, st_in, inplace=True, **opts, **dkw(t))
        assert same is st_in and st_in.S is S_in
        outs["inplace"].append(o)
        outs["decoder"].append(dec.step(qt, kt, vt, **({"decay": g[..., t]} if per_token
                                                        else {})))
        o, st_full = la.step(qt, kt, vt, st_full, check_finite=True, **opts, **dkw(t))
        outs["full"].append(o)
    assert all(taken) and len(taken) == T  # the copying steps took the C entry
    ref = la.causal(q, k, v, kind, decay=g if per_token else None, **opts)
    return outs, (st_copy, st_in, dec.state, st_full), ref


def _same_state(a, b, z=True):
    assert a.t == b.t == T
    assert a.S.dtype == b.S.dtype and np.array_equal(a.S, b.S)
    if not z:
        return
    assert (a.z is None) == (b.z is None)
    if a.z is not None:
        assert np.array_equal(a.z, b.z)


@pytest.mark.parametrize("kind,opts,per_token", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'g' if c[2] else ''}" for c in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_steps_are_the_full_step_bit_for_bit(rng, monkeypatch, kind, opts, per_token,
                                                  dtype):
    D = E = 6 if kind == "transnormer" else 8
    outs, states, ref = _run(kind, opts, per_token, dtype, D, E, False, rng, monkeypatch)
    for name in ("copy", "inplace", "decoder"):
        for a, b in zip(outs[name], outs["full"]):
            assert a.shape == (B, H, E) and a.dtype == dtype
            assert np.array_equal(a, b), name
    _same_state(states[0], states[3])
    for st in states[1:3]:  # in place: S, z where they were (z untouched without "div")
        _same_state(st, states[3], z=opts.get("normalize", "div") == "div"
                    and kind != "transnormer")
    assert_close(np.stack(outs["full"], -2), ref, dtype)


@pytest.mark.parametrize("kind,per_token", [("elu", False), ("retnet", False),
                                            ("mamba2", True), ("transnormer", False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_odd_widths_and_strided_tokens(rng, monkeypatch, kind, per_token, dtype):
    """D = 5, E = 7 (odd, E != D: the column tails of the vector loops) from tokens whose
    rows and columns are strided."""
    outs, states, ref = _run(kind, {}, per_token, dtype, 5, 7, True, rng, monkeypatch)
    for name in ("copy", "inplace", "decoder"):
        for a, b in zip(outs[name], outs["full"]):
            assert np.array_equal(a, b), name
    for st in states[:3]:
        _same_state(st, states[3])
    assert_close(np.stack(outs["copy"], -2), ref, dtype)


def test_copying_step_from_read_only_state(rng):
    """A copying step only reads the state: a read-only one (a frozen snapshot) works,
    and the new state is writeable, C-contiguous and its own."""
    st = la.State.zeros("elu", (B, H), 8, 8, dtype=np.float32)
    q = rng.standard_normal((B, H, 8)).astype(np.float32)
    _, st = la.step(q, q, q, st)
    snap = st.copy()
    st.S.flags.writeable = False
    st.z.flags.writeable = False
    o, new = la.step(q, q, q, st)
    o_ref, ref = la.step(q, q, q, snap, check_finite=True)
    assert np.array_equal(o, o_ref) and np.array_equal(new.S, ref.S)
    assert new.S.flags.writeable and new.S.flags.c_contiguous
    assert np.array_equal(st.S, snap.S) and np.array_equal(st.z, snap.z)


def test_copying_step_rejections_leave_state_intact(rng):
    st = la.State.zeros("mamba2", (B, H), 4, 4, dtype=np.float32)
    q = rng.standard_normal((B, H, 4)).astype(np.float32)
    _, st = la.step(q, q, q, st, decay=np.full((B, H), -0.1))
    before = st.copy()
    with pytest.raises(ValueError):
        la.step(q, q, q, st, decay=np.full((B, H), 0.5))
    with pytest.raises(ValueError):
        la.step(q, q, q, st, decay=np.full((B, H), np.nan))
    with pytest.raises((TypeError, ValueError)):
        la.step(q, q, q, st)  # mamba2 needs its decay
    assert np.array_equal(st.S, before.S) and st.t == before.t


def _entry_args(rng, dtype=np.float32):
    S = rng.standard_normal((B, H, 4, 3)).astype(dtype)
    z = np.abs(rng.standard_normal((B, H, 4))).astype(dtype)
    q = rng.standard_normal((B, H, 4)).astype(dtype)
    v = rng.standard_normal((B, H, 3)).astype(dtype)
    return [q, q.copy(), v, None, S, z, 1.0, 1e-6, 0x111, False]


@pytest.mark.parametrize("bad,exc,match", [
    (lambda a: a.__setitem__(0, a[0][:1]), ValueError, "q has shape"),
    (lambda a: a.__setitem__(2, a[2][..., :2]), ValueError, "v E = 3"),
    (lambda a: a.__setitem__(1, a[1].astype(np.float64)), TypeError, "k must be an aligned"),
    (lambda a: a.__setitem__(5, a[5][..., :3]), ValueError, "z must have F = 4"),
    (lambda a: a.__setitem__(3, np.zeros((4,))), ValueError, "g has shape"),
    (lambda a: a.__setitem__(3, np.zeros((B, H), np.float32)), TypeError, "g must be"),
    (lambda a: a.__setitem__(0, a[0].tolist()), TypeError, "q must be an ndarray"),
    (lambda a: a[4].setflags(write=False), ValueError, "S must be writeable"),
    (lambda a: a.pop(), TypeError, "10 arguments"),
    (lambda a: a.__setitem__(3, np.array([[-0.1, 0.0, 0.5]] * B)), ValueError, "log-decay"),
    (lambda a: a.__setitem__(3, np.array([-0.1, np.nan, -0.2])), ValueError, "log-decay"),
])
def test_entry_rejects_without_writing(rng, bad, exc, match):
    """The C entry checks its operands itself (its callers check them first, so these are
    the messages of a wrong internal call): an error, and nothing written."""
    args = _entry_args(rng)
    S, z = args[4], args[5]
    S0, z0 = S.copy(), z.copy()
    bad(args)
    with pytest.raises(exc, match=match):
        _core._step_token(*args)
    assert np.array_equal(S, S0) and np.array_equal(z, z0)


def test_entry_broadcasts_a_per_head_decay(rng):
    """g of shape (H,) (a per-head preset) broadcasts over the batch as the gufunc's does."""
    args = _entry_args(rng, np.float64)
    g = -rng.uniform(0, 1, (H,))
    args[3] = g
    args[8] = 0x111 | 0x1000
    S, z = args[4].copy(), args[5].copy()
    o = _core._step_token(*args)
    o_ref = _core._step_inplace(args[0][..., None, :], args[1][..., None, :],
                                args[2][..., None, :], g[:, None], S, z, 1.0, 1e-6,
                                np.int64(0x1111), np.int64(1))[..., 0, :]
    assert np.array_equal(o, o_ref)
    assert np.array_equal(args[4], S) and np.array_equal(args[5], z)


PATHS_SCRIPT = r"""
import json, sys
import numpy as np
import linattn as la

rng = np.random.default_rng(3)
checked = 0
for dt in (np.float32, np.float64):
    for (D, E) in ((5, 64), (3, 71), (9, 130)):  # the 64-column blocks and their tails
        for kind in ("elu", "retnet", "mamba2"):
            g = -rng.uniform(0, 0.3, (2, 3, 3))
            dk = (lambda t: {"decay": g[..., t]}) if kind == "mamba2" else (lambda t: {})
            a = la.State.zeros(kind, (2, 3), D, E, dtype=dt)
            b = la.State.zeros(kind, (2, 3), D, E, dtype=dt)
            c = la.State.zeros(kind, (2, 3), D, E, dtype=dt)
            for t in range(3):
                q, k = (rng.standard_normal((2, 3, D)).astype(dt) for _ in range(2))
                v = rng.standard_normal((2, 3, E)).astype(dt)
                o1, a = la.step(q, k, v, a, **dk(t))
                o2, _ = la.step(q, k, v, b, inplace=True, **dk(t))
                o3, c = la.step(q, k, v, c, check_finite=True, **dk(t))
                assert np.array_equal(o1, o3) and np.array_equal(o2, o3), (kind, D, E, t)
                assert np.array_equal(a.S, c.S) and np.array_equal(b.S, c.S), (kind, D, E, t)
                checked += 1
print(json.dumps({"simd": la.info()["simd"], "checked": checked}))
"""


@pytest.mark.parametrize("path", ["generic", "avx2", "avx512"])
def test_every_isa_path_gives_the_full_steps_bits(path):
    """The copying step's one-pass loop (AVX-512) and its copy-then-update fallback (the
    other paths) against the full path, on value widths with 64-column blocks and tails."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, LINATTN_SIMD=path)
    r = subprocess.run([sys.executable, "-c", PATHS_SCRIPT], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["checked"] == 2 * 3 * 3 * 3


def test_misaligned_tokens_take_the_full_path(rng):
    """A token the C entry refuses (a misaligned view) is not an error: la.step runs it."""
    st = la.State.zeros("elu", (B, H), 4, 4, dtype=np.float32)
    ref = st.copy()
    buf = np.zeros(B * H * 4 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(B, H, 4)
    buf[...] = rng.standard_normal((B, H, 4))
    assert not buf.flags.aligned
    q = np.ascontiguousarray(buf)
    o, st2 = la.step(buf, q, q, st)
    o_ref, _ = la.step(q, q, q, ref, check_finite=True)
    assert np.array_equal(o, o_ref) and st2.t == 1
    o = la.step(buf, q, q, st, inplace=True)[0]
    assert np.array_equal(o, o_ref)


def _laid_out(S, layout):
    """A copy of S in a non-C-contiguous layout."""
    if layout == "fortran":
        return np.asfortranarray(S)
    if layout == "rows":
        big = np.zeros(S.shape[:-2] + (2 * S.shape[-2], S.shape[-1]))
        big[..., ::2, :] = S
        return big[..., ::2, :]
    big = np.zeros(S.shape[:-1] + (2 * S.shape[-1],))
    big[..., ::2] = S
    return big[..., ::2]


@pytest.mark.parametrize("layout", ["fortran", "rows", "columns"])
def test_strided_states(rng, layout):
    """States whose S is not C-contiguous (Fortran order, every other row or column of a
    larger array): the copying step (which then copies before updating) and the in-place
    step give the full path's bits, and the in-place one keeps the arrays."""
    D, E = 6, 5
    st = la.State.zeros("retnet", (B, H), D, E)
    q, k = (rng.standard_normal((B, H, D)) for _ in range(2))
    v = rng.standard_normal((B, H, E))
    _, st = la.step(q, k, v, st, check_finite=True)
    a = la.State(_laid_out(st.S, layout), None, 1, "retnet")
    b = la.State(_laid_out(st.S, layout), None, 1, "retnet")
    assert not a.S.flags.c_contiguous and not b.S.flags.c_contiguous
    ref = la.State(st.S.copy(), None, 1, "retnet")
    o_ref, ref2 = la.step(q, k, v, ref, check_finite=True)
    o1, a2 = la.step(q, k, v, a)
    assert np.array_equal(o1, o_ref) and np.array_equal(a2.S, ref2.S)
    assert np.array_equal(a.S, st.S)  # the old state as it was
    Sb = b.S
    o2, _ = la.step(q, k, v, b, inplace=True)
    assert np.array_equal(o2, o_ref) and b.S is Sb and np.array_equal(b.S, ref2.S)
