"""la.step(inplace=True): the decoding fast path updates the state where it is."""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la
from conftest import assert_close, make_qkv


@pytest.mark.parametrize("kind", ["elu", "linear", "relu", "performer", "cosformer", "lavo"])
def test_inplace_equals_fresh_states(rng, kind):
    q, k, v = make_qkv(rng, T=12, D=8, E=8, scale=0.5)
    kw = {"cosformer": {"horizon": 64}, "performer": {"seed": 0}}.get(kind, {})
    o_ref, st_ref = la.causal(q, k, v, kind=kind, return_state=True, **kw)
    _, st = la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None, kind=kind, **kw)
    S_id = id(st.S)
    outs = [la.causal(q[..., :1, :], k[..., :1, :], v[..., :1, :], kind=kind, **kw)[..., 0, :]]
    for t in range(1, 12):
        o, st2 = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, kind=kind, inplace=True,
                         **kw)
        assert st2 is st
        outs.append(o)
    assert st.t == 12
    assert_close(np.stack(outs, -2), o_ref, np.float64)
    if kind in ("elu", "linear", "relu", "performer", "cosformer"):
        assert id(st.S) == S_id  # no new state array
        assert_close(st.S, st_ref.S, np.float64)


def test_inplace_with_decay_and_float32(rng):
    q, k, v = make_qkv(rng, T=10, D=6, E=5, dtype=np.float32)
    g = -rng.uniform(0, 0.5, (2, 3, 10))
    o_ref = la.causal(q, k, v, decay=g)
    o0, st = la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None, decay=g[..., 0])
    outs = [o0]
    for t in range(1, 10):
        o, _ = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, decay=g[..., t],
                       inplace=True)
        outs.append(o)
    assert_close(np.stack(outs, -2), o_ref, np.float32)


def test_inplace_rejections_leave_state_intact(rng):
    q, k, v = make_qkv(rng, T=2, D=4, E=3)
    _, st = la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None)
    before = st.copy()
    # no state to update: a new one is started (later in-place steps update that one)
    o0, fresh = la.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], None, inplace=True)
    assert fresh.t == 1 and np.array_equal(fresh.S, st.S)
    with pytest.raises(TypeError, match="inplace=True needs a linattn.State"):
        la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], {"S": st.S}, inplace=True)
    # a state that would broadcast over the batch cannot be updated in place
    small = la.State(st.S[:1].copy(), st.z[:1].copy(), 1, "elu")
    with pytest.raises(ValueError, match=r"inplace=True needs a writeable, aligned state.S"):
        la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], small, inplace=True)
    ro = st.copy()
    ro.S.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], ro, inplace=True)
    with pytest.raises(ValueError, match="decay is a log-decay"):
        la.step(q[..., 1, :], k[..., 1, :], v[..., 1, :], st, inplace=True, decay=1.0)
    assert np.array_equal(st.S, before.S) and np.array_equal(st.z, before.z)
    assert st.t == before.t


@pytest.mark.parametrize("kind", ["lightning", "retnet", "mamba2", "transnormer"])
@pytest.mark.parametrize("check_finite", [False, True])
def test_decay_kinds_update_the_state_in_place(rng, kind, check_finite):
    """Both paths of la.step(inplace=True) (the per-state plan, and the full checks that
    check_finite=True takes) keep state.S and state.z where they are."""
    q, k, v = make_qkv(rng, T=5, D=6, E=4, dtype=np.float32)
    g = -rng.uniform(0, 0.5, (2, 3, 5))
    per_token = kind == "mamba2"
    st = la.State.zeros(kind, (2, 3), 6, 4, dtype=np.float32)
    S, z = st.S, st.z
    outs = []
    for t in range(5):
        kw = {"decay": g[..., t]} if per_token else {}
        o, st2 = la.step(q[..., t, :], k[..., t, :], v[..., t, :], st, inplace=True,
                         check_finite=check_finite, **kw)
        assert st2 is st and st.S is S and st.z is z
        outs.append(o)
    ref = la.causal(q, k, v, kind, decay=g if per_token else None)
    assert_close(np.stack(outs, -2), ref, np.float32)


THREADS_PROBE = """
import json, numpy as np, linattn as la
la.set_num_threads(1)
r = np.random.default_rng(0)
bh = {bh}
q, k, v = (r.standard_normal((bh, 64)).astype(np.float32) for _ in range(3))
st = la.State.zeros("elu", (bh,), 64, dtype=np.float32)
la.set_num_threads(2)
for _ in range(3):
    la.step(q, k, v, st, inplace=True)
print(json.dumps(la._core.build_info()["pool_workers"]))
"""


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_runner_weighs_the_state_traffic_of_a_step():
    """The runner counts the bytes a call moves as well as its flops: a float32 step on
    B x H = 32 states of 64 x 64 (0.53 Mflop, 0.57 MB) stays on the calling thread, one on
    64 states (1.1 Mflop: one thread by flops alone) gets a second worker."""
    import json
    import subprocess
    import sys

    def workers(bh):
        r = subprocess.run([sys.executable, "-c", THREADS_PROBE.format(bh=bh)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    assert workers(32) == 0
    assert workers(64) >= 1
