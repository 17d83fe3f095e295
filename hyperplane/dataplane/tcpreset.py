"""A TCP reset as a frame, for a middlebox that ends a connection (pure).

``rst_frame`` builds what a NAT gateway sends each side of a TCP connection it idles
out (``natgw``): an empty virtio header (no offload: both checksums complete), an
Ethernet header whose MACs the sender fills in (``pipeline.Pipeline.to_vpc``), an
IPv4 header (DF, TTL 64) and a 20-byte TCP header with only RST set.

The sequence number must be the one the receiver expects next, exactly: Linux
(RFC 5961, section 3) resets a connection only for a RST whose sequence number equals
its ``rcv_nxt``; one elsewhere in the window gets a challenge ACK and is ignored.  On an
idle connection every byte has been acknowledged, so the receiver's next expected
sequence number is the last acknowledgement number it sent: the caller passes that
(``Session.ack_out`` for the inside host, ``ack_in`` for the remote side).
"""

from __future__ import annotations

import struct

from hyperplane.dataplane import packet as p

TCP_HEADER = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, offset, flags, window, csum, urg
RST = 0x04
TTL = 64


def rst_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytearray:
    """A RST from ``src:sport`` to ``dst:dport`` with sequence number ``seq``."""
    tcp = bytearray(TCP_HEADER.pack(sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, RST, 0, 0, 0))
    pseudo = src + dst + struct.pack("!BBH", 0, p.PROTO_TCP, len(tcp))
    struct.pack_into("!H", tcp, 16, p.checksum(pseudo + tcp))
    ip = p.ipv4_header(p.IPH_MIN + len(tcp), 0, p.IP_DF << 8, TTL, p.PROTO_TCP, src, dst)
    return bytearray(bytes(p.VNET_LEN) + bytes(12) + struct.pack("!H", p.ETH_P_IP) + ip
                     + bytes(tcp))
