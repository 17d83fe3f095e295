"""The VPC resolver (Route 53 Resolver's address, VPC base + 2): a small UDP DNS server.

    python -m hyperplane.services.dns --address 10.0.0.2 --records FILE --ready FILE

Runs in the VPC's router namespace, where ``fabric_egress`` puts the address on ``lo``.
``--records`` is a JSON object ``{"db.vpc-app.internal": ["10.0.1.10"], ...}`` written by
``vpcnet``; answers come from ``dnsmsg`` (A records, NODATA for other types, NXDOMAIN for
unknown names).  It touches ``--ready`` once bound.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

from hyperplane.services import dnsmsg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="VPC DNS resolver")
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--records", required=True)
    parser.add_argument("--ready")
    args = parser.parse_args(argv)
    records = {name.lower(): addresses
               for name, addresses in json.loads(Path(args.records).read_text()).items()}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.address, args.port))
    if args.ready:
        Path(args.ready).touch()
    while True:
        data, peer = sock.recvfrom(4096)
        reply = dnsmsg.respond(data, records)
        if reply is not None:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    sys.exit(main())
