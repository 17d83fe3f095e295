"""The NAT rewrite, one implementation for every role (pure).

A session (``conntrack``) precomputes, for each direction, the new address and
port and the ones'-complement change they make to the IPv4 checksum (TTL
included), to a full L4 checksum and to a partial (pseudo-header) one.  Applying
that is the whole per-packet cost of the fast path, and it is the same for the
Hyperplane pipeline (``pipeline``: the environment's address and port <-> the
ENI's) and the NAT gateway (``natgw``: the inside address and port <-> the Elastic
IP's): ``translate`` replaces one address and one port in place, lowers the TTL by
one and updates both checksums incrementally (RFC 1624).  With the virtio header's
NEEDS_CSUM the L4 field holds the uncomplemented pseudo-header sum, adjusted by
the partial change with the opposite sign; a UDP checksum of 0 (none) stays 0.

``rewrite_ip`` is the same for a packet whose L4 header is not there or not ours
to touch (a non-first fragment, the outer header of an ICMP error): one address,
the TTL, the IPv4 checksum.
"""

from __future__ import annotations

from hyperplane.dataplane.packet import (
    IP_CSUM,
    IP_TTL,
    L4_CSUM,
    PROTO_UDP,
    VNET_F_NEEDS_CSUM,
    VNET_FLAGS,
)


def translate(buf: bytearray, l4: int, proto: int, addr_at: slice, addr: bytes,
              port_at: int, port: bytes, d_ip: int, d_full: int, d_part: int) -> None:
    """Address at ``addr_at`` and port at ``port_at`` replaced, TTL down, checksums fixed."""
    buf[addr_at] = addr
    buf[port_at:port_at + 2] = port
    buf[IP_TTL] -= 1
    c = (((buf[IP_CSUM] << 8) | buf[IP_CSUM + 1]) ^ 0xFFFF) + d_ip
    c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
    buf[IP_CSUM] = c >> 8
    buf[IP_CSUM + 1] = c & 0xFF
    at = l4 + L4_CSUM[proto]
    c = (buf[at] << 8) | buf[at + 1]
    if buf[VNET_FLAGS] & VNET_F_NEEDS_CSUM:
        c += d_part
        c = (c & 0xFFFF) + (c >> 16)
    elif proto == PROTO_UDP and c == 0:
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
