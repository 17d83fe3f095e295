"""Benchmark probes that run inside a namespace and print one JSON line.

    serve    --ports P[,P...]   accept TCP connections; answer each request line
                                with "ok\\n"; hold connections until the peer closes
    rtt      --dst IP           ICMP echo at a low rate, RTT samples in microseconds
    connrate --dst IP --port P  open, one request, close, as fast as possible
    hold     --dst IP --ports   open N connections and hold them until stdin closes

They are the project's own Python clients, so the same client measures every
path (userspace Hyperplane, kernel NAT, plain routing) and ratios compare the
paths, not the clients.  Each is bounded in count and time.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

ICMP_ECHO = 8


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    new_hard = max(hard, want)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(ports: list[int], ready: str | None, seconds: float,
          close_ports: tuple[int, ...] = ()) -> dict:
    """An epoll server: each line received is answered with "ok".

    On ``close_ports`` the server closes right after answering (so TIME_WAIT
    stays on the server side and the client can open connections for as long
    as it likes); on the others connections are held until the client closes.
    """
    _raise_nofile(200_000)
    ep = select.epoll()
    listeners = {}
    for port in ports:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("0.0.0.0", port))
        lsock.listen(4096)
        lsock.setblocking(False)
        listeners[lsock.fileno()] = lsock
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        ep.register(lsock.fileno(), select.EPOLLIN)
    if ready:
        Path(ready).touch()
    conns: dict[int, socket.socket] = {}
    closing: set[int] = set()
    accepted = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _ev in ep.poll(0.5):
            if fd in listeners:
                while True:
                    try:
                        conn, _ = listeners[fd].accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    if conn.getsockname()[1] in close_ports:
                        closing.add(conn.fileno())
                    conns[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
                    accepted += 1
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closing.discard(fd)
                ep.unregister(fd)
                del conns[fd]
                conn.close()
                continue
            try:
                conn.send(b"ok\n")
            except OSError:
                pass
            if fd in closing:
                closing.discard(fd)
                ep.unregister(fd)
                del conns[fd]
                conn.close()
    return {"accepted": accepted}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return total ^ 0xFFFF


def rtt(dst: str, count: int, interval: float, timeout: float = 1.0) -> dict:
    """ICMP echo round trips in microseconds (lost probes are counted, not timed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    samples: list[float] = []
    lost = 0
    payload = b"hyperplane-rtt-probe-" + bytes(35)
    for seq in range(count):
        header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
        packet = struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(header + payload), ident, seq)
        sent = time.perf_counter()
        sock.sendto(packet + payload, (dst, 0))
        deadline = sent + timeout
        got = False
        while not got:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            data = sock.recv(2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _code, _c, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
            if kind == 0 and rid == ident and rseq == seq:
                samples.append((time.perf_counter() - sent) * 1e6)
                got = True
        if not got:
            lost += 1
        pause = interval - (time.perf_counter() - sent)
        if pause > 0:
            time.sleep(pause)
    return {"samples_us": samples, "lost": lost}


def connrate(dst: str, port: int, seconds: float) -> dict:
    """New TCP connections per second: connect, one request, one answer, close."""
    done = failed = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect((dst, port))
            sock.sendall(b"hi\n")
            answer = sock.recv(16)
            while answer and not answer.endswith(b"\n"):
                answer += sock.recv(16)
            if answer and sock.recv(16) == b"":  # the server closes first
                done += 1
            else:
                failed += 1
        except OSError:
            failed += 1
        finally:
            sock.close()
    elapsed = time.monotonic() - started
    return {"connections": done, "failed": failed, "seconds": elapsed,
            "per_second": done / elapsed if elapsed else 0.0}


def hold(dst: str, ports: list[int], count: int, ready: str | None, seconds: float) -> dict:
    """Open ``count`` connections (spread over ``ports``) and hold them open."""
    _raise_nofile(count + 1000)
    conns: list[socket.socket] = []
    failed = 0
    started = time.monotonic()
    for i in range(count):
        sock = None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect((dst, ports[i % len(ports)]))
            conns.append(sock)
        except OSError as exc:
            if sock is not None:
                sock.close()
            failed += 1
            if exc.errno in (errno.EMFILE, errno.ENFILE) or failed > 100:
                break
    opened = time.monotonic() - started
    if ready:  # written whole, then renamed: a reader never sees it half-written
        Path(ready + ".tmp").write_text(json.dumps({"open": len(conns), "failed": failed,
                                                    "seconds": opened}))
        os.replace(ready + ".tmp", ready)
    # hold until told to stop (stdin closes) or the time is up
    select.select([sys.stdin], [], [], seconds)
    for sock in conns:
        sock.close()
    return {"open": len(conns), "failed": failed, "open_seconds": opened}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark probes")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--ports", required=True)
    p.add_argument("--ready")
    p.add_argument("--close-ports", default="")
    p.add_argument("--seconds", type=float, default=3600)
    p = sub.add_parser("rtt")
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.01)
    p = sub.add_parser("connrate")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=3)
    p = sub.add_parser("hold")
    p.add_argument("--dst", required=True)
    p.add_argument("--ports", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--ready")
    p.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        close = tuple(int(x) for x in args.close_ports.split(",") if x)
        result = serve([int(x) for x in args.ports.split(",")], args.ready, args.seconds, close)
    elif args.cmd == "rtt":
        result = rtt(args.dst, args.count, args.interval)
    elif args.cmd == "connrate":
        result = connrate(args.dst, args.port, args.seconds)
    else:
        result = hold(args.dst, [int(x) for x in args.ports.split(",")], args.count,
                      args.ready, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
