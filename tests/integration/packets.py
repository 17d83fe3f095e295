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

The namespace side is ``tests.integration.nstool`` (its commands, run inside a host or
an environment through ``hyperplane exec``) with ``tests.integration.craft`` (what they
share, and the commands that craft packets with scapy).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MODULE = [sys.executable, "-m", "tests.integration.nstool"]
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


def conntrack_flushed(state_dir: Path) -> list[dict]:
    """``conntrack`` once the dataplane has written its cached sessions' counters back
    (`conntrack` reads the shared table, as documented): a flush is due ``FLUSH_INTERVAL``
    after the previous one and runs at the loop's next tick, which an idle loop takes up to
    a second later, so two intervals after the traffic it has run."""
    import time

    from hyperplane.dataplane.tables import FLUSH_INTERVAL
    time.sleep(2 * FLUSH_INTERVAL + 0.3)
    return conntrack(state_dir)


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
