"""The fanout program (``bpf.fanout``) against its Python model (``bpf.steer``), through the
interpreter (``bpf.run``) and through the kernel itself.

The kernel's check: the program, ending in a test tail ``mod #N; add #1``, is attached as the
socket filter of an AF_UNIX datagram socket; the filter's result trims each datagram, so
the received length minus 1 is the worker.  A load past the end makes the kernel return 0:
the datagram is dropped (a non-blocking receive finds nothing)."""

from __future__ import annotations

import random
import socket
import struct
from collections import Counter
from collections.abc import Iterator

import pytest

from hyperplane.dataplane import bpf, ring

ENV_NET, VPC_NET, GW_NET = 0xA9FE8000, 0x0A000000, 0xA9FE0000  # /17, /16, /17
TCP, UDP, ICMP = 6, 17, 1
ECHO_REPLY, UNREACHABLE, ECHO_REQUEST, TIME_EXCEEDED = 0, 3, 8, 11


def ipv4(src: int, dst: int, proto: int, payload: bytes, ihl: int = 5) -> bytes:
    """An IPv4 packet; ``ihl`` 6 adds one word of NOP options."""
    head = struct.pack("!BBHHHBBHII", 0x40 | ihl, 0, 4 * ihl + len(payload), 0, 0, 64, proto,
                       0, src, dst)
    return head + b"\x01" * 4 * (ihl - 5) + payload


def transport(proto: int, sport: int, dport: int) -> bytes:
    """A TCP SYN header or a UDP header with 4 bytes of data."""
    if proto == TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)
    return struct.pack("!HHHH", sport, dport, 12, 0) + b"data"


def icmp(kind: int, rng: random.Random, src: int, dst: int) -> bytes:
    """An echo (identifier, sequence) or an error quoting a TCP/UDP packet from dst to src."""
    if kind in (ECHO_REQUEST, ECHO_REPLY):
        return struct.pack("!BBHHH", kind, 0, 0, rng.getrandbits(16), 1) + b"ping"
    quoted = ipv4(dst, src, rng.choice((TCP, UDP)),
                  transport(TCP, rng.getrandbits(16), rng.getrandbits(16)), rng.choice((5, 6)))
    return struct.pack("!BBHI", kind, 0, 0, 0) + quoted


def random_packet(rng: random.Random) -> bytes:
    """An environment-side or VPC-side TCP/UDP/ICMP packet, a quarter of them truncated."""
    src = rng.choice((ENV_NET, VPC_NET, GW_NET)) | rng.getrandbits(15)
    dst = VPC_NET | rng.getrandbits(16)
    proto, ihl = rng.choice((TCP, UDP, ICMP)), rng.choice((5, 6))
    if proto == ICMP:
        kind = rng.choice((ECHO_REQUEST, ECHO_REPLY, UNREACHABLE, TIME_EXCEEDED))
        payload = icmp(kind, rng, src, dst)
    else:
        payload = transport(proto, rng.getrandbits(16), rng.getrandbits(16))
    pkt = ipv4(src, dst, proto, payload, ihl)
    return pkt[:rng.randrange(len(pkt) + 1)] if rng.random() < 0.25 else pkt


def packets(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [random_packet(rng) for _ in range(count)]


def tail(workers: int) -> tuple:
    """The test tail: the worker plus one, so that the result never drops a steered packet."""
    return ((bpf.MOD_K, 0, 0, workers), (bpf.ADD_K, 0, 0, 1))


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_the_interpreted_program_agrees_with_steer(workers: int) -> None:
    prog, failed = bpf.fanout(workers), 0
    for pkt in packets(3000, seed=workers):
        assert bpf.run(prog, 0, pkt) % workers == bpf.steer(pkt, workers), pkt.hex()
        failed += bpf.run(bpf.fanout(workers, tail(workers)), 0, pkt) == 0
    assert 100 < failed < 1000  # truncated packets met failing loads, most packets did not


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def kernel_worker(pair: tuple[socket.socket, socket.socket], pkt: bytes) -> int | None:
    """The worker the attached filter picks for ``pkt``; None: the kernel dropped it."""
    sender, receiver = pair
    sender.send(pkt)  # delivered (or dropped by the filter) before send returns
    try:
        return len(receiver.recv(65536, socket.MSG_DONTWAIT)) - 1
    except BlockingIOError:
        return None


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_the_kernel_agrees_with_steer(pair: tuple, workers: int) -> None:
    prog = bpf.fanout(workers, tail(workers))
    ring.attach_filter(pair[1], prog)
    mismatches, dropped = [], 0
    for pkt in packets(2000, seed=100 + workers):
        got, model = kernel_worker(pair, pkt), bpf.run(prog, 0, pkt)
        if model == 0:  # a failing load: the kernel drops, steer says worker 0
            dropped += 1
            assert bpf.steer(pkt, workers) == 0
            if got is not None:
                mismatches.append((pkt.hex(), got, None))
        elif got != bpf.steer(pkt, workers):
            mismatches.append((pkt.hex(), got, bpf.steer(pkt, workers)))
    assert mismatches == []
    assert dropped > 50


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_environment_flows_spread_evenly_even_with_even_ports(workers: int) -> None:
    rng, prog = random.Random(7), bpf.fanout(workers)
    ports = rng.sample(range(32768, 61000, 2), 100)  # Linux's connect() favours even ports
    counts: Counter[int] = Counter()
    for host in range(1, 51):
        for port in ports:
            pkt = ipv4(ENV_NET | host, VPC_NET | 10, TCP, transport(TCP, port, 443))
            worker = bpf.steer(pkt, workers)
            assert bpf.run(prog, 0, pkt) % workers == worker
            counts[worker] += 1
    total = sum(counts.values())
    assert sorted(counts) == list(range(workers))
    assert all(0.7 / workers < c / total < 1.3 / workers for c in counts.values()), counts


def slice_of(worker: int, workers: int) -> range:
    """The ports steered to ``worker``: those with ``port * workers >> 16 == worker``."""
    return range(-(-worker * 65536 // workers), -(-(worker + 1) * 65536 // workers))


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_vpc_packets_go_to_the_owner_of_the_destination_port_slice(workers: int) -> None:
    prog = bpf.fanout(workers)
    for port in range(0, 65536, 7):
        pkt = ipv4(VPC_NET | 10, ENV_NET | 1, TCP, transport(TCP, 443, port))
        assert bpf.steer(pkt, workers) == port * workers >> 16
        assert bpf.run(prog, 0, pkt) % workers == port * workers >> 16


@pytest.mark.parametrize("workers", [2, 3])
def test_each_worker_is_steered_exactly_its_slice(workers: int) -> None:
    steered: dict[int, list[int]] = {i: [] for i in range(workers)}
    for port in range(65536):
        steered[bpf.steer(ipv4(VPC_NET | 10, ENV_NET | 1, UDP, transport(UDP, 53, port)),
                          workers)].append(port)
    assert {i: range(ports[0], ports[-1] + 1) for i, ports in steered.items()} == {
        i: slice_of(i, workers) for i in range(workers)}
    assert all(len(ports) == len(slice_of(i, workers)) for i, ports in steered.items())


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8, 64])
def test_the_program_fits_the_kernel_limits(workers: int) -> None:
    for prog in (bpf.fanout(workers), bpf.fanout(workers, tail(workers))):
        assert len(prog) <= bpf.MAX_INSNS
        for pc, (code, jt, jf, k) in enumerate(prog):
            if code == bpf.JA:
                assert pc + 1 + k < len(prog)
            elif code in (bpf.JEQ_K, bpf.JGT_K, bpf.JGE_K):
                assert 0 <= jt <= 255 and 0 <= jf <= 255
                assert pc + 1 + max(jt, jf) < len(prog)
        assert prog[-1][0] == bpf.RET_A
        assert len(bpf.assemble(prog)) == bpf.INSN.size * len(prog)
