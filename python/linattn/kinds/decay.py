"""Decayed kinds on the generic operator: ``"lightning"``, ``"retnet"`` (per-head
exponential decay, kinds.md section 7) and ``"mamba2"`` (Mamba-2 SSD, per-token
scalar decay, kinds.md section 9).

All three use identity features, no normaliser by default, and run in the generic
causal core (``_api.linear_core``): recurrent, chunked and parallel agree.
"""

from __future__ import annotations

import numpy as np

from .. import _api
from .. import _registry as reg
from .. import _validate as val
from .._draws import decay_slopes


def generic_causal(q, k, v, *, spec, mode, chunk_size, scale, normalize, eps, decay,
                   initial_state, return_state, layout, out, fmap_q=None, fmap_k=None,
                   eps_mode=None, decay_fn=None):
    """The default path of ``la.causal`` with hooks: ``decay_fn(q, dims)`` supplies the
    decay when the caller gave none."""
    q, k, v, dims, res, comp = _api._prepare_qkv(q, k, v, layout, causal=True)
    normalize, eps, eps_mode = _api._norm_and_eps(spec, normalize, eps, eps_mode)
    scale = spec.default_scale(dims.D) if scale is None else val.positive_number("scale", scale)
    val.choice("mode", mode, ("auto",) + spec.causal_modes)
    if decay is None and decay_fn is not None:
        decay = decay_fn(q, dims)
    return _api.linear_core(
        q, k, v, spec=spec, fmap_q=spec.fmap_q if fmap_q is None else fmap_q,
        fmap_k=spec.fmap_k if fmap_k is None else fmap_k, scale=scale, normalize=normalize,
        eps=eps, eps_mode=eps_mode, decay=decay, mode=mode, chunk_size=chunk_size,
        initial_state=initial_state, return_state=bool(return_state), layout=dims.layout,
        out=out, dims=dims, res=res, comp=comp)


def heads_of(q: np.ndarray, layout: str) -> int:
    """The head axis of ``q``: ``q.shape[-3]`` (``q.shape[-2]`` with ``layout="bthd"``),
    1 for 2-D input (kinds.md 7.2)."""
    if layout == "bthd":
        return q.shape[-2]
    return q.shape[-3] if q.ndim >= 3 else 1


def _preset_decay(preset_of):
    def fn(q, dims):
        H = heads_of(q, dims.layout)
        g = decay_slopes(max(H, 1), **preset_of())[:H]  # H = 0: an empty batch
        return g if q.ndim >= 3 else g[0]
    return fn


def _lightning_causal(q, k, v, *, spec, options, decay, **kw):
    slopes = val.choice("slopes", options["slopes"], ("tnl", "fla"))
    layer, L = options["layer"], options["num_layers"]
    decay_slopes(1, slopes, layer, L)  # validates layer / num_layers before any kernel
    fn = _preset_decay(lambda: {"preset": slopes, "layer": layer, "num_layers": L})
    return generic_causal(q, k, v, spec=spec, decay=decay, decay_fn=fn, **_core_kw(kw))


def _retnet_causal(q, k, v, *, spec, options, decay, **kw):
    fn = _preset_decay(lambda: {"preset": "retnet"})
    return generic_causal(q, k, v, spec=spec, decay=decay, decay_fn=fn, **_core_kw(kw))


def _mamba2_causal(q, k, v, *, spec, options, decay, **kw):
    if decay is None:
        raise ValueError("kind 'mamba2' requires decay= (the per-token log-decay dt_t * A_h, "
                         "shape (..., T)); got None")
    qa, ka, va = val.array("q", q), val.array("k", k), val.array("v", v)
    layout = val.check_layout(kw["layout"])
    dims = val.qkv_dims(qa, ka, va, layout, causal=True)
    _, _, per_token = val.decay(decay, dims)
    if not per_token:
        raise ValueError(f"kind 'mamba2' needs a per-token decay of shape (..., T={dims.T}) "
                         f"(one more axis than the batch dimensions {dims.batch}), got shape "
                         f"{np.shape(decay)}")
    return generic_causal(qa, ka, va, spec=spec, decay=decay, **_core_kw(kw))


_DROP = ("num_features", "projection", "seed", "horizon")


def _core_kw(kw):
    return {k: v for k, v in kw.items() if k not in _DROP}


reg.register(reg.KindSpec(
    name="lightning",
    doc="Identity features with a per-head exponential decay lambda_h^(t-s) (TransNormerLLM / "
        "Lightning Attention-2); decay= overrides the preset chosen by slopes= "
        "('tnl' ALiBi-based, or 'fla'), layer= and num_layers= (la.decay_slopes).",
    paper="Qin et al. 2023, TransNormerLLM, arXiv:2307.14995; Qin et al. 2024, Lightning "
          "Attention-2, arXiv:2401.04658",
    normalize="none", eps=1e-8, eps_mode="abs_clamp", noncausal=False,
    scale_doc="1, multiplies q (the original kernels apply none)",
    options={"slopes": "tnl", "layer": 0, "num_layers": 1},
    causal_impl=_lightning_causal,
))
reg.register(reg.KindSpec(
    name="retnet",
    doc="Identity features with RetNet's per-head decay lambda_h = 1 - 2^(-5-h) "
        "(la.decay_slopes(H, 'retnet')); decay= overrides it.",
    paper="Sun et al. 2023, Retentive Network, arXiv:2307.08621",
    normalize="none", eps=1e-8, eps_mode="abs_clamp", noncausal=False,
    scale=reg.inv_sqrt, scale_doc="d^(-1/2), multiplies q (fla's retention default)",
    causal_impl=_retnet_causal,
))
reg.register(reg.KindSpec(
    name="mamba2",
    doc="Mamba-2 SSD as linear attention: pass q = C_t (N), k = B_t (N), v = dt_t * x_t (P) "
        "and the required per-token decay = dt_t * A_h (..., T); identity features, no "
        "normaliser.  state.S is H^T (N x P); Mamba's (P, N) state is its transpose.  conv1d, "
        "the D*x skip and the gated RMSNorm stay outside.",
    paper="Dao & Gu 2024, Transformers are SSMs (Mamba-2), arXiv:2405.21060",
    normalize="none", eps=1e-8, eps_mode="abs_clamp", noncausal=False,
    scale_doc="1, multiplies q (= C)",
    causal_impl=_mamba2_causal,
))
