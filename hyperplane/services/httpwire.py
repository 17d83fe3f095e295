"""The HTTP service of a customer host, as bytes in and bytes out (pure).

What ``services.hub`` serves on a host's ``service: {http: PORT}`` (and the emulated
internet's public server), one connection's requests in order (HTTP/1.1 keep-alive,
``Connection: close`` and HTTP/1.0 honoured):

    GET  /whoami        {"client": "<source address>", "port": <source port>, "host": NAME}
    GET  /bytes?n=N     N deterministic bytes (``pattern_bytes``), for transfers
    POST /sha256        {"sha256": ..., "length": ...} of the request body
    GET  /health        {"ok": true}

``parse_head`` reads a request head from a buffer; ``route`` says what to answer:
a complete response (head and body), a head followed by ``N`` pattern bytes, or a body
to read first (``/sha256``).  The event loop only moves bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

PATTERN = bytes(range(256)) * 256  # 64 KiB
MAX_HEAD = 64 * 1024
MAX_BYTES = 1 << 30
SERVER = "hyperplane-host/1"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large"}


def pattern_bytes(n: int) -> bytes:
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"

    @property
    def length(self) -> int:
        try:
            return max(0, int(self.headers.get("content-length", "0")))
        except ValueError:
            return 0


@dataclass(frozen=True)
class Answer:
    head: bytes
    body: bytes = b""
    stream: int = 0        # pattern bytes to send after ``body``
    read_body: bool = False  # /sha256: read ``length`` bytes first, then ``digest_answer``


def parse_head(buffer: bytes | bytearray) -> tuple[Request | None, int]:
    """(the request, bytes consumed) of the first complete head; (None, 0) if incomplete.

    ``ValueError`` for a malformed head or one longer than ``MAX_HEAD``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ValueError("request head too long")
        return None, 0
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"malformed request line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(parts[0].upper(), parts[1], parts[2], headers), end + 4


def response_head(code: int, length: int, content_type: str, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {code} {REASONS.get(code, 'OK')}", f"Server: {SERVER}",
             f"Content-Type: {content_type}", f"Content-Length: {length}"]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_answer(code: int, body: dict, keep_alive: bool) -> Answer:
    data = json.dumps(body).encode() + b"\n"
    return Answer(response_head(code, len(data), "application/json", keep_alive), data)


def route(request: Request, client: tuple[str, int], host: str) -> Answer:
    """What to answer ``request`` from ``client`` on the service of ``host``."""
    url = urlparse(request.path)
    alive = request.keep_alive
    if request.method == "POST":
        if url.path == "/sha256":
            return Answer(b"", read_body=True)
        return json_answer(404, {"error": "not found"}, alive)
    if request.method not in ("GET", "HEAD"):
        return json_answer(405, {"error": f"method {request.method} not allowed"}, alive)
    if url.path == "/whoami":
        return json_answer(200, {"client": client[0], "port": client[1], "host": host}, alive)
    if url.path == "/health":
        return json_answer(200, {"ok": True}, alive)
    if url.path == "/bytes":
        try:
            n = int(parse_qs(url.query).get("n", ["0"])[0])
        except ValueError:
            return json_answer(400, {"error": "n must be an integer"}, alive)
        n = max(0, min(n, MAX_BYTES))
        head = response_head(200, n, "application/octet-stream", alive)
        return Answer(head, stream=0 if request.method == "HEAD" else n)
    return json_answer(404, {"error": "not found"}, alive)


def digest_answer(hexdigest: str, length: int, keep_alive: bool) -> Answer:
    return json_answer(200, {"sha256": hexdigest, "length": length}, keep_alive)
