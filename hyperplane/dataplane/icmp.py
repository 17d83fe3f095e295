"""ICMP errors: the ones Hyperplane sends, and translating the ones it forwards (pure).

Hyperplane is a router hop between the environments and the VPC, so (RFC 792,
1812, 5508):

* it *sends* errors to an environment, from the environments' gateway address
  (169.254.0.1): time exceeded when a frame's TTL would run out, fragmentation
  needed (with the ENI link's MTU) for a too-big frame with DF set, and
  destination unreachable code 13 (communication administratively
  prohibited) when a new flow is refused for want of ports or of ENI
  capacity.  ``error_frame`` builds one: a fresh IPv4 header, the ICMP
  header, and the offending frame's IPv4 header plus 8 bytes, with valid
  checksums.  Errors are only sent about first fragments (or whole packets)
  whose destination is unicast, never about an ICMP error.

* it *translates* errors about a tracked flow, as for any other packet of
  the flow, and more: an error from the VPC (destination unreachable,
  fragmentation needed, time exceeded, parameter problem) quotes the packet
  as Hyperplane sent it, from the ENI address and port.  ``locate`` reads the
  quoted header and returns the session key it belongs to; ``restore`` puts
  back the environment's address and port (or ICMP identifier) in the
  quoted headers, fixes the quoted IPv4 checksum and the quoted L4 checksum
  where it was quoted, and fixes the outer ICMP checksum, all incrementally.
  The mirror case, an error an environment sends about a packet it received
  (port unreachable), has the ENI address and port put in instead.  The
  pipeline rewrites the outer header (address, TTL, IPv4 checksum) with the
  session's precomputed rewrite and never lets an error end or refresh a
  session.

``checksum_ok`` verifies an ICMP message (the pipeline drops errors with a
bad checksum before looking at what they quote).  ``ErrorPath`` is the
pipeline's part that does both (``pipeline.Pipeline`` inherits it).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.conntrack import INBOUND
from hyperplane.dataplane.hop import Hop
from hyperplane.dataplane.packet import IP_DST, IP_FRAG, IP_MF, IP_SRC, IP_TTL, VNET_FLAGS
from hyperplane.dataplane.rewrite import rewrite_ip

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Key, Session
    from hyperplane.dataplane.ports import EniPort, EnvPort

ICMP_HEADER = struct.Struct("!BBHHH")
QUOTED_L4 = 8  # bytes of the offending packet's L4 header that an error Hyperplane sends quotes
TOS_INTERNETCONTROL = 0xC0
TTL = 64


def error_frame(buf: bytearray, length: int, eth: bytes, src: bytes, dst: bytes,
                icmp_type: int, code: int, mtu: int = 0) -> bytes:
    """An ICMP error frame (empty virtio header) about the IPv4 packet in ``buf``.

    ``eth`` is the Ethernet destination and source MACs; the quote is the
    offending IPv4 header and the first 8 bytes after it, as received.
    """
    ihl = (buf[p.IP_VIHL] & 0x0F) << 2
    total = (buf[p.IP_TOTAL] << 8) | buf[p.IP_TOTAL + 1]
    quote = bytes(buf[p.IP:p.IP + max(0, min(ihl + QUOTED_L4, total, length - p.IP))])
    body = bytearray(ICMP_HEADER.pack(icmp_type, code, 0, 0, mtu)) + quote
    struct.pack_into("!H", body, 2, p.checksum(body))
    ip = p.ipv4_header(20 + len(body), 0, 0, TTL, p.PROTO_ICMP, src, dst, TOS_INTERNETCONTROL)
    return bytes(p.VNET_LEN) + eth + b"\x08\x00" + ip + bytes(body)


def may_answer(buf: bytearray) -> bool:
    """Whether an error may be sent about the packet in ``buf`` (RFC 1122 3.2.2).

    Not about a non-first fragment, a packet to a multicast or broadcast
    address, or an ICMP error.
    """
    if ((buf[IP_FRAG] & 0x1F) << 8) | buf[p.IP_FRAG_LOW]:
        return False
    if buf[p.IP_DST_AT] >= 224:
        return False
    if buf[p.IP_PROTO] == p.PROTO_ICMP:
        ihl = (buf[p.IP_VIHL] & 0x0F) << 2
        return buf[p.IP + ihl] in (p.ICMP_ECHO, p.ICMP_ECHO_REPLY)
    return True


def checksum_ok(buf: bytearray, l4: int, end: int) -> bool:
    return p.ones_sum(buf[l4:end]) == 0xFFFF


def locate(buf: bytearray, l4: int, end: int, inbound: bool) -> tuple[Key, int, int] | None:
    """The session key of the packet an ICMP error at ``l4`` quotes, and where it is.

    Returns ``(key, quoted IPv4 header offset, quoted L4 offset)``, or None if
    the quote is too short, not IPv4, a non-first fragment, or neither TCP, UDP
    nor an ICMP echo of the right direction.  ``inbound`` (an error from the
    VPC) quotes a packet Hyperplane sent (ENI -> remote); otherwise (an error
    from an environment) a packet it delivered (remote -> environment).
    """
    q = l4 + 8
    if q + 20 > end:
        return None
    vihl = buf[q]
    qihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or qihl < 20 or ((buf[q + p.IPH_FRAG] & 0x1F) << 8) | buf[q + p.IPH_FRAG + 1]:
        return None
    ql4 = q + qihl
    qproto = buf[q + p.IPH_PROTO]
    dst, src = q + p.IPH_DST, q + p.IPH_SRC
    addrs = bytes(buf[dst:dst + 4]) + bytes(buf[src:src + 4])  # quoted dst + src
    tag = INBOUND if inbound else 0
    if qproto == p.PROTO_TCP or qproto == p.PROTO_UDP:
        if ql4 + 4 > end:
            return None
        sport = (buf[ql4 + p.L4_SPORT] << 8) | buf[ql4 + p.L4_SPORT + 1]
        dport = (buf[ql4 + p.L4_DPORT] << 8) | buf[ql4 + p.L4_DPORT + 1]
        return (qproto | tag, addrs, (dport << 16) | sport), q, ql4
    if qproto == p.PROTO_ICMP:
        wanted = p.ICMP_ECHO if inbound else p.ICMP_ECHO_REPLY
        if ql4 + 8 > end or buf[ql4] != wanted:
            return None
        ident = (buf[ql4 + p.ICMP_ID] << 8) | buf[ql4 + p.ICMP_ID + 1]
        return (p.PROTO_ICMP | tag, addrs, ident << 16), q, ql4
    return None


def restore(buf: bytearray, l4: int, end: int, q: int, ql4: int, s: Session,
            inbound: bool, fix_outer: bool = True) -> None:
    """Rewrite the quoted packet for the other side of ``s`` and fix the checksums.

    Inbound (VPC -> environment): the quoted source becomes the environment's
    address and port.  Outbound: the quoted destination becomes the ENI's.
    The outer ICMP checksum is updated for every changed quoted byte (unless
    ``fix_outer`` is false: a NEEDS_CSUM frame, whose checksum the kernel
    computes later); the caller rewrites the outer IPv4 header.
    """
    qproto = buf[q + p.IPH_PROTO]
    icmp = qproto == p.PROTO_ICMP
    if inbound:
        addr_at, new_addr, new_port, l4_delta = q + p.IPH_SRC, s.env_ip, s.in_l4, s.full_in
        port_at = ql4 + (p.ICMP_ID if icmp else p.L4_SPORT)
    else:
        addr_at, new_addr, new_port, l4_delta = (q + p.IPH_DST, s.in_key[1][4:8], s.out_l4,
                                                 s.full_out)
        port_at = ql4 + (p.ICMP_ID if icmp else p.L4_DPORT)
    addr_delta = p.delta(bytes(buf[addr_at:addr_at + 4]), new_addr)
    buf[addr_at:addr_at + 4] = new_addr
    change = addr_delta
    change = p.add(change, _patch_csum(buf, q + p.IPH_CSUM, addr_delta, False, qproto))
    old_port = bytes(buf[port_at:port_at + 2])
    buf[port_at:port_at + 2] = new_port
    change = p.add(change, p.delta(old_port, new_port))
    csum_at = ql4 + p.L4_CSUM[qproto]
    if csum_at + 2 <= end:
        change = p.add(change, _patch_csum(buf, csum_at, l4_delta, True, qproto))
    if not fix_outer:
        return
    at = l4 + p.ICMP_CSUM
    outer = p.update_full((buf[at] << 8) | buf[at + 1], change)
    buf[at] = outer >> 8
    buf[at + 1] = outer & 0xFF


def _patch_csum(buf: bytearray, at: int, change: int, l4: bool, proto: int) -> int:
    """Apply ``change`` to the complemented checksum at ``at``; the delta of the field itself."""
    old = (buf[at] << 8) | buf[at + 1]
    if l4 and proto == p.PROTO_UDP and old == 0:
        return 0  # no UDP checksum: stays none
    new = p.update_full(old, change)
    if l4 and proto == p.PROTO_UDP and new == 0:
        new = 0xFFFF
    buf[at] = new >> 8
    buf[at + 1] = new & 0xFF
    return p.delta(old.to_bytes(2, "big"), new.to_bytes(2, "big"))


class ErrorPath(Hop):
    """ICMP errors in the pipeline: sent to environments, translated both ways."""

    def answer(self, env: EnvPort, buf: bytearray, length: int, icmp_type: int, code: int,
               mtu: int = 0) -> None:
        """Send the environment an ICMP error about the frame in ``buf``, when allowed."""
        if may_answer(buf):
            self.counters["icmp_errors_sent"] += 1
            env.tx(error_frame(buf, length, env.eth_in, env.gateway_ip_bytes, env.ip_bytes,
                               icmp_type, code, mtu))

    def icmp_error_from_eni(self, eni: EniPort, buf: bytearray, length: int, l4: int,
                            end: int, now: float) -> None:
        found = self._tracked_error(eni, buf, l4, end, True, now)
        if found is not None:
            s = found[1]
            rewrite_ip(buf, IP_DST, s.env_ip, s.ip_in)
            self.to_env(s, buf, length)

    def icmp_error_from_env(self, env: EnvPort, buf: bytearray, length: int, l4: int,
                            end: int, now: float) -> None:
        """An error about a flow, out through the ENI holding its session."""
        assert env.eni is not None
        found = self._tracked_error(env.eni, buf, l4, end, False, now, env)
        if found is not None:
            eni, s = found
            rewrite_ip(buf, IP_SRC, eni.ip_bytes, s.ip_out)
            self.to_vpc(eni, eni.nexthop(bytes(buf[IP_DST])), buf, length, now)

    def _tracked_error(self, eni: EniPort, buf: bytearray, l4: int, end: int, inbound: bool,
                       now: float, env: EnvPort | None = None,
                       ) -> tuple[EniPort, Session] | None:
        """An error about a live session, its quote restored for the other side: the
        ENI holding the session and the session; None: dropped and counted."""
        found = self._error_session(eni, buf, l4, end, inbound, now, env)
        if found is None:
            return None
        holder, s, q, ql4 = found
        if buf[IP_TTL] <= 1:
            self.drop("ttl_expired", holder)
            return None
        restore(buf, l4, end, q, ql4, s, inbound, not buf[VNET_FLAGS] & p.VNET_F_NEEDS_CSUM)
        return holder, s

    def _error_session(self, eni: EniPort, buf: bytearray, l4: int, end: int, inbound: bool,
                       now: float, env: EnvPort | None = None,
                       ) -> tuple[EniPort, Session, int, int] | None:
        """The live session an ICMP error quotes, its ENI and the quote's offsets, or None.

        From an environment (``env``) the session may be held by a spill ENI.
        """
        if buf[IP_FRAG] & IP_MF:
            self.drop("fragment", eni)  # a fragmented error cannot be checked
            return None
        if not buf[VNET_FLAGS] & p.VNET_F_NEEDS_CSUM and not checksum_ok(buf, l4, end):
            self.drop("icmp_bad_checksum", eni)
            return None
        found = locate(buf, l4, end, inbound)
        s = eni.table.get(found[0]) if found is not None else None
        if (s is None or s.expires < now) and found and env is not None and env.spill:
            spilled = env.spill_session(found[0], now)
            if spilled is not None:
                return spilled[0], spilled[1], found[1], found[2]
        if s is None or s.expires < now:
            self.drop("icmp_error_no_session", eni)
            return None
        return eni, s, found[1], found[2]
