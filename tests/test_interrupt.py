"""Ctrl-C during a long kernel call returns control promptly and leaves inputs intact.

Run in a subprocess: a SIGINT that arrives outside the kernel must not hit pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    import numpy as np
    import linattn as la

    rng = np.random.default_rng(0)
    T = 120_000  # the uninterrupted call takes tens of seconds
    q = rng.standard_normal((1, T, 64)).astype(np.float32)
    k, v = q.copy(), q.copy()
    before = [x.copy() for x in (q, k, v)]
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        {call}
        print("NOT INTERRUPTED")
    except KeyboardInterrupt:
        print("INTERRUPTED", round(time.perf_counter() - t0, 3))
    print("UNCHANGED", all(np.array_equal(a, b) for a, b in zip(before, (q, k, v))))
    # Python's own Ctrl-C handling is back after the call
    threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        time.sleep(5)
        print("HANDLER LOST")
    except KeyboardInterrupt:
        print("HANDLER RESTORED")
""")


@pytest.mark.parametrize("call", [
    'la.causal(q, k, v, mode="parallel")',
    'la.softmax_attention(q, k, v)',
    # two slices on two pool threads: the workers stop too
    'la.set_num_threads(2); la.causal(*(np.concatenate([x, x]) for x in (q, k, v)), '
    'mode="parallel")',
])
def test_keyboard_interrupt_during_kernel(call):
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(call=call)], capture_output=True,
                       text=True, timeout=120)
    out = r.stdout
    assert "INTERRUPTED" in out and "NOT INTERRUPTED" not in out, (out, r.stderr)
    elapsed = float(out.split("INTERRUPTED")[1].split()[0])
    assert elapsed < 10.0, out  # the whole call would take far longer
    assert "UNCHANGED True" in out and "HANDLER RESTORED" in out, out
