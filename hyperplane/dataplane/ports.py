"""The two kinds of links the packet pipeline faces, as plain state (pure).

``EniPort`` is a Hyperplane ENI: its address and MAC on its subnet's link,
the subnet (to choose a next hop: the destination itself when on-link,
otherwise the subnet router), the link MTU, and everything the pipeline keeps
per ENI: the session table (``conntrack.Table``), one port allocator per
protocol (``portalloc.PortAllocator``), the fragment table
(``fragments.FragmentTable``), the ARP cache and the frames waiting for ARP,
the per-ENI counters, and ``egress``: the compiled egress rules of its security groups
(``acl.RuleSet``; None allows every flow), consulted only when a flow opens.  The
table and the port allocators are the ENI's slot of the pipeline's session store
once the ENI is in the pipeline's ``enis`` (``tables.Enis``).
``EnvPort`` is the link of one execution
environment: its address and MAC, the gateway address and MAC Hyperplane
answers for, the ENI it uses (None: a function without VPC access) and its
``spill`` ENIs: further ENIs of the same key (subnet and security groups), in
order of preference, that carry its new flows while the primary is at its
connection limit (empty: the primary only).

Each port carries the ``tx`` callable the I/O layer gives it; the pipeline
(``pipeline.Pipeline``) owns all behaviour, this module only the state (and
two look-ups over an environment's ENIs: a live session in a spill ENI's
table, and which ENI holds a given session).
"""

from __future__ import annotations

from collections.abc import Callable

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.acl import RuleSet
from hyperplane.dataplane.conntrack import Key, Session, Table
from hyperplane.dataplane.fragments import FragmentTable
from hyperplane.dataplane.portalloc import EniPorts

Tx = Callable[[memoryview | bytes], None]


def _discard(_frame: memoryview | bytes) -> None:
    return None


class EniPort:
    """A Hyperplane ENI: its address, link, sessions, ports, fragments and ARP state."""

    def __init__(self, eni_id: str, ifname: str, ip: str, mac: str, cidr: str,
                 gateway: str, connection_limit: int = 65000,
                 port_range: tuple[int, int] = (1024, 65535), mtu: int = 1500) -> None:
        self.id, self.ifname, self.ip = eni_id, ifname, ip
        self.ip_bytes = p.ip_to_bytes(ip)
        self.mac_bytes = p.mac_to_bytes(mac)
        network, prefix = cidr.split("/")
        self.mask = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
        self.net = int.from_bytes(p.ip_to_bytes(network), "big") & self.mask
        self.gateway_bytes = p.ip_to_bytes(gateway)
        self.connection_limit = connection_limit
        self.mtu = mtu
        self.table = Table()
        self.frags = FragmentTable()
        self.port_range = port_range
        self.ports = EniPorts(port_range)
        self.arp: dict[bytes, bytes] = {}
        self.pending: dict[bytes, list] = {}  # ip -> [first request time, last, frames]
        self.counters: dict[str, int] = dict.fromkeys(
            ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes"), 0)
        self.egress: RuleSet | None = None  # set by each configuration push
        self.elsewhere = 0  # sessions the other workers of a group hold (``loop.Worker``)
        self.tx: Tx = _discard

    def nexthop(self, dst: bytes) -> bytes:
        on_link = int.from_bytes(dst, "big") & self.mask == self.net
        return dst if on_link else self.gateway_bytes

    def arp_request(self, target: bytes) -> bytes:
        return p.arp_frame(1, self.mac_bytes, self.ip_bytes, bytes(6), target,
                           eth_dst=b"\xff" * 6)


class EnvPort:
    """The link of one execution environment and the ENIs it uses (None: no VPC)."""

    def __init__(self, ifname: str, ip: str, mac: str, gateway_ip: str, gateway_mac: str,
                 eni: EniPort | None, spill: tuple[EniPort, ...] = ()) -> None:
        self.ifname, self.ip = ifname, ip
        self.ip_bytes = p.ip_to_bytes(ip)
        self.mac_bytes = p.mac_to_bytes(mac)
        self.gateway_ip_bytes = p.ip_to_bytes(gateway_ip)
        self.gateway_mac_bytes = p.mac_to_bytes(gateway_mac)
        self.eth_in = self.mac_bytes + self.gateway_mac_bytes
        self.eni = eni
        self.spill = spill
        self.tx: Tx = _discard

    def spill_session(self, key: Key, now: float,
                      cached: bool = False) -> tuple[EniPort, Session] | None:
        """The first spill ENI holding a live session under ``key``, and the session
        (``cached``: among the sessions their tables hold as objects only)."""
        for eni in self.spill:
            s = eni.table.sessions.get(key) if cached else eni.table.get(key)
            if s is not None and s.expires >= now:
                return eni, s
        return None

    def holder(self, s: Session) -> EniPort | None:
        """Which of this environment's ENIs holds the session ``s`` (None: none now)."""
        if s.dead:
            return None
        for eni in (self.eni, *self.spill):
            if eni is not None and eni.table is s.table:
                return eni
        return None
