"""The JSON-line protocol of every Unix socket of the project (I/O).

One request line, one reply line, per connection: a JSON object, UTF-8, ended by
``\\n``.  The controller, the dataplane, the NAT gateway, the zygote and each
environment's agent serve it; the CLI and the controller are its clients.  This
module is its one implementation: ``encode``/``decode`` (the codec), ``read_line``
(framing, bounded), ``listen`` (a server's socket), ``request`` (a client call),
``serve`` (a server's side of one connection: read, answer, reply; a handler's
exception becomes
``{"ok": false, "error": "Type: text"}`` and never stops the server) and ``hold``
(a lease: a request whose connection stays open).  ``lines`` is the client of the one
request answered by several lines (a relayed response stream: each line as it comes,
the reply last); ``relay`` its caller's side: the stream's lines (those with a ``chunk``
or ``stream`` key) handed on, the reply returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator

from hyperplane.errors import UnreachableError

MAX_LINE = 64 << 20  # a line longer than this is refused (bounded memory)
Handler = Callable[[dict], dict]


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict:
    """One line as an object; ``ValueError`` for anything else."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


def read_line(sock: socket.socket, limit: int = MAX_LINE) -> bytes:
    """Bytes up to and including the first newline (or what came before EOF)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        # a first read of 64 KiB: CPython allocates the whole size asked for each read, and
        # 1 MiB costs 13 us more a call than 64 KiB (most lines are far shorter)
        chunk = sock.recv(1 << 20 if chunks else 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
        if size > limit:
            raise ValueError(f"a line longer than {limit} bytes")
    return b"".join(chunks)


def listen(path: str, backlog: int = 16) -> socket.socket:
    """A non-blocking server socket at ``path`` (a socket left there by a dead process
    replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def connect(path: str, timeout: float | None = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise UnreachableError(f"nothing listens on {path}") from exc
    return sock


def request(path: str, message: dict, timeout: float = 10.0) -> dict:
    """Send one request to the server on ``path``; its reply."""
    sock = connect(path, timeout)
    try:
        sock.sendall(encode(message))
        data = read_line(sock)
    finally:
        sock.close()
    if not data:
        raise UnreachableError(f"no reply on {path}")
    return decode(data)


def lines(path: str, message: dict, timeout: float = 10.0) -> Iterator[dict]:
    """Send one request; each line of the answer as it arrives, until the server closes
    (``timeout``: seconds any one line may take).  Closing the iterator closes the
    connection."""
    sock = connect(path, timeout)
    try:
        sock.sendall(encode(message))
        with sock.makefile("rb") as reader:
            while line := reader.readline(MAX_LINE + 1):
                if not line.endswith(b"\n"):
                    raise ValueError(f"a line longer than {MAX_LINE} bytes, or cut short")
                yield decode(line)
    finally:
        sock.close()


def is_streamed(line: dict) -> bool:
    """A line of a relayed response stream, not the reply after it."""
    return "chunk" in line or "stream" in line


def relay(path: str, message: dict, timeout: float,
          on_line: Callable[[dict], None] | None) -> dict:
    """One request: its reply; with ``on_line``, the stream's lines before the reply go
    there as they come (an ``OSError`` from it, a caller gone: the rest is drained)."""
    if on_line is None:
        return request(path, message, timeout=timeout)
    for line in lines(path, message, timeout):
        if not is_streamed(line):
            return line
        try:
            on_line(line)
        except OSError:
            on_line = lambda _line: None  # noqa: E731
    raise UnreachableError(f"no reply on {path}")


def hold(path: str, message: dict) -> tuple[socket.socket, dict]:
    """Send a request whose connection stays open (a lease): (the socket, the reply).

    The caller closes the socket to end what it holds.
    """
    sock = connect(path, None)
    try:
        sock.sendall(encode(message))
        data = read_line(sock)
        if not data:
            raise UnreachableError(f"no reply on {path}")
        return sock, decode(data)
    except BaseException:
        sock.close()
        raise


def failure(exc: BaseException) -> dict:
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def serve(conn: socket.socket, handler: Handler, timeout: float = 5.0) -> None:
    """The server's side of one connection: one request answered by ``handler``."""
    with conn:
        conn.settimeout(timeout)
        try:
            reply = handler(decode(read_line(conn)))
        except Exception as exc:  # noqa: BLE001 - a bad request never stops a server
            reply = failure(exc)
        try:
            conn.sendall(encode(reply))
        except OSError:
            pass
