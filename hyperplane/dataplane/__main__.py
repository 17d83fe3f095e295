"""``python -m hyperplane.dataplane [--role hyperplane|natgw] --control SOCKET`` (I/O).

One entry point for both dataplane processes: Lambda's Hyperplane (``loop``), and
with ``--role natgw`` the NAT gateways (``natgw_loop``).
"""

from __future__ import annotations

import argparse
import json
import sys

from hyperplane.dataplane.loop import Dataplane, serve
from hyperplane.dataplane.natgw_loop import NatGatewayDataplane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperplane.dataplane",
                                     description="the userspace dataplane")
    parser.add_argument("--role", choices=("hyperplane", "natgw"), default="hyperplane",
                        help="Lambda's Hyperplane (default) or the NAT gateways")
    parser.add_argument("--control", required=True, help="Unix socket path for control")
    parser.add_argument("--config", help="JSON snapshot to apply at start")
    args = parser.parse_args(argv)
    if args.role == "natgw":
        dp: Dataplane = NatGatewayDataplane(args.control)
    else:
        dp = Dataplane(args.control)
    if args.config:
        with open(args.config) as fh:
            dp.apply_config(json.load(fh))
    return serve(dp, "NAT gateway dataplane" if args.role == "natgw"
                 else "hyperplane dataplane")


if __name__ == "__main__":
    sys.exit(main())
