"""``python -m hyperplane.dataplane [--role ROLE] --control SOCKET [--table PATH]`` (I/O).

One entry point for both dataplane processes: Lambda's Hyperplane (``loop``), and
with ``--role natgw`` the NAT gateways (``natgw_loop``).  ``--table PATH`` (normally
``records.table_path(state_id, role)``: ``/dev/shm/hp-<id>-dataplane.sessions`` or
``...-natgw.sessions``) keeps the sessions in a file that outlives the process: created
with ``--capacity`` records when absent (default 1,000,000; the file is sparse), attached
to when present (a file of another capacity or version is refused: exit status 2).
``--fast-path`` chooses the receive path (``loop``): ``sockets`` (the default),
``python``, ``compiled`` (exit status 2 when the compiled fast path is not built) or
``auto``.
"""

from __future__ import annotations

import argparse
import json
import sys

from hyperplane.dataplane.fastpath import MODES, FastPathError
from hyperplane.dataplane.loop import Dataplane, serve
from hyperplane.dataplane.natgw_loop import NatGatewayDataplane
from hyperplane.dataplane.records import TableError
from hyperplane.dataplane.store import CACHE


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
    args = parser.parse_args(argv)
    kind = NatGatewayDataplane if args.role == "natgw" else Dataplane
    try:
        dp = kind(args.control, args.table, args.capacity, args.cache, args.fast_path)
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
                 else "hyperplane dataplane")


if __name__ == "__main__":
    sys.exit(main())
