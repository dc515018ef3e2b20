"""linattn: fast CPU linear attention for NumPy.

Every kind of the linear-attention family in every form it admits (causal
recurrent, causal chunked, parallel, non-causal), in C with BLAS and the GIL
released.  Start with ``la.causal(q, k, v, kind="elu")`` and ``la.kinds()``.
"""

from __future__ import annotations

import os as _os

import numpy as _np  # noqa: F401  numpy's own BLAS initialises with the user's settings

# linattn's vendored OpenBLAS runs single-threaded inside linattn's own parallel regions;
# created with one thread it never starts idle worker threads that would compete for
# the cores (openblas_set_num_threads(1) later cannot remove them).  The variable is
# restored right after the library loads, so nothing else sees it.
_prev = _os.environ.get("OPENBLAS_NUM_THREADS")
_os.environ["OPENBLAS_NUM_THREADS"] = "1"
try:
    from . import _core
finally:
    if _prev is None:
        del _os.environ["OPENBLAS_NUM_THREADS"]
    else:
        _os.environ["OPENBLAS_NUM_THREADS"] = _prev
del _prev
from . import features, kinds as _kinds, reference, testing  # noqa: F401
from . import plot  # noqa: F401  (matplotlib is imported lazily inside its functions)
from ._draws import lavo_bases
from ._api import causal, noncausal, softmax_attention, step
from ._draws import decay_slopes
from ._sscan import selective_scan
from ._draws import random_features
from .fidelity import approximation_error
from ._registry import kinds
from .state import State
from ._algebra import combine, noncausal_reduces, parallel, read_out, transition

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Worker threads for the (batch x head) loop; ``0`` follows the OpenMP runtime
    (``OMP_NUM_THREADS``, ``threadpoolctl``).  BLAS stays single-threaded inside."""
    import numbers

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Worker threads a call will use (capped by ``omp_get_max_threads()``)."""
    return _core.get_num_threads()


def info() -> dict:
    """Version, BLAS and its threading, SIMD level, threads in use."""
    import numpy as np

    b = _core.build_info()
    return {
        "version": __version__,
        "numpy": np.__version__,
        "blas": b["blas"],
        "blas_corename": b["blas_corename"],
        "blas_config": b["blas_config"],
        "blas_threads": 1,
        "simd": b["simd"],
        # the hand-written AVX-512 recurrent loop and GEMM tiles (off with LINATTN_NO_SIMD=1)
        "avx512_kernels": bool(b["avx512_kernels"]),
        "openmp": bool(b["openmp"]),
        "threads": get_num_threads(),
        "max_threads": b["max_threads"],
    }


def _init_threads_from_env() -> None:
    import os

    v = os.environ.get("LINATTN_NUM_THREADS")
    if v:
        try:
            set_num_threads(int(v))
        except ValueError:
            pass


_init_threads_from_env()

__all__ = [
    "State", "approximation_error", "causal", "combine", "decay_slopes", "features",
    "get_num_threads", "info", "kinds", "lavo_bases", "noncausal", "noncausal_reduces",
    "parallel", "random_features", "read_out", "reference", "selective_scan",
    "set_num_threads", "softmax_attention", "step", "testing", "transition",
]
