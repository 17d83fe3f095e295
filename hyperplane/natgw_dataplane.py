"""The NAT gateway process: the dataplane's loop in the NAT-gateway role (I/O).

    python -m hyperplane.natgw_dataplane --control STATE_DIR/natgw.sock

Runs in ``hp-plane`` next to the Hyperplane dataplane, as a separate process (a NAT
gateway is a separate AWS service, and a separate failure domain here).  It reuses
``dataplane.Dataplane`` whole (epoll loop, packet sockets, control protocol, ``stats``
and ``conntrack``) with ``natgw.NatGatewayPipeline`` in place of the Lambda pipeline.
Its snapshot (pushed by ``vpcnet``) lists the gateways:

    {"nat_gateways": [{"id", "ifname", "ip", "mac", "cidr", "gateway", "elastic_ip",
                       "vpc_cidr", "per_destination", "port_range", "idle_timeout"}]}
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from hyperplane.dataplane import Dataplane
from hyperplane.natgw import NatGatewayPipeline, NatGatewayPort


class NatGatewayDataplane(Dataplane):
    def __init__(self, control_path: str) -> None:
        super().__init__(control_path)
        io_counters = self.counters  # the Lambda pipeline's, plus the I/O layer's own
        self.pipeline = NatGatewayPipeline()
        self.counters = self.pipeline.counters
        self.counters.update({k: 0 for k in io_counters if k not in self.counters})

    def apply_config(self, config: dict) -> None:
        pl = self.pipeline
        wanted = {g["id"]: g for g in config.get("nat_gateways", [])}
        for gateway_id in list(pl.enis):
            if gateway_id not in wanted:
                self._close(pl.enis.pop(gateway_id).ifname)
        now = time.monotonic()
        for gateway_id, g in wanted.items():
            port = pl.enis.get(gateway_id)
            if port is None:
                port = NatGatewayPort(gateway_id, g["ifname"], g["ip"], g["mac"], g["cidr"],
                                      g["gateway"], g["elastic_ip"], g["vpc_cidr"],
                                      int(g.get("per_destination", 55000)),
                                      tuple(g.get("port_range", (1024, 65535))),
                                      float(g.get("idle_timeout", 350)))
                pl.enis[gateway_id] = port
                self._open(port)
            port.per_destination = int(g.get("per_destination", port.per_destination))
            pl.resolve(port, port.gateway_bytes, now)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NAT gateway dataplane")
    parser.add_argument("--control", required=True, help="Unix socket path for control")
    args = parser.parse_args(argv)
    dp = NatGatewayDataplane(args.control)
    signal.signal(signal.SIGTERM, dp.stop)
    signal.signal(signal.SIGINT, dp.stop)
    print(f"NAT gateway dataplane pid {os.getpid()} ready", file=sys.stderr, flush=True)
    dp.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
