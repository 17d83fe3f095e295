"""The receive ring's walk past a hole: a free slot the kernel moved past (``ring``).

The ring is laid out in anonymous memory as the kernel lays out TPACKET_V2 slots
(``RxRing.over``); no packet socket is needed."""

from __future__ import annotations

import mmap
import socket
import struct

from hyperplane.dataplane import ring
from hyperplane.dataplane.packet import VNET_LEN

FRAMES, SIZE, IFINDEX, MAC = 4, 2048, 7, 76


def fill(mem: mmap.mmap, slot: int, frame: bytes) -> None:
    """``frame`` in ``slot``, handed to the walk (``TP_STATUS_USER``), as the kernel does."""
    off = slot * SIZE
    mem[off + 4:off + 14] = struct.pack("<IIH", len(frame), len(frame), MAC)
    mem[off + ring.SLL_IFINDEX:off + ring.SLL_IFINDEX + 4] = struct.pack("<i", IFINDEX)
    mem[off + MAC:off + MAC + len(frame)] = frame
    mem[off:off + 4] = struct.pack("<I", ring.TP_STATUS_USER)


class Walk:
    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, FRAMES * SIZE)
        self.pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ring = ring.RxRing.over(self.mem, FRAMES, SIZE, self.pair[0])
        self.got: list[bytes] = []
        self.counters = {"rx_error": 0, "internal_error": 0}

    def drain(self, now: float) -> int:
        def receive(port, frame, length, _now) -> None:
            assert port == "link"
            self.got.append(bytes(frame[VNET_LEN:length]))
        return self.ring.drain({IFINDEX: "link"}, receive, now, 8, bytearray(4096),
                               self.counters)

    def close(self) -> None:
        self.ring.mv.release()
        self.mem.close()
        for sock in self.pair:
            sock.close()


def test_a_free_slot_before_a_ready_one_is_skipped_after_the_grace() -> None:
    walk = Walk()
    try:
        fill(walk.mem, 1, b"second")
        assert walk.drain(1.0) == 0 and walk.got == []     # maybe still being copied in
        assert walk.drain(1.0 + ring.HOLE_GRACE / 2) == 0  # within the grace: waits
        assert walk.drain(1.0 + ring.HOLE_GRACE) == 1      # a hole: skipped
        assert walk.got == [b"second"]
        assert walk.ring.counters["rx_ring_hole"] == 1
        assert walk.ring.head == 2 and walk.mem[SIZE] == 0  # slot 1 back to the kernel
    finally:
        walk.close()


def test_a_slot_filled_within_the_grace_is_read_in_order() -> None:
    walk = Walk()
    try:
        fill(walk.mem, 1, b"second")
        assert walk.drain(1.0) == 0
        fill(walk.mem, 0, b"first")  # the copy into slot 0 finished
        assert walk.drain(1.0 + 2 * ring.HOLE_GRACE) == 2
        assert walk.got == [b"first", b"second"]
        assert walk.ring.counters["rx_ring_hole"] == 0
    finally:
        walk.close()


def test_an_empty_ring_has_no_hole() -> None:
    walk = Walk()
    try:
        for now in (1.0, 2.0, 3.0):
            assert walk.drain(now) == 0
        assert walk.ring.head == 0 and walk.ring.counters["rx_ring_hole"] == 0
        fill(walk.mem, 3, b"last")  # the slot after the hole wraps round to slot 0
        walk.ring.head = 2
        assert walk.drain(4.0) == 0 and walk.drain(5.0) == 1
        assert walk.got == [b"last"] and walk.ring.head == 0
    finally:
        walk.close()


def stamp(mem: mmap.mmap, slot: int, sec: int, nsec: int) -> None:
    mem[slot * SIZE + 16:slot * SIZE + 24] = struct.pack("<II", sec, nsec)


def test_a_ring_adopted_from_a_dead_worker_is_walked_from_its_oldest_frame() -> None:
    walk = Walk()
    try:
        walk.ring.lost = True  # as a restarted worker's ring starts
        assert not walk.ring.relocate() and walk.ring.lost  # nothing ready: still lost
        for slot, (payload, sec, nsec) in {3: (b"first", 10, 5), 0: (b"second", 10, 9),
                                           1: (b"third", 11, 0)}.items():
            fill(walk.mem, slot, payload)
            stamp(walk.mem, slot, sec, nsec)
        assert walk.ring.relocate() and not walk.ring.lost and walk.ring.head == 3
        assert walk.drain(1.0) == 3
        assert walk.got == [b"first", b"second", b"third"]
    finally:
        walk.close()


def test_a_hole_of_several_slots_is_skipped_when_the_walk_finds_nothing_at_its_head() -> None:
    walk = Walk()
    try:
        fill(walk.mem, 3, b"after")          # slots 0, 1 and 2: a three-slot hole
        assert walk.drain(1.0) == 0           # woken, nothing at the head: the hole noted
        assert walk.drain(1.0 + ring.HOLE_GRACE / 2) == 0
        assert walk.drain(1.0 + ring.HOLE_GRACE) == 1
        assert walk.got == [b"after"] and walk.ring.head == 0  # past slot 3, round to 0
        assert walk.ring.counters["rx_ring_hole"] == 1
    finally:
        walk.close()


def test_an_emptied_ring_is_not_a_hole() -> None:
    walk = Walk()
    try:
        fill(walk.mem, 0, b"one")
        for now in (1.0, 2.0, 3.0):  # consumed, then nothing: never a hole, never a scan
            walk.drain(now)
        assert walk.got == [b"one"] and walk.ring.counters["rx_ring_hole"] == 0
        assert walk.ring.suspect is None and walk.ring.head == 1
    finally:
        walk.close()
