"""A bounded packet capture for tests: AF_PACKET on one interface, saved as pcap by scapy.

Run inside a namespace (``hyperplane exec HOST -- python -m tests.integration.capture``).
It touches ``--ready`` once its socket is bound (so the test knows capture has begun,
without sleeping), and stops on SIGTERM or after ``--seconds``, whichever comes first.
"""

from __future__ import annotations

import argparse
import signal
import socket
import time
from pathlib import Path

from scapy.utils import PcapWriter

ETH_P_ALL = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, ETH_P_ALL))
    sock.settimeout(0.1)
    writer = PcapWriter(args.out, linktype=1, sync=True)
    Path(args.ready).touch()
    deadline = time.monotonic() + args.seconds
    while not stop and time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except (TimeoutError, InterruptedError):
            continue
        writer.write(frame)
    writer.close()


if __name__ == "__main__":
    main()
