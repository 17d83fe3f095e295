#!/usr/bin/env python3
"""Micro-benchmark of new connections through the pure pipeline: CPU time per connection.

Each of ``--connections`` TCP connections from one environment is six frames: SYN,
SYN-ACK, ACK, FIN-ACK out, FIN-ACK back, ACK; every session is created, tracked through
the handshake and the close, and lingers (as in the bench's connection-rate workload).
Frames are built with scapy beforehand (the ENI keeps the environment's port when it is
free, so the replies' ports are known), and only ``Pipeline.receive`` is timed, as
process CPU time (less sensitive to other jobs on a shared machine).  Works on any tree
that has ``tests/unit/dataplane/frames.py``'s ``make_rig``.

    python scripts/connection_bench.py [--connections 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.dataplane import frames as f  # noqa: E402


def flows(rig: f.Rig, count: int) -> list[list[tuple]]:
    out = []
    for i in range(count):
        port = 10000 + i
        out.append([(rig.env, f.syn(sport=port)), (rig.eni, f.synack(port)),
                    (rig.env, f.tcp_out("A", 1001, 5001, sport=port)),
                    (rig.env, f.tcp_out("FA", 1001, 5001, sport=port)),
                    (rig.eni, f.tcp_in("FA", 5001, 1002, eni_port=port)),
                    (rig.env, f.tcp_out("A", 1002, 5002, sport=port))])
    return out


def once(count: int, table_dir: str | None = None) -> float:
    """CPU seconds per connection over ``count`` connections on a fresh pipeline (its table
    a file in ``table_dir`` when given, as the dataplane's, else anonymous memory)."""
    store, path = None, None
    if table_dir is not None:
        from hyperplane.dataplane.pipeline import Pipeline
        from hyperplane.dataplane.shm import create_table
        path = os.path.join(table_dir, f"hp-bench{os.getpid()}-dataplane.sessions")
        store = create_table(path, 1_000_000, Pipeline.new_ports)
    try:
        return _timed(f.make_rig(store), count)
    finally:
        if path is not None:
            os.unlink(path)


def _timed(rig: f.Rig, count: int) -> float:
    rig.eni.max_connections = count + 1
    planned = flows(rig, count)
    receive, now = rig.pipeline.receive, 100.0
    began = time.process_time()
    for flow in planned:
        now += 0.0002
        for port, frame in flow:
            buf = bytearray(frame)
            receive(port, buf, len(buf), now)
    spent = time.process_time() - began
    assert len(rig.eni_out) == 4 * count, "a frame was dropped: the figure would be wrong"
    return spent / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--table", metavar="DIR", help="the sessions in a table file in DIR "
                        "(as the dataplane keeps them: /dev/shm), not anonymous memory")
    args = parser.parse_args()
    results = [once(args.connections, args.table) for _ in range(args.repeat)]
    print(f"{args.connections} connections: "
          + ", ".join(f"{r * 1e6:.1f}" for r in results) + " us CPU each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
