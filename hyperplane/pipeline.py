"""The Hyperplane packet pipeline: fast path and slow path (pure).

Two kinds of ports face the pipeline (``links``, re-exported here): ``EnvPort``
(the link of one execution environment; Hyperplane answers ARP there for the
environments' gateway) and ``EniPort`` (the ENI's link into its subnet;
Hyperplane owns the ENI address, answers ARP for it and resolves next hops).
``Pipeline.receive(port, buf, length, now)`` handles one frame that arrived on
a port, in place in ``buf``.

Fast path: find the session under the frame's key, apply its precomputed
rewrite (address, port, TTL, incremental checksums, MACs) and hand the frame
to the other port's ``tx``.  For TCP the fast path also covers a plain ACK
segment of an ESTABLISHED session (it records the ACK and window); any
segment with SYN, FIN or RST, or of a session in another state, goes through
``tcpstate.track``.  Slow path, only on a miss from an environment: the
policy (``secgroups.admit``: the ENI's egress rules, nothing toward 169.254/16),
the limits, the ENI port and the new session.  An environment may have spill
ENIs (``EnvPort.spill``, same key as its primary): only on a miss in the
primary's table are theirs looked at, and a new flow goes to the first ENI,
primary then spill, below its connection limit; the ENI holding a session
carries its packets, fragments and ICMP errors.

Around that, Hyperplane behaves as a router hop (the division of labour):

* ``icmp``: the errors it sends to an environment (time exceeded on TTL
  expiry, fragmentation needed past the ENI link's MTU with DF, and
  unreachable code 13 when a new flow is refused for want of ports or ENI
  capacity), and the translation of ICMP errors about a tracked flow, both
  ways, without touching the session's state or lifetime;
* ``fragments``: non-first IPv4 fragments follow the session their first
  fragment found (held, bounded, until it comes), and a packet too big for
  the ENI link without DF is fragmented;
* ``conntrack`` and ``nat``: sessions, expiry and ports;
* ``arp``: ARP on every link, next-hop resolution and the timers.

Every drop is counted under a named reason in ``Pipeline.counters`` (and per
ENI in ``EniPort.counters``); nothing raises out of ``receive``.  The pipeline
does no I/O of its own: ports carry a ``tx`` callable given by the I/O layer
(``dataplane``), so tests drive it with plain lists.
"""

from __future__ import annotations

import struct

from hyperplane import fragments, icmp, secgroups, tcpstate
from hyperplane import packet as p
from hyperplane.arp import ARP_GIVE_UP, ARP_QUEUE, ARP_RETRY, Neighbour
from hyperplane.conntrack import INBOUND, Session, Timeouts, make_session
from hyperplane.links import EniPort, EnvPort, Tx
from hyperplane.tcpstate import ACK, ESTABLISHED, FAST_MASK, RST

__all__ = ["ARP_GIVE_UP", "ARP_QUEUE", "ARP_RETRY", "DROP_REASONS", "EniPort", "EnvPort",
           "Pipeline", "Tx"]

IPS = struct.Struct("!8s").unpack_from
WORD32 = struct.Struct("!I").unpack_from
WORD16 = struct.Struct("!H").unpack_from
ACK_WIN = tcpstate.ACK_WIN.unpack_from

DROP_REASONS = (
    "truncated", "bad-ip-header", "non-ipv4", "vlan", "fragment", "fragment-dropped",
    "fragment-timeout", "unknown-protocol", "icmp-unsupported", "icmp-bad-checksum",
    "icmp-error-no-session", "spoofed", "no-vpc", "to-hyperplane", "ttl-expired",
    "mtu-exceeded", "no-session", "not-for-eni", "inbound-to-eni", "tcp-rst-out-of-window",
    "out-of-ports", "eni-connection-limit", "table-full", "arp-timeout", "arp-queue-full",
    "tx-full", "tx-error", "arp-ignored", "sg-egress-deny", "env-to-env",
)

OUT, IN = 0, 1  # fragment-table directions


class Pipeline(Neighbour):
    """Frames in, frames out, counters; the state of all ENIs and environments."""

    def __init__(self, timeouts: Timeouts | None = None, max_sessions: int = 1_000_000) -> None:
        self.timeouts = timeouts or Timeouts()
        self.max_sessions = max_sessions
        self.enis: dict[str, EniPort] = {}
        self.envs: dict[str, EnvPort] = {}
        self.counters: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.counters.update(sessions_created=0, sessions_expired=0, forwarded=0,
                             icmp_errors_sent=0, fragmented=0)

    # -- bookkeeping -------------------------------------------------------
    def drop(self, reason: str, eni: EniPort | None = None, count: int = 1) -> None:
        self.counters[reason] += count
        if eni is not None:
            eni.counters[reason] = eni.counters.get(reason, 0) + count

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
                self.drop("vlan" if ethertype in (p.ETH_P_8021Q, p.ETH_P_8021AD)
                          else "non-ipv4")
        elif ethertype == p.ETH_P_IP:
            self.from_eni(port, buf, length, now)
        elif ethertype == p.ETH_P_ARP:
            self.arp_from_eni(port, buf, length, now)
        else:
            self.drop("vlan" if ethertype in (p.ETH_P_8021Q, p.ETH_P_8021AD) else "non-ipv4",
                      port)

    def _ip_end(self, buf: bytearray, length: int, eni: EniPort | None) -> int:
        """Where the IPv4 packet ends in ``buf``, or 0 after counting a bad header."""
        if length < p.IP + 20:
            self.drop("truncated", eni)
            return 0
        vihl = buf[24]
        ihl = (vihl & 0x0F) << 2
        end = p.IP + ((buf[26] << 8) | buf[27])
        if vihl >> 4 != 4 or ihl < 20 or end < p.IP + ihl or end > length:
            self.drop("bad-ip-header", eni)
            return 0
        return end

    # -- environment -> VPC -------------------------------------------------------
    def from_env(self, env: EnvPort, buf: bytearray, length: int, now: float) -> None:
        eni = env.eni
        end = self._ip_end(buf, length, eni)
        if not end:
            return
        if (buf[30] & 0x1F) or buf[31]:
            self.fragment_from_env(env, eni, buf, length, end, now)
            return
        l4 = p.IP + ((buf[24] & 0x0F) << 2)
        proto = buf[33]
        if l4 + (20 if proto == p.PROTO_TCP else 8) > end:
            self.drop("truncated", eni)
            return
        if buf[36:40] != env.ip_bytes:
            self.drop("spoofed", eni)
            return
        if proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            key = (proto, IPS(buf, 36)[0], WORD32(buf, l4)[0])
        elif proto == p.PROTO_ICMP:
            kind = buf[l4]
            if kind == p.ICMP_ECHO:
                key = (proto, IPS(buf, 36)[0], WORD16(buf, l4 + 4)[0] << 16)
            elif kind in p.ICMP_ERRORS:
                key = None
            else:
                self.drop("icmp-unsupported", eni)
                return
        else:
            self.drop("unknown-protocol", eni)
            return
        if eni is None:
            self.drop("no-vpc")
            return
        if buf[40:44] == eni.ip_bytes:
            self.drop("to-hyperplane", eni)
            return
        if key is None:
            self.icmp_error_from_env(env, buf, length, l4, end, now)
            return
        if buf[32] <= 1:
            self.drop("ttl-expired", eni)
            self.answer(env, buf, length, p.ICMP_TIME_EXCEEDED, 0)
            return
        split = False
        if end - p.IP > eni.mtu and not buf[p.VNET_GSO_TYPE]:
            if buf[30] & p.IP_DF:
                self.drop("mtu-exceeded", eni)
                self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_FRAG_NEEDED, eni.mtu)
                return
            split = True
        s = eni.table.sessions.get(key)
        if s is None or s.expires < now:
            found = env.spill_session(key, now) if env.spill else None
            if found is None:
                found = self.new_session(env, eni, buf, length, l4, end, proto, now, s)
                if found is None:
                    return
                eni, s = found
            else:
                eni, s = found
                if not self._track_out(eni, s, buf, l4, end, proto, now):
                    return
            if eni.mtu < env.eni.mtu and end - p.IP > eni.mtu and not buf[p.VNET_GSO_TYPE]:
                if buf[30] & p.IP_DF:  # a spill ENI's smaller link (not with one fabric)
                    self.drop("mtu-exceeded", eni)
                    self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_FRAG_NEEDED, eni.mtu)
                    return
                split = True
        elif proto == p.PROTO_TCP:
            flags = buf[l4 + 13]
            if flags & FAST_MASK == ACK and s.state == ESTABLISHED:
                s.ack_out, s.win_out = ACK_WIN(buf, l4 + 8)
                s.expires = now + s.timeout
            elif not tcpstate.track(s, buf, l4, end, flags, False, now, self.timeouts):
                self.drop("tcp-rst-out-of-window", eni)
                return
        else:
            s.expires = now + s.timeout
        fkey = fragments.key_of(OUT, buf) if buf[30] & p.IP_MF else None
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
        if mac is None or split or fkey is not None:
            self.to_vpc(eni, s.nexthop, buf, length, now, split)
            if fkey is not None:  # tracked in the primary's table (see _send_fragment)
                self._first_fragment(env.eni, fkey, s, buf, now, False)
            return
        buf[10:22] = mac + eni.mac_bytes
        self.counters["forwarded"] += 1
        eni.counters["tx_packets"] += 1
        eni.counters["tx_bytes"] += length - p.VNET_LEN
        eni.tx(memoryview(buf)[:length])

    @staticmethod
    def _rewrite_checksums(buf: bytearray, l4: int, proto: int, d_ip: int, d_full: int,
                           d_part: int) -> None:
        """TTL down by one; the IPv4 and L4 checksums updated (RFC 1624, inlined)."""
        buf[32] -= 1
        c = (((buf[34] << 8) | buf[35]) ^ 0xFFFF) + d_ip
        c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
        buf[34] = c >> 8
        buf[35] = c & 0xFF
        at = l4 + p.L4_CSUM[proto]
        c = (buf[at] << 8) | buf[at + 1]
        if buf[0] & p.VNET_F_NEEDS_CSUM:
            c += d_part
            c = (c & 0xFFFF) + (c >> 16)
        elif proto == p.PROTO_UDP and c == 0:
            return
        else:
            c = (c ^ 0xFFFF) + d_full
            c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
            if c == 0 and proto == p.PROTO_UDP:
                c = 0xFFFF
        buf[at] = c >> 8
        buf[at + 1] = c & 0xFF

    @staticmethod
    def _rewrite_ip(buf: bytearray, at: int, addr: bytes, d_ip: int) -> None:
        """Address at ``at`` replaced, TTL down by one, IPv4 checksum updated (fragments)."""
        buf[at:at + 4] = addr
        buf[32] -= 1
        c = (((buf[34] << 8) | buf[35]) ^ 0xFFFF) + d_ip
        c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
        buf[34] = c >> 8
        buf[35] = c & 0xFF

    def answer(self, env: EnvPort, buf: bytearray, length: int, icmp_type: int, code: int,
               mtu: int = 0) -> None:
        """Send the environment an ICMP error about the frame in ``buf``, when allowed."""
        if icmp.may_answer(buf):
            self.counters["icmp_errors_sent"] += 1
            env.tx(icmp.error_frame(buf, length, env.eth_in, env.gateway_ip_bytes, env.ip_bytes,
                                    icmp_type, code, mtu))

    def to_vpc(self, eni: EniPort, nexthop: bytes, buf: bytearray, length: int, now: float,
               split: bool = False) -> None:
        """Send a translated frame to ``nexthop`` (fragmented if ``split``), via ARP if needed."""
        if split:
            p.complete_checksum(buf, length)
            pieces = fragments.split(buf, length, eni.mtu)
            if not pieces:
                self.drop("mtu-exceeded", eni)
                return
            self.counters["fragmented"] += 1
            for piece in pieces:
                self.to_vpc(eni, nexthop, piece, len(piece), now)
            return
        mac = eni.arp.get(nexthop)
        if mac is None:
            self.queue_for_arp(eni, nexthop, buf, length, now)
            return
        buf[10:22] = mac + eni.mac_bytes
        self.counters["forwarded"] += 1
        eni.counters["tx_packets"] += 1
        eni.counters["tx_bytes"] += length - p.VNET_LEN
        eni.tx(memoryview(buf)[:length])

    def to_env(self, s: Session, buf: bytearray, length: int) -> None:
        buf[10:22] = s.env.eth_in
        self.counters["forwarded"] += 1
        s.env.tx(memoryview(buf)[:length])

    def new_session(self, env: EnvPort, eni: EniPort, buf: bytearray, length: int, l4: int,
                    end: int, proto: int, now: float,
                    stale: Session | None) -> tuple[EniPort, Session] | None:
        """Slow path: policy, ENI and port choice, the new session and its ENI; None: counted.

        The primary ``eni`` carries the flow unless it is at its connection
        limit; then the first of the environment's spill ENIs below its own.
        """
        if stale is not None:
            self._free(eni, stale)
        if env.spill and any(buf[40:44] == e.ip_bytes for e in env.spill):
            self.drop("to-hyperplane", eni)
            return None
        if proto == p.PROTO_TCP and buf[l4 + 13] & RST:
            self.drop("no-session", eni)  # a RST opens nothing
            return None
        if proto == p.PROTO_ICMP:
            env_port, remote_port = WORD16(buf, l4 + 4)[0], 0
        else:
            env_port, remote_port = WORD16(buf, l4)[0], WORD16(buf, l4 + 2)[0]
        refused = secgroups.admit(eni.egress, buf, proto, remote_port)
        if refused:
            self.drop(refused, eni)  # silently, as AWS: the environment's connect times out
            return None
        for old in eni.table.reap(now):
            self._release(eni, old)
        if len(eni.table) >= eni.connection_limit:
            spill = self._spill_carrier(env, now) if env.spill else None
            if spill is None:
                self.drop("eni-connection-limit", eni)
                self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_ADMIN_PROHIBITED)
                return None
            eni = spill
            refused = secgroups.admit(eni.egress, buf, proto, remote_port)  # same key's rules
            if refused:
                self.drop(refused, eni)
                return None
        if self.session_count() >= self.max_sessions:
            self.drop("table-full", eni)
            return None
        eni_port = eni.ports[proto].acquire(env.ip_bytes, env_port)
        if eni_port is None:
            self.drop("out-of-ports", eni)
            self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_ADMIN_PROHIBITED)
            return None
        remote = bytes(buf[40:44])
        t = self.timeouts
        timeout = {p.PROTO_TCP: t.tcp_syn, p.PROTO_UDP: t.udp, p.PROTO_ICMP: t.icmp}[proto]
        s = make_session(proto, env, env.ip_bytes, env_port, remote, remote_port,
                         eni.ip_bytes, eni_port, eni.nexthop(remote), timeout, now)
        if proto == p.PROTO_TCP:
            tcpstate.start(s, buf, l4, end, buf[l4 + 13], now, t)
        old = eni.table.sessions.get(s.out_key)  # an expired one in a spill ENI's table
        if old is not None:
            self._free(eni, old)
        eni.table.add(s)
        self.counters["sessions_created"] += 1
        return eni, s

    def _spill_carrier(self, env: EnvPort, now: float) -> EniPort | None:
        """The first spill ENI below its connection limit (after reaping), or None."""
        for eni in env.spill:
            for old in eni.table.reap(now):
                self._release(eni, old)
            if len(eni.table) < eni.connection_limit:
                return eni
        return None

    def _track_out(self, eni: EniPort, s: Session, buf: bytearray, l4: int, end: int,
                   proto: int, now: float) -> bool:
        """An outbound packet of a session found in a spill ENI's table (as the fast path)."""
        if proto != p.PROTO_TCP:
            s.expires = now + s.timeout
        elif not tcpstate.track(s, buf, l4, end, buf[l4 + 13], False, now, self.timeouts):
            self.drop("tcp-rst-out-of-window", eni)
            return False
        return True

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
        end = self._ip_end(buf, length, eni)
        if not end:
            return
        if (buf[30] & 0x1F) or buf[31]:
            self.fragment_from_eni(eni, buf, length, end, now)
            return
        l4 = p.IP + ((buf[24] & 0x0F) << 2)
        proto = buf[33]
        if l4 + (20 if proto == p.PROTO_TCP else 8) > end:
            self.drop("truncated", eni)
            return
        if buf[40:44] != eni.ip_bytes:
            self.drop("not-for-eni", eni)
            return
        if proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            key = (proto | INBOUND, IPS(buf, 36)[0], WORD32(buf, l4)[0])
        elif proto == p.PROTO_ICMP:
            kind = buf[l4]
            if kind in p.ICMP_ERRORS:
                self.icmp_error_from_eni(eni, buf, length, l4, end, now)
                return
            if kind != p.ICMP_ECHO_REPLY:
                self.drop("inbound-to-eni" if kind == p.ICMP_ECHO else "icmp-unsupported", eni)
                return
            key = (proto | INBOUND, IPS(buf, 36)[0], WORD16(buf, l4 + 4)[0] << 16)
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
        if proto == p.PROTO_TCP:
            flags = buf[l4 + 13]
            if flags & FAST_MASK == ACK and s.state == ESTABLISHED and s.replied:
                s.ack_in, s.win_in = ACK_WIN(buf, l4 + 8)
                s.expires = now + s.timeout
            elif not tcpstate.track(s, buf, l4, end, flags, True, now, self.timeouts):
                self.drop("tcp-rst-out-of-window", eni)
                return
        else:
            self._refresh_on_reply(s, now)
        fkey = fragments.key_of(IN, buf) if buf[30] & p.IP_MF else None
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
        if fkey is not None:
            self._first_fragment(eni, fkey, s, buf, now, True)

    @staticmethod
    def _opens_flow(buf: bytearray, l4: int, proto: int) -> bool:
        """An unsolicited attempt to open a flow toward the ENI (a SYN, any UDP)."""
        if proto == p.PROTO_TCP:
            return buf[l4 + 13] & 0x12 == 0x02  # SYN without ACK
        return proto == p.PROTO_UDP

    def _refresh_on_reply(self, s: Session, now: float) -> None:
        if not s.replied:
            s.replied = True
            if s.proto == p.PROTO_UDP:
                s.timeout = self.timeouts.udp_replied
        s.expires = now + s.timeout

    # -- ICMP errors about tracked flows ----------------------------------------------
    def icmp_error_from_eni(self, eni: EniPort, buf: bytearray, length: int, l4: int, end: int,
                            now: float) -> None:
        found = self._error_session(eni, buf, l4, end, True, now)
        if found is None:
            return
        _eni, s, q, ql4 = found
        if buf[32] <= 1:
            self.drop("ttl-expired", eni)
            return
        icmp.restore(buf, l4, end, q, ql4, s, True, not buf[0] & p.VNET_F_NEEDS_CSUM)
        self._rewrite_ip(buf, 40, s.env_ip, s.ip_in)
        self.to_env(s, buf, length)

    def icmp_error_from_env(self, env: EnvPort, buf: bytearray, length: int, l4: int,
                            end: int, now: float) -> None:
        """An error about a flow, out through the ENI holding its session."""
        found = self._error_session(env.eni, buf, l4, end, False, now, env)
        if found is None:
            return
        eni, s, q, ql4 = found
        if buf[32] <= 1:
            self.drop("ttl-expired", eni)
            return
        icmp.restore(buf, l4, end, q, ql4, s, False, not buf[0] & p.VNET_F_NEEDS_CSUM)
        self._rewrite_ip(buf, 36, eni.ip_bytes, s.ip_out)
        self.to_vpc(eni, eni.nexthop(bytes(buf[40:44])), buf, length, now)

    def _error_session(self, eni: EniPort, buf: bytearray, l4: int, end: int, inbound: bool,
                       now: float, env: EnvPort | None = None,
                       ) -> tuple[EniPort, Session, int, int] | None:
        """The live session an ICMP error quotes, its ENI and the quote's offsets, or None.

        From an environment (``env``) the session may be held by a spill ENI.
        """
        if buf[30] & p.IP_MF:
            self.drop("fragment", eni)  # a fragmented error cannot be checked
            return None
        if not buf[0] & p.VNET_F_NEEDS_CSUM and not icmp.checksum_ok(buf, l4, end):
            self.drop("icmp-bad-checksum", eni)
            return None
        found = icmp.locate(buf, l4, end, inbound)
        s = eni.table.sessions.get(found[0]) if found is not None else None
        if (s is None or s.expires < now) and found and env is not None and env.spill:
            spilled = env.spill_session(found[0], now)
            if spilled is not None:
                return spilled[0], spilled[1], found[1], found[2]
        if s is None or s.expires < now:
            self.drop("icmp-error-no-session", eni)
            return None
        return eni, s, found[1], found[2]

    # -- fragments ----------------------------------------------------------------------
    def fragment_from_env(self, env: EnvPort, eni: EniPort | None, buf: bytearray,
                          length: int, end: int, now: float) -> None:
        """A non-first fragment from an environment."""
        if buf[36:40] != env.ip_bytes:
            self.drop("spoofed", eni)
        elif buf[33] not in p.L4_CSUM:
            self.drop("unknown-protocol", eni)
        elif eni is None:
            self.drop("no-vpc")
        elif buf[40:44] == eni.ip_bytes or any(buf[40:44] == e.ip_bytes for e in env.spill):
            self.drop("to-hyperplane", eni)
        elif buf[32] <= 1:
            self.drop("ttl-expired", eni)  # no ICMP error about a non-first fragment
        else:
            self._fragment(eni, buf, length, end, OUT, now)

    def fragment_from_eni(self, eni: EniPort, buf: bytearray, length: int, end: int,
                          now: float) -> None:
        """A non-first fragment from the VPC."""
        if buf[40:44] != eni.ip_bytes:
            self.drop("not-for-eni", eni)
        elif buf[33] not in p.L4_CSUM:
            self.drop("unknown-protocol", eni)
        elif buf[32] <= 1:
            self.drop("ttl-expired", eni)
        else:
            self._fragment(eni, buf, length, end, IN, now)

    def _fragment(self, eni: EniPort, buf: bytearray, length: int, end: int, direction: int,
                  now: float) -> None:
        offset, payload, more = fragments.span(buf)
        if offset + payload > 0xFFFF - 20:
            self.drop("fragment", eni)
            return
        key = fragments.key_of(direction, buf)
        entry = eni.frags.get(key, now)
        if entry is None or entry.session is None:
            held, timed_out = eni.frags.hold(key, bytearray(buf[:length]), offset, payload,
                                             more, now)
            if timed_out:
                self.drop("fragment-timeout", eni, timed_out)
            if not held:
                self.drop("fragment-dropped", eni)
            return
        s = entry.session
        if s.dead or s.expires < now:
            self.drop("fragment-dropped", eni)
            return
        eni.frags.account(entry, offset, payload, more)
        self._send_fragment(eni, s, buf, length, end, direction, now)

    def _send_fragment(self, eni: EniPort, s: Session, buf: bytearray, length: int, end: int,
                       direction: int, now: float) -> None:
        if direction == IN:
            self._rewrite_ip(buf, 40, s.env_ip, s.ip_in)
            s.pkts_in += 1
            s.bytes_in += length - p.ETH
            self.to_env(s, buf, length)
            return
        if s.in_key[1][4:] != eni.ip_bytes:  # tracked in the primary's table, held by a spill
            eni = s.env.holder(s)
            if eni is None:
                self.drop("fragment-dropped", s.env.eni)
                return
        split = False
        if end - p.IP > eni.mtu and not buf[p.VNET_GSO_TYPE]:
            if buf[30] & p.IP_DF:
                self.drop("mtu-exceeded", eni)
                return
            split = True
        self._rewrite_ip(buf, 36, eni.ip_bytes, s.ip_out)
        s.pkts_out += 1
        s.bytes_out += length - p.ETH
        self.to_vpc(eni, s.nexthop, buf, length, now, split)

    def _first_fragment(self, eni: EniPort, key: fragments.FragKey, s: Session,
                        buf: bytearray, now: float, inbound: bool) -> None:
        """Remember the session of a first fragment just sent; send what was held for it."""
        payload = ((buf[26] << 8) | buf[27]) - ((buf[24] & 0x0F) << 2)
        held, timed_out = eni.frags.first(key, s, payload, True, now)
        if timed_out:
            self.drop("fragment-timeout", eni, timed_out)
        for frame in held:
            end = p.IP + ((frame[26] << 8) | frame[27])
            self._send_fragment(eni, s, frame, len(frame), end, IN if inbound else OUT, now)
