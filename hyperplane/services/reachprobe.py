"""Probe connections with real packets, many at once, from many namespaces (``reach``,
tests).

    python -m hyperplane.services.reachprobe [--timeout S] tcp:HOST:PORT udp:HOST:PORT
                                             http:HOST:PORT ...
        one JSON list on stdout, one object per target, from this process's namespace:
        {"target": "tcp:10.0.1.10:8080", "result": R, "detail": "..."} where R is
        connected / replied (udp) / refused / timeout / unreachable / machine / error
    python -m hyperplane.services.reachprobe --udp-echo PORT [--ready FILE]
        a UDP echo server (each datagram is sent back, prefixed with the sender's address)

``probe_many(jobs, timeout, opener)`` is the engine: one ``selectors`` loop, non-blocking
sockets, each opened inside its source's namespace (``services.netns.Opener``; jobs of
one namespace are opened together, one setns there and back), at most ``window`` at a
time.  A TCP probe completes the handshake and closes; an HTTP probe also asks
``GET /whoami`` and reports the answering host's name as its detail (the same address
may be another host in another VPC); a UDP probe sends one datagram on a connected
socket and waits for any answer (an ICMP port unreachable gives ``refused``).  A timeout
is what a security group or a missing route looks like from the inside, as in AWS: the
packets are dropped, nothing answers.

``machine``: the probe could not be made for a reason of this machine, not of the
network: no descriptor left (EMFILE, ENFILE), no kernel memory or buffer (ENOMEM,
ENOBUFS: a full neighbour table says ENOBUFS), no local port (EADDRNOTAVAIL).  Running
out of descriptors while probes are open only makes the engine wait for them to finish;
it is reported when no probe of its own holds one.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hyperplane.services.netns import Opener

UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM)
MACHINE = {errno.EMFILE: "no file descriptor left for this process (EMFILE: RLIMIT_NOFILE)",
           errno.ENFILE: "the system's file table is full (ENFILE: fs.file-max)",
           errno.ENOMEM: "the kernel is out of memory (ENOMEM)",
           errno.ENOBUFS: "a kernel table or buffer is full (ENOBUFS: the neighbour table "
                          "past gc_thresh3, or socket buffers)",
           errno.EADDRNOTAVAIL: "no local port left (EADDRNOTAVAIL)"}
DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
WINDOW = 8192
MAX_REPLY = 64 * 1024


@dataclass(frozen=True)
class Job:
    ns: str | None       # the source's namespace (None: this process's own)
    kind: str            # tcp, http or udp
    ip: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.kind}:{self.ip}:{self.port}"


@dataclass
class _Probe:
    index: int
    job: Job
    sock: socket.socket
    deadline: float
    phase: str = "connect"  # connect -> reply (http, udp) -> done
    data: bytearray = field(default_factory=bytearray)


def machine_reason(code: int | None) -> str | None:
    return MACHINE.get(code) if code is not None else None


def classify(exc: OSError) -> tuple[str, str]:
    """(result, detail) of a probe that failed with ``exc``."""
    code = exc.errno
    if code == errno.ECONNREFUSED:
        return "refused", "connection refused"
    if code == errno.ETIMEDOUT:
        return "timeout", "connection timed out"
    if code in MACHINE:
        return "machine", MACHINE[code]
    if code in UNREACHABLE:
        return "unreachable", exc.strerror or os.strerror(code)
    return "error", exc.strerror or str(exc)


def _answer(probe: _Probe) -> tuple[str, str]:
    if probe.job.kind == "udp":
        return "replied", bytes(probe.data).decode(errors="replace")
    body = bytes(probe.data).partition(b"\r\n\r\n")[2]
    try:
        host = json.loads(body or b"{}").get("host", "")
    except (ValueError, AttributeError):
        host = ""
    return "connected", str(host)


class Engine:
    def __init__(self, jobs: list[Job], timeout: float, opener: Opener,
                 window: int) -> None:
        self.jobs, self.timeout, self.opener, self.window = jobs, timeout, opener, window
        self.results: list[dict | None] = [None] * len(jobs)
        self.selector = selectors.DefaultSelector()
        self.active: dict[int, _Probe] = {}
        self.order: collections.deque[_Probe] = collections.deque()  # by deadline
        self.next = 0

    def finish(self, probe: _Probe, result: str, detail: str) -> None:
        self.results[probe.index] = {"target": probe.job.target, "result": result,
                                     "detail": detail}
        if self.active.pop(probe.sock.fileno(), None) is not None:
            self.selector.unregister(probe.sock)
        probe.phase = "done"
        probe.sock.close()

    def fail(self, index: int, result: str, detail: str) -> None:
        self.results[index] = {"target": self.jobs[index].target, "result": result,
                               "detail": detail}

    def open_some(self) -> None:
        """Open probes, one namespace at a time, until the window is full."""
        while self.next < len(self.jobs) and len(self.active) < self.window:
            ns = self.jobs[self.next].ns
            try:
                with self.opener.inside(ns):
                    while self.next < len(self.jobs) and len(self.active) < self.window \
                            and self.jobs[self.next].ns == ns:
                        if not self.start(self.next):
                            return
                        self.next += 1
            except OSError as exc:  # the namespace itself cannot be entered
                self.fail(self.next, *classify(exc))
                self.next += 1

    def start(self, index: int) -> bool:
        """Open and connect one probe; False to wait (no descriptor left, probes open)."""
        job = self.jobs[index]
        kind = socket.SOCK_DGRAM if job.kind == "udp" else socket.SOCK_STREAM
        try:
            sock = socket.socket(socket.AF_INET, kind)
        except OSError as exc:
            if exc.errno in DESCRIPTORS and self.active:
                return False
            self.fail(index, *classify(exc))
            return True
        sock.setblocking(False)
        probe = _Probe(index, job, sock, time.monotonic() + self.timeout)
        self.active[sock.fileno()] = probe
        self.order.append(probe)
        self.selector.register(sock, selectors.EVENT_WRITE, probe)
        code = sock.connect_ex((job.ip, job.port))
        if code not in (0, errno.EINPROGRESS):
            self.finish(probe, *classify(OSError(code, os.strerror(code))))
        return True

    def step(self, probe: _Probe, mask: int) -> None:
        sock = probe.sock
        try:
            if probe.phase == "connect":
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                if probe.job.kind == "tcp":
                    self.finish(probe, "connected", f"{probe.job.ip}:{probe.job.port}")
                    return
                sock.send(b"reach probe" if probe.job.kind == "udp" else
                          b"GET /whoami HTTP/1.0\r\nHost: reach\r\n\r\n")
                probe.phase = "reply"
                self.selector.modify(sock, selectors.EVENT_READ, probe)
                return
            chunk = sock.recv(MAX_REPLY)
            probe.data += chunk
            if probe.job.kind == "udp" or not chunk or len(probe.data) >= MAX_REPLY:
                self.finish(probe, *_answer(probe))
        except BlockingIOError:
            return
        except OSError as exc:
            self.finish(probe, *classify(exc))

    def expire(self, now: float) -> None:
        while self.order and (self.order[0].phase == "done" or self.order[0].deadline <= now):
            probe = self.order.popleft()
            if probe.phase != "done":
                self.finish(probe, "timeout", f"no answer in {self.timeout:g} s")

    def run(self) -> list[dict]:
        self.open_some()
        while self.active or self.next < len(self.jobs):
            wait = max(0.0, self.order[0].deadline - time.monotonic()) if self.order else 0.0
            for key, mask in self.selector.select(min(wait, 0.5)):
                if key.data.phase != "done":
                    self.step(key.data, mask)
            self.expire(time.monotonic())
            self.open_some()
        self.selector.close()
        return [r for r in self.results if r is not None]


def probe_many(jobs: list[Job], timeout: float, opener: Opener | None = None,
               window: int = WINDOW) -> list[dict]:
    """One result per job, in order (see the module's docstring)."""
    own = opener is None
    opener = opener or Opener()
    try:
        return Engine(jobs, timeout, opener, window).run()
    finally:
        if own:
            opener.close()


def _job(target: str) -> Job | dict:
    kind, _, rest = target.partition(":")
    host, _, port_text = rest.rpartition(":")
    try:
        return Job(None, kind, socket.gethostbyname(host), int(port_text))
    except (OSError, ValueError) as exc:
        return {"target": target, "result": "error", "detail": f"cannot resolve {host!r}: {exc}"}


def probe_targets(targets: list[str], timeout: float) -> list[dict]:
    """Probe ``KIND:HOST:PORT`` targets from this namespace (names resolved first)."""
    parsed = [_job(t) for t in targets]
    jobs = [j for j in parsed if isinstance(j, Job)]
    results = iter(probe_many(jobs, timeout))
    out = []
    for target, item in zip(targets, parsed, strict=True):
        out.append(dict(next(results), target=target) if isinstance(item, Job) else item)
    return out


def udp_echo(port: int, ready: str | None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    if ready:
        Path(ready).touch()
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(f"{peer[0]}:{peer[1]} ".encode() + data, peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--udp-echo", type=int)
    parser.add_argument("--ready")
    args = parser.parse_args(argv)
    if args.udp_echo:
        udp_echo(args.udp_echo, args.ready)
        return 0
    json.dump(probe_targets(args.targets, args.timeout), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
