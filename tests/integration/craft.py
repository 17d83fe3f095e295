"""What the namespace-side commands share, and the commands that craft packets.

Part of the tool run inside namespaces (``python -m tests.integration.nstool``): JSON
lines out (``emit``), SIGTERM as a stop flag, raw-socket sending of fragments, and
the commands built with scapy (imported by the commands themselves, so that the
others start fast): ``frag-send``, ``inject``, ``icmp-error``, ``rst-after``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import socket
import struct
import time
from pathlib import Path

from tests.integration.packets import ETH_P_ALL, ipv4_of


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def stop_on_term() -> list[int]:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    return stop


def local_address(peer: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((peer, 9))
        return probe.getsockname()[0]
    finally:
        probe.close()


def raw_sender() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)


def send_fragments(raw: socket.socket, src: str, dst: str, sport: int, dport: int,
                    payload: bytes, reverse: bool, ident: int) -> int:
    from scapy.layers.inet import IP, UDP, fragment
    packet = IP(src=src, dst=dst, id=ident) / UDP(sport=sport, dport=dport) / payload
    pieces = fragment(IP(bytes(packet)), fragsize=1480)
    if reverse:
        pieces.reverse()
    for piece in pieces:
        raw.sendto(bytes(piece), (dst, 0))
    return len(pieces)


def cmd_frag_send(args: argparse.Namespace) -> int:
    """A ``--size`` UDP datagram as fragments through a raw socket; wait for the echo on a
    UDP socket bound to the same port; report both digests."""
    payload = bytes((i * 31 + 7) & 0xFF for i in range(args.size))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", args.sport))
    sock.settimeout(3.0)
    src = local_address(args.dst)
    count = send_fragments(raw_sender(), src, args.dst, args.sport, args.port, payload,
                            args.order == "reversed", args.ident)
    try:
        echo, peer = sock.recvfrom(65536)
        result = {"echo_length": len(echo), "echo_sha256": hashlib.sha256(echo).hexdigest(),
                  "echo_from": f"{peer[0]}:{peer[1]}"}
    except TimeoutError:
        result = {"echo_length": None}
    emit(ip=src, sport=args.sport, fragments=count, length=len(payload),
         sha256=hashlib.sha256(payload).hexdigest(), **result)
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """Craft ``--count`` packets per protocol (tcp, udp) and destination port with scapy
    and send them through a raw socket."""
    from scapy.layers.inet import IP, TCP, UDP
    raw = raw_sender()
    src = args.src or local_address(args.dst)
    sent = 0
    for proto in args.proto.split(","):
        for dport in (int(d) for d in args.dport.split(",")):
            for n in range(args.count):
                if proto == "tcp":
                    l4 = TCP(sport=args.sport, dport=dport, flags=args.flags,
                             seq=(args.seq + n) & 0xFFFFFFFF, ack=args.ack,
                             window=args.window)
                else:
                    l4 = UDP(sport=args.sport, dport=dport) / b"unsolicited"
                raw.sendto(bytes(IP(src=src, dst=args.dst) / l4), (args.dst, 0))
                sent += 1
    emit(sent=sent, src=src)
    return 0


def cmd_icmp_error(args: argparse.Namespace) -> int:
    """A port unreachable to ``--dst`` quoting a UDP datagram ``--dst``:QSPORT -> here:QDPORT
    (as if this host had received it), optionally with a wrong ICMP checksum."""
    from scapy.layers.inet import ICMP, IP, UDP
    src = local_address(args.dst)
    quoted = IP(src=args.dst, dst=src) / UDP(sport=args.quoted_sport, dport=args.quoted_dport)
    icmp = ICMP(type=3, code=3) / bytes(quoted / b"forged")
    if args.bad_checksum:
        good = ICMP(bytes(icmp)).chksum
        icmp.chksum = good ^ 0x5A5A
    raw_sender().sendto(bytes(IP(src=src, dst=args.dst) / icmp), (args.dst, 0))
    emit(sent=1, src=src, bad_checksum=args.bad_checksum)
    return 0


def cmd_rst_after(args: argparse.Namespace) -> int:
    """Watch the flow PEER:PEER_PORT -> here:PORT on eth0; once it has been quiet for
    ``--quiet`` s, send a RST to the peer with seq = the last ACK seen + ``--offset``."""
    from scapy.layers.inet import IP, TCP
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    cap.bind((args.iface, ETH_P_ALL))
    cap.settimeout(0.05)
    peer, local = socket.inet_aton(args.peer), None
    Path(args.ready).touch()
    last_ack, last_seen, seen = None, 0.0, 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        if last_ack is not None and time.monotonic() - last_seen >= args.quiet:
            break
        try:
            frame = cap.recv(65535)
        except TimeoutError:
            continue
        ip = ipv4_of(frame)
        if ip is None or ip[9] != 6 or ip[12:16] != peer:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, _seq, ack = struct.unpack_from("!HHII", ip, ihl)
        if sport == args.peer_port and dport == args.port and ip[ihl + 13] & 0x10:
            local, last_ack, last_seen = ip[16:20], ack, time.monotonic()
            seen += 1
    if last_ack is None:
        emit(sent=False, seen=0)
        return 1
    seq = (last_ack + args.offset) & 0xFFFFFFFF
    packet = IP(src=socket.inet_ntoa(local), dst=args.peer) / TCP(
        sport=args.port, dport=args.peer_port, flags="R", seq=seq)
    raw_sender().sendto(bytes(packet), (args.peer, 0))
    emit(sent=True, seen=seen, last_ack=last_ack, seq=seq)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The crafting commands, on the tool's command line."""
    p = sub.add_parser("frag-send")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sport", type=int, required=True)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--order", choices=("in-order", "reversed"), default="in-order")
    p.add_argument("--ident", type=int, default=0x1234)
    p.set_defaults(run=cmd_frag_send)
    p = sub.add_parser("inject")
    p.add_argument("--proto", required=True, help="tcp, udp or tcp,udp")
    p.add_argument("--src")
    p.add_argument("--dst", required=True)
    p.add_argument("--sport", type=int, required=True)
    p.add_argument("--dport", required=True, help="PORT[,PORT...]")
    p.add_argument("--flags", default="S")
    p.add_argument("--seq", type=int, default=1000)
    p.add_argument("--ack", type=int, default=0)
    p.add_argument("--window", type=int, default=64240)
    p.add_argument("--count", type=int, default=1)
    p.set_defaults(run=cmd_inject)
    p = sub.add_parser("icmp-error")
    p.add_argument("--dst", required=True)
    p.add_argument("--quoted-sport", type=int, required=True)
    p.add_argument("--quoted-dport", type=int, required=True)
    p.add_argument("--bad-checksum", action="store_true")
    p.set_defaults(run=cmd_icmp_error)
    p = sub.add_parser("rst-after")
    p.add_argument("--iface", default="eth0")
    p.add_argument("--peer", required=True)
    p.add_argument("--peer-port", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--ready", required=True)
    p.add_argument("--seconds", type=float, default=15)
    p.set_defaults(run=cmd_rst_after)
