"""AF_PACKET sockets for the dataplane's links (I/O).

One raw packet socket per interface, bound to it, with ``PACKET_VNET_HDR`` so
that GSO super-frames and partial checksums pass through userspace whole (a
10-byte virtio-net header precedes each frame, in both directions), and
``PACKET_IGNORE_OUTGOING`` so a socket never reads back what was sent.  The
socket is created with protocol 0 (it receives nothing) and only then bound
with ETH_P_ALL, so it never sees another interface's frames.
"""

from __future__ import annotations

import socket
import struct

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
BUFFER_BYTES = 4 * 1024 * 1024


class PacketSocket:
    """A non-blocking raw socket on one interface; ``send`` never blocks."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.recv_into = sock.recv_into
        self.fileno = sock.fileno

    def dropped(self) -> int:
        """Frames the kernel dropped on this socket (its buffer was full) since last asked."""
        _packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET,
                                                                  PACKET_STATISTICS, 8))
        return drops

    def close(self) -> None:
        self.sock.close()
