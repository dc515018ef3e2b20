"""Gradients: vector-Jacobian products of the entry points (docs/gradients.md, docs/torch.md).

``o, vjp = la.<entry>_vjp(...)`` returns what the forward entry point returns (as
``jax.vjp`` does) and a function ``vjp(do, dstate=None)`` giving the gradients of
``<do, o>`` (plus ``<dstate, final state>`` where there is a state) as a dict keyed by
input name, each of its input's shape and dtype.

``causal_vjp`` / ``noncausal_vjp`` route each kind to the module holding its backward:
the generic operator and its feature kinds (``grad/_linear.py``; RFA's gates of exactly 0
included) and ``"transnormer"`` (``grad/_transnormer.py``).
"""

from __future__ import annotations

import functools

from . import _linear, _transnormer
from .softmax import softmax_attention_vjp
from .sscan import selective_scan_vjp

# kinds whose vjp entry points live in their own module
_OWN = {"transnormer": _transnormer}


def _route(kind, kw):
    if kind in _OWN:
        return _OWN[kind]
    return _linear


@functools.wraps(_linear.causal_vjp)
def causal_vjp(q, k, v, kind: str = "elu", **kw):
    return _route(kind, kw).causal_vjp(q, k, v, kind, **kw)


@functools.wraps(_linear.noncausal_vjp)
def noncausal_vjp(q, k, v, kind: str = "elu", **kw):
    return _route(kind, kw).noncausal_vjp(q, k, v, kind, **kw)


def grad_kinds() -> tuple[str, ...]:
    """Kinds whose ``*_vjp`` is implemented (the others raise NotImplementedError)."""
    return tuple(sorted(set(_linear.grad_kinds()) | set(_OWN)))


_transnormer.attach()

__all__ = ["causal_vjp", "grad_kinds", "noncausal_vjp", "selective_scan_vjp",
           "softmax_attention_vjp"]
