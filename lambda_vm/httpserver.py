"""HTTP/1.1 for the Runtime and Extensions APIs: h11 connections on the agent's ``Loop``.

The model.  h11 (a pure-Python, sans-I/O HTTP/1.1 state machine) parses and frames;
this module moves bytes between it and non-blocking sockets, one ``Exchange`` per
request.  What the protocol needs and ordinary clients rely on is h11's: keep-alive
(one connection carries request after request), chunked request bodies with their
trailers (a streamed response, ``curl -T -``), ``Expect: 100-continue`` (answered with
``100 Continue`` as soon as the application wants the body: curl waits a second for it
otherwise), and pipelined or malformed input (``400``, then the connection closes).

An application (``App``) sees each request when its head has arrived (``begin``); it
may answer at once, or set ``on_body`` / ``on_end`` to take the body as it arrives and
answer later (a long poll: ``GET .../next`` is answered when an event exists).  Answers
carry ``Content-Length`` up to ``CHUNK_OVER`` bytes and are chunked above it, as Go's
``net/http`` (the server of AWS's Runtime API) sends them; a ``Date`` header each.

Side effects: sockets (through ``loop.Conn``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Protocol

import h11

from lambda_vm.loop import Conn, Loop

CHUNK_OVER = 4096  # bytes: a larger answer goes chunked
MAX_HEADERS = 16 * 1024
REASONS = {100: b"Continue", 200: b"OK", 202: b"Accepted", 400: b"Bad Request",
           403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
           413: b"Request Entity Too Large", 500: b"Internal Server Error"}


class App(Protocol):
    def begin(self, exchange: Exchange) -> None: ...


_date = [0, b""]


def http_date() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                time.gmtime(now)).encode()
    return _date[1]


class Exchange:
    """One request and its answer."""

    def __init__(self, connection: Connection, request: h11.Request) -> None:
        self.connection = connection
        self.method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        self.path = target.split("?", 1)[0]
        self.headers = {k.decode("latin-1"): v.decode("latin-1")
                        for k, v in request.headers}  # h11 lower-cases the names
        self.on_body: Callable[[bytes], None] | None = None
        self.on_end: Callable[[dict[str, str]], None] | None = None
        length = self.headers.get("content-length", "0")
        self.body_done = length in ("", "0") and "transfer-encoding" not in self.headers
        self.answered = False

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def reply(self, status: int, body: bytes = b"",
              headers: list[tuple[str, str]] | None = None) -> None:
        if self.answered:
            return
        self.answered = True
        self.connection.answer(self, status, body, headers or [])

    def reply_json(self, status: int, data: object,
                   headers: list[tuple[str, str]] | None = None) -> None:
        self.reply(status, json.dumps(data).encode(),
                   [("Content-Type", "application/json"), *(headers or [])])

    def error(self, status: int, error_type: str, message: str) -> None:
        self.reply_json(status, {"errorMessage": message, "errorType": error_type})


class Connection:
    """One client's connection: its h11 state and the exchange in progress."""

    def __init__(self, loop: Loop, sock: socket.socket, app: App) -> None:
        self.app = app
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        self.exchange: Exchange | None = None
        self.conn = Conn(loop, sock, self._data, self._closed)
        self.on_close: list[Callable[[], None]] = []

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def _closed(self) -> None:
        for callback in self.on_close:
            callback()
        self.on_close.clear()

    def _data(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._events()

    def _events(self) -> None:
        while not self.conn.closed:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._bad(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request(event)
            elif isinstance(event, h11.Data):
                if self.exchange is not None and self.exchange.on_body:
                    self.exchange.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._end(event)
            elif isinstance(event, h11.ConnectionClosed):
                self.conn.close()
                return

    def _request(self, request: h11.Request) -> None:
        exchange = self.exchange = Exchange(self, request)
        self.app.begin(exchange)
        if not exchange.answered and self.h11.they_are_waiting_for_100_continue \
                and not self.conn.closed:
            self.conn.send(self.h11.send(h11.InformationalResponse(
                status_code=100, headers=[], reason=b"Continue")))

    def _end(self, event: h11.EndOfMessage) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.body_done = True
        if exchange.on_end is not None:
            trailers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            exchange.on_end(trailers)
        self._cycle()

    def answer(self, exchange: Exchange, status: int, body: bytes,
               headers: list[tuple[str, str]]) -> None:
        if self.conn.closed or exchange is not self.exchange:
            return
        names = {k.lower() for k, _ in headers}
        head = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if "content-type" not in names:
            head.append((b"Content-Type", b"text/plain; charset=utf-8"))
        head.append((b"Date", http_date()))
        if len(body) <= CHUNK_OVER or self.h11.their_http_version == b"1.0":
            head.append((b"Content-Length", str(len(body)).encode()))
        if not exchange.body_done:  # answered before the body came: no reuse
            head.append((b"Connection", b"close"))
        try:
            out = self.h11.send(h11.Response(status_code=status, headers=head,
                                             reason=REASONS.get(status, b"")))
            if body:
                out += self.h11.send(h11.Data(data=body))
            out += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.conn.close()
            return
        self.conn.send(out)
        self._cycle()

    def _cycle(self) -> None:
        """After a complete exchange: ready for the next request, or closed."""
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            self.conn.finish()
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.exchange = None
            self.h11.start_next_cycle()
            self._events()  # a request that came in behind this one
        elif self.h11.our_state is h11.DONE and self.h11.their_state is h11.SEND_BODY \
                and self.exchange is not None and not self.exchange.body_done \
                and self.h11.they_are_waiting_for_100_continue:
            self.conn.finish()  # answered without wanting the body: it will not come

    def _bad(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = json.dumps({"errorMessage": str(exc), "errorType": "InvalidRequest"})
            try:
                self.conn.send(self.h11.send(h11.Response(
                    status_code=status, reason=REASONS.get(status, b""),
                    headers=[(b"Content-Type", b"application/json"), (b"Date", http_date()),
                             (b"Content-Length", str(len(body)).encode()),
                             (b"Connection", b"close")])) + self.h11.send(
                    h11.Data(data=body.encode())) + self.h11.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.conn.finish()

    def close(self) -> None:
        self.conn.close()


class Server:
    """A listening socket on the loop; every accepted connection speaks h11 to ``app``."""

    def __init__(self, loop: Loop, listener: socket.socket, app: App) -> None:
        self.loop, self.listener, self.app = loop, listener, app
        self.connections: set[Connection] = set()
        listener.setblocking(False)
        loop.reader(listener, self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = Connection(self.loop, sock, self.app)
            self.connections.add(connection)
            connection.on_close.append(lambda c=connection: self.connections.discard(c))

    def close(self) -> None:
        self.loop.forget(self.listener)
        self.listener.close()
        for connection in list(self.connections):
            connection.close()


def listen(host: str, port: int) -> socket.socket:
    """A TCP listening socket bound by hand (no host lookup, no thread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock
