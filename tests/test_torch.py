"""``linattn.torch``: custom operators with autograd (gradcheck in float64, opcheck,
torch.compile), half / bfloat16, errors, version counters.

``causal`` / ``noncausal`` need ``la.causal_vjp`` / ``la.noncausal_vjp``; where this
linattn has none, their plumbing is tested against a stand-in vjp (torch autograd through
a transcription of the elu kind) and the real-kernel tests skip.
"""

from __future__ import annotations

import numpy as np
import pytest

import linattn as la

torch = pytest.importorskip("torch")
lt = pytest.importorskip("linattn.torch")

GC = dict(atol=1e-8, rtol=1e-6)
GC_FAST = dict(GC, fast_mode=True)  # random projections: the full Jacobian takes minutes here


def _t(*shape, scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()


def _sscan_inputs(b=2, D=4, L=10, N=3, bc="tv"):
    x = dict(u=_t(b, D, L, seed=1), delta=_t(b, D, L, seed=2),
             A=(-torch.rand(D, N, generator=torch.Generator().manual_seed(3),
                            dtype=torch.float64) - 0.1).requires_grad_())
    if bc == "ti":
        x["B"], x["C"] = _t(D, N, seed=4), _t(D, N, seed=5)
    elif bc == "grp":
        x["B"], x["C"] = _t(b, 2, N, L, seed=4), _t(b, 4, N, L, seed=5)
    else:
        x["B"], x["C"] = _t(b, N, L, seed=4), _t(b, N, L, seed=5)
    x.update(D=_t(D, seed=6), z=_t(b, D, L, seed=7), delta_bias=_t(D, scale=0.1, seed=8),
             initial_state=_t(b, D, N, seed=9))
    return x


# ----------------------------------------------------------------- softmax attention

@pytest.mark.parametrize("causal", [True, False])
def test_softmax_gradcheck(causal):
    q, k, v = _t(2, 3, 9, 4, seed=1), _t(2, 3, 9 if causal else 6, 4, seed=2), \
        _t(2, 3, 9 if causal else 6, 5, seed=3)
    assert torch.autograd.gradcheck(
        lambda q, k, v: lt.softmax_attention(q, k, v, causal=causal, scale=0.6), (q, k, v),
        **GC_FAST)


def test_softmax_gradcheck_bthd_and_broadcast():
    q, k, v = _t(2, 9, 3, 4, seed=1), _t(2, 9, 1, 4, seed=2), _t(2, 9, 1, 5, seed=3)
    assert torch.autograd.gradcheck(
        lambda q, k, v: lt.softmax_attention(q, k, v, layout="bthd"), (q, k, v), **GC_FAST)


def test_softmax_matches_torch_sdpa():
    q, k, v = _t(2, 3, 70, 8, seed=1), _t(2, 3, 70, 8, seed=2), _t(2, 3, 70, 8, seed=3)
    o = lt.softmax_attention(q, k, v)
    o.square().sum().backward()
    g = [x.grad.clone() for x in (q, k, v)]
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    o2 = torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, is_causal=True)
    o2.square().sum().backward()
    torch.testing.assert_close(o, o2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, (q2.grad, k2.grad, v2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_softmax_opcheck():
    q, k, v = _t(2, 9, 4, seed=1), _t(2, 9, 4, seed=2), _t(2, 9, 5, seed=3)
    torch.library.opcheck(torch.ops.linattn.softmax_attention,
                          (q, k, v, "causal=True;scale=None;layout='...td'"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_computed_in_float32(dtype):
    q, k, v = (_t(2, 20, 8, seed=s, dtype=torch.float32) for s in (1, 2, 3))
    qh, kh, vh = (x.detach().to(dtype).requires_grad_() for x in (q, k, v))
    o = lt.softmax_attention(qh, kh, vh)
    assert o.dtype == dtype
    o.float().sum().backward()
    assert qh.grad.dtype == dtype
    q32, k32, v32 = (x.detach().to(dtype).float().requires_grad_() for x in (q, k, v))
    o32 = lt.softmax_attention(q32, k32, v32)
    o32.sum().backward()
    assert torch.equal(o, o32.to(dtype))
    torch.testing.assert_close(qh.grad, q32.grad.to(dtype))
    u = {n: x.detach().to(dtype) for n, x in _sscan_inputs().items()}
    y = lt.selective_scan(**u, delta_softplus=True)
    assert y.dtype == dtype


def test_errors_before_dispatch():
    q = torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match=r"computes on the CPU; q is on meta"):
        lt.softmax_attention(torch.zeros(2, 5, 4, device="meta"), q, q)
    with pytest.raises(ValueError, match=r"k is on meta.*\.cpu\(\)"):
        lt.causal(q, torch.zeros(2, 5, 4, device="meta"), q)
    with pytest.raises(TypeError, match=r"v has dtype torch.int64"):
        lt.softmax_attention(q, q, torch.zeros(2, 5, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"float32 / float64"):
        lt.selective_scan(torch.zeros(1, 2, 3, dtype=torch.complex64), *[q] * 4)
    with pytest.raises(ValueError, match=r"projection\.detach\(\)"):
        lt.noncausal(q, q, q, "performer", projection=torch.zeros(4, 4, requires_grad=True))
    with pytest.raises(TypeError, match="tensors"):
        lt.softmax_attention(np.zeros((2, 5, 4)), q, q)


def test_inplace_edit_after_forward_is_caught():
    q, k, v = _t(1, 8, 4, seed=1), _t(1, 8, 4, seed=2), _t(1, 8, 4, seed=3)
    qq = q * 1.0
    o = lt.softmax_attention(qq, k, v)
    with torch.no_grad():
        qq.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        o.sum().backward()
    x = {n: t.detach() * 1.0 for n, t in _sscan_inputs().items()}
    for t in x.values():
        t.requires_grad_()
    xu = x["u"] * 1.0
    y = lt.selective_scan(xu, x["delta"], x["A"], x["B"], x["C"])
    with torch.no_grad():
        xu.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_outputs_do_not_alias_inputs():
    q, k, v = (torch.randn(2, 8, 4, dtype=torch.float64) for _ in range(3))
    q0 = q.clone()
    o = lt.softmax_attention(q, k, v)
    assert o.data_ptr() not in {x.data_ptr() for x in (q, k, v)}
    assert torch.equal(q, q0)


def _compile_check(fn, args, backend):
    import torch._dynamo

    torch._dynamo.reset()
    cf = torch.compile(fn, fullgraph=True, backend=backend)
    cf(*args).backward()
    g1 = [x.grad.clone() for x in args]
    for x in args:
        x.grad = None
    fn(*args).backward()
    for a, b in zip(g1, (x.grad for x in args)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compile_fullgraph_aot_eager():
    """Dynamo traces the wrappers and AOT autograd the fake kernels, no graph break."""
    q, k, v = _t(2, 9, 4, seed=1), _t(2, 9, 4, seed=2), _t(2, 9, 5, seed=3)
    _compile_check(lambda q, k, v: lt.softmax_attention(q, k, v).square().sum(), (q, k, v),
                   "aot_eager")
    x = _sscan_inputs()
    _compile_check(lambda u, d, B, C: lt.selective_scan(u, d, x["A"].detach(), B, C,
                                                        delta_softplus=True).sum(),
                   (x["u"], x["delta"], x["B"], x["C"]), "aot_eager")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, while inductor loads
def test_compile_fullgraph_inductor():
    q, k, v = _t(2, 9, 4, seed=1), _t(2, 9, 4, seed=2), _t(2, 9, 5, seed=3)
    _compile_check(lambda q, k, v: lt.softmax_attention(q, k, v).square().sum(), (q, k, v),
                   "inductor")


# ------------------------------------------------------------------------ selective scan

@pytest.mark.parametrize("bc", ["ti", "tv", "grp"])
def test_sscan_gradcheck_every_input(bc):
    x = _sscan_inputs(bc=bc, L=9)
    names = list(x)

    def f(*a):
        out, h = lt.selective_scan(**dict(zip(names, a)), delta_softplus=True,
                                   return_state=True)
        return out, h
    assert torch.autograd.gradcheck(f, tuple(x.values()), **GC_FAST)


def test_full_jacobian_gradcheck_tiny():
    """The full (not fast-mode) gradcheck on tiny shapes."""
    q, k, v = _t(1, 5, 3, seed=1), _t(1, 5, 3, seed=2), _t(1, 5, 2, seed=3)
    assert torch.autograd.gradcheck(lambda q, k, v: lt.softmax_attention(q, k, v), (q, k, v),
                                    **GC)
    x = _sscan_inputs(b=1, D=2, L=4, N=2)
    names = list(x)
    assert torch.autograd.gradcheck(
        lambda *a: lt.selective_scan(**dict(zip(names, a)), delta_softplus=True,
                                     return_state=True), tuple(x.values()), **GC)


def test_sscan_gradcheck_minimal_and_opcheck():
    x = _sscan_inputs(L=7)
    base = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert torch.autograd.gradcheck(lambda *a: lt.selective_scan(*a), base, **GC_FAST)
    torch.library.opcheck(torch.ops.linattn.selective_scan,
                          (*x.values(), "softplus=True"))
    torch.library.opcheck(torch.ops.linattn.selective_scan,
                          (*base, None, None, None, None, "softplus=False"))


# ------------------------------------------------------------------- causal / noncausal

def _stand_in_causal_vjp(q, k, v, kind="elu", **kw):
    """The elu kind's backward in NumPy (div, eps 1e-6 added): only for the plumbing."""
    assert kind == "elu" and not kw, kw
    o = la.causal(q, k, v, "elu")

    def vjp(do, dstate=None):
        elu1 = lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))  # noqa: E731
        fq, fk = elu1(q), elu1(k)
        A = np.tril(fq @ np.swapaxes(fk, -1, -2))
        den = A.sum(-1, keepdims=True) + 1e-6
        oo = (A @ v) / den
        dn, dden = do / den, -(do * oo).sum(-1, keepdims=True) / den
        dA = np.tril(dn @ np.swapaxes(v, -1, -2) + dden)
        dq = (dA @ fk) * np.where(q > 0, 1.0, np.exp(np.minimum(q, 0)))
        dk = (np.swapaxes(dA, -1, -2) @ fq) * np.where(k > 0, 1.0, np.exp(np.minimum(k, 0)))
        return {"q": dq, "k": dk, "v": np.swapaxes(A, -1, -2) @ dn, "decay": None,
                "initial_state": None}
    return o, vjp


def test_causal_bridge_plumbing(monkeypatch):
    if not hasattr(la, "causal_vjp"):
        monkeypatch.setattr(la, "causal_vjp", _stand_in_causal_vjp, raising=False)
    q, k, v = _t(2, 9, 4, seed=1), _t(2, 9, 4, seed=2), _t(2, 9, 5, seed=3)
    assert torch.autograd.gradcheck(lambda q, k, v: lt.causal(q, k, v, "elu"), (q, k, v),
                                    **GC)
    torch.library.opcheck(torch.ops.linattn.causal,
                          (q, k, v, None, None, None, None, [], "kw={'kind': 'elu'}"))


@pytest.mark.parametrize("kind,kw", [("elu", {}), ("retnet", {}), ("mamba2", "decay"),
                                     ("cosformer", {}),
                                     ("performer", {"num_features": 8, "seed": 0})])
def test_causal_gradcheck_real_kernels(kind, kw):
    if not hasattr(la, "causal_vjp"):
        pytest.skip("this linattn has no la.causal_vjp")
    q, k, v = _t(2, 9, 4, seed=1), _t(2, 9, 4, seed=2), _t(2, 9, 5, seed=3)
    extra = {}
    if kw == "decay":
        kw = {}
        extra = {"decay": (-torch.rand(2, 9, generator=torch.Generator().manual_seed(4),
                                       dtype=torch.float64)).requires_grad_()}
    args = (q, k, v) + tuple(extra.values())

    def f(q, k, v, *d):
        return lt.causal(q, k, v, kind, **kw, **dict(zip(extra, d)))
    try:
        assert torch.autograd.gradcheck(f, args, **GC)
    except NotImplementedError as e:
        pytest.skip(str(e))


def test_noncausal_gradcheck_real_kernels():
    if not hasattr(la, "noncausal_vjp"):
        pytest.skip("this linattn has no la.noncausal_vjp")
    q, k, v = _t(2, 9, 4, seed=1), _t(2, 6, 4, seed=2), _t(2, 6, 5, seed=3)
    assert torch.autograd.gradcheck(lambda q, k, v: lt.noncausal(q, k, v, "elu"), (q, k, v),
                                     **GC)


def test_causal_state_of_diag_attention_resumes():
    """A DiagAttention state is its block cache only (S and z are None): return_state and
    initial_state carry it through the bridge, and pieces equal one call."""
    q, k, v = (_t(1, 2, 20, 8, seed=s) for s in (1, 2, 3))
    kw = dict(kind="transnormer", diag_block=8)
    whole = la.causal(*(x.detach().numpy() for x in (q, k, v)), **kw)
    o1, st = lt.causal(q[..., :12, :], k[..., :12, :], v[..., :12, :], return_state=True, **kw)
    assert st.S is None and st.z is None and st.t == 12
    o2 = lt.causal(q[..., 12:, :], k[..., 12:, :], v[..., 12:, :], initial_state=st, **kw)
    np.testing.assert_allclose(torch.cat([o1, o2], -2).detach().numpy(), whole, rtol=1e-12,
                               atol=1e-12)
    (o1.sum() + o2.sum()).backward()  # gradients flow to the inputs of both pieces
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v))
