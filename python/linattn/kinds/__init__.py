"""Kinds beyond the elementwise ones: each module registers its KindSpec(s).

A kind module defines ``forward(call, options)`` (features in C, then
``linattn._call.linear_causal`` / ``linear_noncausal`` or its own gufunc, then
``call.finish``) and registers its KindSpec: one line below per module.
Import order is registration order.
"""

from . import cosformer  # noqa: F401,E402
from . import decay  # noqa: F401,E402
from . import transnormer  # noqa: F401,E402
from . import lavo  # noqa: E402,F401
from . import lara  # noqa: E402,F401
from . import randomfeatures  # noqa: F401,E402  rfa, performer
