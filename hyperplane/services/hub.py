"""The services process: every host's HTTP service, the VPC resolvers and the public
server of the emulated internet, served by one event loop (a process).

    python -m hyperplane.services.hub --config FILE --control SOCKET

One process instead of one per host: it opens each listening socket inside its
namespace (``services.netns.Opener``: setns for the moment of ``socket()``), and one
``selectors`` loop (epoll, non-blocking sockets) serves them all.  ``FILE`` lists the
listeners, written by ``kernel.servicehub`` (JSON):

    {"listeners": [{"kind": "http", "ns": "hp-h3-web", "address": "0.0.0.0",
                    "port": 8080, "name": "web"},
                   {"kind": "dns", "ns": "hp-r0", "address": "10.0.0.2", "port": 53,
                    "records": {"web.vpc-app.internal": ["10.0.1.10"]}}, ...]}

It is read at start (a process the supervisor starts again serves everything at once)
and again on ``{"op": "sync"}``, which opens what is new, closes what went and updates
what changed (a resolver's records) in place: that is how a host or a VPC added while
everything runs is served at once.  The control socket answers
``ping`` (``{"ok": true, "pid": ..., "listeners": N}``), ``sync`` (what was opened,
closed and what failed, with the reason) and ``stats`` (``counters``).

HTTP answers come from ``services.httpwire``, DNS answers from ``services.dnsmsg``.
Every connection's output is bounded: a connection with bytes still to send is not read
from.  Drops are counted (``counters``), never waited on.
"""

from __future__ import annotations

import argparse
import collections
import errno
import hashlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from hyperplane import jsonline
from hyperplane.services import dnsmsg, httpwire
from hyperplane.services.netns import Opener

RECV = 64 * 1024  # a read allocates all it asks for: 256 KiB cost 21 us more a read than 64
CHUNK = 1 << 20
BACKLOG = 1024
DNS_BURST = 64
COUNTERS = ("connections", "requests", "dns_queries", "dns_unanswered",
            "accept_failed", "send_failed", "bad_requests", "listeners_failed")


def listener_key(spec: dict) -> str:
    return f"{spec['kind']}:{spec['ns']}:{spec['address']}:{spec['port']}"


class Connection:
    """One accepted HTTP connection: requests in, answers out, bounded."""

    def __init__(self, hub: Hub, sock: socket.socket, peer: tuple, host: str) -> None:
        self.hub, self.sock, self.peer, self.host = hub, sock, peer, host
        self.inbuf = bytearray()
        self.out: collections.deque = collections.deque()
        self.stream_left = 0
        self.body_left = -1          # >= 0 while reading a /sha256 body
        self.body_len = 0
        self.digest = hashlib.sha256()
        self.keep = True             # the request being answered keeps the connection
        self.last = False            # an answer that closes the connection is queued
        self.read_closed = False
        self.closed = False
        self.events = selectors.EVENT_READ
        hub.selector.register(sock, self.events, self.ready)

    def pending(self) -> bool:
        return bool(self.out) or self.stream_left > 0

    def ready(self, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self.read()
            while not self.closed:  # every buffered (pipelined) request, while output drains
                self.flush()
                if self.pending() or not self.process():
                    break
        except OSError:
            self.close()
            return
        self.update()

    def read(self) -> None:
        try:
            data = self.sock.recv(RECV)
        except BlockingIOError:
            return
        if not data:
            self.read_closed = True
        self.inbuf += data

    def process(self) -> bool:
        """Answer what the buffer holds, up to the first answer queued (True)."""
        while not self.closed and not self.last and not self.pending():
            if self.body_left >= 0:
                take = min(self.body_left, len(self.inbuf))
                self.digest.update(self.inbuf[:take])
                del self.inbuf[:take]
                self.body_left -= take
                self.body_len += take
                if self.body_left > 0:
                    return False
                self.body_left = -1
                self.queue(httpwire.digest_answer(self.digest.hexdigest(), self.body_len,
                                                  self.keep))
                return True
            try:
                request, used = httpwire.parse_head(self.inbuf)
            except ValueError as exc:
                self.hub.count("bad_requests")
                self.keep = False
                self.queue(httpwire.json_answer(400, {"error": str(exc)}, False))
                return True
            if request is None:
                return False
            del self.inbuf[:used]
            self.hub.count("requests")
            self.keep = request.keep_alive
            answer = httpwire.route(request, self.peer, self.host)
            if answer.read_body:
                self.body_left, self.body_len = request.length, 0
                self.digest = hashlib.sha256()
                continue
            self.queue(answer)
            return True
        return False

    def queue(self, answer: httpwire.Answer) -> None:
        self.out.append(answer.head + answer.body)
        self.stream_left = answer.stream
        self.last = not self.keep

    def flush(self) -> None:
        while self.pending():
            if not self.out:
                size = min(CHUNK, self.stream_left)
                self.out.append(memoryview(httpwire.pattern_bytes(size)))
                self.stream_left -= size
            chunk = self.out[0]
            try:
                sent = self.sock.send(chunk)
            except BlockingIOError:
                return
            if sent < len(chunk):
                self.out[0] = memoryview(chunk)[sent:]
                return
            self.out.popleft()

    def update(self) -> None:
        if self.closed:
            return
        want = 0
        if self.pending():
            want |= selectors.EVENT_WRITE
        elif not self.last and not self.read_closed:
            want |= selectors.EVENT_READ
        if not want:
            self.close()
        elif want != self.events:
            self.events = want
            self.hub.selector.modify(self.sock, want, self.ready)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.selector.unregister(self.sock)
            self.sock.close()


class Listener:
    """A listening socket inside a namespace: an HTTP service or a resolver."""

    def __init__(self, hub: Hub, spec: dict) -> None:
        self.hub, self.spec = hub, spec
        kind = socket.SOCK_DGRAM if spec["kind"] == "dns" else socket.SOCK_STREAM
        sock = hub.opener.socket(spec["ns"], kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((spec["address"], int(spec["port"])))
            if kind == socket.SOCK_STREAM:
                sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.records = {n.lower(): a for n, a in (spec.get("records") or {}).items()}
        handler: Callable[[int], None] = self.answer if spec["kind"] == "dns" else self.accept
        hub.selector.register(sock, selectors.EVENT_READ, handler)

    def update(self, spec: dict) -> None:
        self.spec = spec
        self.records = {n.lower(): a for n, a in (spec.get("records") or {}).items()}

    def accept(self, _mask: int) -> None:
        for _ in range(BACKLOG):
            try:
                conn, peer = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE, ENOBUFS...: counted, the client retries
                self.hub.count("accept_failed", exc.errno)
                return
            conn.setblocking(False)
            self.hub.count("connections")
            Connection(self.hub, conn, peer, self.spec.get("name", ""))

    def answer(self, _mask: int) -> None:
        for _ in range(DNS_BURST):
            try:
                data, peer = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            except OSError:
                self.hub.count("dns_unanswered")
                return
            self.hub.count("dns_queries")
            reply = dnsmsg.respond(data, self.records)
            if reply is None:
                self.hub.count("dns_unanswered")
                continue
            try:
                self.sock.sendto(reply, peer)
            except OSError as exc:
                self.hub.count("send_failed", exc.errno)

    def close(self) -> None:
        self.hub.selector.unregister(self.sock)
        self.sock.close()


class Hub:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.opener = Opener()
        self.listeners: dict[str, Listener] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.failed: dict[str, str] = {}

    def count(self, name: str, code: int | None = None) -> None:
        self.counters[name] += 1
        if code is not None:
            key = f"{name}:{errno.errorcode.get(code, code)}"
            self.counters[key] = self.counters.get(key, 0) + 1

    def wanted(self) -> dict[str, dict]:
        try:
            specs = json.loads(self.config.read_text())["listeners"]
        except FileNotFoundError:
            specs = []
        return {listener_key(s): s for s in specs}

    def sync(self) -> dict:
        """Open what the configuration adds, close what it dropped, update the rest."""
        wanted = self.wanted()
        closed = [k for k in self.listeners if k not in wanted]
        for key in closed:
            self.listeners.pop(key).close()
        opened, self.failed = [], {}
        for key, spec in wanted.items():
            if key in self.listeners:
                self.listeners[key].update(spec)
                continue
            try:
                self.listeners[key] = Listener(self, spec)
                opened.append(key)
            except OSError as exc:
                self.count("listeners_failed", exc.errno)
                self.failed[key] = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno, '?')})"
        return {"ok": True, "opened": len(opened), "closed": len(closed),
                "listeners": len(self.listeners), "failed": self.failed}

    def handle(self, message: dict) -> dict:
        op = message.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "listeners": len(self.listeners),
                    "failed": self.failed}
        if op == "sync":
            return self.sync()
        if op == "stats":
            return {"ok": True, "counters": dict(self.counters),
                    "listeners": sorted(self.listeners)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def control(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(64)
        sock.setblocking(False)

        def accept(_mask: int) -> None:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return
            jsonline.serve(conn, self.handle)
        self.selector.register(sock, selectors.EVENT_READ, accept)

    def run(self) -> None:
        while True:
            for key, mask in self.selector.select():
                key.data(mask)


def raise_file_limit() -> None:
    """Every listener and connection is a descriptor: take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--control", required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    raise_file_limit()
    hub = Hub(Path(args.config))
    result = hub.sync()
    if result["failed"]:
        print(f"listeners not opened: {result['failed']}", file=sys.stderr, flush=True)
    hub.control(args.control)  # ready: the control socket answers once all are open
    hub.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
