"""The Hyperplane packet pipeline: fast path and slow path (pure).

Two kinds of ports face the pipeline: ``EnvPort`` (the link of one execution
environment; Hyperplane answers ARP there for the environments' gateway) and
``EniPort`` (the ENI's link into its subnet; Hyperplane owns the ENI address,
answers ARP for it and resolves next hops).  ``Pipeline.receive(port, buf,
length, now)`` handles one frame that arrived on a port, in place in ``buf``.

Fast path: find the session under the frame's key, apply its precomputed
rewrite (address, port, TTL, incremental checksums, MACs) and hand the frame
to the other port's ``tx``.  Slow path, only on a miss from an environment:
allocate the ENI port and make the session.  Every drop is counted under a
named reason in ``Pipeline.counters`` (and per ENI in ``EniPort.counters``).

The pipeline does no I/O of its own: ports carry a ``tx`` callable given by
the I/O layer (``dataplane``), so tests drive it with plain lists.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from hyperplane import packet as p
from hyperplane.conntrack import INBOUND, Session, Table, Timeouts, make_session
from hyperplane.nat import PortAllocator

IPS = struct.Struct("!8s").unpack_from
WORD32 = struct.Struct("!I").unpack_from
WORD16 = struct.Struct("!H").unpack_from
PUT16 = struct.Struct("!H").pack_into

DROP_REASONS = (
    "truncated", "bad-ip-header", "non-ipv4", "fragment", "unknown-protocol",
    "icmp-unsupported", "spoofed", "no-vpc", "to-hyperplane", "ttl-expired", "no-session",
    "not-for-eni", "inbound-to-eni", "out-of-ports", "eni-connection-limit", "table-full",
    "arp-timeout", "arp-queue-full", "tx-full", "tx-error", "arp-ignored",
)

Tx = Callable[[memoryview | bytes], None]
ARP_QUEUE = 16
ARP_RETRY = 0.2
ARP_GIVE_UP = 3.0


def _discard(_frame: memoryview | bytes) -> None:
    return None


class EniPort:
    """A Hyperplane ENI: its address, link, sessions, ports and ARP state."""

    def __init__(self, eni_id: str, ifname: str, ip: str, mac: str, cidr: str,
                 gateway: str, connection_limit: int = 65000,
                 port_range: tuple[int, int] = (1024, 65535)) -> None:
        self.id, self.ifname, self.ip = eni_id, ifname, ip
        self.ip_bytes = p.ip_to_bytes(ip)
        self.mac_bytes = p.mac_to_bytes(mac)
        network, prefix = cidr.split("/")
        self.mask = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
        self.net = int.from_bytes(p.ip_to_bytes(network), "big") & self.mask
        self.gateway_bytes = p.ip_to_bytes(gateway)
        self.connection_limit = connection_limit
        self.table = Table()
        self.ports = {proto: PortAllocator(*port_range)
                      for proto in (p.PROTO_TCP, p.PROTO_UDP, p.PROTO_ICMP)}
        self.arp: dict[bytes, bytes] = {}
        self.pending: dict[bytes, list] = {}  # ip -> [first request time, last, frames]
        self.counters: dict[str, int] = dict.fromkeys(
            ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes"), 0)
        self.tx: Tx = _discard

    def nexthop(self, dst: bytes) -> bytes:
        on_link = int.from_bytes(dst, "big") & self.mask == self.net
        return dst if on_link else self.gateway_bytes

    def arp_request(self, target: bytes) -> bytes:
        return p.arp_frame(1, self.mac_bytes, self.ip_bytes, bytes(6), target,
                           eth_dst=b"\xff" * 6)


class EnvPort:
    """The link of one execution environment and the ENI it uses (None: no VPC)."""

    def __init__(self, ifname: str, ip: str, mac: str, gateway_ip: str, gateway_mac: str,
                 eni: EniPort | None) -> None:
        self.ifname, self.ip = ifname, ip
        self.ip_bytes = p.ip_to_bytes(ip)
        self.mac_bytes = p.mac_to_bytes(mac)
        self.gateway_ip_bytes = p.ip_to_bytes(gateway_ip)
        self.gateway_mac_bytes = p.mac_to_bytes(gateway_mac)
        self.eth_in = self.mac_bytes + self.gateway_mac_bytes
        self.eni = eni
        self.tx: Tx = _discard


class Pipeline:
    """Frames in, frames out, counters; the state of all ENIs and environments."""

    def __init__(self, timeouts: Timeouts | None = None, max_sessions: int = 1_000_000) -> None:
        self.timeouts = timeouts or Timeouts()
        self.max_sessions = max_sessions
        self.enis: dict[str, EniPort] = {}
        self.envs: dict[str, EnvPort] = {}
        self.counters: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.counters.update(sessions_created=0, sessions_expired=0, forwarded=0)

    # -- bookkeeping -------------------------------------------------------
    def drop(self, reason: str, eni: EniPort | None = None) -> None:
        self.counters[reason] += 1
        if eni is not None:
            eni.counters[reason] = eni.counters.get(reason, 0) + 1

    def session_count(self) -> int:
        return sum(len(e.table) for e in self.enis.values())

    # -- entry -------------------------------------------------------------
    def receive(self, port: EnvPort | EniPort, buf: bytearray, length: int, now: float) -> None:
        if length < p.IP:
            self.drop("truncated")
            return
        ethertype = (buf[22] << 8) | buf[23]
        if isinstance(port, EnvPort):
            if ethertype == p.ETH_P_IP:
                self.from_env(port, buf, length, now)
            elif ethertype == p.ETH_P_ARP:
                self.arp_from_env(port, buf, length)
            else:
                self.drop("non-ipv4")
        elif ethertype == p.ETH_P_IP:
            self.from_eni(port, buf, length, now)
        elif ethertype == p.ETH_P_ARP:
            self.arp_from_eni(port, buf, length, now)
        else:
            self.drop("non-ipv4", port)

    # -- IPv4 header checks shared by both directions -------------------------
    def _l4_offset(self, buf: bytearray, length: int, eni: EniPort | None) -> int:
        """Offset of the L4 header, or 0 after counting a drop."""
        if length < p.IP + 20:
            self.drop("truncated", eni)
            return 0
        vihl = buf[24]
        ihl = (vihl & 0x0F) << 2
        total = (buf[26] << 8) | buf[27]
        if vihl >> 4 != 4 or ihl < 20 or total < ihl or p.IP + total > length:
            self.drop("bad-ip-header", eni)
            return 0
        if (buf[30] & 0x3F) or buf[31]:
            self.drop("fragment", eni)
            return 0
        l4 = p.IP + ihl
        proto = buf[33]
        need = 20 if proto == p.PROTO_TCP else 8
        if l4 + need > p.IP + total:
            self.drop("truncated", eni)
            return 0
        return l4

    # -- environment -> VPC -------------------------------------------------------
    def from_env(self, env: EnvPort, buf: bytearray, length: int, now: float) -> None:
        eni = env.eni
        l4 = self._l4_offset(buf, length, eni)
        if not l4:
            return
        if buf[36:40] != env.ip_bytes:
            self.drop("spoofed", eni)
            return
        proto = buf[33]
        if proto == p.PROTO_ICMP:
            if buf[l4] != p.ICMP_ECHO:
                self.drop("icmp-unsupported", eni)
                return
            key = (proto, IPS(buf, 36)[0], WORD16(buf, l4 + 4)[0] << 16)
        elif proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            key = (proto, IPS(buf, 36)[0], WORD32(buf, l4)[0])
        else:
            self.drop("unknown-protocol", eni)
            return
        if eni is None:
            self.drop("no-vpc")
            return
        if buf[40:44] == eni.ip_bytes:
            self.drop("to-hyperplane", eni)
            return
        if buf[32] <= 1:
            self.drop("ttl-expired", eni)
            return
        s = eni.table.sessions.get(key)
        if s is None or s.expires < now:
            s = self.new_session(env, eni, buf, l4, proto, now, s)
            if s is None:
                return
        elif proto != p.PROTO_TCP or s.replied:
            s.expires = now + s.timeout
        # rewrite: source address and port, TTL, checksums
        buf[36:40] = eni.ip_bytes
        if proto == p.PROTO_ICMP:
            buf[l4 + 4:l4 + 6] = s.out_l4
        else:
            buf[l4:l4 + 2] = s.out_l4
        self._rewrite_checksums(buf, l4, proto, s.ip_out, s.full_out, s.part_out)
        s.pkts_out += 1
        s.bytes_out += length - p.ETH
        mac = eni.arp.get(s.nexthop)
        if mac is None:
            self.queue_for_arp(eni, s.nexthop, buf, length, now)
            return
        buf[10:22] = mac + eni.mac_bytes
        self.counters["forwarded"] += 1
        eni.counters["tx_packets"] += 1
        eni.counters["tx_bytes"] += length - p.VNET_LEN
        eni.tx(memoryview(buf)[:length])

    @staticmethod
    def _rewrite_checksums(buf: bytearray, l4: int, proto: int, d_ip: int, d_full: int,
                           d_part: int) -> None:
        buf[32] -= 1
        c = (buf[34] << 8) | buf[35]
        c = p.update_full(c, d_ip)
        buf[34] = c >> 8
        buf[35] = c & 0xFF
        at = l4 + p.L4_CSUM[proto]
        c = (buf[at] << 8) | buf[at + 1]
        if buf[0] & p.VNET_F_NEEDS_CSUM:
            c = p.update_partial(c, d_part)
        elif proto == p.PROTO_UDP and c == 0:
            return
        else:
            c = p.update_full(c, d_full)
            if c == 0 and proto == p.PROTO_UDP:
                c = 0xFFFF
        buf[at] = c >> 8
        buf[at + 1] = c & 0xFF

    def new_session(self, env: EnvPort, eni: EniPort, buf: bytearray, l4: int, proto: int,
                    now: float, stale: Session | None) -> Session | None:
        """Slow path: policy, port allocation and the new session, or None (counted)."""
        if stale is not None:
            self._free(eni, stale)
        for old in eni.table.reap(now):
            self._release(eni, old)
        if len(eni.table) >= eni.connection_limit:
            self.drop("eni-connection-limit", eni)
            return None
        if self.session_count() >= self.max_sessions:
            self.drop("table-full", eni)
            return None
        if proto == p.PROTO_ICMP:
            env_port, remote_port = WORD16(buf, l4 + 4)[0], 0
        else:
            env_port, remote_port = WORD16(buf, l4)[0], WORD16(buf, l4 + 2)[0]
        eni_port = eni.ports[proto].acquire(env.ip_bytes, env_port)
        if eni_port is None:
            self.drop("out-of-ports", eni)
            return None
        remote = bytes(buf[40:44])
        timeout = {p.PROTO_TCP: self.timeouts.tcp_syn, p.PROTO_UDP: self.timeouts.udp,
                   p.PROTO_ICMP: self.timeouts.icmp}[proto]
        s = make_session(proto, env, env.ip_bytes, env_port, remote, remote_port,
                         eni.ip_bytes, eni_port, eni.nexthop(remote), timeout, now)
        eni.table.add(s)
        self.counters["sessions_created"] += 1
        return s

    def _free(self, eni: EniPort, s: Session) -> None:
        eni.table.remove(s)
        self._release(eni, s)

    def _release(self, eni: EniPort, s: Session) -> None:
        eni.ports[s.proto].release(s.env_ip, s.env_port)
        self.counters["sessions_expired"] += 1

    # -- VPC -> environment -------------------------------------------------------
    def from_eni(self, eni: EniPort, buf: bytearray, length: int, now: float) -> None:
        eni.counters["rx_packets"] += 1
        eni.counters["rx_bytes"] += length - p.VNET_LEN
        l4 = self._l4_offset(buf, length, eni)
        if not l4:
            return
        if buf[40:44] != eni.ip_bytes:
            self.drop("not-for-eni", eni)
            return
        proto = buf[33]
        if proto == p.PROTO_ICMP:
            icmp_type = buf[l4]
            if icmp_type != p.ICMP_ECHO_REPLY:
                self.drop("inbound-to-eni" if icmp_type == p.ICMP_ECHO else "icmp-unsupported",
                          eni)
                return
            key = (proto | INBOUND, IPS(buf, 36)[0], WORD16(buf, l4 + 4)[0] << 16)
        elif proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            key = (proto | INBOUND, IPS(buf, 36)[0], WORD32(buf, l4)[0])
        else:
            self.drop("unknown-protocol", eni)
            return
        s = eni.table.sessions.get(key)
        if s is None or s.expires < now:
            self.drop("inbound-to-eni" if self._opens_flow(buf, l4, proto) else "no-session", eni)
            return
        if buf[32] <= 1:
            self.drop("ttl-expired", eni)
            return
        self._refresh_on_reply(s, now)
        buf[40:44] = s.env_ip
        if proto == p.PROTO_ICMP:
            buf[l4 + 4:l4 + 6] = s.in_l4
        else:
            buf[l4 + 2:l4 + 4] = s.in_l4
        self._rewrite_checksums(buf, l4, proto, s.ip_in, s.full_in, s.part_in)
        s.pkts_in += 1
        s.bytes_in += length - p.ETH
        buf[10:22] = s.env.eth_in
        self.counters["forwarded"] += 1
        s.env.tx(memoryview(buf)[:length])

    @staticmethod
    def _opens_flow(buf: bytearray, l4: int, proto: int) -> bool:
        """An unsolicited attempt to open a flow toward the ENI (a SYN, any UDP)."""
        if proto == p.PROTO_TCP:
            return buf[l4 + 13] & 0x12 == 0x02  # SYN without ACK
        return proto == p.PROTO_UDP

    def _refresh_on_reply(self, s: Session, now: float) -> None:
        if not s.replied:
            s.replied = True
            if s.proto == p.PROTO_TCP:
                s.timeout = self.timeouts.tcp_established
            elif s.proto == p.PROTO_UDP:
                s.timeout = self.timeouts.udp_replied
        s.expires = now + s.timeout

    # -- ARP ----------------------------------------------------------------------
    def arp_from_env(self, env: EnvPort, buf: bytearray, length: int) -> None:
        arp = p.parse_arp(buf, length)
        if arp is None or arp[0] != 1 or arp[3] != env.gateway_ip_bytes:
            self.drop("arp-ignored")
            return
        _op, smac, sip, _tip = arp
        env.tx(p.arp_frame(2, env.gateway_mac_bytes, env.gateway_ip_bytes, smac, sip))

    def arp_from_eni(self, eni: EniPort, buf: bytearray, length: int, now: float) -> None:
        arp = p.parse_arp(buf, length)
        if arp is None:
            self.drop("arp-ignored", eni)
            return
        op, smac, sip, tip = arp
        if tip == eni.ip_bytes:
            self.learn(eni, sip, smac)
            if op == 1:
                eni.tx(p.arp_frame(2, eni.mac_bytes, eni.ip_bytes, smac, sip))
        elif sip in eni.arp or sip in eni.pending:
            self.learn(eni, sip, smac)
        else:
            self.drop("arp-ignored", eni)

    def learn(self, eni: EniPort, ip: bytes, mac: bytes) -> None:
        eni.arp[ip] = mac
        waiting = eni.pending.pop(ip, None)
        if waiting is None:
            return
        eth = mac + eni.mac_bytes
        for frame in waiting[2]:
            frame[10:22] = eth
            self.counters["forwarded"] += 1
            eni.counters["tx_packets"] += 1
            eni.counters["tx_bytes"] += len(frame) - p.VNET_LEN
            eni.tx(frame)

    def resolve(self, eni: EniPort, ip: bytes, now: float) -> None:
        """Ask for ``ip``'s MAC on the ENI's link unless it is known or being asked."""
        if ip not in eni.arp and ip not in eni.pending:
            eni.pending[ip] = [now, now, []]
            eni.tx(eni.arp_request(ip))

    def queue_for_arp(self, eni: EniPort, ip: bytes, buf: bytearray, length: int,
                      now: float) -> None:
        entry = eni.pending.get(ip)
        if entry is None:
            entry = eni.pending[ip] = [now, now, []]
            eni.tx(eni.arp_request(ip))
        if len(entry[2]) >= ARP_QUEUE:
            self.drop("arp-queue-full", eni)
            return
        entry[2].append(bytearray(buf[:length]))

    def tick(self, now: float) -> None:
        """Timers: ARP retries and give-ups (called a few times a second at most)."""
        for eni in self.enis.values():
            for ip, entry in list(eni.pending.items()):
                if now - entry[0] > ARP_GIVE_UP:
                    del eni.pending[ip]
                    for _ in entry[2]:
                        self.drop("arp-timeout", eni)
                elif now - entry[1] >= ARP_RETRY:
                    entry[1] = now
                    eni.tx(eni.arp_request(ip))

    def has_timers(self) -> bool:
        return any(e.pending for e in self.enis.values())
