"""Gradients: vector-Jacobian products of the entry points (docs/gradients.md).

``o, vjp = la.causal_vjp(q, k, v, kind=..., **kw)`` returns what ``la.causal`` returns
and a function ``vjp(do, dstate=None)`` giving the gradients of ``<do, o>`` (plus
``<dstate, final state>``) with respect to every differentiable input.
"""

from ._linear import causal_vjp, grad_kinds, noncausal_vjp

__all__ = ["causal_vjp", "grad_kinds", "noncausal_vjp"]
