"""The NAT rewrite, one implementation for every role (pure).

A session (``conntrack``) precomputes, for each direction, the new address and
port and the ones'-complement change they make to the IPv4 checksum (TTL
included), to a full L4 checksum and to a partial (pseudo-header) one.  Applying
that is the whole per-packet cost of the fast path, and it is the same for the
Hyperplane pipeline (``pipeline``: the environment's address and port <-> the
ENI's) and the NAT gateway (``natgw``: the inside address and port <-> the Elastic
IP's): ``translate`` replaces one address and one port in place, lowers the TTL by
one, updates both checksums incrementally (RFC 1624) and counts the packet in the
session.  With the virtio header's
NEEDS_CSUM the L4 field holds the uncomplemented pseudo-header sum, adjusted by
the partial change with the opposite sign; a UDP checksum of 0 (none) stays 0.

``rewrite_ip`` is the same for a packet whose L4 header is not there or not ours
to touch (a non-first fragment, the outer header of an ICMP error): one address,
the TTL, the IPv4 checksum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperplane.dataplane.packet import (
    ETH,
    ICMP_ID,
    IP_CSUM,
    IP_DST,
    IP_SRC,
    IP_TTL,
    L4_CSUM,
    L4_DPORT,
    L4_SPORT,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    VNET_F_NEEDS_CSUM,
    VNET_FLAGS,
)

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Session

IP_CSUM_LOW = IP_CSUM + 1
L4_CSUM_TCP = L4_CSUM[PROTO_TCP]


def translate(s: Session, buf: bytearray, l4: int, proto: int, length: int,
              source: bytes | None) -> None:
    """Apply session ``s``'s rewrite to the packet in ``buf`` and count it.

    ``source``: the packet goes out, and its source becomes ``source`` (the ENI's or
    the Elastic IP's address) with the session's outside port; None: it comes back,
    and its destination becomes the inside address and port.
    """
    icmp = proto == PROTO_ICMP
    if source is not None:
        buf[IP_SRC] = source
        at = l4 + ICMP_ID if icmp else l4 + L4_SPORT
        port = s.eni_port  # ``out_l4``, byte by byte
        d_ip, d_full, d_part = s.ip_out, s.full_out, s.part_out
        s.pkts_out += 1
        s.bytes_out += length - ETH
    else:
        buf[IP_DST] = s.env_ip
        at = l4 + ICMP_ID if icmp else l4 + L4_DPORT
        port = s.env_port  # ``in_l4``
        d_ip, d_full, d_part = s.ip_in, s.full_in, s.part_in
        s.pkts_in += 1
        s.bytes_in += length - ETH
    buf[at] = port >> 8
    buf[at + 1] = port & 0xFF
    buf[IP_TTL] -= 1
    c = (((buf[IP_CSUM] << 8) | buf[IP_CSUM_LOW]) ^ 0xFFFF) + d_ip
    c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
    buf[IP_CSUM] = c >> 8
    buf[IP_CSUM_LOW] = c & 0xFF
    at = l4 + (L4_CSUM_TCP if proto == PROTO_TCP else L4_CSUM[proto])
    c = (buf[at] << 8) | buf[at + 1]
    if buf[VNET_FLAGS] & VNET_F_NEEDS_CSUM:
        c += d_part
        c = (c & 0xFFFF) + (c >> 16)
    elif c == 0 and proto == PROTO_UDP:
        return
    else:
        c = (c ^ 0xFFFF) + d_full
        c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
        if c == 0 and proto == PROTO_UDP:
            c = 0xFFFF
    buf[at] = c >> 8
    buf[at + 1] = c & 0xFF


def rewrite_ip(buf: bytearray, addr_at: slice, addr: bytes, d_ip: int) -> None:
    """Address at ``addr_at`` replaced, TTL down by one, IPv4 checksum updated."""
    buf[addr_at] = addr
    buf[IP_TTL] -= 1
    c = (((buf[IP_CSUM] << 8) | buf[IP_CSUM + 1]) ^ 0xFFFF) + d_ip
    c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
    buf[IP_CSUM] = c >> 8
    buf[IP_CSUM + 1] = c & 0xFF
