"""Every ISA path of the hand-written loops, forced with LINATTN_SIMD in a subprocess.

The recurrent token loop and the GEMM register tiles have an AVX-512, an AVX2+FMA and a
generic (portable C + BLAS) path, chosen at run time.  Each path runs a parity subset
against ``la.reference`` (dtypes, T = 1 / C - 1 / C + 1, odd D, value widths on both
sides of the 64-column blocks, decay, every causal form); the AVX2 and AVX-512 paths
accumulate in the same order, so where the CPU runs both their results are compared bit
for bit.  A path the CPU lacks is lowered to the CPU's best (and says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import linattn as la

SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import linattn as la

rng = np.random.default_rng(7)
digest = hashlib.sha256()
checked = 0
for dt in (np.float32, np.float64):
    tol = la.testing.tolerance(dt)
    for (T, D, E) in ((1, 5, 3), (15, 9, 64), (17, 16, 70), (33, 64, 130), (80, 33, 17)):
        q = (0.5 * rng.standard_normal((2, T, D))).astype(dt)
        k = (0.5 * rng.standard_normal((2, T, D))).astype(dt)
        v = rng.standard_normal((2, T, E)).astype(dt)
        g = -rng.uniform(0, 0.3, (2, T))
        for kind, kw in (("elu", {}), ("linear", {}), ("mamba2", {"decay": g})):
            for mode in ("recurrent", "chunked", "parallel"):
                o, st = la.causal(q, k, v, kind, mode=mode, chunk_size=16, return_state=True,
                                  **kw)
                ref = la.reference.causal(q, k, v, kind, **kw)
                la.testing.assert_close(o, ref, rtol=tol,
                                        err_msg=f"{kind} {mode} {np.dtype(dt).name} {T, D, E}")
                # the forms agree on the final state too
                if mode == "recurrent":
                    s_rec = st.S
                else:
                    la.testing.assert_close(st.S, s_rec, rtol=tol)
                digest.update(np.ascontiguousarray(o).tobytes())
                digest.update(np.ascontiguousarray(st.S).tobytes())
                checked += 1
info = la.info()
print(json.dumps({"simd": info["simd"], "cpu": info["simd_cpu"],
                  "source": info["simd_source"], "digest": digest.hexdigest(),
                  "checked": checked}))
"""


def _run(env_simd: str | None, extra_env: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("LINATTN_NO_SIMD", None)
    env.pop("LINATTN_SIMD", None)
    if env_simd is not None:
        env["LINATTN_SIMD"] = env_simd
    env.update(extra_env or {})
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


CPU = la.info()["simd_cpu"]
ORDER = ("generic", "avx2", "avx512")


@pytest.fixture(scope="module")
def results():
    return {isa: _run(isa) for isa in ORDER}


@pytest.mark.parametrize("isa", ORDER)
def test_each_path_matches_the_reference(results, isa):
    r = results[isa]
    assert r["checked"] == 2 * 5 * 3 * 3
    want = isa if ORDER.index(isa) <= ORDER.index(CPU) else CPU
    assert r["simd"] == want
    assert r["cpu"] == CPU
    assert r["source"] == ("LINATTN_SIMD" if want == isa
                           else "LINATTN_SIMD (lowered to the CPU's)")


def test_avx2_and_avx512_paths_are_bit_identical(results):
    if CPU != "avx512":
        pytest.skip("this CPU runs no AVX-512 path to compare the AVX2 one with")
    assert results["avx2"]["simd"] == "avx2"
    assert results["avx2"]["digest"] == results["avx512"]["digest"]


def test_generic_path_differs_from_the_hand_written_ones(results):
    """The generic path really runs other code (BLAS and the portable loop): its
    results are not the hand-written paths' bit for bit (they agree to tolerance)."""
    if CPU == "generic":
        pytest.skip("no hand-written path on this CPU")
    assert results["generic"]["simd"] == "generic"
    assert results["generic"]["digest"] != results[CPU]["digest"]


def test_default_is_the_cpu_path_and_legacy_switch():
    r = _run(None)
    assert r["simd"] == CPU and r["source"] == "cpu"
    r = _run(None, {"LINATTN_NO_SIMD": "1"})
    assert r["simd"] == "generic" and r["source"] == "LINATTN_NO_SIMD"


def test_unknown_value_is_ignored_and_reported():
    code = ("import linattn as la, json; i = la.info(); "
            "print(json.dumps([i['simd'], i['simd_source']]))")
    env = dict(os.environ, LINATTN_SIMD="sse9")
    env.pop("LINATTN_NO_SIMD", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    simd, source = json.loads(r.stdout)
    assert simd == CPU and source == "LINATTN_SIMD (unknown value ignored)"


def test_info_reports_paths():
    i = la.info()
    assert i["simd"] in ORDER and i["simd_cpu"] in ORDER
    assert "generic" in i["simd_paths"]
    assert i["avx512_kernels"] == (i["simd"] == "avx512")
    assert ORDER.index(i["simd"]) <= ORDER.index(i["simd_cpu"])


def test_switching_paths_in_process(rng):
    """_tuning.set_simd switches the loops for the next call; results stay in tolerance."""
    from linattn import _tuning

    q, k, v = (rng.standard_normal((3, 40, 64)) * 0.5 for _ in range(3))
    before = la.info()["simd"]
    try:
        outs = {}
        for isa in ORDER:
            got = _tuning.set_simd(isa)
            assert got == (isa if ORDER.index(isa) <= ORDER.index(CPU) else CPU)
            assert la.info()["simd"] == got and la.info()["simd_source"] == "set_simd"
            outs[isa] = la.causal(q, k, v, "elu", mode="recurrent")
            la.testing.assert_close(outs[isa], la.reference.causal(q, k, v, "elu"), rtol=1e-10)
        with pytest.raises(ValueError, match="isa must be one of"):
            _tuning.set_simd("neon")
    finally:
        _tuning.set_simd(before)
    assert np.isfinite(outs["generic"]).all()


def _each_path():
    from linattn import _tuning

    before = la.info()["simd"]
    try:
        for isa in ORDER:
            if ORDER.index(isa) <= ORDER.index(CPU):
                _tuning.set_simd(isa)
                yield isa
    finally:
        _tuning.set_simd(before)


@pytest.mark.parametrize("D", [1, 5, 15, 16, 17, 33, 64])
@pytest.mark.parametrize("E", [3, 64, 70])
@pytest.mark.parametrize("T", [7, 70])
def test_recurrent_token_pairs_match_single_steps_bitwise(rng, D, E, T):
    """The recurrent form takes two tokens per pass where it can; la.step takes one: the
    outputs, states and denominators (sums in 16 lanes, any D) agree bit for bit, on
    every path, with and without decay.  From 64 tokens on, a state whose rows are not
    on cache lines is updated in aligned scratch (steps update it in place)."""
    q = (0.5 * rng.standard_normal((2, T, D))).astype(np.float32)
    k = (0.5 * rng.standard_normal((2, T, D))).astype(np.float32)
    v = rng.standard_normal((2, T, E)).astype(np.float32)
    g = -rng.uniform(0, 0.3, (2, T))
    for isa in _each_path():
        for kind, kw in (("elu", {}), ("mamba2", {"decay": g})):
            o, st = la.causal(q, k, v, kind, mode="recurrent", return_state=True, **kw)
            s = la.State.zeros(kind, (2,), D, E, dtype=np.float32)
            for t in range(T):
                skw = {"decay": g[:, t:t + 1]} if kw else {}
                ot, s = la.step(q[:, t], k[:, t], v[:, t], s, kind=kind, **skw)
                np.testing.assert_array_equal(ot, o[:, t], err_msg=f"{isa} {kind} t={t}")
            np.testing.assert_array_equal(s.S, st.S)
            np.testing.assert_array_equal(s.z, st.z)
            la.testing.assert_close(o, la.reference.causal(q, k, v, kind, **kw), rtol=1e-5,
                                    err_msg=f"{isa} {kind}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recurrent_tiny_and_huge_denominators(dtype):
    """Output rows divide by the guarded denominator (a reciprocal times the row where
    that is safe, the quotient where 1/den could leave the normal range): denominators
    near 1e-36, subnormal ones (whose reciprocal is inf) and ones near 1e37 still match
    the reference and the other forms."""
    rng = np.random.default_rng(5)
    T, D, E = 9, 8, 19
    v = rng.standard_normal((2, T, E)).astype(dtype)
    # elu1 features exp(-43) ~ 2e-19: the denominator grows from ~3e-37 (under 2^-120)
    # past 2^-120 within the sequence; eps = 0 leaves it unguarded
    qk = (-43 + 0.1 * rng.standard_normal((2, 2, T, D))).astype(dtype)
    # exp(-45.5) ~ 1.7e-20: the first denominators ~2e-39 (float32 subnormal: 1/den = inf)
    sub = (-45.5 + 0.01 * rng.standard_normal((2, 2, T, D))).astype(dtype)
    # identity features ~3e17: the denominator from ~7e35 past 2^120 ~ 1.3e36
    big = (3e17 * (1 + 0.1 * rng.random((2, 2, T, D)))).astype(dtype)
    for isa in _each_path():
        for kind, (q, k), kw in (("elu", qk, {"eps": 0.0}), ("elu", sub, {"eps": 0.0}),
                                 ("linear", big, {})):
            ref = la.reference.causal(q.astype(np.float64), k.astype(np.float64),
                                      v.astype(np.float64), kind, scale=1.0, **kw)
            for mode in ("recurrent", "parallel"):
                o = la.causal(q, k, v, kind, mode=mode, scale=1.0, **kw)
                assert np.isfinite(o).all(), (isa, kind, mode)
                la.testing.assert_close(o, ref, rtol=la.testing.tolerance(dtype),
                                        err_msg=f"{isa} {kind} {mode}")


@pytest.mark.parametrize("T", [15, 16, 17, 63, 64, 65, 81, 130])
def test_recurrent_parity_across_the_feature_blocks_and_prefetch_horizon(rng, T):
    """The recurrent loop maps features 16 tokens at a time and prefetches the rows four
    blocks ahead (none past the last token): lengths on both sides of those multiples,
    with q the last rows of a larger array, k column-strided (no prefetch, copied rows)
    and v a reversed view, match the reference and the contiguous call bit for bit."""
    D, E = 33, 70
    big = (0.5 * rng.standard_normal((2, T + 5, D))).astype(np.float32)
    q = big[:, 5:]
    k = np.ascontiguousarray((0.5 * rng.standard_normal((2, D, T))).astype(np.float32)
                             ).transpose(0, 2, 1)
    v = rng.standard_normal((2, T, E)).astype(np.float32)[:, ::-1]
    g = -rng.uniform(0, 0.3, (2, T))
    for isa in _each_path():
        for kind, kw in (("elu", {}), ("mamba2", {"decay": g})):
            o = la.causal(q, k, v, kind, mode="recurrent", **kw)
            oc = la.causal(np.ascontiguousarray(q), np.ascontiguousarray(k),
                           np.ascontiguousarray(v), kind, mode="recurrent", **kw)
            np.testing.assert_array_equal(o, oc, err_msg=f"{isa} {kind} T={T}")
            la.testing.assert_close(o, la.reference.causal(q, k, v, kind, **kw),
                                    rtol=la.testing.tolerance(np.float32),
                                    err_msg=f"{isa} {kind} T={T}")
