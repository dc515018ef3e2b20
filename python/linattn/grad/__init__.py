"""Gradients: vector-Jacobian products of the entry points (docs/gradients.md, docs/torch.md).

``o, vjp = la.<entry>_vjp(...)`` returns what the forward entry point returns (as
``jax.vjp`` does) and a function ``vjp(do, dstate=None)`` giving the gradients of
``<do, o>`` (plus ``<dstate, final state>`` where there is a state) as a dict keyed by
input name, each of its input's shape and dtype.
"""

from ._linear import causal_vjp, grad_kinds, noncausal_vjp
from .softmax import softmax_attention_vjp
from .sscan import selective_scan_vjp

__all__ = ["causal_vjp", "grad_kinds", "noncausal_vjp", "selective_scan_vjp",
           "softmax_attention_vjp"]
