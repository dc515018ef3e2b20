"""Run the benchmark registry for threads 1 and 2; print a table, write CSV and PNG plots.

    python benchmarks/run.py [--quick] [--out DIR] [--no-peers] [--filter NAME]

The work is done by ``linattn._bench.main``; this script adds the torch peers
(benchmarks/peers.py) when they import, and their parity check.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from linattn import _bench  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with_peers = "--no-peers" not in argv
    if not with_peers:
        argv.remove("--no-peers")
    import registry

    ents = registry.entries(with_peers=with_peers)
    if not with_peers:
        return _bench.main(argv, entries=ents)
    import peers

    return _bench.main(argv, entries=ents, parity=peers.parity, versions=peers.versions)


if __name__ == "__main__":
    raise SystemExit(main())
