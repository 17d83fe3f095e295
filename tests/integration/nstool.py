"""Namespace side: ``python -m tests.integration.nstool COMMAND ...`` run inside a host
or an execution environment (``hyperplane exec db -- ...`` or ``hyperplane exec
--function F -- ...``).  Each command is bounded in time and prints JSON lines:

    serve        TCP (greeting + echo) and UDP (echo / sink / echo as reversed fragments)
    with-capture run a command while ``tests.integration.capture`` captures eth0
    tcp-client   connect, then one round trip per stdin line; close at EOF
    tcp-hold     wait for a go file, connect from a fixed port, report, hold until released
    udp-burst    N datagrams from one port, each echoed
    udp-probe    one datagram on a connected socket; report what comes back (or the error)
    frag-send    a UDP datagram as IPv4 fragments (in order or reversed), wait for the echo
    inject       craft TCP/UDP packets (scapy) and send them with a raw socket
    icmp-error   a port unreachable (scapy) quoting a given flow, checksum right or wrong
    rst-after    watch a flow on eth0, then send a RST relative to the last ACK seen
    flows        open one flow of each kind the timeouts apply to, hold them for a while
    exhaust      hold N connections, try one more, then retry until one is accepted

scapy is imported only by the commands that build packets, so the others start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.integration import craft
from tests.integration.craft import emit, local_address, raw_sender, send_fragments, stop_on_term
from tests.integration.packets import wait_for

CAPTURE = [sys.executable, "-m", "tests.integration.capture"]


def cmd_serve(args: argparse.Namespace) -> int:
    """TCP: greet each connection with the address and port seen, then echo; at the end
    reset the connections still open.  UDP: per port ``echo``, ``sink`` (receive only)
    or ``refrag`` (echo as reversed fragments)."""
    import selectors
    stop = stop_on_term()
    sel = selectors.DefaultSelector()
    record: dict = {"tcp_peers": [], "udp_peers": {}, "udp_datagrams": []}
    for port in filter(None, args.tcp.split(",")):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("0.0.0.0", int(port)))
        lsock.listen(1024)
        lsock.setblocking(False)
        sel.register(lsock, selectors.EVENT_READ, ("listen", None))
    raw = None
    for spec in filter(None, args.udp.split(",")):
        port, _, mode = spec.partition(":")
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        usock.bind(("0.0.0.0", int(port)))
        usock.setblocking(False)
        sel.register(usock, selectors.EVENT_READ, ("udp", mode or "echo"))
        if mode == "refrag":
            raw = raw_sender()
    Path(args.ready).touch()
    deadline = time.monotonic() + args.seconds
    ident = 0x4000
    while not stop and time.monotonic() < deadline:
        for key, _ev in sel.select(0.2):
            kind, mode = key.data
            sock = key.fileobj
            try:
                if kind == "listen":
                    conn, peer = sock.accept()
                    conn.setblocking(True)
                    conn.sendall(json.dumps({"client": peer[0], "port": peer[1]}).encode()
                                 + b"\n")
                    conn.setblocking(False)
                    record["tcp_peers"].append(f"{peer[0]}:{peer[1]}")
                    sel.register(conn, selectors.EVENT_READ, ("conn", None))
                elif kind == "conn":
                    data = sock.recv(65536)
                    if not data:
                        sel.unregister(sock)
                        sock.close()
                    else:
                        sock.setblocking(True)
                        sock.sendall(data)
                        sock.setblocking(False)
                else:
                    data, peer = sock.recvfrom(65536)
                    name = f"{peer[0]}:{peer[1]}"
                    record["udp_peers"][name] = record["udp_peers"].get(name, 0) + 1
                    if len(data) >= 1024:
                        record["udp_datagrams"].append(
                            {"peer": name, "length": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()})
                    if mode == "echo":
                        sock.sendto(data, peer)
                    elif mode == "refrag":
                        ident = ident % 0xFFFF + 1
                        local = sock.getsockname()[1]
                        send_fragments(raw, local_address(peer[0]), peer[0], local,
                                        peer[1], data, True, ident)
            except OSError as exc:
                record.setdefault("errors", []).append(f"{kind}: {exc}")
    for key in list(sel.get_map().values()):
        if key.data[0] == "conn":  # reset, not FIN: nothing retransmitted after the test
            key.fileobj.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        key.fileobj.close()
    Path(args.out).write_text(json.dumps(record))
    return 0


def cmd_with_capture(args: argparse.Namespace) -> int:
    """Run COMMAND while eth0 is captured to ``--out``; exit with COMMAND's code.  On
    SIGTERM both COMMAND and the capture are ended (the capture still writes its file)."""

    def terminated(*_args: object) -> None:
        raise SystemExit(143)  # subprocess.run kills COMMAND; finally stops the capture
    signal.signal(signal.SIGTERM, terminated)
    ready = Path(args.out + ".ready")
    cap = subprocess.Popen(CAPTURE + ["--out", args.out, "--ready", str(ready),
                                      "--seconds", str(args.seconds)])
    try:
        if not wait_for(lambda: ready.exists() or cap.poll() is not None, 20):
            print("capture did not start", file=sys.stderr)
            return 125
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return subprocess.run(command, timeout=args.seconds).returncode
    finally:
        time.sleep(args.linger)  # let the last answers arrive
        cap.terminate()
        cap.wait(10)


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def _read_greeting(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the greeting")
        data += chunk
    return json.loads(data)


def _connect(dst: str, port: int, sport: int = 0, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.settimeout(timeout)
    if sport:
        sock.bind(("", sport))
    try:
        sock.connect((dst, port))
    except OSError:
        sock.close()
        raise
    return sock


def _roundtrip(sock: socket.socket, size: int = 100) -> None:
    message = os.urandom(size // 2).hex().encode()[:size]
    sock.sendall(message)
    got = b""
    while len(got) < len(message):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the peer")
        got += chunk
    if got != message:
        raise ValueError("echo differs")


def cmd_tcp_client(args: argparse.Namespace) -> int:
    """Connect; print where from and what the server saw; one round trip per stdin line."""
    try:
        sock = _connect(args.dst, args.port, args.sport)
        seen = _read_greeting(sock)
    except OSError as exc:
        emit(connected=False, error=_errname(exc))
        return 1
    ip, sport = sock.getsockname()
    emit(connected=True, ip=ip, sport=sport, server_saw=seen)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            _roundtrip(sock, int(line.split()[1]) if len(line.split()) > 1 else 100)
            emit(ok=True)
        except (OSError, ValueError) as exc:
            emit(ok=False, error=_errname(exc) if isinstance(exc, OSError) else str(exc))
    sock.close()
    return 0


def cmd_tcp_hold(args: argparse.Namespace) -> int:
    """Ready, wait for ``go``, connect from ``--sport``, write the result, hold until
    ``release`` (each wait bounded)."""
    directory = Path(args.dir)
    (directory / f"ready-{args.name}").touch()
    wait_for(lambda: (directory / "go").exists(), args.seconds, 0.02)
    try:
        sock = _connect(args.dst, args.port, args.sport)
        seen = _read_greeting(sock)
        result = {"connected": True, "ip": sock.getsockname()[0],
                  "sport": sock.getsockname()[1], "server_saw": seen}
    except OSError as exc:
        sock, result = None, {"connected": False, "error": _errname(exc)}
    tmp = directory / f"result-{args.name}.tmp"
    tmp.write_text(json.dumps(result))
    tmp.rename(directory / f"result-{args.name}")
    wait_for(lambda: (directory / "release").exists(), args.seconds, 0.2)
    if sock is not None:
        sock.close()
    return 0 if result["connected"] else 1


def cmd_udp_burst(args: argparse.Namespace) -> int:
    """``--count`` datagrams from ``--sport``, each waiting for its echo (one retry)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", args.sport))
    sock.connect((args.dst, args.port))
    sock.settimeout(1.0)
    echoed = lost = 0
    for n in range(args.count):
        message = f"{n}:".encode() + bytes(args.size)
        for _attempt in range(2):
            sock.send(message)
            try:
                while sock.recv(65536) != message:
                    pass
                echoed += 1
                break
            except TimeoutError:
                lost += 1
    emit(ip=sock.getsockname()[0], sport=sock.getsockname()[1], sent=args.count,
         echoed=echoed, retries=lost)
    return 0 if echoed == args.count else 1


def cmd_udp_probe(args: argparse.Namespace) -> int:
    """One datagram on a connected socket; what comes back: data, or the error (e.g.
    ECONNREFUSED after a port unreachable); with ``--more``, what else arrives after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", args.sport))
    sock.connect((args.dst, args.port))
    sock.settimeout(args.wait)
    sock.send(b"probe")
    try:
        data = sock.recv(65536)
        result: dict = {"reply": data.decode(errors="replace")}
    except TimeoutError:
        result = {"reply": None}
    except OSError as exc:
        result = {"error": _errname(exc)}
    if args.more:  # then keep listening: anything else that arrives
        result["more"] = []
        deadline = time.monotonic() + args.more
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                result["more"].append(sock.recv(65536).decode(errors="replace"))
            except TimeoutError:
                break
            except OSError as exc:
                result["more"].append(_errname(exc))
    emit(ip=sock.getsockname()[0], sport=sock.getsockname()[1], **result)
    return 0


def cmd_flows(args: argparse.Namespace) -> int:
    """One flow of each kind whose timeout the topology sets, each with the moment
    (``time.monotonic``, the same clock in every namespace) its timeout started; hold
    them ``--hold`` seconds.  The SYN goes to a silent address and is retransmitted once
    (after 1 s) before its socket is closed (at 1.5 s)."""
    made: dict[str, dict] = {}
    keep: list[socket.socket] = []
    # UDP never answered (a sink): the timeout starts with the datagram
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((args.dst, args.sink))
    u.send(b"timeout test")
    made["udp"] = {"protocol": "udp", "sport": u.getsockname()[1], "dport": args.sink,
                   "t": time.monotonic()}
    keep.append(u)
    # UDP answered (an echo): the replied timeout starts with the reply
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((args.dst, args.echo))
    u.settimeout(2)
    u.send(b"timeout test")
    u.recv(100)
    made["udp_replied"] = {"protocol": "udp", "sport": u.getsockname()[1], "dport": args.echo,
                           "t": time.monotonic()}
    keep.append(u)
    # TCP established, then idle from its last segment (the ACK of db's greeting)
    t = _connect(args.dst, args.tcp)
    _read_greeting(t)
    made["tcp_established"] = {"protocol": "tcp", "sport": t.getsockname()[1],
                               "dport": args.tcp, "t": time.monotonic()}
    keep.append(t)
    # TCP closed by both sides: lingers from the second FIN
    t = _connect(args.dst, args.tcp)
    _read_greeting(t)
    sport = t.getsockname()[1]
    t.shutdown(socket.SHUT_WR)
    t.settimeout(2)
    while t.recv(4096):
        pass
    made["tcp_transitory"] = {"protocol": "tcp", "sport": sport, "dport": args.tcp,
                              "t": time.monotonic()}
    t.close()
    # TCP SYN never answered: an address nobody has; the kernel retransmits it after 1 s,
    # and the socket is closed at 1.5 s so that no later SYN opens a new session
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
    s.setblocking(False)
    began = time.monotonic()
    with contextlib.suppress(BlockingIOError):
        s.connect((args.silent, args.tcp))
    made["tcp_syn"] = {"protocol": "tcp", "sport": s.getsockname()[1], "dst": args.silent,
                       "dport": args.tcp, "t": began}
    threading.Timer(max(0.0, began + 1.5 - time.monotonic()), s.close).start()
    # ICMP echo: one ping
    began = time.monotonic()
    subprocess.run(["ping", "-c", "1", "-W", "1", args.dst], stdout=subprocess.DEVNULL,
                   check=False)
    made["icmp"] = {"protocol": "icmp", "dport": 0, "t": began}
    emit(ip=local_address(args.dst), flows=made)
    stop = stop_on_term()
    wait_for(lambda: stop, args.hold, 0.1)
    for sock in keep:
        sock.close()
    return 0


def _attempt(dst: str, port: int) -> tuple[socket.socket | None, dict]:
    """One connection from a port bound first (so a refused one still has its port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("", 0))
    sport = sock.getsockname()[1]
    sock.settimeout(3)
    try:
        sock.connect((dst, port))
        _read_greeting(sock)
    except OSError as exc:
        sock.close()
        return None, {"connected": False, "sport": sport, "error": _errname(exc)}
    return sock, {"connected": True, "sport": sport}


def cmd_exhaust(args: argparse.Namespace) -> int:
    """Hold ``--hold`` connections, try one more (step "refused"); after a stdin line,
    a round trip on each held one (step "held-ok"), then a new connection every
    ``--every`` s until one is accepted, within ``--seconds`` (step "recovered"); close
    them all at the next stdin line (or EOF)."""
    held = []
    for _ in range(args.hold):
        sock, result = _attempt(args.dst, args.port)
        if sock is None:
            emit(step="held", error=result["error"], sports=[])
            return 1
        held.append(sock)
    emit(step="held", sports=[s.getsockname()[1] for s in held])
    sock, result = _attempt(args.dst, args.port)
    if sock is not None:
        held.append(sock)
    emit(step="refused", **result)
    sys.stdin.readline()
    try:
        for s in held:
            _roundtrip(s)
        emit(step="held-ok", ok=True)
    except OSError as exc:
        emit(step="held-ok", ok=False, error=_errname(exc))
    began, attempts, errors, refused = time.monotonic(), 0, [], []
    while time.monotonic() - began < args.seconds:
        attempts += 1
        sock, result = _attempt(args.dst, args.port)
        if sock is not None:
            held.append(sock)
            break
        errors.append(result["error"])
        refused.append(result["sport"])
        time.sleep(args.every)
    emit(step="recovered", after=time.monotonic() - began, attempts=attempts, errors=errors,
         refused_sports=refused, began=began, **result)
    sys.stdin.readline()  # closed when the test has looked
    for s in held:
        s.close()
    return 0


def _add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve")
    p.add_argument("--tcp", default="")
    p.add_argument("--udp", default="", help="PORT[:echo|sink|refrag],...")
    p.add_argument("--out", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--seconds", type=float, default=120)
    p.set_defaults(run=cmd_serve)
    p = sub.add_parser("with-capture")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--linger", type=float, default=0.3)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(run=cmd_with_capture)
    p = sub.add_parser("tcp-client")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sport", type=int, default=0)
    p.set_defaults(run=cmd_tcp_client)
    p = sub.add_parser("tcp-hold")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sport", type=int, default=0)
    p.add_argument("--dir", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--seconds", type=float, default=90)
    p.set_defaults(run=cmd_tcp_hold)
    p = sub.add_parser("udp-burst")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sport", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.set_defaults(run=cmd_udp_burst)
    p = sub.add_parser("udp-probe")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sport", type=int, default=0)
    p.add_argument("--wait", type=float, default=2.0)
    p.add_argument("--more", type=float, default=0.0, help="then listen this long for more")
    p.set_defaults(run=cmd_udp_probe)
    p = sub.add_parser("flows")
    p.add_argument("--dst", required=True)
    p.add_argument("--tcp", type=int, required=True)
    p.add_argument("--echo", type=int, required=True)
    p.add_argument("--sink", type=int, required=True)
    p.add_argument("--silent", required=True, help="an address that never answers")
    p.add_argument("--hold", type=float, default=15)
    p.set_defaults(run=cmd_flows)
    p = sub.add_parser("exhaust")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hold", type=int, default=4)
    p.add_argument("--every", type=float, default=0.25)
    p.add_argument("--seconds", type=float, default=15)
    p.set_defaults(run=cmd_exhaust)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.nstool")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_commands(sub)
    craft.add_commands(sub)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
