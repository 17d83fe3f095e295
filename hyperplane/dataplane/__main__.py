"""``python -m hyperplane.dataplane [--role ROLE] --control SOCKET [--table PATH]`` (I/O).

One entry point for both dataplane processes: Lambda's Hyperplane (``loop``), and
with ``--role natgw`` the NAT gateways (``natgw_loop``).  ``--table PATH`` (normally
``records.table_path(state_id, role)``: ``/dev/shm/hp-<id>-dataplane.sessions`` or
``...-natgw.sessions``) keeps the sessions in a file that outlives the process: created
with ``--capacity`` records when absent (default 1,000,000; the file is sparse), attached
to when present (a file of another capacity or version is refused: exit status 2).
``--fast-path`` chooses the receive path (``loop``): ``sockets`` (the default),
``python``, ``compiled`` (exit status 2 when the compiled fast path is not built) or
``auto``.  ``--workers N`` (N > 1, the Hyperplane role) runs a group of N workers
on one fanout group instead (``workers``; each worker's table is ``--table``'s name
with ``-wI``), started by the group as ``--worker I/N --ring-fd FD``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys

from hyperplane.dataplane.fastpath import MODES, FastPathError
from hyperplane.dataplane.loop import Dataplane, Worker, serve
from hyperplane.dataplane.natgw_loop import NatGatewayDataplane
from hyperplane.dataplane.records import TableError
from hyperplane.dataplane.store import CACHE
from hyperplane.dataplane.workers import WorkerGroup, worker_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperplane.dataplane",
                                     description="the userspace dataplane")
    parser.add_argument("--role", choices=("hyperplane", "natgw"), default="hyperplane",
                        help="Lambda's Hyperplane (default) or the NAT gateways")
    parser.add_argument("--control", required=True, help="Unix socket path for control")
    parser.add_argument("--config", help="JSON snapshot to apply at start")
    parser.add_argument("--table", help="session table file (created, or attached to)")
    parser.add_argument("--capacity", type=int, help="sessions the table holds (when "
                        "created; when attaching, the file's must match)")
    parser.add_argument("--cache", type=int, default=CACHE,
                        help=f"sessions kept as objects (default {CACHE})")
    parser.add_argument("--fast-path", choices=MODES, default="sockets",
                        help="sockets (default: a receiving socket per link), python (the "
                        "receive ring), compiled (the ring walked in C; refused when not "
                        "built) or auto (compiled when built, else python)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes on one fanout group (default 1: no group)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)    # I/N: a group's worker
    parser.add_argument("--ring-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers > 1 and args.role == "hyperplane" and args.worker is None:
        return _group(args, argv if argv is not None else sys.argv[1:])
    kind = NatGatewayDataplane if args.role == "natgw" else Dataplane
    worker = None
    if args.worker is not None:
        index, count = (int(v) for v in args.worker.split("/"))
        peers = tuple(worker_table(args.table, i) for i in range(count) if i != index) \
            if args.table else ()
        worker = Worker(index, count, socket.socket(fileno=args.ring_fd), peers)
        args.table = worker_table(args.table, index) if args.table else None
    try:
        dp = kind(args.control, args.table, args.capacity, args.cache, args.fast_path,
                  **({"worker": worker} if worker is not None else {}))
    except TableError as exc:
        print(f"session table: {exc}", file=sys.stderr)
        return 2
    except FastPathError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.config:
        with open(args.config) as fh:
            dp.apply_config(json.load(fh))
    return serve(dp, "NAT gateway dataplane" if args.role == "natgw"
                 else f"hyperplane dataplane worker {args.worker}" if worker
                 else "hyperplane dataplane")


def _group(args: argparse.Namespace, argv: list[str]) -> int:
    """The group of workers, each started with this process's own arguments."""
    passed = []
    skip = False
    for arg in argv:  # every argument but --control and --workers (each worker has its own)
        if skip:
            skip = False
        elif arg in ("--control", "--workers"):
            skip = True
        elif not arg.startswith(("--control=", "--workers=")):
            passed.append(arg)
    try:
        group = WorkerGroup(args.control, args.workers, passed)
    except OSError as exc:
        print(f"worker group: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, group.stop)
    signal.signal(signal.SIGINT, group.stop)
    print(f"hyperplane dataplane group pid {os.getpid()} ready ({args.workers} workers)",
          file=sys.stderr, flush=True)
    try:
        group.run()
    finally:
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
