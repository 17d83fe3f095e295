"""The NAT gateway process: the dataplane's loop in the NAT-gateway role (I/O).

    python -m hyperplane.dataplane --role natgw --control STATE_DIR/natgw.sock --table PATH

Runs in ``hp-plane`` next to the Hyperplane dataplane, as a separate process (a NAT
gateway is a separate AWS service, and a separate failure domain here).  It reuses
``loop.Dataplane`` whole (epoll loop, packet sockets, control protocol, ``stats`` and
``conntrack``) with ``natgw.NatGatewayPipeline`` in place of the Lambda pipeline;
``stats`` adds ``cloudwatch``: each gateway's figures under AWS's metric names.
Its snapshot (``config.NatSnapshot``, pushed by ``kernel.vpcservices``) lists the
gateways; ``config.plan_gateways`` is its diff.  Its sessions live in its own table
file (``--table``), attached to again after a restart like the dataplane's.
"""

from __future__ import annotations

import time

from hyperplane.dataplane.config import Existing, NatSnapshot, plan_gateways
from hyperplane.dataplane.loop import Dataplane
from hyperplane.dataplane.natgw import (
    NATGW_DROPS,
    NatGatewayPipeline,
    NatGatewayPort,
    active_connections,
    cloudwatch_metrics,
)
from hyperplane.dataplane.pipeline import DROP_REASONS


class NatGatewayDataplane(Dataplane):
    pipeline_class = NatGatewayPipeline

    def existing(self) -> Existing:
        return Existing({g.id: (g.ip, g.ifname) for g in self.pipeline.enis.values()})

    def apply_config(self, config: dict) -> None:
        snapshot = NatSnapshot.from_dict(config)
        close, new = plan_gateways(self.existing(), snapshot)
        self.swap_ports(close, new, lambda g: NatGatewayPort(
            g.id, g.ifname, g.ip, g.mac, g.cidr, g.gateway, g.elastic_ip, g.vpc_cidr,
            g.per_destination, g.port_range, g.idle_timeout))
        pl = self.pipeline
        now = time.monotonic()
        for g in snapshot.nat_gateways:
            port = pl.enis[g.id]
            port.per_destination = g.per_destination
            pl.resolve(port, port.gateway_bytes, now)
        pl.prune()

    def stats(self) -> dict:
        """The dataplane's figures, and each gateway's under AWS's CloudWatch metric names."""
        out = super().stats()
        pl, now = self.pipeline, time.monotonic()
        out["cloudwatch"] = {
            g.id: cloudwatch_metrics(g.counters, active_connections(
                pl.store.describe(now, g.table.slot)), DROP_REASONS + NATGW_DROPS)
            for g in pl.enis.values()}
        return out
