"""Benchmark registry: linattn kinds and modes, NumPy references, torch peers.

Each entry is a ``linattn._bench.Entry``: ``name``, ``make(T, BH, dtype) -> fn`` (inputs built
outside the timing), ``flops(T, BH)`` or None, and ``shapes`` (sequence lengths).  The
linattn part lives in ``linattn._bench.linattn_entries()`` so that ``python -m linattn
bench`` needs no checkout; the peers (benchmarks/peers.py) are added only when they import.
"""

from __future__ import annotations

from linattn._bench import Entry, linattn_entries


def entries(with_peers: bool = True) -> list[Entry]:
    out = linattn_entries()
    if with_peers:
        import peers

        out += peers.entries()
    return out
