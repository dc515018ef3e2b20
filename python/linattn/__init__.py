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


def _find_version() -> str:
    """The installed distribution's version; the build's own record when the metadata is
    missing (a build tree on sys.path); "0+unknown" when neither exists."""
    from importlib import metadata

    try:
        return metadata.version("linattn")
    except metadata.PackageNotFoundError:
        pass
    try:
        from ._build_info import version
    except ImportError:
        version = ""
    return version or "0+unknown"


__version__ = _find_version()


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
    """Version, BLAS and its threading, SIMD level, threads in use, and how this binary was
    built (compiler, flags, ISA paths compiled in, OpenBLAS version)."""
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
        **_build_config(),
    }


def _build_config() -> dict:
    """How this binary was built (linattn/_build_info.py, written by CMake at build time)."""
    try:
        from . import _build_info as bi
    except ImportError:  # a copy built without scikit-build-core
        return dict.fromkeys(("compiler", "build_type", "c_flags", "platform", "isa_compiled",
                              "blas_mode", "openblas_version", "openmp_version"), "unknown")
    isa = ", ".join(bi.isa_paths)
    if hasattr(_core, "simd"):  # the binary's own list of the ISA paths compiled into it
        isa = ", ".join(_core.simd()["compiled"])
    return {
        "compiler": bi.compiler,
        "build_type": bi.build_type,
        "c_flags": bi.c_flags,
        "platform": bi.system,
        # paths compiled into the binary; "simd" above is the one this CPU runs
        "isa_compiled": isa,
        "blas_mode": bi.blas_mode,
        "openblas_version": bi.openblas_version,
        "openmp_version": bi.openmp or "none",
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
    "State", "approximation_error", "causal", "decay_slopes", "features",
    "get_num_threads", "info", "kinds", "lavo_bases", "noncausal", "random_features",
    "reference", "selective_scan", "set_num_threads", "softmax_attention", "step", "testing",
]
