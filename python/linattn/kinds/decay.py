"""Decayed kinds on the generic operator: ``"lightning"``, ``"retnet"`` (per-head
exponential decay, docs/design/kinds.md §7) and ``"mamba2"`` (Mamba-2 SSD, per-token
scalar decay, docs/design/kinds.md §9).

All three use identity features, no normaliser by default, and run in the generic
causal operator (``linattn._call.linear_causal``): recurrent, chunked and parallel agree.
"""

from __future__ import annotations

import numpy as np

from .. import _registry as reg
from .. import _validate as val
from .._call import Call, elementwise_forward, elementwise_plan
from .._draws import decay_slopes


def preset_decay(call: Call, **preset) -> np.ndarray:
    """The per-head log-decay of a preset for the heads of ``call`` (``q.shape[-3]`` in the
    ``(..., T, D)`` view; one head for 2-D input, docs/design/kinds.md §7.2)."""
    q = call.q
    H = q.shape[-3] if q.ndim >= 3 else 1
    g = decay_slopes(max(H, 1), **preset)[:H]  # H = 0: an empty batch
    return g if q.ndim >= 3 else g[0]


def _lightning(call: Call, options: dict):
    slopes = val.choice("slopes", options["slopes"], ("tnl", "fla"))
    layer, L = options["layer"], options["num_layers"]
    decay_slopes(1, slopes, layer, L)  # validates layer / num_layers before any kernel
    if call.decay is not None:
        return elementwise_forward(call, options)
    g = preset_decay(call, preset=slopes, layer=layer, num_layers=L)
    return elementwise_forward(call, options, g=call.decay_td(g))


def _lightning_plan(call: Call, options: dict):
    """The plan of repeated calls (linattn._call.linear_causal_plan): the preset decay
    resolved once."""
    if call.decay is not None:
        return elementwise_plan(call, options)
    g = preset_decay(call, preset=options["slopes"], layer=options["layer"],
                     num_layers=options["num_layers"])
    return elementwise_plan(call, options, g=call.decay_td(g))


def _retnet_plan(call: Call, options: dict):
    if call.decay is not None:
        return elementwise_plan(call, options)
    return elementwise_plan(call, options, g=call.decay_td(preset_decay(call, preset="retnet")))


def _retnet(call: Call, options: dict):
    if call.decay is not None:
        return elementwise_forward(call, options)
    return elementwise_forward(call, options, g=call.decay_td(preset_decay(call, preset="retnet")))


def _mamba2(call: Call, options: dict):
    if call.decay is None and call.dims.T > 0:
        raise ValueError("kind 'mamba2' requires decay= (the per-token log-decay dt_t * A_h, "
                         "shape (..., T)); got None")
    dims = call.dims
    if call.decay is None:  # an empty sequence (la.State.zeros) has nothing to decay
        return elementwise_forward(call, options)
    _, _, per_token = val.decay(call.decay, dims)
    if not per_token:
        raise ValueError(f"kind 'mamba2' needs a per-token decay of shape (..., T={dims.T}) "
                         f"(one more axis than the batch dimensions {dims.batch}), got shape "
                         f"{np.shape(call.decay)}")
    return elementwise_forward(call, options)


def _per_token(rng, shape):
    return -0.1 * np.abs(rng.standard_normal(shape[:-1]))


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
    forward=_lightning, plan=_lightning_plan,
))
reg.register(reg.KindSpec(
    name="retnet",
    doc="Identity features with RetNet's per-head decay lambda_h = 1 - 2^(-5-h) "
        "(la.decay_slopes(H, 'retnet')); decay= overrides it.",
    paper="Sun et al. 2023, Retentive Network, arXiv:2307.08621",
    normalize="none", eps=1e-8, eps_mode="abs_clamp", noncausal=False,
    scale=reg.inv_sqrt, scale_doc="d^(-1/2), multiplies q (fla's retention default)",
    forward=_retnet, plan=_retnet_plan,
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
    forward=_mamba2, plan=elementwise_plan, example_kwargs={"decay": _per_token},
))
