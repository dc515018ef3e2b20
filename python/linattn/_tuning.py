"""CPU tuning: the ISA path, the tuning table, and per-machine measurements.

The knobs (default chunk sizes, the value-width crossover of ``mode="auto"``, the
sequence split, the tile limit) live in one C table, one row per ISA path
(``src/_linattn/arch/la_tuning.h``); this module reads it through ``_core`` so that C and
the ``mode="auto"`` rule use the same numbers, and writes the rule's text from them.

``tune()`` measures the crossovers on the running CPU (in a few seconds) and stores them
in a per-user cache keyed by CPU model and linattn version, as FFTW's wisdom does::

    $XDG_CACHE_HOME/linattn/tuning.json   (or ~/.cache/linattn/tuning.json)

When the cache has an entry for this CPU, version and ISA path, ``mode="auto"`` and the
C kernels use it; otherwise the table's documented row for the active path applies.
``la.info()["tuning"]`` says which.  ``LINATTN_TUNING=off`` ignores the cache.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

from . import _core

ISAS = ("avx512", "avx2", "generic")

# knobs la.tune() may set; the others keep the table's values
_TUNED = ("chunk", "chunk_narrow", "recurrent_max_e", "seq_min_chunks", "tiles_max_dim",
          "token_pairs")

_state: dict[str, Any] = {}


def table() -> dict[str, dict[str, int]]:
    """The documented defaults, one row per ISA path (C's tuning table)."""
    return _core.tuning_table()


def simd() -> dict[str, Any]:
    """The active ISA path, the CPU's best, where the choice came from, paths compiled."""
    return _core.simd()


def cpu_model() -> str:
    """The CPU's model name (with family/model numbers on x86 Linux, which tell apart
    CPUs that virtual machines all call "Intel(R) Xeon(R) Processor")."""
    name, fam, mod = "", "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key in ("model name", "Model", "Processor") and not name:
                    name = val
                elif key in ("cpu family", "CPU implementer") and not fam:
                    fam = val
                elif key in ("model", "CPU part") and not mod:
                    mod = val
                elif not line.strip() and name:
                    break
    except OSError:
        pass
    if not name and platform.system() == "Darwin":
        try:
            import subprocess

            name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, timeout=5).stdout.strip()
        except Exception:  # noqa: BLE001 - a model name is a nicety
            name = ""
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} (family {fam} model {mod})" if fam and mod else name


def cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "linattn", "tuning.json")


def _version() -> str:
    import sys

    v = getattr(sys.modules.get(__package__), "__version__", None)
    if v:
        return str(v)
    try:
        from importlib.metadata import version

        return version(__package__)
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _cache_key() -> str:
    return f"{cpu_model()} | linattn {_version()}"


def _read_cache() -> dict:
    try:
        with open(cache_path(), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _cached_entry(isa: str) -> dict | None:
    if os.environ.get("LINATTN_TUNING", "").lower() in ("off", "0", "no", "false"):
        return None
    entry = _read_cache().get(_cache_key(), {}).get(isa)
    if not isinstance(entry, dict) or not isinstance(entry.get("knobs"), dict):
        return None
    return entry


def _refresh() -> None:
    """Recompute the knobs in force for the active path (after tune() or set_simd)."""
    isa = _core.simd()["active"]
    knobs = dict(table()[isa])
    entry = _cached_entry(isa)
    for name in _TUNED:
        _core.set_tuning(name, -1)
    source = f"defaults ({isa} row of the tuning table)"
    if entry is not None:
        for name in _TUNED:
            val = entry["knobs"].get(name)
            if isinstance(val, int) and val >= 0:
                knobs[name] = val
                _core.set_tuning(name, val)
        source = f"la.tune() cache ({cache_path()}, measured {entry.get('date', '?')})"
    _state.update(isa=isa, knobs=knobs, source=source)


def active() -> dict[str, int]:
    """The knobs in force: the active path's row, or this CPU's la.tune() results."""
    if not _state:
        _refresh()
    return _state["knobs"]


def source() -> str:
    if not _state:
        _refresh()
    return _state["source"]


def set_simd(isa: str) -> str:
    """Switch the ISA path for this process (lowered to what the CPU runs)."""
    got = _core.set_simd(isa)
    _refresh()
    return got


def default_chunk(F: int) -> int:
    t = active()
    return t["chunk_narrow"] if F <= t["narrow_f"] else t["chunk"]


def auto_rule(knobs: dict[str, int] | None = None, isa: str | None = None) -> str:
    """The ``mode="auto"`` rule in words, with the numbers of the tuning table (by default
    the active ISA path's documented row)."""
    isa = isa if isa is not None else _core.simd()["active"]
    t = knobs if knobs is not None else table()[isa]
    return (
        "recurrent when T < 2 * chunk_size; chunked when there are fewer (batch x head) "
        f"slices than threads and T >= {t['seq_min_chunks']} * chunk_size * threads (it "
        "splits the sequence over the threads); otherwise recurrent while the values are at "
        f"most {t['recurrent_max_e']} wide (E <= {t['recurrent_max_e']}, any F) and chunked "
        "for wider values (measured crossovers); parallel is never chosen automatically. "
        "Kinds with their own kernels use chunked from T >= 2 * chunk_size (performer, rfa) "
        f"or from T >= 24 (lavo). chunk_size defaults to {t['chunk']} ({t['chunk_narrow']} when F <= "
        f"{t['narrow_f']}). Numbers: the {isa} row of the tuning table; la.tune() measures "
        "them on the running CPU and la.info()['tuning'] says which apply")


def info_entries() -> dict[str, Any]:
    """la.info()'s ISA and tuning entries."""
    s = _core.simd()
    return {
        "simd": s["active"],
        "simd_cpu": s["cpu"],
        "simd_source": s["source"],
        "simd_paths": s["compiled"],
        "avx512_kernels": s["active"] == "avx512",
        "tuning": source(),
    }


# ------------------------------------------------------------------ tune --

def _best_times(fns: dict, rounds: int = 7, clock=time.thread_time) -> dict:
    """Best time of each candidate, measured in interleaved rounds (A B C A B C ...) so
    that a burst of load on a shared machine hits every candidate alike.  One-thread
    runs are timed by the thread's CPU time, which time spent descheduled does not
    inflate; multi-thread ones by the wall clock."""
    for fn in fns.values():
        fn()  # warm-up (page faults, scratch)
    best = {key: float("inf") for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = clock()
            fn()
            best[key] = min(best[key], clock() - t0)
    return best


def tune(*, save: bool = True, budget: float = 20.0, verbose: bool = False) -> dict[str, Any]:
    """Measure the ``mode="auto"`` crossovers and tile choice on this CPU and ISA path.

    Measures, float32, elu, one thread unless stated: the recurrent vs chunked crossover
    over the value width E (F = 64); the fastest chunk size for wide (F = 64) and narrow
    (F = 32) features; register tiles vs BLAS for the chunk products; the recurrent loop
    over token pairs vs single tokens (where the path has a pair loop); and, when more than
    one thread is available, from which length the sequence-parallel chunked form beats
    the recurrent one for a single (batch x head) slice.  Takes a few seconds (at most
    about ``budget`` seconds; later measurements are skipped past it).

    The results apply at once and, with ``save=True``, are stored in the per-user cache
    (``$XDG_CACHE_HOME/linattn/tuning.json``) under this CPU model, linattn version and
    ISA path, for later processes.  Returns the entry: ``{"knobs": ..., "measured": ...}``.
    """
    import numpy as np

    from . import _api

    t_start = time.perf_counter()
    isa = _core.simd()["active"]
    base = dict(table()[isa])
    knobs = dict(base)
    measured: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    threads_before = _core.get_num_threads()

    def data(BH, T, F, E):
        q = (0.5 * rng.standard_normal((BH, T, F))).astype(np.float32)
        k = (0.5 * rng.standard_normal((BH, T, F))).astype(np.float32)
        v = rng.standard_normal((BH, T, E)).astype(np.float32)
        return q, k, v

    def run(q, k, v, mode, chunk):
        return lambda: _api.causal(q, k, v, "elu", mode=mode, chunk_size=chunk)

    def say(msg):
        if verbose:
            print(f"la.tune [{time.perf_counter() - t_start:5.1f} s] {msg}", flush=True)

    def over():
        return time.perf_counter() - t_start > budget

    try:
        for name in _TUNED:  # measure from the table's values, not an older cache
            _core.set_tuning(name, -1)
        _core.set_num_threads(1)
        BH, T = 4, 2048
        # tiles vs BLAS for the chunk products (chunked form, F = E = 64)
        q, k, v = data(BH, T, 64, 64)
        if base["tiles_max_dim"] > 0:
            chunked = run(q, k, v, "chunked", base["chunk"])

            def with_tiles(limit):
                def fn():
                    _core.set_tuning("tiles_max_dim", limit)
                    chunked()
                return fn

            tt = _best_times({"tiles": with_tiles(base["tiles_max_dim"]), "blas": with_tiles(0)})
            t_tiles, t_blas = tt["tiles"], tt["blas"]
            _core.set_tuning("tiles_max_dim", -1)
            knobs["tiles_max_dim"] = base["tiles_max_dim"] if t_tiles <= t_blas else 0
            measured["tiles_vs_blas_s"] = {"tiles": t_tiles, "blas": t_blas}
            _core.set_tuning("tiles_max_dim", knobs["tiles_max_dim"])
            say(f"tiles {t_tiles * 1e3:.2f} ms, BLAS {t_blas * 1e3:.2f} ms")
        # the recurrent loop: two tokens per pass over the state, or one
        if base["token_pairs"] and not over():
            recurrent = run(q, k, v, "recurrent", None)

            def with_pairs(flag):
                def fn():
                    _core.set_tuning("token_pairs", flag)
                    recurrent()
                return fn

            tt = _best_times({"pairs": with_pairs(1), "single": with_pairs(0)})
            _core.set_tuning("token_pairs", -1)
            knobs["token_pairs"] = 1 if tt["pairs"] <= tt["single"] else 0
            measured["token_pairs_s"] = tt
            say(f"recurrent, token pairs {tt['pairs'] * 1e3:.2f} ms, single "
                f"{tt['single'] * 1e3:.2f} ms")
        # chunk sizes, wide and narrow features
        for key, F, choices in (("chunk", 64, (32, 64, 128)), ("chunk_narrow", 32, (16, 32, 64))):
            if over():
                break
            q, k, v = data(BH, T, F, 64)
            times = _best_times({c: run(q, k, v, "chunked", c) for c in choices})
            knobs[key] = min(times, key=times.get)
            measured[f"{key}_s"] = times
            say(f"{key}: {times}")
        # recurrent vs chunked over the value width
        widths = (32, 64, 96, 128, 192)
        rec_max = 0
        times = {}
        for E in widths:
            if over():
                break
            q, k, v = data(BH, T, 64, E)
            times[E] = _best_times({"recurrent": run(q, k, v, "recurrent", None),
                                    "chunked": run(q, k, v, "chunked", knobs["chunk"])})
            tr, tc = times[E]["recurrent"], times[E]["chunked"]
            if tr <= tc:
                rec_max = E
            else:
                break
        if times:
            knobs["recurrent_max_e"] = rec_max
            measured["recurrent_vs_chunked_s"] = times
            say(f"recurrent_max_e = {rec_max}: {times}")
        # sequence split: one slice, all threads, from which length chunked wins
        nth = threads_before
        if nth >= 2 and not over():
            _core.set_num_threads(nth)
            c = knobs["chunk"]
            split = None
            times = {}
            for m in (4, 8, 16, 32):
                if over():
                    break
                q, k, v = data(1, m * c * nth, 64, 64)
                times[m] = _best_times({"recurrent": run(q, k, v, "recurrent", None),
                                        "chunked_split": run(q, k, v, "chunked", c)},
                                       clock=time.perf_counter)
                tr, tc = times[m]["recurrent"], times[m]["chunked_split"]
                if tc < tr:
                    split = m
                    break
            if times:
                # never below the threshold at which the C glue splits the sequence
                knobs["seq_min_chunks"] = max(base["seq_min_chunks"], split) if split else 1 << 20
                measured["sequence_split_s"] = times
                measured["sequence_split_threads"] = nth
                say(f"seq_min_chunks = {knobs['seq_min_chunks']}: {times}")
    finally:
        _core.set_num_threads(threads_before if threads_before != _core.build_info()[
            "max_threads"] else 0)
        for name in _TUNED:
            _core.set_tuning(name, -1)

    entry = {
        "knobs": {n: int(knobs[n]) for n in _TUNED},
        "defaults": {n: int(base[n]) for n in _TUNED},
        "measured": {k: _jsonable(v) for k, v in measured.items()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - t_start, 2),
        "numpy": np.__version__,
        "blas_corename": _core.build_info()["blas_corename"],
    }
    if save:
        _write_entry(isa, entry)
        _refresh()
    else:
        for name in _TUNED:
            _core.set_tuning(name, entry["knobs"][name])
        _state.update(isa=isa, knobs={**table()[isa], **entry["knobs"]},
                      source=f"la.tune(save=False) results of this process ({entry['date']})")
    return entry


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, float):
        return round(x, 7)
    return x


def _write_entry(isa: str, entry: dict) -> None:
    path = cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = _read_cache()
    data.setdefault(_cache_key(), {})[isa] = entry
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
