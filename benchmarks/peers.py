"""Torch-based peers for the benchmark registry, each imported lazily and guarded.

Every peer gets the same float32 inputs as linattn (B*H = 8 heads, D = E = 64); a peer that
cannot be imported is reported (``status()``) and skipped.  ``parity()`` compares each peer
with the matching linattn call on a small input before anything is timed.

Peers (install notes: benchmarks/README.md):
- torch ``scaled_dot_product_attention(is_causal=True)`` (exact softmax);
- ``torch_chunked_elu``: the causal linear attention a user would write in torch (elu+1,
  chunk 64, batched matmuls, denominator as an extra value column, no Python loop);
- performer-pytorch ``FastAttention`` causal / non-causal with linattn's projection matrix;
- fast-transformers ``CausalLinearAttention`` (CPU ``causal_product``), if it built;
- fla ``naive_*`` torch references (``fla.ops.linear_attn.naive``, ``fla.ops.simple_gla.naive``).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md

import numpy as np

import linattn as la
from linattn._bench import (BH, CHUNK, D, E, TABLE_T, SWEEP_T, Entry, flops_chunked,
                            flops_quadratic, qkv)

_STATUS: dict[str, str] = {}
FULL = tuple(sorted(set(TABLE_T) | set(SWEEP_T)))
M = 256  # Performer features


def _try(name: str, fn):
    try:
        r = fn()
        _STATUS[name] = "ok"
        return r
    except Exception as exc:  # noqa: BLE001 - any import/build problem skips the peer
        _STATUS[name] = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return None


def _torch():
    import torch
    torch.set_grad_enabled(False)
    return torch


def versions() -> dict:
    out = {}
    for dist in ("torch", "performer-pytorch", "pytorch-fast-transformers", "fla-core",
                 "einops", "threadpoolctl", "matplotlib"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    for k, v in _STATUS.items():
        if v != "ok":
            out[f"peer {k}"] = v
    return out


def status() -> dict[str, str]:
    return dict(_STATUS)


# ------------------------------------------------------------ torch kernels --

def torch_chunked_elu(q, k, v, chunk: int = CHUNK, eps: float = 1e-6):
    """Causal elu+1 linear attention in torch, chunked with batched matmuls.

    ``q, k: (N, T, D)``, ``v: (N, T, E)``; T is padded to a multiple of ``chunk``.  The
    normaliser rides along as a column of ones appended to ``v``, so one ``bmm`` chain gives
    numerator and denominator; chunk states are an exclusive prefix sum over chunks.
    """
    import torch
    import torch.nn.functional as F

    N, T, Dd = q.shape
    Ev = v.shape[-1]
    pad = (-T) % chunk
    fq = F.elu(q) + 1
    fk = F.elu(k) + 1
    va = torch.cat([v, v.new_ones(N, T, 1)], dim=-1)
    if pad:
        fq = F.pad(fq, (0, 0, 0, pad))
        fk = F.pad(fk, (0, 0, 0, pad))
        va = F.pad(va, (0, 0, 0, pad))
    n = (T + pad) // chunk
    fq = fq.reshape(N * n, chunk, Dd)
    fk = fk.reshape(N * n, chunk, Dd)
    va = va.reshape(N * n, chunk, Ev + 1)
    kv = torch.bmm(fk.transpose(1, 2), va).view(N, n, Dd, Ev + 1)
    S = kv.cumsum(1).sub_(kv).view(N * n, Dd, Ev + 1)  # state entering each chunk
    A = torch.bmm(fq, fk.transpose(1, 2)).tril_()
    o = torch.baddbmm(torch.bmm(fq, S), A, va).view(N, n * chunk, Ev + 1)[:, :T]
    return o[..., :Ev] / (o[..., Ev:] + eps)


# ---------------------------------------------------------------- entries --

def _t(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(x))


def _sdpa():
    torch = _torch()
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def make(T, bh, dtype):
        q, k, v = (_t(x).view(1, bh, T, -1) for x in qkv(T, bh, dtype=dtype))
        return lambda: sdpa(q, k, v, is_causal=True)
    torch.zeros(1)
    return [Entry("torch sdpa causal", make, flops_quadratic(), FULL, (512, 2048),
                  group="peer")]


def _torch_chunked():
    _torch()

    def make(T, bh, dtype):
        q, k, v = (_t(x) for x in qkv(T, bh, dtype=dtype))
        return lambda: torch_chunked_elu(q, k, v)
    return [Entry("torch chunked elu (bmm)", make, flops_chunked(D, E + 1), FULL,
                  (512, 2048, 8192), group="peer")]


def _performer_module(causal: bool, W):
    import contextlib
    import io

    import performer_pytorch as pp
    with contextlib.redirect_stdout(io.StringIO()):  # "unable to import cuda code ..."
        fa = pp.FastAttention(dim_heads=D, nb_features=M, causal=causal)
    fa.projection_matrix.copy_(_t(W.astype(np.float32)))
    return fa


def _performer():
    _torch()
    importlib.import_module("performer_pytorch")
    W = la.random_features(D, M, seed=0, dtype=np.float32)

    def make(causal):
        def mk(T, bh, dtype):
            fa = _performer_module(causal, W)
            q, k, v = (_t(x).view(1, bh, T, -1) for x in qkv(T, bh, dtype=dtype))
            return lambda: fa(q, k, v)
        return mk

    def make_la_nc(T, bh, dtype):
        q, k, v = qkv(T, bh, dtype=dtype)
        return lambda: la.noncausal(q, k, v, kind="performer", projection=W)
    return [
        Entry("performer-pytorch causal m256", make(True), None, (512, 2048, 8192), (512,),
              group="peer", note="CPU fallback causal_linear_attention_noncuda"),
        Entry("performer-pytorch noncausal m256", make(False), None, (512, 2048, 8192),
              (2048,), group="peer"),
        Entry("la performer m256 noncausal", make_la_nc, None, (512, 2048, 8192), (2048,)),
    ]


def _fast_transformers():
    torch = _torch()
    from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
    from fast_transformers.causal_product import causal_dot_product
    from fast_transformers.masking import LengthMask, TriangularCausalMask

    def make_module(T, bh, dtype):
        att = CausalLinearAttention(D)
        q, k, v = (_t(x).view(bh, T, -1).transpose(0, 1).unsqueeze(0).contiguous()
                   for x in qkv(T, bh, dtype=dtype))  # (N=1, L, H, D)
        am = TriangularCausalMask(T)
        lm = LengthMask(torch.full((1,), T, dtype=torch.int64), max_len=T)
        return lambda: att(q, k, v, am, lm, lm)

    def make_raw(T, bh, dtype):
        q, k, v = (_t(x).view(1, bh, T, -1) for x in qkv(T, bh, dtype=dtype))
        fq = torch.nn.functional.elu(q) + 1
        fk = torch.nn.functional.elu(k) + 1
        return lambda: causal_dot_product(fq, fk, v)
    return [
        Entry("fast-transformers CausalLinearAttention", make_module, None, FULL,
              (512, 2048), group="peer"),
        Entry("fast-transformers causal_dot_product (num only)", make_raw, None,
              (512, 2048, 8192), (2048,), group="peer"),
    ]


def _fla_naive(sub: str):
    """Load ``fla/ops/<sub>/naive.py`` by path: importing ``fla.ops`` needs triton, the
    naive references need only torch and einops."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'fla' (pip install --no-deps fla-core)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "ops", sub, "naive.py")
    s = importlib.util.spec_from_file_location(f"_fla_naive_{sub}", path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


def _fla():
    torch = _torch()
    lin = _fla_naive("linear_attn")
    naive_chunk_linear_attn = lin.naive_chunk_linear_attn
    naive_recurrent_linear_attn = lin.naive_recurrent_linear_attn
    naive_chunk_simple_gla = _fla_naive("simple_gla").naive_chunk_simple_gla

    def bthd(T, bh, dtype, phi=True):
        q, k, v = (_t(x).view(bh, T, -1).transpose(0, 1).unsqueeze(0).contiguous()
                   for x in qkv(T, bh, dtype=dtype))
        if phi:
            q = torch.nn.functional.elu(q) + 1
            k = torch.nn.functional.elu(k) + 1
        return q, k, v

    def make_chunk(T, bh, dtype):
        q, k, v = bthd(T, bh, dtype)
        return lambda: naive_chunk_linear_attn(q, k, v, scale=1.0, normalize=True)

    def make_rec(T, bh, dtype):
        q, k, v = bthd(T, bh, dtype)
        return lambda: naive_recurrent_linear_attn(q, k, v, scale=1.0, normalize=True)

    def make_gla(T, bh, dtype):
        q, k, v = bthd(T, bh, dtype, phi=False)
        g = torch.full((1, T, bh), -0.05)
        return lambda: naive_chunk_simple_gla(q, k, v, g, scale=1.0)
    return [
        Entry("fla naive_chunk_linear_attn", make_chunk, flops_chunked(), FULL, (512, 2048),
              group="peer"),
        Entry("fla naive_recurrent_linear_attn", make_rec, None, (512, 2048), (512,),
              group="peer"),
        Entry("fla naive_chunk_simple_gla", make_gla, None, (512, 2048, 8192), (2048,),
              group="peer"),
    ]


def entries() -> list[Entry]:
    """All peers that import; the reasons for the others are in ``status()``."""
    out: list[Entry] = []
    for name, fn in (("torch", _sdpa), ("torch chunked", _torch_chunked),
                     ("performer-pytorch", _performer), ("fast-transformers", _fast_transformers),
                     ("fla", _fla)):
        r = _try(name, fn)
        if r:
            out += r
        else:
            print(f"peer {name}: {_STATUS[name]}")
    return out


# ----------------------------------------------------------------- parity --

def _rel(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def parity() -> list[tuple[str, float, str]]:
    """Max |peer - linattn| / max |linattn| on B*H = 8, T = 256 (float32)."""
    out: list[tuple[str, float, str]] = []
    T = 256
    q, k, v = qkv(T, BH)

    def add(name, fn, ref, msg=""):
        try:
            out.append((name, _rel(fn(), ref), msg))
        except Exception as exc:  # noqa: BLE001
            out.append((name, float("nan"), f"failed: {type(exc).__name__}: {exc}"))

    elu = la.causal(q, k, v, kind="elu")
    if _STATUS.get("torch chunked") == "ok":
        add("torch chunked elu vs la elu",
            lambda: torch_chunked_elu(_t(q), _t(k), _t(v)).numpy(), elu)
    if _STATUS.get("torch") == "ok":
        from torch.nn.functional import scaled_dot_product_attention as sdpa
        add("torch sdpa vs la.softmax_attention",
            lambda: sdpa(*(_t(x) for x in (q, k, v)), is_causal=True).numpy(),
            la.softmax_attention(q, k, v, causal=True))
    if _STATUS.get("performer-pytorch") == "ok":
        W = la.random_features(D, M, seed=0, dtype=np.float32)
        tq, tk, tv = (_t(x).view(1, BH, T, -1) for x in (q, k, v))
        # linattn's 'global' form reproduces performer-pytorch's features (max(u) shift,
        # eps inside); its causal CPU fallback also adds 1e-6 to every entry of
        # cumsum(phi(k)) in the denominator, which the global form does not
        add("performer-pytorch causal vs la performer stabilizer=global eps=1e-4",
            lambda: _performer_module(True, W)(tq, tk, tv).view(BH, T, -1).numpy(),
            la.causal(q, k, v, kind="performer", projection=W, stabilizer="global",
                      eps=1e-4), "(its causal fallback adds 1e-6 to every cumsum entry of the "
            "denominator)")
        add("performer-pytorch noncausal vs la.noncausal performer global eps=1e-4",
            lambda: _performer_module(False, W)(tq, tk, tv).view(BH, T, -1).numpy(),
            la.noncausal(q, k, v, kind="performer", projection=W, stabilizer="global",
                         eps=1e-4), "")
        add("performer-pytorch causal vs la performer default (prefix stabiliser)",
            lambda: _performer_module(True, W)(tq, tk, tv).view(BH, T, -1).numpy(),
            la.causal(q, k, v, kind="performer", projection=W),
            "(expected > 0: published form leaks the future key max)")
    if _STATUS.get("fast-transformers") == "ok":
        import torch
        from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
        from fast_transformers.masking import LengthMask, TriangularCausalMask

        def ft():
            tq, tk, tv = (_t(x).transpose(0, 1).unsqueeze(0).contiguous() for x in (q, k, v))
            lm = LengthMask(torch.full((1,), T, dtype=torch.int64), max_len=T)
            o = CausalLinearAttention(D)(tq, tk, tv, TriangularCausalMask(T), lm, lm)
            return o[0].transpose(0, 1).numpy()
        add("fast-transformers CausalLinearAttention vs la elu", ft, elu)
    if _STATUS.get("fla") == "ok":
        import torch
        lin_m = _fla_naive("linear_attn")
        naive_chunk_linear_attn = lin_m.naive_chunk_linear_attn
        naive_recurrent_linear_attn = lin_m.naive_recurrent_linear_attn
        naive_chunk_simple_gla = _fla_naive("simple_gla").naive_chunk_simple_gla

        def b(x):
            return _t(x).transpose(0, 1).unsqueeze(0).contiguous()

        def unb(o):
            return o[0].transpose(0, 1).numpy()
        fq = b(q).clone()
        fk = b(k).clone()
        fq = torch.nn.functional.elu(fq) + 1
        fk = torch.nn.functional.elu(fk) + 1
        lin = la.causal(q, k, v, kind="elu", eps=0.0)
        add("fla naive_chunk_linear_attn(normalize) vs la elu eps=0",
            lambda: unb(naive_chunk_linear_attn(fq, fk, b(v), scale=1.0, normalize=True)), lin)
        add("fla naive_recurrent_linear_attn(normalize) vs la elu eps=0",
            lambda: unb(naive_recurrent_linear_attn(fq, fk, b(v), scale=1.0,
                                                    normalize=True)[0]), lin)
        gam = -0.05 * (1 + np.arange(BH))
        g = torch.from_numpy(np.broadcast_to(gam, (1, T, BH)).astype(np.float32).copy())
        add("fla naive_chunk_simple_gla vs la lightning decay=g",
            lambda: unb(naive_chunk_simple_gla(b(q), b(k), b(v), g, scale=1.0)[0]),
            la.causal(q, k, v, kind="lightning", decay=gam))
    return out
