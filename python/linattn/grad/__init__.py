"""Gradients: ``*_vjp`` entry points (JAX's ``jax.vjp`` convention).

``o, vjp = la.<entry>_vjp(...)`` returns what the forward entry point returns and a
function of the output cotangent that returns a dict of gradients keyed by input name.
"""

from .softmax import softmax_attention_vjp
from .sscan import selective_scan_vjp

__all__ = ["selective_scan_vjp", "softmax_attention_vjp"]
