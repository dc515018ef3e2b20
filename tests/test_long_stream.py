"""Float32 read-outs from the large entering state of a long undecayed stream.

After ``p`` tokens an undecayed elu stream's normaliser ``z`` is about ``1.1 p`` per
feature; past ~2**24 tokens its float32 spacing exceeds what a 64-token chunk adds, and a
float32 state would lose (with one bias) the increments of every later token: the output
error grows like ``T / p`` over a block of ``T`` tokens instead of staying at float32's
rounding.  The chunked kernel carries its state in float64 across chunks
(docs/design/family.md §10), and ``la.read_out`` takes the chunked form for such states.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import linattn as la

T = 2**17  # 2048 chunks of 64
D = 16


def _tol(t: int) -> float:
    """docs/design/family.md §10: float32 without decay, 1e-5 times sqrt(T / 65536)."""
    return 1e-5 * max(1.0, math.sqrt(t / 65536))


@pytest.fixture(scope="module")
def block():
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, T, D), dtype=np.float32) for _ in range(3))
    q *= np.float32(0.5)
    k *= np.float32(0.5)
    # the state entering at p ~ 1.4e9 tokens: z ~ 1.1 p (spacing 128: a chunk's ~70 is
    # rounded away), S a random walk ~ sqrt(p)
    p = 1.4e9
    z = (1.1 * p * (1 + 0.05 * rng.standard_normal((1, D)))).astype(np.float32)
    S = (math.sqrt(p) * rng.standard_normal((1, D, D))).astype(np.float32)
    st32 = la.State(S, z, int(p), "elu")
    st64 = la.State(S.astype(np.float64), z.astype(np.float64), int(p), "elu")
    want = la.causal(q, k, v, "elu", initial_state=st64)  # computes in float64
    return q, k, v, st32, want


@pytest.mark.parametrize("threads", [1, 2])
def test_chunked_float32_keeps_increments_of_a_large_state(block, threads):
    """The serial chunked kernel and its sequence split (2 threads) alike."""
    q, k, v, st32, want = block
    prev = la.get_num_threads()
    la.set_num_threads(threads)
    try:
        o, st = la.causal(q, k, v, "elu", mode="chunked", chunk_size=64, initial_state=st32,
                          return_state=True)
    finally:
        la.set_num_threads(prev)
    assert o.dtype == np.float32 and st.z.dtype == np.float32
    err = la.testing.relative_rms(o, want)
    assert err <= _tol(T), err
    # the state after the block has the block's increments (a float32 sum drops them)
    added = st.z.astype(np.float64) - st32.z.astype(np.float64)
    exact = np.where(k > 0, k + 1, np.exp(k)).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(added, exact, rtol=2e-3)


def test_read_out_takes_the_chunked_form_for_an_entering_state(block):
    q, k, v, st32, want = block
    o = la.read_out(q, k, v, st32, "elu")
    np.testing.assert_array_equal(o, la.causal(q, k, v, "elu", mode="chunked",
                                               initial_state=st32))
    assert la.testing.relative_rms(o, want) <= _tol(T)


def test_read_out_keeps_the_auto_rule_early_in_a_stream(block):
    """Before 2**21 tokens the increments still round without bias: mode="auto" as is."""
    q, k, v, st32, _ = block
    early = la.State(st32.S / np.float32(1e3), st32.z / np.float32(1e3), 2**21 - 1, "elu")
    np.testing.assert_array_equal(la.read_out(q, k, v, early, "elu"),
                                  la.causal(q, k, v, "elu", initial_state=early))
