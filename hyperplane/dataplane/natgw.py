"""The NAT gateway role of the userspace NAT engine (pure).

AWS builds NAT gateways on Hyperplane too; here the same engine (``pipeline.Pipeline``'s
ARP and next-hop resolution, the one NAT rewrite ``rewrite.translate``, ``conntrack``
sessions under both keys with amortised expiry) runs in a second role, in its own process
(``natgw_loop``, started as ``python -m hyperplane.dataplane --role natgw``):

* A ``NatGatewayPort`` is the gateway's one link on its (public) subnet's bridge.  It
  owns the gateway's private address (answers ARP for it) and its Elastic IP: the internet
  gateway's one-to-one translation is folded in, so translated packets leave with the
  Elastic IP as source and the VPC router routes that address back to the private one.
* Outbound (any destination that is neither address): the source must be in the VPC;
  the source becomes the Elastic IP and the source port (ICMP echo identifier) a port of
  1024-65535 free *for that destination* (protocol, address, port): at most
  ``per_destination`` (55,000) connections to one destination, as AWS documents; the
  original port is kept when free, otherwise up to 64 random ones are tried.  Failure
  is counted ``error_port_allocation`` (AWS's metric ``ErrorPortAllocation``) and the
  packet dropped.
  Translated packets go to the subnet router (the subnet's route table sends them on to
  the internet gateway).
* Inbound to the Elastic IP: only replies of a tracked flow pass, rewritten back and sent
  to the inside host (on-link, or through the subnet router).  Anything else is dropped
  (``inbound_to_nat_gateway`` for a packet opening a flow, else ``no_session``).
* Every session idles out after ``idle_timeout`` (350 s, AWS's value), whatever its
  protocol; there is no ICMP error translation and no fragment handling in this role
  (fragments and ICMP errors are dropped and counted).
* TCP, as far as AWS's gateway shows it: the last acknowledgement number each side
  sent (``ack_out``, ``ack_in``) and a coarse state for ``conntrack``: SYN_SENT (a SYN
  opened it), ESTABLISHED (answered, or picked up mid-stream), FIN_WAIT (one FIN),
  TIME_WAIT (both FINs: closed gracefully), CLOSE (a RST); a SYN reopens a closed one.
* The idle timeout of an answered TCP connection not closed (neither both FINs nor a RST) is
  AWS's documented behaviour: the gateway sends a RST to both sides, so that both
  see ECONNRESET (``idle_reset``, from the store's expiry hook ``on_expire`` and from an
  outbound packet that finds its session expired, which is then dropped as
  ``idle_timeout`` unless it is a SYN).  Each RST carries the sequence number its
  receiver expects (``tcpreset``); a side whose acknowledgement is unknown gets none.
  Counted ``idle_timeouts`` (AWS's ``IdleTimeoutCount``) and ``idle_resets_sent``.
* Per gateway, the counters behind AWS's CloudWatch metrics (``cloudwatch_metrics``
  maps them to AWS's names): packets and IPv4 bytes in from the source (the VPC side)
  and from the destination, out to each, ``connection_attempts`` (every new flow, any
  protocol) and ``connections_established`` (its first reply).

Everything the pipeline counts is counted here too, per gateway and globally.

Sessions live in the role's own session table (``store``, a second file): a gateway's
slot holds its sessions, and its ``GatewayPorts`` (the ports in use per destination)
are rebuilt from them when a restarted process attaches.  A session read back gets
its inside next hop again from the inside address (``rebind_session``).  A full table drops
a new flow and counts ``table_full``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hyperplane.dataplane import packet as p
from hyperplane.dataplane import records as r
from hyperplane.dataplane.conntrack import (
    CLOSE,
    ESTABLISHED,
    FIN_WAIT,
    INBOUND,
    SYN_SENT,
    TIME_WAIT,
    UNKNOWN,
    Session,
    make_session,
)
from hyperplane.dataplane.packet import (
    ETH_TYPE,
    ICMP_ID,
    IP,
    IP_DST,
    IP_FRAG,
    IP_FRAG_LOW,
    IP_PROTO,
    IP_SRC,
    IP_SRC_AT,
    IP_TTL,
    IP_VIHL,
    L4_DPORT,
    L4_MIN,
    TCP_ACK,
    TCP_FLAGS,
    TCP_MIN,
    TCP_SEQ,
)
from hyperplane.dataplane.pipeline import Pipeline
from hyperplane.dataplane.ports import EniPort
from hyperplane.dataplane.rewrite import translate
from hyperplane.dataplane.store import CACHE, Ports, SessionStore
from hyperplane.dataplane.tcpreset import rst_frame

IPS, WORD32, WORD16 = p.IPS, p.WORD32, p.WORD16
ATTEMPTS = 64
NATGW_DROPS = ("error_port_allocation", "not_from_vpc", "to_nat_gateway",
               "inbound_to_nat_gateway", "idle_timeout")
NATGW_EVENTS = ("idle_timeouts", "idle_resets_sent", "connection_attempts",
                "connections_established")  # counted per gateway (``_event``)
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
CLOSED = (CLOSE, TIME_WAIT)  # a TCP session no longer active (AWS: closed gracefully, or reset)
# (packets, bytes) counter names of each way a packet passes a gateway
IN_FROM_SOURCE = ("packets_in_from_source", "bytes_in_from_source")
OUT_TO_DESTINATION = ("packets_out_to_destination", "bytes_out_to_destination")
IN_FROM_DESTINATION = ("packets_in_from_destination", "bytes_in_from_destination")
OUT_TO_SOURCE = ("packets_out_to_source", "bytes_out_to_source")
# AWS's CloudWatch metric (namespace AWS/NATGateway) -> the gateway's counter
METRICS = {
    "ConnectionAttemptCount": "connection_attempts",
    "ConnectionEstablishedCount": "connections_established",
    "ErrorPortAllocation": "error_port_allocation",
    "IdleTimeoutCount": "idle_timeouts",
    "BytesInFromSource": IN_FROM_SOURCE[1], "BytesInFromDestination": IN_FROM_DESTINATION[1],
    "BytesOutToSource": OUT_TO_SOURCE[1], "BytesOutToDestination": OUT_TO_DESTINATION[1],
    "PacketsInFromSource": IN_FROM_SOURCE[0],
    "PacketsInFromDestination": IN_FROM_DESTINATION[0],
    "PacketsOutToSource": OUT_TO_SOURCE[0], "PacketsOutToDestination": OUT_TO_DESTINATION[0],
}


def cloudwatch_metrics(counters: dict[str, int], active: int,
                       drop_reasons: tuple[str, ...]) -> dict[str, int]:
    """A gateway's counters under AWS's CloudWatch metric names: ``ActiveConnectionCount``
    (``active``: its TCP sessions not closed), ``PacketsDropCount`` (the sum of its drop
    reasons, ``drop_reasons``), the others one counter each (``METRICS``)."""
    out = {"ActiveConnectionCount": active}
    out.update({name: counters.get(key, 0) for name, key in METRICS.items()})
    out["PacketsDropCount"] = sum(counters.get(k, 0) for k in drop_reasons)
    return dict(sorted(out.items()))


def active_connections(rows: list[dict]) -> int:
    """``ActiveConnectionCount``: the TCP sessions (``records.describe`` rows) not closed."""
    closed = {"CLOSE", "TIME_WAIT"}
    return sum(1 for row in rows if row["protocol"] == "tcp" and row["state"] not in closed)


class GatewayPorts:
    """The ports of a gateway in use per destination (protocol, address, port)."""

    __slots__ = ("in_use",)

    def __init__(self) -> None:
        self.in_use: dict[tuple[int, bytes, int], set[int]] = {}

    def claim(self, proto: int, env_ip: bytes, env_port: int, remote_ip: bytes,
              remote_port: int, eni_port: int) -> bool:
        used = self.in_use.setdefault((proto, remote_ip, remote_port), set())
        if eni_port in used:
            return False
        used.add(eni_port)
        return True

    def claim_keys(self, found: list[tuple]) -> list[bool]:
        """``claim`` for records given by their key fields (see ``store.Ports``)."""
        return [self.claim(proto, addrs[:4], ports >> 16, addrs[4:], ports & 0xFFFF,
                           ports_in >> 16 if proto == p.PROTO_ICMP else ports_in & 0xFFFF)
                for _, proto, _, addrs, ports, _, _, _, _, ports_in in found]

    def free(self, proto: int, env_ip: bytes, env_port: int, remote_ip: bytes,
             remote_port: int, eni_port: int) -> None:
        key = (proto, remote_ip, remote_port)
        used = self.in_use.get(key)
        if used is not None:
            used.discard(eni_port)
            if not used:
                del self.in_use[key]

    def set_range(self, port_range: tuple[int, int]) -> None:
        return None  # the range is the gateway's (``NatGatewayPort.allocate``)


class NatGatewayPort(EniPort):
    """A NAT gateway's link: private address, Elastic IP, ports per destination."""

    def __init__(self, gateway_id: str, ifname: str, ip: str, mac: str, cidr: str,
                 gateway: str, elastic_ip: str, vpc_cidr: str, per_destination: int = 55000,
                 port_range: tuple[int, int] = (1024, 65535), idle_timeout: float = 350.0,
                 seed: int | None = None) -> None:
        super().__init__(gateway_id, ifname, ip, mac, cidr, gateway)
        self.eip_bytes = p.ip_to_bytes(elastic_ip)
        network, prefix = vpc_cidr.split("/")
        self.vpc_mask = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
        self.vpc_net = int.from_bytes(p.ip_to_bytes(network), "big") & self.vpc_mask
        self.per_destination = per_destination
        self.port_range = port_range
        self.idle_timeout = idle_timeout
        self.ports = GatewayPorts()  # type: ignore[assignment]
        self.rng = random.Random(seed)

    def in_vpc(self, addr: bytes) -> bool:
        return int.from_bytes(addr, "big") & self.vpc_mask == self.vpc_net

    def allocate(self, proto: int, dst: bytes, dport: int, wanted: int) -> int | None:
        """A port for a new connection to (proto, dst, dport), or None."""
        used = self.ports.in_use.setdefault((proto, dst, dport), set())
        low, high = self.port_range
        if len(used) >= min(self.per_destination, high - low + 1):
            return None
        port = wanted if low <= wanted <= high and wanted not in used else None
        for _ in range(ATTEMPTS if port is None else 0):
            candidate = self.rng.randint(low, high)
            if candidate not in used:
                port = candidate
                break
        if port is not None:
            used.add(port)
        return port


class NatGatewayPipeline(Pipeline):
    """Frames in and out of NAT gateway links; ``enis`` holds the ``NatGatewayPort``s."""

    def __init__(self, store: SessionStore | None = None, cache_size: int = CACHE) -> None:
        super().__init__(store=store, cache_size=cache_size)
        self.counters.update({k: self.counters.get(k, 0) for k in NATGW_DROPS})
        self.store.on_expire = self._expired

    new_ports: Callable[[], Ports] = staticmethod(GatewayPorts)  # type: ignore[assignment]

    def rebind_session(self, eni: EniPort, s: Session) -> None:
        """The inside next hop (``env``) and the subnet router, as ``new_flow`` set them."""
        s.env = s.env_ip if eni.nexthop(s.env_ip) == s.env_ip else eni.gateway_bytes
        s.nexthop = eni.gateway_bytes

    def receive(self, port: NatGatewayPort, buf: bytearray, length: int, now: float) -> None:
        if length < IP:
            self.drop("truncated")
            return
        ethertype = (buf[ETH_TYPE] << 8) | buf[ETH_TYPE + 1]
        if ethertype == p.ETH_P_IP:
            self.from_subnet(port, buf, length, now)
        elif ethertype == p.ETH_P_ARP:
            self.arp_from_eni(port, buf, length, now)
        else:
            self.drop("non_ipv4", port)

    def from_subnet(self, gw: NatGatewayPort, buf: bytearray, length: int, now: float) -> None:
        gw.counters["rx_packets"] += 1
        gw.counters["rx_bytes"] += length - p.VNET_LEN
        end = self._ip_end(buf, length, gw)
        if not end:
            return
        if (buf[IP_FRAG] & 0x3F) or buf[IP_FRAG_LOW]:
            self.drop("fragment", gw)
            return
        l4 = IP + ((buf[IP_VIHL] & 0x0F) << 2)
        proto = buf[IP_PROTO]
        if l4 + (TCP_MIN if proto == p.PROTO_TCP else L4_MIN) > end:
            self.drop("truncated", gw)
            return
        dst = bytes(buf[IP_DST])
        inbound = dst == gw.eip_bytes
        if dst == gw.ip_bytes:
            self.drop("to_nat_gateway", gw)
            return
        if proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            ports = WORD32(buf, l4)[0]
        elif proto == p.PROTO_ICMP and buf[l4] in (p.ICMP_ECHO, p.ICMP_ECHO_REPLY):
            if (buf[l4] == p.ICMP_ECHO) == inbound:
                self.drop("inbound_to_nat_gateway" if inbound else "icmp_unsupported", gw)
                return
            ports = WORD16(buf, l4 + ICMP_ID)[0] << 16
        else:
            self.drop("icmp_unsupported" if proto == p.PROTO_ICMP else "unknown_protocol", gw)
            return
        if buf[IP_TTL] <= 1:
            self.drop("ttl_expired", gw)
            return
        if inbound:
            self.inbound(gw, buf, length, l4, proto, ports, now)
        else:
            self.outbound(gw, buf, length, l4, proto, ports, now)

    def outbound(self, gw: NatGatewayPort, buf: bytearray, length: int, l4: int, proto: int,
                 ports: int, now: float) -> None:
        src = bytes(buf[IP_SRC])
        if not gw.in_vpc(src):
            self.drop("not_from_vpc", gw)
            return
        self._count(gw, IN_FROM_SOURCE, length)
        key = (proto, IPS(buf, IP_SRC_AT)[0], ports)
        s = gw.table.sessions.get(key)
        if s is None:
            s = gw.table.find(key)
        if s is None or s.expires < now:
            if s is not None and proto == p.PROTO_TCP and self.idle_reset(gw, s, now) \
                    and not buf[l4 + TCP_FLAGS] & SYN:
                self._free(gw, s)  # AWS: a RST to whoever continues an idled connection
                self.drop("idle_timeout", gw)
                return
            s = self.new_flow(gw, buf, l4, proto, src, now, s)
            if s is None:
                return
        elif proto == p.PROTO_TCP:
            self._tcp(s, buf, l4, False)
        s.expires = now + s.timeout
        translate(s, buf, l4, proto, length, gw.eip_bytes)
        self._count(gw, OUT_TO_DESTINATION, length)
        self.to_vpc(gw, s.nexthop, buf, length, now)

    def new_flow(self, gw: NatGatewayPort, buf: bytearray, l4: int, proto: int, src: bytes,
                 now: float, stale: Session | None) -> Session | None:
        if stale is not None:
            self._free(gw, stale)
        self.reap(now)
        self._event(gw, "connection_attempts")
        if self.store.count >= self.max_sessions or self.store.full():
            self.drop("table_full", gw)
            return None
        dst = bytes(buf[IP_DST])
        if proto == p.PROTO_ICMP:
            sport, dport = WORD16(buf, l4 + ICMP_ID)[0], 0
        else:
            sport, dport = WORD16(buf, l4)[0], WORD16(buf, l4 + L4_DPORT)[0]
        port = gw.allocate(proto, dst, dport, sport)
        if port is None:
            self.drop("error_port_allocation", gw)
            return None
        inside_hop = src if gw.nexthop(src) == src else gw.gateway_bytes
        s = make_session(proto, inside_hop, src, sport, dst, dport, gw.eip_bytes, port,
                         gw.gateway_bytes, gw.idle_timeout, now)
        if proto == p.PROTO_TCP:  # a SYN opens it; anything else picks it up mid-stream
            flags = buf[l4 + TCP_FLAGS]
            s.state = SYN_SENT if flags & (SYN | ACK) == SYN else ESTABLISHED
            self._tcp(s, buf, l4, False, write=False)
        gw.table.add(s)
        self.counters["sessions_created"] += 1
        return s

    def inbound(self, gw: NatGatewayPort, buf: bytearray, length: int, l4: int, proto: int,
                ports: int, now: float) -> None:
        self._count(gw, IN_FROM_DESTINATION, length)
        key = (proto | INBOUND, IPS(buf, IP_SRC_AT)[0], ports)
        s = gw.table.sessions.get(key)
        if s is None:
            s = gw.table.find(key)
        if s is None or s.expires < now:
            self.drop("inbound_to_nat_gateway" if self._opens_flow(buf, l4, proto)
                      else "no_session", gw)
            return
        s.expires = now + s.timeout
        first = not s.replied
        if first:
            s.replied = True
            self._event(gw, "connections_established")
        if proto == p.PROTO_TCP:
            self._tcp(s, buf, l4, True, answered=first)
        elif first:
            self.store.update(s)
        translate(s, buf, l4, proto, length, None)
        self._count(gw, OUT_TO_SOURCE, length)
        self.to_vpc(gw, s.env, buf, length, now)  # s.env: the inside next hop's address

    # -- TCP, idle resets, counters ------------------------------------------------------
    def _tcp(self, s: Session, buf: bytearray, l4: int, inbound: bool, write: bool = True,
             answered: bool = False) -> None:
        """The last ACK of the side that sent the segment, and the coarse state (module
        docstring); the record written when the state moved (``write``) or ``answered``."""
        flags = buf[l4 + TCP_FLAGS]
        if flags & ACK:
            if inbound:
                s.ack_in = WORD32(buf, l4 + TCP_ACK)[0]
            else:
                s.ack_out = WORD32(buf, l4 + TCP_ACK)[0]
        state = s.state
        if flags & RST:
            s.state = CLOSE
        elif flags & SYN and not inbound and state in CLOSED:
            s.state, s.fin_out, s.fin_in, s.replied = SYN_SENT, UNKNOWN, UNKNOWN, False
        elif flags & FIN:
            if inbound:
                s.fin_in = WORD32(buf, l4 + TCP_SEQ)[0]
            else:
                s.fin_out = WORD32(buf, l4 + TCP_SEQ)[0]
            if state != CLOSE:
                s.state = TIME_WAIT if s.fin_in != UNKNOWN and s.fin_out != UNKNOWN \
                    else FIN_WAIT
        elif inbound and state == SYN_SENT:
            s.state = ESTABLISHED
        if write and (s.state != state or answered):
            self.store.update(s)

    def idle_reset(self, gw: NatGatewayPort, s: Session, now: float) -> bool:
        """Reset both sides of the idled TCP session ``s`` unless it was closed; whether it
        was reset (a connection never answered is not: it was never active)."""
        if s.state in CLOSED or s.state == SYN_SENT:
            return False
        self._resets(gw, s.env_ip, s.env_port, s.remote_ip, s.remote_port, s.eni_port,
                     s.ack_out, s.ack_in, now)
        return True

    def _expired(self, rec: int, now: float) -> None:
        """The store's expiry hook: an expired TCP record not closed is reset both ways."""
        store = self.store
        f = r.REC.unpack_from(store.mem, r.record_at(rec))
        if f[r.F_PROTO] != p.PROTO_TCP:
            return
        gw = next((g for g in self.enis.values() if g.table.slot == f[r.F_SLOT]), None)
        if gw is None:
            return
        s = store.cached.get(rec)
        if s is not None:
            self.idle_reset(gw, s, now)
            return
        if f[r.F_STATE] in CLOSED or f[r.F_STATE] == SYN_SENT:
            return
        env_ip, env_port, remote_ip, remote_port, _, eni_port = r.endpoints(f)
        known = f[r.F_KNOWN]
        self._resets(gw, env_ip, env_port, remote_ip, remote_port, eni_port,
                     f[r.F_ACK_OUT] if known & r.KNOWN_ACK_OUT else UNKNOWN,
                     f[r.F_ACK_IN] if known & r.KNOWN_ACK_IN else UNKNOWN, now)

    def _resets(self, gw: NatGatewayPort, env_ip: bytes, env_port: int, remote_ip: bytes,
                remote_port: int, eni_port: int, ack_out: int, ack_in: int,
                now: float) -> None:
        self._event(gw, "idle_timeouts")
        if ack_out != UNKNOWN:  # to the inside host, as from the remote side
            frame = rst_frame(remote_ip, env_ip, remote_port, env_port, ack_out)
            inside_hop = env_ip if gw.nexthop(env_ip) == env_ip else gw.gateway_bytes
            self._event(gw, "idle_resets_sent")
            self.to_vpc(gw, inside_hop, frame, len(frame), now)
        if ack_in != UNKNOWN:  # to the remote side, as from the Elastic IP
            frame = rst_frame(gw.eip_bytes, remote_ip, eni_port, remote_port, ack_in)
            self._event(gw, "idle_resets_sent")
            self.to_vpc(gw, gw.gateway_bytes, frame, len(frame), now)

    @staticmethod
    def _event(gw: NatGatewayPort, name: str) -> None:
        """An event of one gateway (per gateway only, as AWS's metrics are)."""
        gw.counters[name] = gw.counters.get(name, 0) + 1

    @staticmethod
    def _count(gw: NatGatewayPort, names: tuple[str, str], length: int) -> None:
        counters = gw.counters
        counters[names[0]] = counters.get(names[0], 0) + 1
        counters[names[1]] = counters.get(names[1], 0) + length - IP
