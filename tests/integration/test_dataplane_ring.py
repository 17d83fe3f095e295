"""The receive ring (``ring.RxRing``) on real veths: frames in order, slots and copies.

Two namespaces of our own, ``hp-t15r`` (the ring's) and ``hp-t15p`` (a peer), joined by
two veth pairs; the peer sends raw Ethernet frames (ethertype 0x88B5, local
experimental) numbered in their payload.  The ring's slots are made small (512 bytes)
so that larger frames take the ordinary receive queue (``TP_STATUS_COPY``) and must
still come out in order, whole, behind their virtio-net header.
"""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Iterator

import pytest

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.ring import RxRing
from hyperplane.dataplane.sockets import PacketSocket
from hyperplane.kernel import netlink

RING_NS, PEER_NS = "hp-t15r", "hp-t15p"
LINKS = (("hp-t15a", "hp-t15b"), ("hp-t15c", "hp-t15d"))  # (ring side, peer side)
ETHERTYPE = 0x88B5
SLOT = 512


@pytest.fixture
def veths() -> Iterator[dict]:
    try:
        for ns in (RING_NS, PEER_NS):
            netlink.ensure_netns(ns)
        for mine, peer in LINKS:
            netlink.add_veth(RING_NS, mine, PEER_NS, peer)
            netlink.link_up(PEER_NS, peer)
        with netlink.inside(RING_NS):
            ring = RxRing(frames=64, frame_size=SLOT, block_size=4096)
            index = {mine: socket.if_nametoindex(mine) for mine, _ in LINKS}
            tx = PacketSocket(LINKS[0][0])
        senders = {}
        with netlink.inside(PEER_NS):
            for mine, peer in LINKS:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                s.bind((peer, 0))
                s.settimeout(2.0)
                senders[mine] = s
        yield {"ring": ring, "index": index, "send": senders, "tx": tx}
        ring.close()
        tx.close()
        for s in senders.values():
            s.close()
    finally:
        netlink.remove_netns(RING_NS)
        netlink.remove_netns(PEER_NS)


def frame(seq: int, size: int) -> bytes:
    head = b"\xff" * 6 + bytes.fromhex("020000000001") + ETHERTYPE.to_bytes(2, "big")
    body = struct.pack("!I", seq) + bytes((seq + i) & 0xFF for i in range(size - 18))
    return head + body


def collect(ring: RxRing, by_index: dict, want: int, timeout: float = 3.0) -> list:
    """Walk the ring until ``want`` of our frames came: [(port, frame bytes, vnet header)]."""
    got: list = []
    counters = {"rx_error": 0, "internal_error": 0}
    buf = bytearray(65536 + 256)

    def receive(port, frm, length, _now) -> None:
        if frm[p.ETH_TYPE:p.ETH_TYPE + 2] == ETHERTYPE.to_bytes(2, "big"):
            got.append((port, bytes(frm[p.ETH:length]), bytes(frm[:p.VNET_LEN])))

    poller = select.poll()
    poller.register(ring.fileno(), select.POLLIN)
    while len(got) < want and poller.poll(timeout * 1000):
        ring.drain(by_index, receive, 0.0, 64, buf, counters)
    assert counters == {"rx_error": 0, "internal_error": 0}
    return got


def test_frames_come_in_order_whole_from_slots_and_from_the_queue(veths: dict) -> None:
    ring, index, send = veths["ring"], veths["index"], veths["send"]["hp-t15a"]
    ring.set_links([index["hp-t15a"]])
    by_index = {index["hp-t15a"]: "a"}
    sizes = [60, 1000, 80, 1400, 1200, 64, 900, 70, 400, 1514]  # 512-byte slots: > ~430 copied
    sent = [frame(seq, size) for seq, size in enumerate(sizes)]
    for f in sent:
        send.send(f)
    got = collect(ring, by_index, len(sent))
    assert [f for _port, f, _vnet in got] == sent
    assert {port for port, _f, _vnet in got} == {"a"}
    assert all(vnet[p.VNET_GSO_TYPE] == 0 for _port, _f, vnet in got)
    assert ring.counters == {"rx_truncated": 0, "rx_unknown_link": 0, "rx_ring_hole": 0}


def test_the_ring_wraps_around_many_times(veths: dict) -> None:
    ring, index, send = veths["ring"], veths["index"], veths["send"]["hp-t15a"]
    ring.set_links([index["hp-t15a"]])
    by_index = {index["hp-t15a"]: "a"}
    everything = []
    for batch in range(8):  # 8 x 40 frames through 64 slots
        sent = [frame(batch * 40 + i, 60 + (i * 37) % 700) for i in range(40)]
        for f in sent:
            send.send(f)
        everything += collect(ring, by_index, len(sent))
        assert [f for _port, f, _vnet in everything[-len(sent):]] == sent
    assert len(everything) == 320 and ring.dropped() == 0


def test_only_the_given_links_reach_the_ring(veths: dict) -> None:
    ring, index, send = veths["ring"], veths["index"], veths["send"]
    a, c = index["hp-t15a"], index["hp-t15c"]
    ring.set_links([a])
    send["hp-t15c"].send(frame(1, 100))  # filtered out in the kernel: never in the ring
    send["hp-t15a"].send(frame(2, 100))
    got = collect(ring, {a: "a", c: "c"}, 1)
    assert [(port, f) for port, f, _v in got] == [("a", frame(2, 100))]
    ring.set_links([a, c])
    send["hp-t15c"].send(frame(3, 100))
    got = collect(ring, {a: "a", c: "c"}, 1)
    assert [(port, f) for port, f, _v in got] == [("c", frame(3, 100))]
    assert ring.counters["rx_unknown_link"] == 0


def test_a_transmit_socket_sends_and_the_ring_does_not_read_it_back(veths: dict) -> None:
    ring, index, tx = veths["ring"], veths["index"], veths["tx"]
    ring.set_links([index["hp-t15a"]])
    peer = veths["send"]["hp-t15a"]
    with netlink.inside(PEER_NS):
        listen = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
        listen.bind(("hp-t15b", ETHERTYPE))
        listen.settimeout(2.0)
    try:
        out = frame(7, 200)
        tx.send(bytes(p.VNET_LEN) + out)
        assert listen.recv(2048) == out
        peer.send(frame(8, 90))
        got = collect(ring, {index["hp-t15a"]: "a"}, 1)
        assert [f for _port, f, _v in got] == [frame(8, 90)]  # not the one we sent
    finally:
        listen.close()
