"""The HTTP service of a customer host (``service: {http: PORT}``).

Runs inside the host's namespace.  Endpoints:

    GET  /whoami        {"client": "<source address>", "port": <source port>, "host": NAME}
    GET  /bytes?n=N     N deterministic bytes (a repeating pattern), for transfers
    POST /sha256        {"sha256": ..., "length": ...} of the request body
    GET  /health        {"ok": true}

When listening it touches ``--ready`` so the starter knows, without sleeping.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


class Handler(BaseHTTPRequestHandler):
    server_version = "hyperplane-host/1"
    protocol_version = "HTTP/1.1"

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path == "/whoami":
            client, port = self.client_address[:2]
            self._json(200, {"client": client, "port": port, "host": self.server.host_name})
        elif url.path == "/health":
            self._json(200, {"ok": True})
        elif url.path == "/bytes":
            try:
                n = int(parse_qs(url.query).get("n", ["0"])[0])
            except ValueError:
                self._json(400, {"error": "n must be an integer"})
                return
            n = max(0, min(n, 1 << 30))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = 1 << 20
            for start in range(0, n, chunk):
                self.wfile.write(pattern_bytes(min(chunk, n - start)))
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/sha256":
            self._json(404, {"error": "not found"})
            return
        remaining = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        total = 0
        while remaining > 0:
            data = self.rfile.read(min(remaining, 1 << 20))
            if not data:
                break
            digest.update(data)
            total += len(data)
            remaining -= len(data)
        self._json(200, {"sha256": digest.hexdigest(), "length": total})

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.client_address[0]} {fmt % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    host_name = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="customer host HTTP service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--ready", help="file to create once listening")
    args = parser.parse_args(argv)
    server = Server(("0.0.0.0", args.port), Handler)
    server.host_name = args.name
    if args.ready:
        Path(args.ready).touch()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
