"""The receive ring: one TPACKET_V2 ``PACKET_RX_RING`` for every link of a process (I/O).

One ``AF_PACKET`` socket listens on every link of the namespace (protocol ETH_P_ALL,
bound to no interface); the kernel writes each frame into the next slot of a ring
shared with this process by ``mmap``, and the process reads the frames in place: no
``recv`` system call, no copy into Python.  TPACKET_V2, not V3: V3 wakes the reader
only when a block retires (a timer of at least 1 ms), which would ruin latency.

A slot (``FRAME_SIZE`` bytes) holds, from its start: the ``tpacket2_hdr`` (status, the
frame's length, the length kept, the MAC header's offset...), the ``sockaddr_ll`` (at
``SLL``: the interface index names the port the frame came from), then the frame.
``PACKET_VNET_HDR`` (set before the ring: the kernel refuses it after) puts the
10-byte virtio-net header just before the MAC header, so ``[mac - 10, ...)`` is laid
out exactly as ``packet``'s receive buffer and the pipeline runs on a ``memoryview``
of the slot unchanged.  Frames larger than a slot (GSO super-frames of a TCP bulk
transfer) are not cut: with ``PACKET_COPY_THRESH`` the kernel queues them whole on
the socket's ordinary receive queue and marks their slot ``TP_STATUS_COPY``; the walk
reads them with ``recv_into`` when it meets that slot, so frames stay in order.  A
slot marked truncated without the copy (the receive queue was full) is dropped and
counted ``rx_truncated``.

A free slot before ready ones is a *hole*: the kernel (Linux 6.18, seen in
``hyperplane bench`` after the 64-byte UDP flood that follows the TCP bulk workloads)
sometimes moves past a slot without handing it over, and a walk that waits at it stops
for good (the kernel fills the slots after it; only a whole lap later would it write the
hole; a frame whose virtio-net header the kernel cannot make leaves one too, and a hole
may be several slots long).  A frame still being copied in by another CPU also leaves a
free slot before ready ones, for microseconds: so the walk skips to the next ready slot
(``skip_hole``, counted ``rx_ring_hole``) only once a slot after its head has been ready
for ``HOLE_GRACE``: the next slot, or any, when the walk was woken for frames and found
none at its head.

The socket filter (``bpf.links_filter``) accepts only the interface indexes of this
process's ports (the NAT gateway process shares the namespace, and ``lo`` is there
too); until the first ``set_links`` it accepts nothing.  Past ``bpf.MAX_RANGES``
ranges of indexes it accepts everything and the walk drops frames of unknown links
(``rx_unknown_link``).  Frames are sent elsewhere (``sockets.PacketSocket``, one per
link): a TX ring on veth would hold each slot until the receiver frees the skb.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import struct
import traceback
from collections.abc import Callable, Iterable

from hyperplane.dataplane import bpf
from hyperplane.dataplane.packet import VNET_LEN
from hyperplane.dataplane.sockets import (
    BUFFER_BYTES,
    ETH_P_ALL,
    PACKET_IGNORE_OUTGOING,
    PACKET_STATISTICS,
    PACKET_VNET_HDR,
    SOL_PACKET,
)

PACKET_RX_RING = 5
PACKET_COPY_THRESH = 7
PACKET_VERSION = 10
TPACKET_V2 = 1
SO_ATTACH_FILTER = 26
TP_STATUS_USER = 0x1
TP_STATUS_COPY = 0x2
FRAME_SIZE = 2048        # a 1,500-byte link's frame with its headers fits (76 + 1,514)
FRAMES = 4096            # 8 MiB of slots
BLOCK_SIZE = 1 << 16     # 32 slots a block
HDR = struct.Struct("<IIH")  # tp_len, tp_snaplen, tp_mac (after the 4-byte tp_status)
IFINDEX = struct.Struct("<i").unpack_from
SLL = 32                 # TPACKET_ALIGN(sizeof(struct tpacket2_hdr))
SLL_IFINDEX = SLL + 4
RELEASE = bytes(4)       # tp_status = TP_STATUS_KERNEL: the slot back to the kernel
COUNTERS = ("rx_truncated", "rx_unknown_link", "rx_ring_hole")
HOLE_GRACE = 0.01        # seconds a free slot may wait before a ready one (see above)
READY = bytes(value & TP_STATUS_USER for value in range(256))  # a status byte -> ready
REJECT_ALL = [(bpf.RET_K, 0, 0, 0)]
ACCEPT_ALL = [(bpf.RET_K, 0, 0, bpf.ACCEPT)]

Receive = Callable[[object, memoryview | bytearray, int, float], None]


def attach_filter(sock: socket.socket, prog: list[bpf.Insn]) -> None:
    """Attach (or atomically replace) the classic BPF socket filter ``prog``."""
    code = ctypes.create_string_buffer(bpf.assemble(prog), len(prog) * bpf.INSN.size)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies it


PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
ETH_P_IP = 0x0800
TP_SEC = struct.Struct("<II")  # tp_sec, tp_nsec: at 16 in the tpacket2_hdr


def ring_socket(protocol: int = ETH_P_ALL, frames: int = FRAMES,
                frame_size: int = FRAME_SIZE, block_size: int = BLOCK_SIZE) -> socket.socket:
    """A packet socket of ``protocol`` on every link with its receive ring set up (not
    mapped), its filter rejecting everything until ``RxRing.set_links``."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))
    try:
        attach_filter(sock, REJECT_ALL)  # before anything else: no frame until set_links
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # before the ring (EBUSY after)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
            "IIII", block_size, frames * frame_size // block_size, frame_size, frames))
    except OSError:
        sock.close()
        raise
    return sock


def fanout_sockets(workers: int, group: int) -> list[socket.socket]:
    """``workers`` ring sockets (IPv4 frames only: ARP goes to every worker's own
    socket) joined in this order to fanout group ``group`` (``PACKET_FANOUT_CBPF``,
    fragments reassembled before steering, our own sent frames not seen), steered by
    ``bpf.fanout``: member ``i`` receives worker ``i``'s frames."""
    socks: list[socket.socket] = []
    flags = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_DEFRAG | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    try:
        for _ in range(workers):
            sock = ring_socket(ETH_P_IP)
            socks.append(sock)
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT,
                            struct.pack("I", (group & 0xFFFF) | flags << 16))
        prog = bpf.fanout(workers)
        code = ctypes.create_string_buffer(bpf.assemble(prog), len(prog) * bpf.INSN.size)
        socks[0].setsockopt(SOL_PACKET, PACKET_FANOUT_DATA,
                            struct.pack("HL", len(prog), ctypes.addressof(code)))
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class RxRing:
    """The receive ring of one process: ``drain`` walks it, ``set_links`` filters it.

    ``sock``: a ``ring_socket`` made elsewhere (a worker's, held by its group across the
    worker's restarts): its slots may hold frames queued while no process read them, and
    the kernel's position is unknown, so the walk starts *lost* (``relocate``)."""

    def __init__(self, frames: int = FRAMES, frame_size: int = FRAME_SIZE,
                 block_size: int = BLOCK_SIZE, sock: socket.socket | None = None) -> None:
        self.frames, self.frame_size = frames, frame_size
        adopted = sock is not None
        sock = sock if sock is not None else ring_socket(ETH_P_ALL, frames, frame_size,
                                                         block_size)
        try:
            self.map = mmap.mmap(sock.fileno(), frames * frame_size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.fileno = sock.fileno
        self.mv = memoryview(self.map)
        self.head = 0
        self.lost = adopted
        self.links: tuple[int, ...] | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.suspect: tuple[int, float] | None = None  # (a free slot before a ready one, since)
        if not adopted:
            self._discard_queue()  # frames queued before the filter, in no slot's order

    def relocate(self) -> bool:
        """Find the walk's place in a ring another process walked: the oldest ready slot
        (by the kernel's timestamps); False while no slot is ready (asked again at the
        next wake-up: the first frame lands where the kernel is)."""
        size = self.frame_size
        ready = [i for i, status in enumerate(self.mv[::size].tobytes()[:self.frames])
                 if status & TP_STATUS_USER]
        if not ready:
            return False
        self.head = min(ready, key=lambda i: TP_SEC.unpack_from(self.mv, i * size + 16))
        self.suspect = None
        self.lost = False
        return True

    @classmethod
    def over(cls, memory: mmap.mmap, frames: int, frame_size: int,
             sock: socket.socket) -> RxRing:
        """A ring over ``memory`` laid out as TPACKET_V2 slots, ``sock`` holding the frames
        of ``TP_STATUS_COPY`` slots: the walk without a packet socket (for tests)."""
        ring = cls.__new__(cls)
        ring.frames, ring.frame_size, ring.map, ring.sock = frames, frame_size, memory, sock
        ring.fileno = sock.fileno
        ring.mv, ring.head, ring.links, ring.suspect = memoryview(memory), 0, None, None
        ring.lost = False
        ring.counters = dict.fromkeys(COUNTERS, 0)
        return ring

    def _discard_queue(self) -> None:
        buf = bytearray(256)
        while True:
            try:
                self.sock.recv_into(buf)
            except BlockingIOError:
                return

    def set_links(self, ifindexes: Iterable[int]) -> None:
        """Receive the frames of these interfaces only (no change: no system call)."""
        wanted = tuple(sorted(set(ifindexes)))
        if wanted == self.links:
            return
        prog = bpf.links_filter(wanted)
        attach_filter(self.sock, ACCEPT_ALL if prog is None else prog)
        self.links = wanted

    def drain(self, by_index: dict, receive: Receive, now: float, budget: int,
              buf: bytearray, counters: dict[str, int]) -> int:
        """Hand up to ``budget`` ready frames to ``receive(port, frame, length, now)``,
        the port being ``by_index[ifindex]``; each slot goes back to the kernel after
        its frame.  Returns how many slots were read."""
        mv, size, frames, head = self.mv, self.frame_size, self.frames, self.head
        mine = self.counters
        done = 0
        while done < budget:
            off = head * size
            status = mv[off]  # the low byte of tp_status (little-endian)
            if not status & TP_STATUS_USER:
                after = self.skip_hole(head, now, done == 0)
                if after is None:
                    break
                head = after
                continue
            length, snaplen, mac = HDR.unpack_from(mv, off + 4)
            port = by_index.get(IFINDEX(mv, off + SLL_IFINDEX)[0])
            frame: memoryview | bytearray | None = None
            if status & TP_STATUS_COPY:  # the whole frame waits on the receive queue
                try:
                    length = self.sock.recv_into(buf)
                    frame = buf
                except OSError:
                    counters["rx_error"] += 1
            elif snaplen < length:
                mine["rx_truncated"] += 1
            else:
                frame = mv[off + mac - VNET_LEN:off + size]
                length = snaplen + VNET_LEN
            if frame is not None:
                if port is None:
                    mine["rx_unknown_link"] += 1
                else:
                    try:
                        receive(port, frame, length, now)
                    except Exception:  # never let one frame stop the dataplane
                        counters["internal_error"] += 1
                        if counters["internal_error"] <= 3:
                            traceback.print_exc()
            mv[off:off + 4] = RELEASE
            head = head + 1 if head + 1 < frames else 0
            done += 1
        self.head = head
        return done

    def skip_hole(self, head: int, now: float, woken: bool = False) -> int | None:
        """The next ready slot if the free slot ``head`` is a hole (a slot after it has
        been ready for ``HOLE_GRACE``), counted; else None (and the wait noted).  The slot
        after ``head`` is looked at; the whole ring only when ``woken`` (the walk was
        woken for frames and found none at its head: a hole may be several slots long)."""
        after = head + 1 if head + 1 < self.frames else 0
        ready = after if self.mv[after * self.frame_size] & TP_STATUS_USER else \
            self.next_ready(head) if woken else None
        if ready is None:
            self.suspect = None
            return None
        if self.suspect is None or self.suspect[0] != head:
            self.suspect = (head, now)
            return None
        if now - self.suspect[1] < HOLE_GRACE:
            return None
        self.suspect = None
        self.counters["rx_ring_hole"] += 1
        return ready

    def next_ready(self, head: int) -> int | None:
        """The first ready slot after ``head`` (going round), or None."""
        ready = self.mv[::self.frame_size].tobytes()[:self.frames].translate(READY)
        found = ready.find(1, head + 1)
        if found < 0:
            found = ready.find(1, 0, head)
        return found if found >= 0 else None

    def dropped(self) -> int:
        """Frames the kernel dropped (the ring was full) since last asked."""
        _packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET,
                                                                  PACKET_STATISTICS, 8))
        return drops

    def close(self) -> None:
        try:
            self.mv.release()
            self.map.close()
        except BufferError:  # a view of a slot still held somewhere: the process ends anyway
            pass
        self.sock.close()
