#!/usr/bin/env python3
"""Micro-benchmark of the pure fast path: translated TCP frames env -> ENI.

Builds one ENI and one environment with its next hop already resolved, opens
``--flows`` TCP connections (SYN out, SYN-ACK back, ACK out, so each session is
established), then pushes ``--frames`` data segments (ACK|PSH, 100 bytes of
payload) round-robin over the flows through ``Pipeline.receive`` with a
list-append ``tx``.  Frames are built with ``packet``'s helpers, not scapy (65,536
flows need 262,144 of them); flow ``i`` uses source port ``1024 + i % 64000`` and
server port ``8080 + i // 64000``, and the ENI's connection limit is raised to the
number of flows.  The sessions live where ``Pipeline()`` puts them by default (the
session store in anonymous shared memory, ``--cache`` of them as objects), so with
more flows than the cache holds every frame is a cache miss: the figure then
includes reading the session back from its record and writing another one back.
Every frame is first copied into one reusable receive buffer, as the dataplane's
``recv_into`` does; the cost of that copy alone is measured separately and subtracted.
Times are process CPU time (less sensitive than wall time to other jobs on a shared
machine).  Prints
ns/packet, the best of ``--repeat`` runs.  With ``--spill`` the environment
has a second (spill) ENI and its primary is full (connection limit 0), so
every flow is carried by the spill ENI: each frame misses in the primary's
table first (the cost of a spilled flow).

    python scripts/pipeline_bench.py [--frames 200000] [--flows 64] [--repeat 5] [--spill]
                                     [--cache N]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hyperplane.dataplane import packet as p  # noqa: E402
from hyperplane.dataplane.pipeline import EniPort, EnvPort, Pipeline  # noqa: E402

ENI_IP, ENI_MAC, ROUTER, DB, DB_MAC = "10.0.1.4", "02:e1:00:00:00:00", "10.0.1.1", "10.0.1.10", \
    "02:bb:00:00:00:10"
ENV_IP, ENV_MAC, GW_IP, GW_MAC = "169.254.128.1", "02:e0:00:00:00:00", "169.254.0.1", \
    "02:e2:00:00:00:00"
SPILL_IP = "10.0.1.5"


TCP_FLAGS = {"S": 0x02, "SA": 0x12, "A": 0x10, "PA": 0x18}


def tcp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
              flags: str, seq: int, ack: int = 0, payload: bytes = b"") -> bytes:
    """A TCP/IPv4 frame with valid checksums, built without scapy (65,536 flows need speed)."""
    s, d = p.ip_to_bytes(src), p.ip_to_bytes(dst)
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, TCP_FLAGS[flags],
                                65535, 0, 0) + payload)
    pseudo = s + d + bytes([0, p.PROTO_TCP]) + len(tcp).to_bytes(2, "big")
    struct.pack_into("!H", tcp, 16, p.checksum(pseudo + tcp))
    ip = p.ipv4_header(20 + len(tcp), 1, 0, 64, p.PROTO_TCP, s, d)
    return (bytes(p.VNET_LEN) + p.mac_to_bytes(dst_mac) + p.mac_to_bytes(src_mac)
            + b"\x08\x00" + ip + bytes(tcp))


def ports_of(i: int) -> tuple[int, int]:
    """The environment's source port and the server port of flow ``i`` (any number of flows)."""
    return 1024 + i % 64000, 8080 + i // 64000


def setup(flows: int, spill: bool = False,
          cache: int = 0) -> tuple[Pipeline, EnvPort, EniPort, list[bytes], list]:
    pl = Pipeline(cache_size=cache) if cache else Pipeline()  # type: ignore[call-arg]
    limit = max(65000, flows)  # the default ENI limit is 65,000 connections
    eni = EniPort("eni-1", "hpi0", ENI_IP, ENI_MAC, "10.0.1.0/24", ROUTER, limit)
    eni.arp[p.ip_to_bytes(DB)] = p.mac_to_bytes(DB_MAC)
    env = EnvPort("hpe0", ENV_IP, ENV_MAC, GW_IP, GW_MAC, eni)
    pl.enis[eni.id], pl.envs[env.ifname] = eni, env
    if spill:  # the primary is full: every flow goes to (and its replies come from) eni-2
        eni.connection_limit = 0
        eni = EniPort("eni-2", "hpi1", SPILL_IP, ENI_MAC, "10.0.1.0/24", ROUTER, limit)
        eni.arp[p.ip_to_bytes(DB)] = p.mac_to_bytes(DB_MAC)
        pl.enis[eni.id], env.spill = eni, (eni,)
    out: list = []
    back: list = []
    eni.tx = out.append
    env.tx = back.append
    data = []
    for i in range(flows):
        sport, dport = ports_of(i)
        for raw, port in (
            (tcp_frame(ENV_MAC, GW_MAC, ENV_IP, DB, sport, dport, "S", 1), env),
            (tcp_frame(DB_MAC, ENI_MAC, DB, eni.ip, dport, sport, "SA", 9, 2), eni),
            (tcp_frame(ENV_MAC, GW_MAC, ENV_IP, DB, sport, dport, "A", 2, 10), env),
        ):
            buf = bytearray(raw)
            pl.receive(port, buf, len(buf), 0.0)
        data.append(tcp_frame(ENV_MAC, GW_MAC, ENV_IP, DB, sport, dport, "PA", 2, 10,
                              b"x" * 100))
    assert len(out) == 2 * flows, (len(out), pl.counters)
    return pl, env, eni, data, out


def run(frames: int, flows: int, spill: bool = False, cache: int = 0) -> tuple[float, float, int]:
    pl, env, _eni, data, out = setup(flows, spill, cache)
    buf = bytearray(65536 + 256)
    receive = pl.receive
    order = [data[i % flows] for i in range(frames)]
    # the copy alone (what recv_into costs in userspace terms)
    clock = time.process_time
    t0 = clock()
    for raw in order:
        n = len(raw)
        buf[:n] = raw
    copy = clock() - t0
    out.clear()
    t0 = clock()
    for raw in order:
        n = len(raw)
        buf[:n] = raw
        receive(env, buf, n, 1.0)
    total = clock() - t0
    forwarded = len(out)
    out.clear()
    return total, copy, forwarded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--flows", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=int, default=0,
                        help="sessions kept as objects (default: the Pipeline's own)")
    parser.add_argument("--spill", action="store_true",
                        help="every flow carried by a spill ENI (the primary full)")
    args = parser.parse_args(argv)
    best = None
    for _ in range(args.repeat):
        total, copy, forwarded = run(args.frames, args.flows, args.spill, args.cache)
        if forwarded != args.frames:
            print(f"only {forwarded} of {args.frames} frames forwarded", file=sys.stderr)
            return 1
        ns = (total - copy) / args.frames * 1e9
        best = ns if best is None else min(best, ns)
        print(f"  run: {total / args.frames * 1e9:7.0f} ns/packet with copy, "
              f"{ns:7.0f} ns/packet pipeline only")
    what = "spilled flows" if args.spill else "TCP"
    print(f"fast path env->ENI {what}: {best:.0f} ns/packet (best of {args.repeat}, "
          f"{args.frames} frames over {args.flows} flows), {1e9 / best:,.0f} packets/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
