"""Kinds beyond the elementwise ones: each module registers its KindSpec(s).

A kind module defines its ``causal_impl`` / ``noncausal_impl`` (validate, compute
features in C, then run ``linattn._api.linear_core`` or its own gufunc) and calls
``linattn._registry.register``.  Import order below is registration order.
"""
from . import randomfeatures  # noqa: F401  rfa, performer
