"""The compiled fast path (``fastpath``) against the pure-Python walk: the same frames give
byte-identical output frames, the same counters and identical session records.

Both sides run over a ring in anonymous memory laid out as TPACKET_V2 slots
(``RxRing.over``), frames larger than a slot through a datagram socket pair standing for
the ring socket's receive queue (``TP_STATUS_COPY``), and every link's transmit socket
is one end of a datagram socket pair whose other end the test reads.  Skipped when the
compiled module is not built (the pure-Python pipeline is then all there is).
"""

from __future__ import annotations

import mmap
import random
import socket
import struct
from types import SimpleNamespace
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP

from hyperplane.dataplane import fastpath, portalloc, records, ring
from hyperplane.dataplane import packet as p
from hyperplane.dataplane.ring import RxRing
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENV_IPS,
    Rig,
    env_frame,
    make_rig,
    tcp_in,
    tcp_out,
    vpc_frame,
)
from tests.unit.dataplane.test_pipeline import mutated

pytestmark = pytest.mark.skipif(fastpath.load() is None,
                                reason="the compiled fast path is not built")

FRAMES, SLOT, MAC_AT = 64, 512, 76
IFINDEX = {"eni": 1, "env0": 2, "env1": 3}


def _frames() -> list[tuple[str, bytes]]:
    """Frames of flows the fast path may carry, and of what it must hand to Python."""
    out: list[tuple[str, bytes]] = []
    for env, sport in ((0, 40000), (1, 40010)):
        e = f"env{env}"
        out += [(e, tcp_out("S", 1000, sport=sport, env=env)),
                ("eni", tcp_in("SA", 5000, 1001, eni_port=sport)),
                (e, tcp_out("A", 1001, 5001, sport=sport, env=env)),
                (e, tcp_out("PA", 1001, 5001, sport=sport, env=env, payload=b"x" * 40)),
                ("eni", tcp_in("A", 5001, 1041, eni_port=sport, payload=b"y" * 30)),
                ("eni", tcp_in("PA", 5031, 1041, eni_port=sport, payload=b"z" * 700)),
                (e, tcp_out("A", 1041, 5731, sport=sport, env=env, window=999)),
                (e, tcp_out("A", 1041, 5731, sport=sport, env=env, ttl=1)),
                (e, tcp_out("FA", 1041, 5731, sport=sport, env=env)),
                ("eni", tcp_in("R", 5731, eni_port=sport)),
                (e, env_frame(IP(src=ENV_IPS[env], dst=DB_IP) / UDP(sport=sport, dport=53)
                              / b"q", env)),
                ("eni", vpc_frame(IP(src=DB_IP, dst=ENI_IP) / UDP(sport=53, dport=sport)
                                  / b"answer")),
                (e, env_frame(IP(src=ENV_IPS[env], dst=DB_IP) / UDP(sport=sport, dport=53)
                              / bytes(600), env)),  # larger than the ENI's MTU (300)
                (e, env_frame(IP(src=ENV_IPS[env], dst=DB_IP, flags="DF")
                              / UDP(sport=sport, dport=53) / bytes(250), env)),
                (e, env_frame(IP(src=ENV_IPS[env], dst=DB_IP) / ICMP(type=8, id=sport), env)),
                ("eni", vpc_frame(IP(src=DB_IP, dst=ENI_IP) / ICMP(type=0, id=sport))),
                ("eni", vpc_frame(IP(src=DB_IP, dst=ENI_IP, ttl=1) / ICMP(type=0, id=sport)))]
    out.append(("eni", vpc_frame(ARP(op=2, hwsrc=DB_MAC, psrc=DB_IP, pdst=ENI_IP),
                                 src_mac=DB_MAC)))
    return out


FLOW_FRAMES = _frames()
HANDSHAKES = FLOW_FRAMES[0:3] + FLOW_FRAMES[17:20]
DATA = [FLOW_FRAMES[base + i] for base in (0, 17) for i in (3, 4, 5, 6, 10, 11, 14, 15)]


class Side:
    """One rig over a ring in memory, its links as socket pairs; ``compiled`` or not."""

    def __init__(self, compiled: bool) -> None:
        self.rig: Rig = make_rig(mtu=300)
        self.pairs = {name: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                      for name in IFINDEX}
        for pair in self.pairs.values():
            for sock in pair:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.ports = {"eni": self.rig.eni, "env0": self.rig.envs[0], "env1": self.rig.envs[1]}
        counters = self.rig.pipeline.counters
        for name, port in self.ports.items():
            port.tx = self._tx(self.pairs[name][0], counters)
        self.by_index = {IFINDEX[name]: port for name, port in self.ports.items()}
        self.mem = mmap.mmap(-1, FRAMES * SLOT)
        self.queue = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in self.queue:
            sock.setblocking(False)
        self.ring = RxRing.over(self.mem, FRAMES, SLOT, self.queue[0])
        self.slot = 0
        self.counters = {"rx_error": 0, "internal_error": 0}
        self.buf = bytearray(65536 + 256)
        links = {id(port): (IFINDEX[name], self.pairs[name][0].fileno())
                 for name, port in self.ports.items()}
        self.fast = fastpath.FastPath(self.ring, self.rig.pipeline,
                                      lambda port: links.get(id(port)), flows=256) \
            if compiled else None
        if self.fast is not None:
            self.fast.flow_after = 0  # flows from the first eligible frame: C does the most

    @staticmethod
    def _tx(sock: socket.socket, counters: dict):
        def tx(frame) -> None:
            try:
                sock.send(frame)
            except BlockingIOError:
                counters["tx_full"] += 1
        return tx

    def put(self, link: str, frame: bytes) -> None:
        """``frame`` into the next slot as the kernel writes it (or to the queue)."""
        off = self.slot * SLOT
        self.slot = (self.slot + 1) % FRAMES
        status, snap = records.U32.unpack_from(self.mem, off)[0], len(frame) - p.VNET_LEN
        assert status == 0, "the walk must have given the slot back"
        if MAC_AT + snap > SLOT:
            self.queue[1].send(frame)
            status, snap = 1 | 2, SLOT - MAC_AT
        else:
            status = 1
        self.mem[off + MAC_AT - p.VNET_LEN:off + MAC_AT + snap] = frame[:p.VNET_LEN + snap]
        struct.pack_into("<IIH", self.mem, off + 4, len(frame) - p.VNET_LEN, snap, MAC_AT)
        struct.pack_into("<i", self.mem, off + 36, IFINDEX[link])
        struct.pack_into("<I", self.mem, off, status)  # last, as the kernel does

    def walk(self, now: float) -> None:
        drain = self.fast.drain if self.fast else self.ring.drain
        while drain(self.by_index, self.rig.pipeline.receive, now, 16, self.buf,
                    self.counters):
            pass

    def tick(self, now: float) -> None:
        if self.fast:
            self.fast.tick()
        self.rig.pipeline.tick(now)

    def sent(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for name, (_, peer) in self.pairs.items():
            got = out.setdefault(name, [])
            while True:
                try:
                    got.append(peer.recv(65536))
                except BlockingIOError:
                    break
        return out

    def state(self, now: float) -> tuple:
        if self.fast:
            self.fast.harvest()
        pl = self.rig.pipeline
        pl.store.flush()
        mem = pl.store.mem
        recs = sorted(bytes(mem[records.record_at(n) + records.MUT_AT:
                                records.record_at(n) + records.IMM_AT])
                      for n in pl.store._records())  # noqa: SLF001 - the records themselves
        return (dict(pl.counters), dict(self.rig.eni.counters), pl.store.describe(now), recs,
                self.ring.counters, self.counters)

    def close(self) -> None:
        for a, b in (*self.pairs.values(), self.queue):
            a.close()
            b.close()
        self.ring.mv.release()
        self.fast = None


@st.composite
def steps(draw) -> list[tuple[float, list[tuple[str, bytes]], bool]]:
    out = []
    if draw(st.booleans()):  # both environments' handshakes first: then most frames are C's
        out.append((0.0, [f for f in FLOW_FRAMES if f in HANDSHAKES], False))
    for _ in range(draw(st.integers(1, 12))):
        gap = draw(st.sampled_from([0.0, 0.01, 1.0, 100.0, 400.0]))
        batch = []
        for _ in range(draw(st.integers(1, 12))):  # at most 12 < FRAMES a walk
            if draw(st.integers(0, 9)) == 0:
                side = draw(st.sampled_from(["env", "eni"]))
                frame = draw(mutated(side))
                if len(frame) >= p.VNET_LEN + 14:  # a link delivers at least an Ethernet header
                    batch.append(("env0" if side == "env" else "eni", frame))
            else:
                batch.append(draw(st.sampled_from(DATA if draw(st.booleans()) else FLOW_FRAMES)))
        out.append((gap, batch, draw(st.booleans())))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps())
def test_compiled_and_python_walks_give_identical_frames_and_sessions(plan) -> None:
    seeded = SimpleNamespace(Random=lambda _seed=None: random.Random(7))
    with mock.patch.object(portalloc, "random", seeded):
        python, compiled = Side(False), Side(True)
    try:
        now = 1.0
        for gap, batch, tick in plan:
            now += gap
            for side in (python, compiled):
                for link, frame in batch:
                    side.put(link, frame)
                side.walk(now)
                if tick:
                    side.tick(now)
            assert compiled.sent() == python.sent()
            assert compiled.state(now) == python.state(now)
    finally:
        python.close()
        compiled.close()


def test_the_compiled_side_carries_an_established_flow() -> None:
    """Not only equal: after the handshake the data frames go through C (counted there)."""
    with mock.patch.object(portalloc, "random",
                           SimpleNamespace(Random=lambda _seed=None: random.Random(7))):
        side = Side(True)
    try:
        handshake, data = FLOW_FRAMES[:3], FLOW_FRAMES[3:7]
        for link, frame in handshake:
            side.put(link, frame)
        side.walk(1.0)
        assert side.fast.stats()["flows"] == 2
        calls = []
        receive = side.rig.pipeline.receive
        side.rig.pipeline.receive = lambda *a: (calls.append(a[0]), receive(*a))
        for link, frame in data[:3]:  # ACK-only segments with data, both ways
            side.put(link, frame)
        side.walk(1.5)
        assert calls == []  # Python saw none of them
        side.fast.harvest()
        (s,) = side.rig.eni.table.live(1.5)
        assert (s.pkts_out, s.pkts_in) == (3, 3) and s.expires == 1.5 + s.timeout
        assert len(side.sent()["eni"]) == 3
    finally:
        side.close()


def test_a_session_gets_flows_only_once_it_has_carried_flow_after_packets() -> None:
    """A short connection never pays for flows; a longer one gets them (``FLOW_AFTER``)."""
    with mock.patch.object(portalloc, "random",
                           SimpleNamespace(Random=lambda _seed=None: random.Random(7))):
        side = Side(True)
    try:
        side.fast.flow_after = 5
        for link, frame in FLOW_FRAMES[:4]:  # the handshake, one data segment
            side.put(link, frame)
        side.walk(1.0)
        assert side.fast.stats()["flows"] == 0
        for link, frame in FLOW_FRAMES[4:6]:  # more: the session passes five packets
            side.put(link, frame)
        side.walk(1.5)
        assert side.fast.stats()["flows"] == 2
    finally:
        side.close()


def test_only_frames_a_flow_could_carry_are_marked_for_a_flow() -> None:
    """C marks each frame it hands over (``p_fast``): after a SYN, a SYN-ACK, a FIN, a RST
    or an ARP frame Python looks for no flow to make; after an ACK-only segment, UDP or
    an echo it looks at the session the pipeline forwarded the frame by
    (``Pipeline.last_session``), without parsing the frame again."""
    side = Side(True)
    try:
        side.fast.flow_after = 1000  # no flow: C hands every frame to Python
        marks: list[int] = []
        stop = fastpath.STOP
        looked: list[object] = []
        install = side.fast._install  # noqa: SLF001 - the hand-off is what is tested
        side.fast._install = lambda s: looked.append(s) or install(s)
        picks = {0: False, 1: False, 2: True, 3: True, 8: False, 9: False, 10: True, 14: True,
                 15: True, len(FLOW_FRAMES) - 1: False}
        with mock.patch.object(fastpath, "STOP",
                               lambda view, at: marks.append(stop(view, at)[5]) or stop(view, at)):
            for i, wanted in picks.items():
                side.put(*FLOW_FRAMES[i])
                side.walk(1.0 + i)
                assert marks[-1] == wanted, FLOW_FRAMES[i]
        assert not looked and side.fast.stats()["flows"] == 0
        side.fast.flow_after = 0  # the next datagram's session (replied to) gets its flows
        side.put(*FLOW_FRAMES[10])
        side.walk(20.0)
        (s,) = looked
        assert s is side.rig.pipeline.last_session and side.fast.stats()["flows"] >= 1
    finally:
        side.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps(), switch_at=st.integers(0, 12))
def test_switching_to_the_python_walk_midway_changes_nothing(plan, switch_at: int) -> None:
    """``retire`` (the dataplane's ``fast_path`` op): counts harvested, flows forgotten,
    the held slot given back, the Python walk on from the same slot."""
    seeded = SimpleNamespace(Random=lambda _seed=None: random.Random(7))
    with mock.patch.object(portalloc, "random", seeded):
        python, mixed = Side(False), Side(True)
    try:
        now = 1.0
        for step, (gap, batch, tick) in enumerate(plan):
            now += gap
            if step == switch_at and mixed.fast is not None:
                mixed.fast.retire()
                mixed.fast = None
            for side in (python, mixed):
                for link, frame in batch:
                    side.put(link, frame)
                side.walk(now)
                if tick:
                    side.tick(now)
            assert mixed.sent() == python.sent()
            assert mixed.state(now) == python.state(now)
    finally:
        python.close()
        mixed.close()


@pytest.mark.parametrize("compiled", [True, False])
def test_both_walks_go_past_a_hole_in_the_ring(compiled: bool) -> None:
    """A free slot before ready ones (the kernel moved past it) is skipped after the grace,
    by the compiled walk as by the Python one, and the frames after it are carried."""
    with mock.patch.object(portalloc, "random",
                           SimpleNamespace(Random=lambda _seed=None: random.Random(7))):
        side = Side(compiled)
    try:
        for link, frame in FLOW_FRAMES[:3]:
            side.put(link, frame)
        side.walk(1.0)
        side.sent()  # the handshake's frames, collected
        side.slot += 1  # the hole: a slot the kernel never handed over
        for link, frame in FLOW_FRAMES[3:5]:
            side.put(link, frame)
        side.walk(1.5)
        assert side.ring.counters["rx_ring_hole"] == 0
        assert not any(side.sent().values())  # waiting at the free slot
        side.walk(1.5 + ring.HOLE_GRACE)
        assert side.ring.counters["rx_ring_hole"] == 1
        assert side.ring.head == side.slot
        assert sum(len(frames) for frames in side.sent().values()) == 2
    finally:
        side.close()
