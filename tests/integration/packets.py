"""Packet tools for the dataplane integration tests, on both sides of ``hyperplane exec``.

Test side (imported by ``test_dataplane_*.py``):

* ``stats`` / ``conntrack`` / ``drops`` / ``delta``: the dataplane's counters and sessions
  through the real CLI (``hyperplane stats --json``, ``hyperplane conntrack --json``);
  ``conntrack_now`` the same sessions from the control socket, for fine-grained polls;
* ``Job``: a ``hyperplane exec`` command in the background with line-by-line stdout (and
  stdin), always stopped (SIGTERM, then SIGKILL) by ``Job.stop``;
* ``serving`` / ``capturing``: paired start/stop of this module's ``serve`` and of
  ``tests.integration.capture`` inside a namespace, as context managers;
* ``read_pcap`` / ``checksum_problems``: raw frames from a capture, and every IPv4, TCP,
  UDP and ICMP checksum in them recomputed (fragments reassembled first; for ICMP errors
  the quoted IPv4 header too, and the quoted L4 checksum when asked).

Namespace side: ``python -m tests.integration.packets COMMAND ...`` run inside a host
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
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MODULE = [sys.executable, "-m", "tests.integration.packets"]
CAPTURE = [sys.executable, "-m", "tests.integration.capture"]
ETH_P_ALL = 3
DROP_EXTRA = ("rx_error", "internal_error")


# =====================================================================================
# Test side
# =====================================================================================
def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def host(name: str) -> list[str]:
    """``hyperplane exec`` arguments for a command in host NAME's namespace."""
    return ["exec", name, "--"]


def function(name: str) -> list[str]:
    """``hyperplane exec`` arguments for a command in an environment of function NAME."""
    return ["exec", "--function", name, "--"]


def stats(state_dir: Path) -> dict:
    from tests.integration import hp
    return hp.run_json("stats", state_dir=state_dir)


def conntrack(state_dir: Path) -> list[dict]:
    from tests.integration import hp
    return hp.run_json("conntrack", state_dir=state_dir)


def conntrack_now(state_dir: Path) -> list[dict]:
    """The same sessions as ``hyperplane conntrack --json``, asked on the dataplane's
    control socket directly: no process to start, so timing polls are fine-grained."""
    from hyperplane import jsonline
    return jsonline.request(str(state_dir / "dataplane.sock"),
                            {"op": "conntrack", "eni": None})["sessions"]


def counters(snapshot: dict, eni: str | None = None) -> dict:
    return snapshot["enis"].get(eni, {}) if eni else snapshot["global"]


def delta(before: dict, after: dict, key: str, eni: str | None = None) -> int:
    return counters(after, eni).get(key, 0) - counters(before, eni).get(key, 0)


def drops(before: dict, after: dict, eni: str | None = None) -> dict[str, int]:
    """The drop reasons that grew between two ``stats`` snapshots, with how much."""
    from hyperplane.dataplane.pipeline import DROP_REASONS
    grown = {}
    for reason in DROP_REASONS + DROP_EXTRA:
        d = delta(before, after, reason, eni)
        if d:
            grown[reason] = d
    return grown


def sessions(rows: list[dict], **match: object) -> list[dict]:
    """Sessions whose fields match, e.g. ``protocol="udp", sport=5000, dst="10.0.1.10"``.

    ``src``, ``sport``, ``dst``, ``dport`` are the original direction's; ``eni_port``
    is the reply direction's destination port; other keys are top-level fields.
    """
    def value(row: dict, key: str) -> object:
        if key in ("src", "sport", "dst", "dport"):
            return row["original"][key]
        if key == "eni_port":
            return row["reply"]["dport"]
        return row[key]
    return [r for r in rows if all(value(r, k) == v for k, v in match.items())]


def env_address(state_dir: Path, fn: str) -> str:
    """The address of an environment of function ``fn`` (the one an exec takes now)."""
    from tests.integration import hp
    out = hp.run("exec", "--function", fn, "--", "ip", "-4", "-o", "addr", "show", "dev",
                 "eth0", state_dir=state_dir).stdout
    return out.split(" inet ", 1)[1].split("/", 1)[0]


def env_link(state_dir: Path, env_ip: str) -> tuple[str, str]:
    """(namespace, link in hp-plane) of the environment with address ``env_ip``."""
    from hyperplane.model import names
    from tests.integration import hp
    data = hp.recorded(state_dir)
    env = next(e for e in data["envs"] if e["ip"] == env_ip)
    return names.env_ns(env["index"]), names.env_link(env["index"])


class Job:
    """``hyperplane ARGS`` in the background, with its stdout read line by line."""

    def __init__(self, *args: str, state_dir: Path, stdin: bool = False) -> None:
        from tests.integration import hp
        env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
        self.args = args
        self.proc = subprocess.Popen(
            hp.CLI + list(args), cwd=hp.REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self._buf = b""
        self.lines: list[str] = []

    def readline(self, timeout: float = 10.0) -> dict | None:
        """The next JSON line printed, or None at EOF or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self.lines.append(line.decode())
        return json.loads(line)

    def ask(self, line: str, timeout: float = 10.0) -> dict | None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.readline(timeout)

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Close stdin, wait for the exit; (code, the rest of stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return self.proc.returncode, (self._buf + out).decode(), err.decode()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe:
                with contextlib.suppress(OSError):
                    pipe.close()

    def stderr_text(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return ""
        return self.proc.stderr.read().decode(errors="replace")


def started(job: Job, ready: Path, what: str, timeout: float = 20.0) -> None:
    if not wait_for(lambda: ready.exists() or job.proc.poll() is not None, timeout) \
            or not ready.exists():
        job.stop()
        raise AssertionError(f"{what} did not start (exit {job.proc.returncode}): "
                             f"{job.stderr_text()}")


class Server:
    """What ``serve`` recorded, read when it has stopped (``result``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.result: dict = {}


@contextlib.contextmanager
def serving(state_dir: Path, where: list[str], tmp: Path, *, tcp: str = "",
            udp: str = "", name: str = "serve", seconds: float = 120) -> Iterator[Server]:
    """This module's ``serve`` in a namespace while the block runs; its record after."""
    out, ready = tmp / f"{name}.json", tmp / f"{name}.ready"
    args = ["serve", "--out", str(out), "--ready", str(ready), "--seconds", str(seconds)]
    if tcp:
        args += ["--tcp", tcp]
    if udp:
        args += ["--udp", udp]
    job = Job(*where, *MODULE, *args, state_dir=state_dir)
    server = Server(out)
    try:
        started(job, ready, f"serve in {where}")
        yield server
    finally:
        job.stop()
    if out.exists():
        server.result = json.loads(out.read_text())


@contextlib.contextmanager
def capturing(state_dir: Path, where: list[str], pcap: Path,
              seconds: float = 60) -> Iterator[Path]:
    """``tests.integration.capture`` on eth0 of a namespace while the block runs."""
    ready = pcap.with_suffix(".ready")
    job = Job(*where, *CAPTURE, "--out", str(pcap), "--ready", str(ready),
              "--seconds", str(seconds), state_dir=state_dir)
    try:
        started(job, ready, f"capture in {where}")
        yield pcap
    finally:
        job.stop()


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a pcap file (Ethernet link type), in order."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    frames, at = [], 24
    while at + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, at + 8)[0]
        if at + 16 + incl > len(data):
            break  # a record cut short by the end of the capture
        frames.append(data[at + 16:at + 16 + incl])
        at += 16 + incl
    return frames


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _l4_ok(proto: int, src: bytes, dst: bytes, segment: bytes) -> bool:
    if proto == 1:
        return ones_sum(segment) == 0xFFFF
    if proto == 17 and segment[6:8] == b"\0\0":
        return True  # no UDP checksum
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    return ones_sum(pseudo + segment) == 0xFFFF


def ipv4_src(frame: bytes) -> str | None:
    ip = ipv4_of(frame)
    return socket.inet_ntoa(ip[12:16]) if ip else None


def ipv4_dst(frame: bytes) -> str | None:
    ip = ipv4_of(frame)
    return socket.inet_ntoa(ip[16:20]) if ip else None


def ipv4_of(frame: bytes) -> bytes | None:
    """The IPv4 packet of an Ethernet frame (cut to its total length), or None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    return frame[14:14 + struct.unpack_from("!H", frame, 16)[0]]


def addressed_to(frames: list[bytes], ip: str, proto: int | None = None) -> list[bytes]:
    """The IPv4 frames whose destination is ``ip`` (and protocol ``proto``, if given)."""
    want = socket.inet_aton(ip)
    return [f for f in frames if (p := ipv4_of(f)) and p[16:20] == want
            and (proto is None or p[9] == proto)]


def checksum_problems(frames: list[bytes], l4: bool = True,
                      quoted_l4: bool = False) -> list[str]:
    """Every checksum of every IPv4 frame recomputed; one line per wrong one.

    ``l4``: also TCP, UDP and ICMP checksums (fragments are reassembled first).
    For an ICMP error the quoted IPv4 header is checked too, and with ``quoted_l4``
    the quoted TCP/UDP/ICMP checksum when the whole quoted packet is there.
    """
    problems: list[str] = []
    pieces: dict[tuple, list[tuple[int, bytes, bool]]] = {}
    heads: dict[tuple, bytes] = {}
    for n, frame in enumerate(frames):
        ip = ipv4_of(frame)
        if ip is None or len(ip) < 20:
            continue
        ihl = (ip[0] & 0x0F) * 4
        src, dst, proto = ip[12:16], ip[16:20], ip[9]
        where = (f"frame {n}: {socket.inet_ntoa(src)} -> {socket.inet_ntoa(dst)} "
                 f"proto {proto}")
        if ones_sum(ip[:ihl]) != 0xFFFF:
            problems.append(f"{where}: bad IPv4 header checksum")
        if not l4 or proto not in (1, 6, 17):
            continue
        flags_off = struct.unpack_from("!H", ip, 6)[0]
        offset, more = (flags_off & 0x1FFF) * 8, bool(flags_off & 0x2000)
        if offset or more:
            key = (src, dst, ip[4:6], proto)
            pieces.setdefault(key, []).append((offset, ip[ihl:], more))
            if offset == 0:
                heads[key] = where
            continue
        segment = ip[ihl:]
        if not _l4_ok(proto, src, dst, segment):
            problems.append(f"{where}: bad L4 checksum")
        if proto == 1 and segment[0] in (3, 4, 5, 11, 12) and len(segment) >= 28:
            problems += _quoted_problems(segment[8:], where, quoted_l4)
    for key, parts in pieces.items():
        parts.sort()
        data, complete = b"", bool(parts) and parts[0][0] == 0 and not parts[-1][2]
        for offset, payload, _more in parts:
            if offset != len(data):
                complete = False
                break
            data += payload
        if complete and not _l4_ok(key[3], key[0], key[1], data):
            problems.append(f"{heads.get(key, key)}: bad L4 checksum after reassembly")
    return problems


def _quoted_problems(quote: bytes, where: str, quoted_l4: bool) -> list[str]:
    if len(quote) < 20 or quote[0] >> 4 != 4:
        return [f"{where}: quoted packet is not IPv4"]
    qihl = (quote[0] & 0x0F) * 4
    out = []
    if ones_sum(quote[:qihl]) != 0xFFFF:
        out.append(f"{where}: bad quoted IPv4 header checksum")
    qtotal = struct.unpack_from("!H", quote, 2)[0]
    if quoted_l4 and len(quote) >= qtotal and quote[9] in (1, 6, 17):
        if not _l4_ok(quote[9], quote[12:16], quote[16:20], quote[qihl:qtotal]):
            out.append(f"{where}: bad quoted L4 checksum")
    return out


def icmp_errors(frames: list[bytes]) -> list[dict]:
    """The ICMP errors among ``frames``, decoded: outer and quoted addresses and ports."""
    found = []
    for frame in frames:
        ip = ipv4_of(frame)
        if ip is None or ip[9] != 1:
            continue
        ihl = (ip[0] & 0x0F) * 4
        icmp = ip[ihl:]
        if len(icmp) < 28 or icmp[0] not in (3, 11):
            continue
        quote = icmp[8:]
        qihl = (quote[0] & 0x0F) * 4
        ql4 = quote[qihl:]
        row = {"src": socket.inet_ntoa(ip[12:16]), "dst": socket.inet_ntoa(ip[16:20]),
               "type": icmp[0], "code": icmp[1], "mtu": struct.unpack_from("!H", icmp, 6)[0],
               "quoted_src": socket.inet_ntoa(quote[12:16]),
               "quoted_dst": socket.inet_ntoa(quote[16:20]), "quoted_proto": quote[9],
               "quoted_ttl": quote[8]}
        if quote[9] in (6, 17) and len(ql4) >= 4:
            row["quoted_sport"], row["quoted_dport"] = struct.unpack_from("!HH", ql4)
        found.append(row)
    return found


def flows(frames: list[bytes], proto: int) -> list[dict]:
    """TCP/UDP packets (not fragments) of ``frames`` as dicts: src, dst, sport, dport, len."""
    out = []
    for frame in frames:
        ip = ipv4_of(frame)
        if ip is None or ip[9] != proto or struct.unpack_from("!H", ip, 6)[0] & 0x1FFF:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        row = {"src": socket.inet_ntoa(ip[12:16]), "dst": socket.inet_ntoa(ip[16:20]),
               "sport": sport, "dport": dport, "len": len(ip), "ttl": ip[8]}
        if proto == 6:
            row["flags"] = ip[ihl + 13]
        out.append(row)
    return out


def fragments_of(frames: list[bytes]) -> list[dict]:
    """IPv4 fragments among ``frames``: src, dst, id, offset, more, len."""
    out = []
    for frame in frames:
        ip = ipv4_of(frame)
        if ip is None:
            continue
        flags_off = struct.unpack_from("!H", ip, 6)[0]
        if flags_off & 0x3FFF:
            out.append({"src": socket.inet_ntoa(ip[12:16]), "dst": socket.inet_ntoa(ip[16:20]),
                        "id": struct.unpack_from("!H", ip, 4)[0],
                        "offset": (flags_off & 0x1FFF) * 8, "more": bool(flags_off & 0x2000),
                        "len": len(ip)})
    return out


def snmp(text: str) -> dict[str, int]:
    """``/proc/net/snmp`` as {"Tcp.RetransSegs": N, "Udp.InCsumErrors": N, ...}."""
    values: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if ":" in line]
    for names, numbers in zip(lines[::2], lines[1::2], strict=False):
        proto = names[0].rstrip(":")
        for name, number in zip(names[1:], numbers[1:], strict=False):
            with contextlib.suppress(ValueError):
                values[f"{proto}.{name}"] = int(number)
    return values


# =====================================================================================
# Namespace side: python -m tests.integration.packets COMMAND
# =====================================================================================
def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _stop_on_term() -> list[int]:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    return stop


def _raw_sender() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)


def _send_fragments(raw: socket.socket, src: str, dst: str, sport: int, dport: int,
                    payload: bytes, reverse: bool, ident: int) -> int:
    from scapy.layers.inet import IP, UDP, fragment
    packet = IP(src=src, dst=dst, id=ident) / UDP(sport=sport, dport=dport) / payload
    pieces = fragment(IP(bytes(packet)), fragsize=1480)
    if reverse:
        pieces.reverse()
    for piece in pieces:
        raw.sendto(bytes(piece), (dst, 0))
    return len(pieces)


def cmd_serve(args: argparse.Namespace) -> int:
    """TCP: greet each connection with the address and port seen, then echo; at the end
    reset the connections still open.  UDP: per port ``echo``, ``sink`` (receive only)
    or ``refrag`` (echo as reversed fragments)."""
    import selectors
    stop = _stop_on_term()
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
            raw = _raw_sender()
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
                        _send_fragments(raw, _local_address(peer[0]), peer[0], local,
                                        peer[1], data, True, ident)
            except OSError as exc:
                record.setdefault("errors", []).append(f"{kind}: {exc}")
    for key in list(sel.get_map().values()):
        if key.data[0] == "conn":  # reset, not FIN: nothing retransmitted after the test
            key.fileobj.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        key.fileobj.close()
    Path(args.out).write_text(json.dumps(record))
    return 0


def _local_address(peer: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((peer, 9))
        return probe.getsockname()[0]
    finally:
        probe.close()


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


def cmd_frag_send(args: argparse.Namespace) -> int:
    """A ``--size`` UDP datagram as fragments through a raw socket; wait for the echo on a
    UDP socket bound to the same port; report both digests."""
    payload = bytes((i * 31 + 7) & 0xFF for i in range(args.size))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", args.sport))
    sock.settimeout(3.0)
    src = _local_address(args.dst)
    count = _send_fragments(_raw_sender(), src, args.dst, args.sport, args.port, payload,
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
    raw = _raw_sender()
    src = args.src or _local_address(args.dst)
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
    src = _local_address(args.dst)
    quoted = IP(src=args.dst, dst=src) / UDP(sport=args.quoted_sport, dport=args.quoted_dport)
    icmp = ICMP(type=3, code=3) / bytes(quoted / b"forged")
    if args.bad_checksum:
        good = ICMP(bytes(icmp)).chksum
        icmp.chksum = good ^ 0x5A5A
    _raw_sender().sendto(bytes(IP(src=src, dst=args.dst) / icmp), (args.dst, 0))
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
    _raw_sender().sendto(bytes(packet), (args.peer, 0))
    emit(sent=True, seen=seen, last_ack=last_ack, seq=seq)
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
    emit(ip=_local_address(args.dst), flows=made)
    stop = _stop_on_term()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.packets")
    sub = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
