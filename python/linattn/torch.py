"""``linattn.torch``: linattn's kernels as PyTorch operators with autograd.

``import linattn.torch as lt`` (needs ``pip install "linattn[torch]"``; ``import linattn``
alone never imports torch)::

    o = lt.softmax_attention(q, k, v, causal=True)          # CPU tensors in and out
    o = lt.causal(q, k, v, kind="elu", decay=g)             # la.causal's arguments
    o = lt.noncausal(q, k, v, kind="performer", num_features=64, projection=W)
    y = lt.selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=b, delta_softplus=True)
    loss.backward()                                         # gradients through linattn's C

Each entry point is a ``torch.library.custom_op`` (``linattn::<entry>``) with a fake
(meta) implementation and ``register_autograd``; its backward calls a second custom op
``linattn::<entry>_bwd``, so ``torch.compile`` traces both without graph breaks.

- **Tensors**: CPU only (a clear ValueError for CUDA or meta tensors); float32 and float64
  computed as they are, float16 and bfloat16 computed in float32 and returned in their own
  dtype (the autocast convention); other dtypes raise TypeError.  Inputs reach NumPy
  without a copy (``t.detach().numpy()``) and results come back without one
  (``torch.from_numpy`` on freshly allocated arrays).
- **Saved for backward** the torch way (``ctx.save_for_backward``): an in-place edit of an
  input between forward and backward raises torch's version-counter error instead of
  giving wrong gradients.  ``softmax_attention`` saves ``q, k, v, o`` and the row
  log-sum-exp; ``selective_scan`` saves its inputs (the backward recomputes the states);
  ``causal`` / ``noncausal`` save their inputs and the backward recomputes the forward
  inside ``la.causal_vjp`` / ``la.noncausal_vjp`` (one extra forward per backward).
- **Constants** (``projection``, ``initial_state.extra``): no gradient; one that requires
  grad raises ValueError ("pass projection.detach()").  ``scale``, ``eps``, ``seed``,
  ``chunk_size`` and kind options are configuration, not inputs.
- ``causal(..., return_state=True)`` returns ``(o, la.State)`` with tensor ``S`` / ``z``
  and runs through a ``torch.autograd.Function`` (a graph break under ``torch.compile``);
  the state's ``S`` / ``z`` are differentiable.  Double backward is not supported.
"""

import ast
from typing import Optional

import numpy as np
import torch

import linattn as la
from linattn.grad import softmax as _gsm
from linattn.grad import sscan as _gss

Tensor = torch.Tensor
_FLOATS = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)
_SSCAN_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


# --------------------------------------------------------------------------- helpers

def _check(**tensors) -> tuple:
    """(compute dtype, result dtype) of the given tensors (None ignored); raises for
    non-CPU tensors and non-float dtypes."""
    dtypes = []
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"linattn.torch takes tensors: {name} is a "
                            f"{type(t).__name__} (use torch.as_tensor)")
        if t.device.type != "cpu":
            raise ValueError(f"linattn.torch computes on the CPU; {name} is on {t.device} "
                             f"— move it with .cpu() or use a GPU library")
        if t.dtype not in _FLOATS + _HALF:
            raise TypeError(f"linattn.torch computes in float32 / float64 (float16 and "
                            f"bfloat16 in float32); {name} has dtype {t.dtype}")
        dtypes.append(t.dtype)
    if not dtypes:
        return None, None
    res = dtypes[0]
    for d in dtypes[1:]:
        res = torch.promote_types(res, d)
    comp = torch.float32 if res in _HALF else res
    return comp, res


def _constant(name: str, t):
    if isinstance(t, torch.Tensor) and t.requires_grad:
        raise ValueError(f"{name} gets no gradient in linattn; pass {name}.detach()")
    return t


def _np(t: Optional[Tensor]):
    return None if t is None else t.detach().numpy()


def _fresh(a) -> Tensor:
    """``torch.from_numpy`` on a result array (results never share an input's memory);
    copied only when read-only (a broadcast view) or not C-contiguous (the strides the
    fake implementations declare)."""
    a = np.asarray(a)
    if not (a.flags.c_contiguous and a.flags.writeable):
        a = np.array(a, order="C", copy=True)
    return torch.from_numpy(a)


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def _parse(config: str) -> dict:
    """``name=repr;...`` back to a dict (built with f-strings: traceable)."""
    out = {}
    for item in config.split(";"):
        if item:
            k, v = item.split("=", 1)
            out[k] = ast.literal_eval(v)
    return out


def _td_batch(q, k, v, layout: str):
    if layout == "bthd":
        qb, kb, vb = (tuple(x.shape[:-3]) + (x.shape[-2],) for x in (q, k, v))
    else:
        qb, kb, vb = (tuple(x.shape[:-2]) for x in (q, k, v))
    return tuple(torch.broadcast_shapes(qb, kb, vb))


def _out_shape(q, k, v, layout: str):
    batch = _td_batch(q, k, v, layout)
    T, E = q.shape[-3] if layout == "bthd" else q.shape[-2], v.shape[-1]
    shape = batch[:-1] + (T, batch[-1], E) if layout == "bthd" else batch + (T, E)
    return batch, T, shape


# --------------------------------------------------------------------- softmax attention

@torch.library.custom_op("linattn::softmax_attention", mutates_args=(), device_types="cpu")
def _softmax_op(q: Tensor, k: Tensor, v: Tensor, config: str) -> list[Tensor]:
    c = _parse(config)
    _, o, lse = _gsm.forward(_np(q), _np(k), _np(v), c["causal"], c["scale"], c["layout"])
    return [_fresh(o), _fresh(lse)]


@_softmax_op.register_fake
def _(q, k, v, config):
    c = _parse(config)
    batch, T, shape = _out_shape(q, k, v, c["layout"])
    return [q.new_empty(shape), q.new_empty(batch + (T,), dtype=torch.float64)]


@torch.library.custom_op("linattn::softmax_attention_bwd", mutates_args=(),
                         device_types="cpu")
def _softmax_bwd_op(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor,
                    config: str) -> list[Tensor]:
    c = _parse(config)
    g = _gsm.backward(_np(q), _np(k), _np(v), _np(o), _np(lse), _np(do), c["causal"],
                      c["scale"], c["layout"])
    return [_fresh(x) for x in g]


@_softmax_bwd_op.register_fake
def _(q, k, v, o, lse, do, config):
    return [torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v)]


def _softmax_setup(ctx, inputs, output):
    q, k, v, config = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.mark_non_differentiable(lse)
    ctx.config = config


def _softmax_backward(ctx, grads):
    q, k, v, o, lse = ctx.saved_tensors
    do = grads[0] if grads[0] is not None else torch.zeros_like(o)
    dq, dk, dv = torch.ops.linattn.softmax_attention_bwd(q, k, v, o, lse, do, ctx.config)
    return dq, dk, dv, None


torch.library.register_autograd("linattn::softmax_attention", _softmax_backward,
                                setup_context=_softmax_setup)


def softmax_attention(q, k, v, causal: bool = True, scale: Optional[float] = None, *,
                      layout: str = "...td") -> Tensor:
    """Exact softmax attention (``la.softmax_attention``) with autograd; the backward
    recomputes the scores per block from the saved log-sum-exp (O(T) memory)."""
    comp, res = _check(q=q, k=k, v=v)
    config = f"causal={bool(causal)!r};scale={scale!r};layout={layout!r}"
    o, _ = torch.ops.linattn.softmax_attention(q.to(comp), k.to(comp), v.to(comp), config)
    return o if res == comp else o.to(res)


# ------------------------------------------------------------------------ selective scan

@torch.library.custom_op("linattn::selective_scan", mutates_args=(), device_types="cpu")
def _sscan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
              D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
              initial_state: Optional[Tensor], config: str) -> list[Tensor]:
    c = _parse(config)
    out, h = la.selective_scan(_np(u), _np(delta), _np(A), _np(B), _np(C), D=_np(D),
                               z=_np(z), delta_bias=_np(delta_bias),
                               delta_softplus=c["softplus"],
                               initial_state=_np(initial_state), return_state=True)
    return [_fresh(out), _fresh(h)]


@_sscan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, config):
    return [u.new_empty(u.shape), u.new_empty((u.shape[0], u.shape[1], A.shape[1]))]


@torch.library.custom_op("linattn::selective_scan_bwd", mutates_args=(), device_types="cpu")
def _sscan_bwd_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                  D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                  initial_state: Optional[Tensor], dout: Tensor, dstate: Tensor,
                  config: str) -> list[Tensor]:
    c = _parse(config)
    g = _gss.backward(_np(u), _np(delta), _np(A), _np(B), _np(C), D=_np(D), z=_np(z),
                      delta_bias=_np(delta_bias), delta_softplus=c["softplus"],
                      initial_state=_np(initial_state), dout=_np(dout), dstate=_np(dstate))
    return [_fresh(g[n]) if g[n] is not None else _empty(u) for n in _SSCAN_NAMES]


@_sscan_bwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, dout, dstate, config):
    return [torch.empty_like(x, memory_format=torch.contiguous_format) if x is not None
            else u.new_empty((0,))
            for x in (u, delta, A, B, C, D, z, delta_bias, initial_state)]


def _sscan_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:9])
    ctx.config = inputs[9]


def _sscan_backward(ctx, grads):
    saved = ctx.saved_tensors
    dout, dstate = grads
    u, A = saved[0], saved[2]
    if dout is None:
        dout = torch.zeros_like(u)
    if dstate is None:
        dstate = u.new_zeros((u.shape[0], u.shape[1], A.shape[1]))
    g = torch.ops.linattn.selective_scan_bwd(*saved, dout, dstate, ctx.config)
    return tuple(None if x is None else gi for x, gi in zip(saved, g)) + (None,)


torch.library.register_autograd("linattn::selective_scan", _sscan_backward,
                                setup_context=_sscan_setup)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus: bool = False, initial_state=None,
                   return_state: bool = False):
    """Mamba-1's selective scan (``la.selective_scan``) with autograd for every input."""
    comp, res = _check(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                       initial_state=initial_state)
    cv = lambda t: None if t is None else t.to(comp)  # noqa: E731
    config = f"softplus={bool(delta_softplus)!r}"
    out, h = torch.ops.linattn.selective_scan(cv(u), cv(delta), cv(A), cv(B), cv(C), cv(D),
                                              cv(z), cv(delta_bias), cv(initial_state),
                                              config)
    out = out if res == comp else out.to(res)
    if not return_state:
        return out
    return out, (h if res == comp else h.to(res))


# ------------------------------------------------------------------ causal / noncausal

def _vjp_fn(entry: str):
    fn = getattr(la, f"{entry}_vjp", None)
    if fn is None:
        raise NotImplementedError(f"this linattn has no la.{entry}_vjp: "
                                  f"linattn.torch.{entry} needs it for the backward")
    return fn


def _la_call(entry, q, k, v, decay, S0, z0, projection, extras, c, with_vjp):
    """Run ``la.<entry>`` or ``la.<entry>_vjp`` on the op's tensors and config."""
    kw = dict(c["kw"])
    if entry == "causal":
        if decay is not None:
            kw["decay"] = _np(decay)
        if S0 is not None or c.get("state_kind"):  # a DiagAttention state is its cache only
            extra = {n: _np(e) for n, e in zip(c["extras"], extras)}
            kw["initial_state"] = la.State(_np(S0), _np(z0), c["t0"], c["state_kind"],
                                           extra)
    if projection is not None:
        kw["projection"] = _np(projection)
    args = (_np(q), _np(k), _np(v))
    if with_vjp:
        return _vjp_fn(entry)(*args, **kw)
    return getattr(la, entry)(*args, **kw)


def _grads_out(g, q, k, v, decay, S0, z0):
    st = g.get("initial_state")
    gS = gz = None
    if st is not None:
        gS, gz = (st.S, st.z) if isinstance(st, la.State) else (st.get("S"), st.get("z"))
    outs = [g["q"], g["k"], g["v"], g.get("decay") if decay is not None else None,
            gS if S0 is not None else None, gz if z0 is not None else None]
    return [_fresh(x) if x is not None else _empty(q) for x in outs]


def _lin_op(entry: str):
    @torch.library.custom_op(f"linattn::{entry}", mutates_args=(), device_types="cpu")
    def op(q: Tensor, k: Tensor, v: Tensor, decay: Optional[Tensor], S0: Optional[Tensor],
           z0: Optional[Tensor], projection: Optional[Tensor], extras: list[Tensor],
           config: str) -> Tensor:
        c = _parse(config)
        return _fresh(_la_call(entry, q, k, v, decay, S0, z0, projection, extras, c, False))

    @op.register_fake
    def _(q, k, v, decay, S0, z0, projection, extras, config):
        return q.new_empty(_out_shape(q, k, v, _parse(config)["kw"].get("layout", "...td"))[2])

    @torch.library.custom_op(f"linattn::{entry}_bwd", mutates_args=(), device_types="cpu")
    def bwd(q: Tensor, k: Tensor, v: Tensor, decay: Optional[Tensor], S0: Optional[Tensor],
            z0: Optional[Tensor], projection: Optional[Tensor], extras: list[Tensor],
            do: Tensor, config: str) -> list[Tensor]:
        c = _parse(config)
        _, vjp = _la_call(entry, q, k, v, decay, S0, z0, projection, extras, c, True)
        return _grads_out(vjp(_np(do)), q, k, v, decay, S0, z0)

    @bwd.register_fake
    def _(q, k, v, decay, S0, z0, projection, extras, do, config):
        return [torch.empty_like(x, memory_format=torch.contiguous_format) if x is not None
                else q.new_empty((0,)) for x in (q, k, v, decay, S0, z0)]

    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:7], *inputs[7])
        ctx.config = inputs[8]

    def backward(ctx, do):
        s = ctx.saved_tensors
        g = getattr(torch.ops.linattn, f"{entry}_bwd")(*s[:7], list(s[7:]), do, ctx.config)
        grads = tuple(None if x is None else gi for x, gi in zip(s[:6], g))
        return grads + (None, [None] * (len(s) - 7), None)

    torch.library.register_autograd(f"linattn::{entry}", backward, setup_context=setup)
    return op


_causal_op = _lin_op("causal")
_noncausal_op = _lin_op("noncausal")


class _CausalWithState(torch.autograd.Function):
    """``causal(..., return_state=True)``: the state's shape depends on the kind, so this
    path is an autograd.Function over ``la.causal_vjp`` (a graph break under compile)."""

    @staticmethod
    def forward(ctx, q, k, v, decay, S0, z0, projection, config, box, *extras):
        c = _parse(config)
        (o, st), vjp = _la_call("causal", q, k, v, decay, S0, z0, projection, extras,
                                c, True)
        ctx.vjp, ctx.has = vjp, (decay is not None, S0 is not None, z0 is not None)
        ctx.save_for_backward(q, k, v, *(x for x in (decay, S0, z0) if x is not None))
        box.append((st.t, st.kind, {n: torch.from_numpy(np.array(e, copy=True))
                                     for n, e in st.extra.items()}))
        ctx.n_extras = len(extras)
        S1 = _fresh(st.S) if st.S is not None else _empty(q)  # DiagAttention: a cache only
        z1 = _fresh(st.z) if st.z is not None else _empty(q)
        return _fresh(o), S1, z1

    @staticmethod
    def backward(ctx, do, dS, dz):
        ctx.saved_tensors  # raises if an input was edited in place since the forward
        ds = {"S": _np(dS)} if dS is not None and dS.numel() else {}
        if dz is not None and dz.numel():
            ds["z"] = _np(dz)
        g = ctx.vjp(_np(do), dstate=ds)
        st = g.get("initial_state")
        gS, gz = (None, None) if st is None else (
            (st.S, st.z) if isinstance(st, la.State) else (st.get("S"), st.get("z")))
        hd, hS, hz = ctx.has
        t = lambda a, on: _fresh(a) if (on and a is not None) else None  # noqa: E731
        return (_fresh(g["q"]), _fresh(g["k"]), _fresh(g["v"]), t(g.get("decay"), hd),
                t(gS, hS), t(gz, hz), None, None, None) + (None,) * ctx.n_extras


def _dc(decay):
    """A half / bfloat16 log-decay in float32; float32 / float64 as they are."""
    return decay.float() if decay is not None and decay.dtype in _HALF else decay


def _prep_linear(entry, q, k, v, decay, projection, initial_state, kw):
    for name in ("out", "check_finite"):
        if name in kw:
            raise TypeError(f"linattn.torch.{entry} does not take {name}=")
    _constant("projection", projection)
    S0 = z0 = None
    extras, names, t0, skind = [], [], 0, ""
    if initial_state is not None:
        if not isinstance(initial_state, la.State):
            raise TypeError("initial_state must be a la.State with tensor S / z, got "
                            f"{type(initial_state).__name__}")
        S0, z0 = initial_state.S, initial_state.z
        t0, skind = initial_state.t, initial_state.kind
        for n, e in sorted(initial_state.extra.items()):
            e = e if isinstance(e, torch.Tensor) else torch.as_tensor(np.asarray(e))
            names.append(n)
            extras.append(_constant(f"initial_state.extra[{n!r}]", e))
    comp, res = _check(q=q, k=k, v=v, **{"initial_state.S": S0, "initial_state.z": z0})
    _check(decay=decay)  # a log-decay keeps its own dtype (la computes it in float64)
    _check(projection=projection)
    cv = lambda t: None if t is None else t.to(comp)  # noqa: E731
    kw = {n: (x.item() if isinstance(x, np.generic) else x) for n, x in kw.items()}
    config = (f"kw={kw!r};extras={tuple(names)!r};t0={int(t0)!r};state_kind={skind!r}")
    return comp, res, cv, S0, z0, extras, config


def _fix_seed(kw: dict, projection, initial_state) -> None:
    """``seed=None`` is fresh entropy (as in ``la.causal``): drawn here, once, so that the
    forward and the backward (which reruns the forward) use the same random features."""
    if kw["kind"] in ("performer", "rfa") and projection is None and kw.get("seed") is None \
            and (initial_state is None or "seed" not in initial_state.extra):
        kw["seed"] = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


def causal(q, k, v, kind: str = "elu", *, decay=None, projection=None, initial_state=None,
           return_state: bool = False, **kw):
    """Causal linear attention (``la.causal``'s arguments, tensors in and out) with
    autograd through ``la.causal_vjp``: gradients for ``q``, ``k``, ``v``, ``decay`` and
    the initial state's ``S`` / ``z``."""
    kw = dict(kw, kind=kind)
    _fix_seed(kw, projection, initial_state)
    if return_state:
        kw["return_state"] = True
    comp, res, cv, S0, z0, extras, config = _prep_linear("causal", q, k, v, decay,
                                                         projection, initial_state, kw)
    proj = None if projection is None else projection.to(comp)
    if not return_state:
        o = _causal_op(cv(q), cv(k), cv(v), _dc(decay), cv(S0), cv(z0), proj, extras, config)
        return o if res == comp else o.to(res)
    box: list = []
    o, S1, z1 = _CausalWithState.apply(cv(q), cv(k), cv(v), _dc(decay), cv(S0), cv(z0), proj,
                                       config, box, *extras)
    t1, kind1, extra1 = box[0]
    state = la.State(S1 if S1.numel() else None, z1 if z1.numel() else None, t1, kind1, extra1)
    return (o if res == comp else o.to(res)), state


def noncausal(q, k, v, kind: str = "elu", *, projection=None, **kw):
    """Non-causal linear attention (``la.noncausal``'s arguments, tensors in and out) with
    autograd through ``la.noncausal_vjp``."""
    kw = dict(kw, kind=kind)
    _fix_seed(kw, projection, None)
    comp, res, cv, _, _, extras, config = _prep_linear("noncausal", q, k, v, None,
                                                       projection, None, kw)
    proj = None if projection is None else projection.to(comp)
    o = _noncausal_op(cv(q), cv(k), cv(v), None, None, None, proj, extras, config)
    return o if res == comp else o.to(res)


__all__ = ["causal", "noncausal", "selective_scan", "softmax_attention"]
