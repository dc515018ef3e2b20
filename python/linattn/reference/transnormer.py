"""Oracle of ``"transnormer"`` (docs/design/kinds.md §6): NormAttention through the generic
quadratic oracle, DiagAttention with an explicit block mask over absolute positions,
float64."""

from __future__ import annotations

import numpy as np

from . import linear


def norm_attention(q, k, v, *, causal: bool, variant: str = "t2", scale: float = 1.0,
                   normalize: str = "norm", eps: float = 1e-8, g=None):
    fmap = "elu1" if variant == "t2" else "elu"
    fq, fk = linear.phi(q, fmap, scale), linear.phi(k, fmap)
    if causal:
        return linear.causal(fq, fk, v, g=g, normalize=normalize, eps=eps,
                             eps_mode="abs_clamp")[0]
    return linear.noncausal(fq, fk, v, normalize=normalize, eps=eps, eps_mode="abs_clamp")


def block_mask(T: int, S: int, w: int, causal: bool, t0: int = 0) -> np.ndarray:
    """``M[t, s]`` true when ``floor(p_t / w) == floor(p_s / w)`` (and ``s <= t`` when
    causal), positions ``p = t0 + index``."""
    pt = t0 + np.arange(T)[:, None]
    ps = t0 + np.arange(S)[None, :]
    m = (pt // w) == (ps // w)
    return m & (ps <= pt) if causal else m


def diag_attention(q, k, v, *, w: int, causal: bool, variant: str = "t2", scale=None,
                   normalize: str = "norm", eps: float = 1e-8):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    T, S, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    m = block_mask(T, S, w, causal)
    logits = scale * (q @ np.swapaxes(k, -1, -2))
    if variant == "t2":
        z = np.where(m, logits, -np.inf)
        mx = np.max(z, axis=-1, keepdims=True)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        p = np.where(m, np.exp(z - mx), 0.0)
        den = p.sum(-1, keepdims=True)
        return (p / np.where(den > 0, den, 1.0)) @ v
    num = np.where(m, np.maximum(logits, 0), 0.0) @ v
    return linear.finish(num, None, normalize, eps, "add")


def _opts(scale, normalize, eps, variant, diag_block):
    w = 64 if diag_block is True else diag_block
    normalize = "norm" if normalize is None else normalize
    eps = 1e-8 if eps is None else eps
    return w, normalize, eps


def causal_api(q, k, v, kind="transnormer", *, scale=None, normalize=None, eps=None,
               decay=None, variant="t2", diag_block=None, **_ignored):
    w, normalize, eps = _opts(scale, normalize, eps, variant, diag_block)
    if w:
        return diag_attention(q, k, v, w=w, causal=True, variant=variant, scale=scale,
                              normalize=normalize, eps=eps)
    g = None
    if decay is not None:
        g = np.asarray(decay, np.float64)
        if g.ndim < np.asarray(q).ndim - 1:
            g = np.broadcast_to(g[..., None], g.shape + (np.asarray(q).shape[-2],))
    return norm_attention(q, k, v, causal=True, variant=variant,
                          scale=1.0 if scale is None else scale, normalize=normalize, eps=eps,
                          g=g)


def noncausal_api(q, k, v, kind="transnormer", *, scale=None, normalize=None, eps=None,
                  variant="t2", diag_block=None, **_ignored):
    w, normalize, eps = _opts(scale, normalize, eps, variant, diag_block)
    if w:
        return diag_attention(q, k, v, w=w, causal=False, variant=variant, scale=scale,
                              normalize=normalize, eps=eps)
    return norm_attention(q, k, v, causal=False, variant=variant,
                          scale=1.0 if scale is None else scale, normalize=normalize, eps=eps)
