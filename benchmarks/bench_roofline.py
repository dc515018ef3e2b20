"""Kernel figures as fractions of this machine's own limits, per ISA path.

Same as ``python -m linattn bench --roofline``: measures in one run the 1-core float32 FMA
peak (a C loop in the extension, ``linattn._core.fma_peak``), NumPy's ``np.matmul``
float32 1024^3 rate on one thread with its OpenBLAS at the core type it picks itself (a
subprocess with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset; threadpoolctl reports the
kernels), and linattn's kernels under each ISA path this CPU runs (avx512, avx2, generic),
then writes ``<out>/roofline.csv`` with the CPU model, ISA path and BLAS core types.

    python benchmarks/bench_roofline.py [--quick] [--out DIR] [--paths avx2,generic]
                                        [--clock cpu]

Run it on a quiet machine: on a shared one use ``--clock cpu`` (one-thread figures and the
np.matmul limit timed by the thread's CPU time) and read the two-thread rows with care.
"""

from __future__ import annotations

import sys

from linattn._bench import roofline

if __name__ == "__main__":
    raise SystemExit(roofline(["--roofline", *sys.argv[1:]]))
