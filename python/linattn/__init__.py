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
from ._tuning import tune  # per-machine crossovers for mode="auto"
from ._registry import kinds
from .grad import causal_vjp, noncausal_vjp, selective_scan_vjp, softmax_attention_vjp
from .state import State
from ._decoder import Decoder
from ._algebra import combine, noncausal_reduces, parallel, read_out, transition


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
    """Worker threads for the (batch x head) loop and the sequence split.

    ``n >= 1`` takes effect whatever ``OMP_NUM_THREADS`` says, capped by the CPUs this
    process may run on (``os.sched_getaffinity``) and by a ``threadpoolctl`` limit in
    force.  ``0`` goes back to the default: ``LINATTN_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else those CPUs.  BLAS stays single-threaded inside.  The
    workers sleep between calls; ``la.info()`` says where the count came from."""
    import numbers

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Worker threads a call will use (see ``set_num_threads``)."""
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
        # ISA path of the hand-written loops (LINATTN_SIMD=avx512|avx2|generic), the CPU's
        # best, where the choice came from, paths compiled in, tuning table or la.tune() cache
        **__import__("linattn._tuning", fromlist=["_"]).info_entries(),
        "openmp": bool(b["openmp"]),
        # linattn's own thread pool: the count, where it came from ("set_num_threads",
        # "threadpoolctl", "LINATTN_NUM_THREADS", "OMP_NUM_THREADS", "cpu_affinity"),
        # the CPUs this process may use, an outside (threadpoolctl) limit or None
        "threads": get_num_threads(),
        "threads_source": b["threads_source"],
        "max_threads": b["max_threads"],
        "thread_limit": b["thread_limit"] or None,
        "thread_pool": "pthread",
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
    """The extension reads ``LINATTN_NUM_THREADS`` and ``OMP_NUM_THREADS`` itself when it
    loads; here linattn's pool is made visible to ``threadpoolctl`` (``threadpool_info``
    lists it, ``threadpool_limits`` caps it), now if threadpoolctl is already imported,
    else when it is (importing it here would cost every ``import linattn`` ~10 ms)."""
    import sys

    if "threadpoolctl" in sys.modules:
        _register_threadpoolctl(sys.modules["threadpoolctl"])
        return

    class _Hook:
        def find_spec(self, name, path=None, target=None):
            if name != "threadpoolctl":
                return None
            sys.meta_path.remove(self)
            import importlib.util

            spec = importlib.util.find_spec(name)
            loader = getattr(spec, "loader", None)
            if loader is None or not hasattr(loader, "exec_module"):
                return spec
            run = loader.exec_module

            def exec_module(module):
                run(module)
                _register_threadpoolctl(module)

            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Hook())


def _register_threadpoolctl(tpc) -> None:
    if not hasattr(tpc, "register") or not hasattr(tpc, "LibController"):
        return  # threadpoolctl < 3.5: no third-party controllers

    class LinattnController(tpc.LibController):
        user_api = "linattn"
        internal_api = "linattn"
        filename_prefixes = ("_core",)
        check_symbols = ("linattn_set_thread_limit",)

        def get_num_threads(self):
            return self.dynlib.linattn_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.linattn_set_thread_limit(int(num_threads))

        def get_version(self):
            return __version__

    try:
        tpc.register(LinattnController)
    except Exception:  # pragma: no cover - a threadpoolctl that changed its API
        pass


_init_threads_from_env()

__all__ = [
    "Decoder", "State", "approximation_error", "causal", "causal_vjp", "combine", "decay_slopes",
    "features", "get_num_threads", "info", "kinds", "lavo_bases", "noncausal",
    "noncausal_reduces", "noncausal_vjp", "parallel", "random_features", "read_out",
    "reference", "selective_scan", "selective_scan_vjp", "set_num_threads",
    "softmax_attention", "softmax_attention_vjp", "step", "testing", "transition", "tune",
]
