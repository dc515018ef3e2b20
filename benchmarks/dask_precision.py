"""Where a float32 block-state scan loses precision on a long undecayed stream: the
decomposition behind docs/dask.md "Precision at 2**27 tokens".

On bench_dask.py's inputs (elu, D = 64, float32, blocks of ``--block`` tokens), for the
blocks named by ``--blocks``:

(a) the entering state lad computes (every earlier block's float32 ``la.transition``,
    summed by a float32 ``la.combine`` chain) against the exact one (the float64 sum of
    every earlier block's float64 transition), and its effect on the block's outputs
    (read out in float64);
(b) the block's float32 read-out from the exact entering state rounded to float32, in
    the recurrent and the chunked form, and ``la.read_out`` from lad's entering state,
    against the float64 read-out from the exact state.

One pass over every block before the last named one (float32 and float64 transitions:
about 10 minutes at 2**27 tokens on one idle core).

    python benchmarks/dask_precision.py [--tokens 134217728] [--block 262144]
        [--blocks 127,511]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import linattn as la  # noqa: E402
from bench_dask import _block  # noqa: E402

KIND = "elu"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2**27)
    p.add_argument("--block", type=int, default=2**18)
    p.add_argument("--blocks", default="127,511", help="block indices to decompose")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    nb = a.tokens // a.block
    picked = sorted({min(int(x), nb - 1) for x in a.blocks.split(",")})
    rr = la.testing.relative_rms
    la.set_num_threads(1)
    lad_state, S64, z64 = None, np.zeros((64, 64)), np.zeros(64)
    t0 = time.perf_counter()
    for j in range(picked[-1] + 1):
        q, k, v = (_block(i, j, a.block, a.seed) for i in range(3))
        if j in picked:
            exact = la.State(np.asarray(S64)[None], np.asarray(z64)[None], j * a.block, KIND)
            ref = la.causal(q, k, v, KIND, initial_state=exact)  # float64 throughout
            print(f"block {j}, entering at {j * a.block} tokens (z ~ {np.mean(z64):.3g}):")
            if lad_state is not None:
                print(f"  (a) lad's entering state vs exact: z {rr(lad_state.z[0], z64):.3g}, "
                      f"S {rr(lad_state.S[0], S64):.3g}")
                up = la.State(lad_state.S.astype(np.float64), lad_state.z.astype(np.float64),
                              j * a.block, KIND)
                print(f"  (a) its effect on the outputs (float64 read-out): "
                      f"{rr(la.causal(q, k, v, KIND, initial_state=up), ref):.3g}")
            r32 = la.State(exact.S.astype(np.float32), exact.z.astype(np.float32), exact.t, KIND)
            for mode in ("recurrent", "chunked"):
                o = la.causal(q, k, v, KIND, initial_state=r32, mode=mode)
                print(f"  (b) float32 {mode} read-out from the exact state: {rr(o, ref):.3g}")
            if lad_state is not None:
                print(f"  la.read_out from lad's entering state: "
                      f"{rr(la.read_out(q, k, v, lad_state, KIND), ref):.3g}", flush=True)
        d32 = la.transition(q, k, v, KIND, start=j * a.block)
        d64 = la.transition(*(x.astype(np.float64) for x in (q, k, v)), KIND,
                            start=j * a.block)
        lad_state = la.combine(lad_state, d32)
        S64 = S64 + d64.S[0]
        z64 = z64 + d64.z[0]
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
