"""The tuning table, the mode="auto" rule made from it, la.tune() and its cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import linattn as la
from linattn import _api, _core, _registry, _tuning

KNOBS = ("chunk", "chunk_narrow", "narrow_f", "recurrent_max_e", "seq_min_chunks",
         "seq_window", "min_work_per_thread", "tiles_max_dim", "token_pairs")


def test_table_has_a_row_per_path():
    t = _tuning.table()
    assert set(t) == {"avx512", "avx2", "generic"}
    for isa, row in t.items():
        assert set(row) == set(KNOBS), isa
        assert all(isinstance(x, int) and x >= 0 for x in row.values())
        assert row["chunk"] >= 1 and row["chunk_narrow"] >= 1
    assert t["generic"]["tiles_max_dim"] == 0  # no register tiles without x86 code


def test_auto_rule_text_is_generated_from_the_table():
    isa = _core.simd()["active"]
    row = _tuning.table()[isa]
    assert _registry.AUTO_RULE == _tuning.auto_rule()
    assert la.kinds()["elu"]["auto_rule"] == _registry.AUTO_RULE
    assert f"E <= {row['recurrent_max_e']}" in _registry.AUTO_RULE
    assert f"T >= {row['seq_min_chunks']} * chunk_size * threads" in _registry.AUTO_RULE
    changed = _tuning.auto_rule({**row, "recurrent_max_e": 96, "chunk": 48}, isa)
    assert "E <= 96" in changed and "defaults to 48" in changed
    assert _registry.AUTO_RULE != changed


def test_python_reads_the_same_numbers():
    row = _tuning.table()[_core.simd()["active"]]
    if "cache" in _tuning.source():
        pytest.skip("a la.tune() cache is active for this user")
    assert _api.AUTO_RECURRENT_MAX_E == row["recurrent_max_e"]
    assert _api.default_chunk(row["narrow_f"]) == row["chunk_narrow"]
    assert _api.default_chunk(row["narrow_f"] + 1) == row["chunk"]
    assert _core.tuning_active() == row


def test_pick_mode_follows_the_knobs(monkeypatch):
    spec = _registry.get("elu")
    knobs = dict(_tuning.active())
    monkeypatch.setitem(_tuning._state, "knobs", {**knobs, "recurrent_max_e": 16})
    assert _api.pick_mode("auto", 4096, 64, spec, F=64, E=32, slices=64) == "chunked"
    monkeypatch.setitem(_tuning._state, "knobs", {**knobs, "recurrent_max_e": 256})
    assert _api.pick_mode("auto", 4096, 64, spec, F=64, E=200, slices=64) == "recurrent"
    assert _api.pick_mode("auto", 100, 64, spec, F=64, E=200, slices=64) == "recurrent"


def test_set_tuning_changes_the_tile_limit_not_the_results(rng):
    """tiles_max_dim = 0 sends every chunk product to BLAS: same results to tolerance."""
    q, k, v = (rng.standard_normal((2, 130, 64)).astype(np.float32) * 0.5 for _ in range(3))
    base = la.causal(q, k, v, "elu", mode="chunked")
    try:
        _core.set_tuning("tiles_max_dim", 0)
        assert _core.tuning_active()["tiles_max_dim"] == 0
        blas = la.causal(q, k, v, "elu", mode="chunked")
    finally:
        _core.set_tuning("tiles_max_dim", -1)
    la.testing.assert_close(blas, base, rtol=1e-5)
    la.testing.assert_close(base, la.reference.causal(q, k, v, "elu"), rtol=1e-5)
    with pytest.raises(ValueError, match="knob of the tuning table"):
        _core.set_tuning("no_such_knob", 1)


def test_fma_peak():
    assert _core.fma_peak("generic", seconds=0.002, reps=1) > 0
    cpu = _core.simd()["cpu"]
    assert _core.fma_peak(cpu, dtype="float64", seconds=0.002, reps=1) > 0
    assert _core.fma_peak(cpu, seconds=0.002, reps=1, clock="cpu") > 0
    with pytest.raises(ValueError, match="clock must be"):
        _core.fma_peak(clock="tsc")
    with pytest.raises(ValueError, match="dtype must be"):
        _core.fma_peak(dtype="float16")
    with pytest.raises(ValueError, match="seconds must be"):
        _core.fma_peak(seconds=0)
    with pytest.raises(ValueError, match="isa must be one of"):
        _core.fma_peak("sse2")


def test_cpu_model_and_cache_path(tmp_path, monkeypatch):
    assert isinstance(_tuning.cpu_model(), str) and _tuning.cpu_model()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _tuning.cache_path() == os.path.join(str(tmp_path), "linattn", "tuning.json")


TUNE_SCRIPT = r"""
import json, sys
import numpy as np
import linattn as la
from linattn import _tuning
if sys.argv[1] == "tune":
    entry = la.tune(budget=8.0)
    print(json.dumps({"entry": entry, "info": la.info()["tuning"]}))
else:
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 300, 64)) * 0.5 for _ in range(3))
    la.testing.assert_close(la.causal(q, k, v, "elu"), la.reference.causal(q, k, v, "elu"),
                            rtol=1e-10)
    print(json.dumps({"info": la.info()["tuning"], "knobs": _tuning.active(),
                      "key": _tuning._cache_key(), "isa": la.info()["simd"]}))
"""


def _py(arg, env):
    r = subprocess.run([sys.executable, "-c", TUNE_SCRIPT, arg], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_tune_writes_the_cache_and_auto_uses_it(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    env.pop("LINATTN_TUNING", None)
    fresh = _py("use", env)
    assert fresh["info"].startswith("defaults (")
    got = _py("tune", env)
    entry = got["entry"]
    assert set(entry["knobs"]) == {"chunk", "chunk_narrow", "recurrent_max_e",
                                   "seq_min_chunks", "tiles_max_dim", "token_pairs"}
    assert entry["seconds"] < 30
    assert "la.tune() cache" in got["info"]
    path = tmp_path / "linattn" / "tuning.json"
    data = json.loads(path.read_text())
    later = _py("use", env)  # a new process finds the entry by CPU model and version
    assert later["key"] in data and later["isa"] in data[later["key"]]
    assert "la.tune() cache" in later["info"]
    for name, val in entry["knobs"].items():
        assert later["knobs"][name] == val
    # LINATTN_TUNING=off ignores it; a broken file is ignored too
    assert _py("use", dict(env, LINATTN_TUNING="off"))["info"].startswith("defaults (")
    path.write_text("{not json")
    assert _py("use", env)["info"].startswith("defaults (")


@pytest.mark.slow
def test_mem_pass():
    """The steps' floor (seconds of one in-place pass over a cached buffer) and its
    argument checks; the figure itself is not judged."""
    assert _core.mem_pass(64 << 10, seconds=0.002, reps=3) > 0
    assert _core.mem_pass(4097, seconds=0.002, reps=1, clock="cpu") > 0
    with pytest.raises(ValueError, match="nbytes must be"):
        _core.mem_pass(0)
    with pytest.raises(ValueError, match="clock must be"):
        _core.mem_pass(4096, clock="tsc")
    with pytest.raises(ValueError, match="seconds must be"):
        _core.mem_pass(4096, seconds=0)


def test_roofline_cli_writes_every_figure(tmp_path):
    """`python -m linattn bench --roofline --quick` on the generic path: every figure row
    with the CPU, ISA path and BLAS core types in the CSV (numbers are not judged)."""
    import csv

    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "linattn", "bench", "--roofline", "--quick",
                        "--paths", "generic", "--repeat", "1", "--out", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (tmp_path / "roofline.csv").read_text().splitlines()
    assert lines[0].startswith("# linattn roofline") and "fma_peak_f32_1core" in lines[0]
    rows = list(csv.DictReader(lines[1:]))
    figures = {row["figure"] for row in rows}
    want = {"chunked_vs_matmul", "recurrent_vs_fma_floor", "vs_numpy_reference",
            "step_per_call", "decoder_step_per_call", "step_copy_per_call",
            "small_call_overhead"}
    if _core.build_info()["max_threads"] >= 2:
        want |= {"threads_2v1", "threads_2v1_seq_split", "threads_override_omp"}
        if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
            want.add("busy_core_2v1")
    assert want <= figures
    for row in rows:
        assert row["isa_path"] == "generic" and row["cpu"] and row["numpy_blas_corename"]
        assert float(row["value"]) > 0 and float(row["fraction"]) > 0
    assert "state_pass_us_" in lines[0]  # the steps' floor, measured in the run
    steps = [row for row in rows if row["figure"] == "step_per_call"]
    assert steps and all("in-place pass" in row["note"] for row in steps)
    copy = [row for row in rows if row["figure"] == "step_copy_per_call"]
    assert copy and all(row["target"] == "" and row["meets"] == "" for row in copy)


@pytest.mark.skipif(_core.simd()["cpu"] != "avx512" or "avx2" not in _core.simd()["compiled"],
                    reason="judging a forced AVX2 path needs an AVX-512 CPU")
def test_roofline_judges_forced_avx2_as_an_avx2_cpu(tmp_path):
    """On an AVX-512 CPU the forced AVX2 path stands for an AVX2-only CPU: its tiles and its
    recurrent loop are judged against the AVX2 FMA peak and NumPy's OpenBLAS on its Haswell
    kernels; the BLAS row against np.matmul on the core type linattn's BLAS runs."""
    import csv

    r = subprocess.run([sys.executable, "-m", "linattn", "bench", "--roofline", "--quick",
                        "--paths", "avx2", "--repeat", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (tmp_path / "roofline.csv").read_text().splitlines()
    assert "avx2_limits=(fma_peak" in lines[0]
    rows = list(csv.DictReader(lines[1:]))
    chunked = {row["note"].split(";")[0]: row for row in rows
               if row["figure"] == "chunked_vs_matmul"}
    tiles = chunked["chunk products on tiles"]
    assert tiles["numpy_blas_corename"] == "Haswell" and "(Haswell)" in tiles["limit"]
    blas = next(row for note, row in chunked.items() if note.startswith("chunk products on blas"))
    assert blas["numpy_blas_corename"] != "Haswell" or blas["linattn_blas_corename"] == "Haswell"
    rec = next(row for row in rows if row["figure"] == "recurrent_vs_fma_floor")
    assert "(avx2 peak)" in rec["limit"]
    ref = next(row for row in rows if row["figure"] == "vs_numpy_reference")
    assert ref["numpy_blas_corename"] == "Haswell"
