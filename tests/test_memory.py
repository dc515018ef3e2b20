"""Memory: every public function called in a loop shows no growth of
``ru_maxrss`` beyond a small bound, no growth of the number of live Python objects, and
no reference leaked on its inputs (bottleneck's memory_test.py idea)."""

from __future__ import annotations

import gc
import resource
import sys

import numpy as np

import linattn as la

ITERS = 300


def _calls():
    r = np.random.default_rng(3)
    q, k, v = (r.standard_normal((2, 2, 24, 8)) for _ in range(3))
    q32 = q.astype(np.float32)
    W = la.random_features(8, 8)
    ss = dict(u=r.standard_normal((2, 4, 10)), delta=r.random((2, 4, 10)),
              A=-r.random((4, 3)), B=r.standard_normal((2, 3, 10)),
              C=r.standard_normal((2, 3, 10)))
    out = np.empty((2, 2, 24, 8))
    st = la.causal(q, k, v, return_state=True)[1]
    calls = []
    for kind, d in sorted(la.kinds().items()):
        kw = {"cosformer": {"horizon": 64}, "performer": {"num_features": 8},
              "rfa": {"num_features": 8}, "lara": {"landmarks": 4}}.get(kind, {})
        ckw = dict(kw, decay=np.full((2, 2, 24), -0.1)) if kind == "mamba2" else kw
        skw = dict(kw, decay=np.full((2, 2, 1), -0.1)) if kind == "mamba2" else kw
        if d["causal"]:
            calls.append(lambda kind=kind, ckw=ckw: la.causal(q, k, v, kind, mode="chunked",
                                                             chunk_size=8, **ckw))
            calls.append(lambda kind=kind, skw=skw: la.step(q[..., 0, :], k[..., 0, :],
                                                           v[..., 0, :], None, kind, **skw))
        if d["noncausal"]:
            calls.append(lambda kind=kind, kw=kw: la.noncausal(q, k, v, kind, **kw))
    calls += [
        lambda: la.causal(q32, k, v, out=out),
        lambda: la.causal(q, k, v, initial_state=st, return_state=True),
        lambda: la.softmax_attention(q, k, v),
        lambda: la.selective_scan(**ss, return_state=True),
        lambda: [getattr(la.features, f)(q) for f in ("identity", "elu1", "elu", "relu")],
        lambda: (la.features.rfa(q, W), la.features.performer(q, W)),
        lambda: la.random_features(8, 12, seed=1),
        lambda: (la.decay_slopes(4), la.lavo_bases(3, 8)),
        lambda: la.State.from_dict(st.to_dict()),
        lambda: la.set_num_threads(la.get_num_threads()),
        lambda: la.approximation_error(q[0, 0], k[0, 0], v[0, 0], num_features=(8,),
                                       seeds=(0,)),
    ]
    errors = [lambda: la.causal(q, k[..., :3], v), lambda: la.noncausal(q, k, v, "nope"),
              lambda: la.causal(q.astype(int), k, v)]
    return calls, errors, (q, k, v, q32, W, out)


def test_no_growth_in_loops():
    calls, errors, inputs = _calls()

    def one_round():
        for f in calls:
            f()
        for f in errors:
            try:
                f()
            except (ValueError, TypeError):
                pass

    for _ in range(20):  # warm-up: caches, thread pools, BLAS buffers
        one_round()
    gc.collect()
    refs = [sys.getrefcount(a) for a in inputs]
    nobj = len(gc.get_objects())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(ITERS):
        one_round()
    gc.collect()
    grew_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
    assert grew_rss < 8 * 1024, f"ru_maxrss grew by {grew_rss} KiB over {ITERS} rounds"
    assert len(gc.get_objects()) - nobj < 200, "live Python objects grew"
    assert [sys.getrefcount(a) for a in inputs] == refs, "a reference to an input leaked"
