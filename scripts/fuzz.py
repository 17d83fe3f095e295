#!/usr/bin/env python3
"""Bounded fuzz run of the pure packet pipeline: mutated frames in, no exception out.

A ``Pipeline`` (at most 150 sessions) with three ENIs (two VPCs with the same
addresses; one ENI with a tiny port range and connection limit, one with a
576-byte MTU) and six environments (one without VPC) gets ``--frames``
frames, both directions.  Each frame is one of
~300 valid templates (TCP handshake, data, FIN and RST segments; UDP with and
without checksum; ICMP echo both ways; ICMP errors quoting tracked flows both
ways; first and later fragments of UDP, TCP and ICMP; oversize frames with and
without DF; TTL 1; IP options; partial-checksum and GSO virtio headers; ARP;
VLAN and IPv6 frames), sent as is (so that sessions exist and replies match)
or mutated: random bytes changed (mostly in the first 80: virtio, Ethernet, IPv4
and L4 headers), cut short at a random length, or lengthened with stale buffer
bytes.  Half the frames are received in the dataplane's reusable 64 KB buffer,
half in a buffer of exactly the frame's size (so that any read past the frame
raises).  The clock advances so that sessions, held fragments and ARP entries
expire; the timer tick runs as in the dataplane.

Any exception stops the run with the seed, the frame number and the frame in
hex, and exit status 1.  At the end it prints frames/s, the outputs and every
non-zero counter.

    python scripts/fuzz.py [--frames 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR  # noqa: E402
from scapy.layers.inet import fragment as scapy_fragment  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import ARP, Dot1Q, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from hyperplane.dataplane import packet as p  # noqa: E402
from hyperplane.dataplane.pipeline import DROP_REASONS, EniPort, EnvPort, Pipeline  # noqa: E402
from hyperplane.model.settings import Timeouts  # noqa: E402

VNET = bytes(p.VNET_LEN)
GW_IP, GW_MAC = "169.254.0.1", "02:e2:00:00:00:00"
REMOTES = ("10.0.1.10", "10.0.2.20", "10.0.1.11")  # on-link, off-link, unresolved
REMOTE_MAC = "02:bb:00:00:00:10"
ROUTER_IP, ROUTER_MAC = "10.0.1.1", "02:aa:00:00:00:01"
BIG = bytes(range(256)) * 8


class Counter:
    """A ``tx`` that counts frames and bytes (the pipeline hands out views of its buffer)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def __call__(self, frame) -> None:
        self.frames += 1
        self.bytes += len(frame)


def build() -> tuple[Pipeline, list[EniPort], list[EnvPort], Counter]:
    pl = Pipeline(Timeouts(tcp_established=60, tcp_transitory=20, tcp_syn=5, udp=10,
                           udp_replied=15, icmp=5), max_sessions=150)
    tx = Counter()
    enis = [
        EniPort("eni-a", "hpi0", "10.0.1.4", "02:e1:00:00:00:00", "10.0.1.0/24", ROUTER_IP),
        EniPort("eni-b", "hpi1", "10.0.1.4", "02:e1:00:00:00:01", "10.0.1.0/24", ROUTER_IP,
                connection_limit=40, port_range=(1000, 1031)),
        EniPort("eni-c", "hpi2", "10.0.1.5", "02:e1:00:00:00:02", "10.0.1.0/24", ROUTER_IP,
                mtu=576),
    ]
    for eni in enis:
        eni.arp[p.ip_to_bytes(ROUTER_IP)] = p.mac_to_bytes(ROUTER_MAC)
        eni.arp[p.ip_to_bytes(REMOTES[0])] = p.mac_to_bytes(REMOTE_MAC)
        eni.tx = tx
        pl.enis[eni.id] = eni
    envs = []
    for index in range(6):
        env = EnvPort(f"hpe{index}", f"169.254.128.{index + 1}", f"02:e0:00:00:00:{index:02x}",
                      GW_IP, GW_MAC, enis[index % 3] if index < 5 else None)
        env.tx = tx
        envs.append(env)
        pl.envs[env.ifname] = env
    return pl, enis, envs, tx


def env_templates(env: EnvPort, index: int) -> list[bytes]:
    src = env.ip
    eth = Ether(src=p.mac_to_str(env.mac_bytes), dst=GW_MAC)

    def frame(pkt, vnet: bytes = VNET) -> bytes:
        return vnet + bytes(eth / pkt)

    out = []
    sport = 40000 + index
    for dst in REMOTES:
        out += [
            frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=8080, flags="S", seq=1000,
                                             options=[("MSS", 1460), ("WScale", 7)])),
            frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=8080, flags="A", seq=1001,
                                             ack=5001)),
            frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=8080, flags="PA", seq=1001,
                                             ack=5001) / b"GET / HTTP/1.1\r\n\r\n"),
            frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=8080, flags="FA", seq=1019,
                                             ack=5001)),
            frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=8080, flags="R", seq=1001)),
            frame(IP(src=src, dst=dst) / UDP(sport=5353 + index, dport=53) / b"query"),
            frame(IP(src=src, dst=dst) / UDP(sport=5353 + index, dport=53, chksum=0) / b"q"),
            frame(IP(src=src, dst=dst) / ICMP(type=8, id=7 + index, seq=1) / b"ping"),
        ]
    dst = REMOTES[0]
    out += [
        frame(IP(src=src, dst=dst, ttl=1) / UDP(sport=33434, dport=33434 + index)),
        frame(IP(src=src, dst=dst, options=[IPOption_NOP()] * 4 + [IPOption_RR()])
              / UDP(sport=5353 + index, dport=53) / b"opts"),
        frame(IP(src=src, dst=dst, flags="DF") / UDP(sport=6000, dport=7000) / BIG[:1400]),
        frame(IP(src=src, dst=dst) / UDP(sport=6000, dport=7000) / BIG[:1400]),
        frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=8080, flags="PA") / BIG[:100],
              struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 16)),
        frame(IP(src=src, dst=dst, flags="DF") / TCP(sport=sport, dport=8080, flags="A")
              / BIG[:1600], struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)),
        frame(IP(src=src, dst=dst) / ICMP(type=3, code=3)
              / Raw(bytes(IP(src=dst, dst=src) / UDP(sport=53, dport=5353 + index)))),
        frame(IP(src=src, dst=dst) / ICMP(type=13)),
        frame(IP(src=src, dst=dst, proto=47) / Raw(b"gre!" * 4)),
        frame(ARP(hwsrc=p.mac_to_str(env.mac_bytes), psrc=src, pdst=GW_IP)),
        VNET + bytes(eth / Dot1Q(vlan=5) / IP(src=src, dst=dst) / UDP()),
        VNET + bytes(eth / IPv6() / UDP()),
    ]
    for ident, l4 in ((100 + index, UDP(sport=6000, dport=7000)),
                      (200 + index, TCP(sport=sport, dport=8080, flags="PA")),
                      (300 + index, ICMP(type=8, id=7 + index))):
        out += [frame(f) for f in scapy_fragment(IP(src=src, dst=dst, id=ident) / l4 / BIG[:1200],
                                                 400)]
    return out


def eni_templates(eni: EniPort, index: int) -> list[bytes]:
    ip = eni.ip
    eth = Ether(src=REMOTE_MAC, dst=p.mac_to_str(eni.mac_bytes))

    def frame(pkt) -> bytes:
        return VNET + bytes(eth / pkt)

    out = []
    src = REMOTES[0]
    for env_index in range(index, 5, 3):
        sport = 40000 + env_index
        udp = 5353 + env_index
        sent_tcp = IP(src=ip, dst=src, ttl=63) / TCP(sport=sport, dport=8080, flags="S",
                                                     seq=1000)
        sent_udp = IP(src=ip, dst=src, ttl=63) / UDP(sport=udp, dport=53) / b"query"
        sent_ping = IP(src=ip, dst=src, ttl=63) / ICMP(type=8, id=7 + env_index, seq=1) / b"ping"
        out += [
            frame(IP(src=src, dst=ip) / TCP(sport=8080, dport=sport, flags="SA", seq=5000,
                                            ack=1001, options=[("WScale", 7)])),
            frame(IP(src=src, dst=ip) / TCP(sport=8080, dport=sport, flags="A", seq=5001,
                                            ack=1019) / b"HTTP/1.1 200 OK\r\n"),
            frame(IP(src=src, dst=ip) / TCP(sport=8080, dport=sport, flags="FA", seq=5018,
                                            ack=1020)),
            frame(IP(src=src, dst=ip) / TCP(sport=8080, dport=sport, flags="R", seq=5001)),
            frame(IP(src=src, dst=ip) / TCP(sport=8080, dport=sport, flags="RA", seq=0,
                                            ack=1001)),
            frame(IP(src=src, dst=ip) / UDP(sport=53, dport=udp) / b"answer"),
            frame(IP(src=src, dst=ip) / ICMP(type=0, id=7 + env_index, seq=1) / b"ping"),
            frame(IP(src=ROUTER_IP, dst=ip) / ICMP(type=3, code=3) / Raw(bytes(sent_udp))),
            frame(IP(src=ROUTER_IP, dst=ip) / ICMP(type=3, code=4, nexthopmtu=1280)
                  / Raw(bytes(sent_tcp))),
            frame(IP(src=ROUTER_IP, dst=ip) / ICMP(type=11, code=0) / Raw(bytes(sent_ping))),
            frame(IP(src=ROUTER_IP, dst=ip) / ICMP(type=3, code=1) / Raw(bytes(sent_tcp)[:28])),
        ]
        out += [frame(f) for f in scapy_fragment(IP(src=src, dst=ip, id=900 + env_index)
                                                 / UDP(sport=53, dport=udp) / BIG[:1200], 400)]
    out += [
        frame(IP(src=src, dst=ip) / TCP(sport=5555, dport=22, flags="S")),
        frame(IP(src=src, dst=ip) / ICMP(type=8, id=1)),
        frame(IP(src=src, dst="10.0.1.99") / UDP(sport=1, dport=2)),
        frame(ARP(op=1, hwsrc=REMOTE_MAC, psrc=src, pdst=ip)),
        frame(ARP(op=2, hwsrc="02:cc:00:00:00:11", psrc=REMOTES[2], pdst=ip)),
        VNET + bytes(eth / Dot1Q(vlan=5) / IP(src=src, dst=ip) / UDP()),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    pl, enis, envs, tx = build()
    templates: list[tuple[object, bytes]] = []
    for index, env in enumerate(envs):
        templates += [(env, t) for t in env_templates(env, index)]
    for index, eni in enumerate(enis):
        templates += [(eni, t) for t in eni_templates(eni, index)]
    print(f"fuzz: {args.frames} frames, seed {args.seed}, {len(templates)} templates, "
          f"{len(enis)} ENIs, {len(envs)} environments", flush=True)

    rnd = random.Random(args.seed)
    randrange, rand = rnd.randrange, rnd.random
    shared = bytearray(65536 + 256)
    receive = pl.receive
    now = 0.0
    start = time.perf_counter()
    report_every = max(1, args.frames // 10)
    count = len(templates)
    for number in range(args.frames):
        port, template = templates[randrange(count)]
        n = len(template)
        exact = rand() < 0.5
        buf = bytearray(template) if exact else shared
        if not exact:
            buf[:n] = template
        if rand() >= 0.2:  # 80 % mutated, 20 % sent as is
            for _ in range(1 + randrange(4)):
                at = randrange(min(n, 80)) if rand() < 0.8 else randrange(n)
                buf[at] = randrange(256)
            shape = rand()
            if shape < 0.25:
                n = randrange(n + 1)
            elif shape < 0.3 and not exact:
                n = min(len(shared), n + randrange(1, 64))  # stale bytes after the frame
        try:
            receive(port, buf, n, now)
            if number & 255 == 0:
                pl.tick(now)
        except Exception:
            traceback.print_exc()
            print(f"fuzz: exception at frame {number} (seed {args.seed}) on "
                  f"{getattr(port, 'ifname', port)}: {bytes(buf[:n]).hex()}", file=sys.stderr)
            return 1
        now += 0.0002 if rand() < 0.999 else 5.0
        if (number + 1) % report_every == 0:
            elapsed = time.perf_counter() - start
            print(f"  {number + 1:>9} frames  {(number + 1) / elapsed:>9,.0f} frames/s  "
                  f"{pl.session_count():>6} sessions", flush=True)
    elapsed = time.perf_counter() - start
    print(f"fuzz: {args.frames} frames in {elapsed:.1f} s, {args.frames / elapsed:,.0f} "
          f"frames/s, no exception; {tx.frames} frames out, {pl.session_count()} sessions")
    for name, value in sorted(pl.counters.items()):
        if value:
            kind = "drop" if name in DROP_REASONS else "    "
            print(f"  {kind} {name:<24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
