"""What the pipeline's parts share: the router hop they are part of (pure).

``Pipeline`` is assembled from parts, each in the module of its subject
(``arp.Neighbour``, ``icmp.ErrorPath``, ``fragments.FragmentPath``).  ``Hop`` is
their common base: it names what a part may use of the whole (the ENI ports,
the counters, dropping under a named reason, sending toward an environment or the
VPC) and holds the three calls that are the same for every part: ``drop``,
``to_env`` and ``to_vpc`` (which leans on ``arp.Neighbour`` and
``fragments.FragmentPath``, both parts of ``pipeline.Pipeline``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperplane.dataplane.packet import ETH_ADDRS, VNET_LEN

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Session
    from hyperplane.dataplane.ports import EniPort


class Hop:
    enis: dict[str, EniPort]
    counters: dict[str, int]

    if TYPE_CHECKING:
        def send_split(self, eni: EniPort, nexthop: bytes, buf: bytearray, length: int,
                       now: float) -> None: ...
        def queue_for_arp(self, eni: EniPort, ip: bytes, buf: bytearray, length: int,
                          now: float) -> None: ...

    def drop(self, reason: str, eni: EniPort | None = None, count: int = 1) -> None:
        self.counters[reason] += count
        if eni is not None:
            eni.counters[reason] = eni.counters.get(reason, 0) + count

    def to_vpc(self, eni: EniPort, nexthop: bytes, buf: bytearray, length: int, now: float,
               split: bool = False) -> None:
        """Send a translated frame to ``nexthop`` (fragmented if ``split``), via ARP if needed."""
        if split:
            self.send_split(eni, nexthop, buf, length, now)
            return
        mac = eni.arp.get(nexthop)
        if mac is None:
            self.queue_for_arp(eni, nexthop, buf, length, now)
            return
        buf[ETH_ADDRS] = mac + eni.mac_bytes
        self.counters["forwarded"] += 1
        eni.counters["tx_packets"] += 1
        eni.counters["tx_bytes"] += length - VNET_LEN
        eni.tx(memoryview(buf)[:length])

    def to_env(self, s: Session, buf: bytearray, length: int) -> None:
        buf[ETH_ADDRS] = s.env.eth_in
        self.counters["forwarded"] += 1
        s.env.tx(memoryview(buf)[:length])
