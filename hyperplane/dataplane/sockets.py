"""AF_PACKET sockets for the dataplane's links (I/O).

One raw packet socket per interface, bound to it, with ``PACKET_VNET_HDR`` so
that GSO super-frames and partial checksums pass through userspace whole (a
10-byte virtio-net header precedes each frame, in both directions).  With
``receive`` (the ``sockets`` receive path, the default) it is bound with ETH_P_ALL
after ``PACKET_IGNORE_OUTGOING`` (created with protocol 0, so it never sees another
interface's frames); without, it only sends: bound with protocol 0, the kernel
delivers it nothing (the process's receive ring, ``ring.RxRing``, has every link's
frames) and reads each sent frame's protocol from its Ethernet header.  The
constants here are shared with ``ring``.

``ArpSocket``: a worker of a group (``loop.Worker``) receives its IPv4 frames from its
fanout member and every ARP frame of every link on this one socket (not in the group:
each worker sees each ARP frame).
"""

from __future__ import annotations

import socket
import struct

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
BUFFER_BYTES = 4 * 1024 * 1024


class PacketSocket:
    """A non-blocking raw socket on one interface (receiving, or only sending);
    ``send`` never blocks."""

    def __init__(self, ifname: str, receive: bool = True) -> None:
        self.ifname = ifname
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            if receive:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            sock.bind((ifname, ETH_P_ALL if receive else 0))  # 0: nothing delivered
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.send = sock.send
        self.recv_into = sock.recv_into
        self.fileno = sock.fileno
        self.ifindex = socket.if_nametoindex(ifname)

    def dropped(self) -> int:
        """Frames the kernel dropped on this socket (its buffer was full) since last asked."""
        _packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET,
                                                                  PACKET_STATISTICS, 8))
        return drops

    def close(self) -> None:
        self.sock.close()


class ArpSocket:
    """Every ARP frame of every link (with its virtio-net header), and the link's name."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.fileno = sock.fileno

    def recv_into(self, buf: bytearray) -> tuple[int, str]:
        """(length, interface name) of the next frame; ``BlockingIOError`` when none."""
        n, address = self.sock.recvfrom_into(buf)
        return n, address[0]

    def close(self) -> None:
        self.sock.close()
