"""The kind registry: name -> maps, defaults, options, forms, docs (``la.kinds()``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import _tuning

# Elementwise feature maps run in C (kernels/featmap.h); the codes match la_fmap.
FMAP_IDENTITY, FMAP_ELU1, FMAP_RELU, FMAP_ELU = 0, 1, 2, 3
FMAP_NAMES = {"identity": FMAP_IDENTITY, "elu1": FMAP_ELU1, "relu": FMAP_RELU, "elu": FMAP_ELU}

NORMALIZE = {"none": 0, "div": 1, "norm": 2}
EPS_MODES = {"add": 0, "clamp": 1, "abs_clamp": 2}
CAUSAL_MODES = ("recurrent", "chunked", "parallel")

# Options every causal call understands (docs/design/api.md); kinds add their own.
COMMON_OPTIONS = ("mode", "chunk_size", "scale", "normalize", "eps", "initial_state",
                  "return_state", "layout", "out")
# Keywords of the public signature that only some kinds accept.
GATED_KEYWORDS = ("decay", "num_features", "projection", "seed", "horizon")


@dataclass(frozen=True)
class KindSpec:
    """One mechanism: how it maps q and k, its defaults, and what it accepts.

    ``scale`` is a number or a callable ``d -> scale``.  ``keywords`` lists the
    gated keywords of the public signature that the kind accepts and
    ``options`` its own keyword options with their defaults.

    The kind contract (docs/internals.md): ``forward(call, options)`` computes the
    call described by a :class:`linattn._call.Call` (None: the generic operator with the
    elementwise maps ``fmap_q`` / ``fmap_k``); ``plan(call, options)`` (optional) returns
    the same computation for repeated small calls with everything that depends only on the
    kind, options, dtypes and shapes resolved once (``linattn._call.linear_causal_plan``),
    or None (None for a kind without ``forward``: ``linattn._call.elementwise_plan``).
    ``backward``, and the state algebra
    ``transition`` (a block's effect on the state), ``combine`` (two consecutive
    transitions into one) and ``read_out`` (a block's outputs from a carried state) are
    slots for the kinds that have them (None until implemented).  ``example_kwargs`` is
    a small valid call, ``dict(q=..., k=..., v=..., **options)`` built from a seed by
    ``example(seed, dtype)``, that the registry-driven tests run in every mode and dtype.
    """

    name: str
    doc: str
    paper: str
    fmap_q: int | None = FMAP_IDENTITY
    fmap_k: int | None = FMAP_IDENTITY
    scale: float | Callable[[int], float] = 1.0
    scale_doc: str = "1, multiplies q before the feature map"
    normalize: str = "div"  # "softmax": a softmax read-out, no normalize/eps options
    eps: float = 1e-6
    eps_mode: str = "add"
    causal_modes: tuple[str, ...] = CAUSAL_MODES
    noncausal: bool = True
    keywords: tuple[str, ...] = ("decay",)
    options: dict[str, Any] = field(default_factory=dict)
    forward: Callable[..., Any] | None = None
    plan: Callable[..., Any] | None = None
    backward: Callable[..., Any] | None = None
    transition: Callable[..., Any] | None = None
    combine: Callable[..., Any] | None = None
    read_out: Callable[..., Any] | None = None
    example_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True  # its kernels count tokens for progress=True (else: elapsed time)

    def example(self, seed: int = 0, dtype=None) -> dict[str, Any]:
        """A small valid call of this kind: ``q``, ``k``, ``v`` of shape ``(2, 3, 9, 4)``
        (``v`` is ``k`` where the kind wants keys = values) plus ``example_kwargs``,
        where an array-valued entry ``"name": callable(rng, shape_of_q)`` is drawn."""
        import numpy as np

        rng = np.random.default_rng(seed)
        dt = np.float64 if dtype is None else dtype
        shape = (2, 3, 9, 4)
        q, k, v = (rng.standard_normal(shape).astype(dt) for _ in range(3))
        kw = dict(self.example_kwargs)
        if kw.pop("shared_kv", False):
            v = k
        kw = {n: (x(rng, shape) if callable(x) else x) for n, x in kw.items()}
        return {"q": q, "k": k, "v": v, **kw}

    @property
    def causal_impl(self) -> Callable[..., Any] | None:
        """Compatibility: the kind's own machinery (``forward``) where it has a causal form."""
        return self.forward if self.causal_modes else None

    @property
    def noncausal_impl(self) -> Callable[..., Any] | None:
        """Compatibility: the kind's own machinery (``forward``) where it has a non-causal
        form."""
        return self.forward if self.noncausal else None

    def default_scale(self, d: int) -> float:
        return float(self.scale(d)) if callable(self.scale) else float(self.scale)

    def describe(self) -> dict[str, Any]:
        return {
            "doc": self.doc,
            "paper": self.paper,
            "causal": list(self.causal_modes),
            "noncausal": self.noncausal,
            "defaults": {
                "scale": self.scale_doc,
                "normalize": self.normalize,
                **({} if self.normalize == "softmax" else
                   {"eps": self.eps, "eps_mode": self.eps_mode}),
                **self.options,
            },
            "keywords": list(self.keywords),
            "auto_rule": AUTO_RULE,
            "grad": (None if self.backward is None else
                     {"wrt": list(self.backward.wrt), "nondiff": list(self.backward.nondiff)}),
            "block_scan": self.combine is not None,
        }


# generated from the tuning table (src/_linattn/arch/la_tuning.h via _core), not a copy
AUTO_RULE = _tuning.auto_rule()

_REGISTRY: dict[str, KindSpec] = {}


def register(spec: KindSpec) -> KindSpec:
    _REGISTRY[spec.name] = spec
    return spec


def attach(name: str, **slots: Any) -> None:
    """Fill contract slots of a registered kind (``backward``, ``transition``,
    ``combine``, ``read_out``) from the module that implements them."""
    _REGISTRY[name] = replace(_REGISTRY[name], **slots)


def get(kind: str) -> KindSpec:
    try:
        return _REGISTRY[kind]
    except (KeyError, TypeError):
        pass
    hint = ""
    if isinstance(kind, str):
        import difflib

        close = difflib.get_close_matches(kind.lower(), list(_REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"kind must be one of {sorted(_REGISTRY)}, got {kind!r}{hint}")


def lookup(kind: str) -> KindSpec | None:
    """The registered spec of ``kind`` (a str), or None."""
    return _REGISTRY.get(kind)


def kinds() -> dict[str, dict[str, Any]]:
    """The registry: kind name -> forms supported, defaults, one-line doc, paper."""
    return {name: spec.describe() for name, spec in sorted(_REGISTRY.items())}


def inv_sqrt(d: int) -> float:
    return 1.0 / math.sqrt(d) if d > 0 else 1.0


def pow_inv_sqrt(d: int) -> float:
    """``d ** -0.5`` (1 for ``d = 0``); differs from :func:`inv_sqrt` in the last bit for
    some ``d``, so each kind keeps the one its results were defined with."""
    return d ** -0.5 if d else 1.0


register(KindSpec(
    name="linear",
    doc="Identity features, no normaliser: o_t = sum_s w(t,s) (q_t.k_s) v_s; per-token "
        "decay= gives the gated variant (a forget gate on C; whether it is the paper's exact "
        "gate is unverified).",
    paper="de Brebisson & Vincent 2016, A Cheap Linear Attention Mechanism with Fast Lookups "
          "and Fixed-Size Representations, arXiv:1609.05866",
    normalize="none", eps=1e-6, eps_mode="abs_clamp",
    options={"eps_mode": "abs_clamp"},
))
register(KindSpec(
    name="elu",
    doc="elu(x)+1 features with the div normaliser (Transformers are RNNs).",
    paper="Katharopoulos et al. 2020, Transformers are RNNs, arXiv:2006.16236",
    fmap_q=FMAP_ELU1, fmap_k=FMAP_ELU1, normalize="div", eps=1e-6, eps_mode="add",
    options={"eps_mode": "add"},
))
register(KindSpec(
    name="relu",
    doc="ReLU features with the div normaliser; all-negative keys give o = 0, finite.",
    paper="ReLU kernel linear attention (e.g. Qin et al. 2022, cosFormer, as the baseline)",
    fmap_q=FMAP_RELU, fmap_k=FMAP_RELU, normalize="div", eps=1e-6, eps_mode="add",
    options={"eps_mode": "add"},
))
