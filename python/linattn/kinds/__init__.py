"""Kinds beyond the elementwise ones: each module registers its KindSpec(s).

A kind module defines its ``causal_impl`` / ``noncausal_impl`` (validate, compute
features in C, then run ``linattn._api.linear_core`` or its own gufunc) and calls
``linattn._registry.register``.  Import order below is registration order.
"""

from . import cosformer  # noqa: F401,E402
from . import decay  # noqa: F401,E402
from . import transnormer  # noqa: F401,E402
from . import lavo  # noqa: E402,F401
from . import lara  # noqa: E402,F401
from . import randomfeatures  # noqa: F401,E402  rfa, performer
