"""Clients of the project's Unix sockets: the dataplane's control socket and env agents.

One JSON request line, one JSON reply line, per connection.
"""

from __future__ import annotations

import json
import socket
import time


class UnreachableError(Exception):
    """Nothing answers on the socket."""


def request(path: str, message: dict, timeout: float = 10.0) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise UnreachableError(f"nothing listens on {path}") from exc
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise UnreachableError(f"no reply on {path}")
    return json.loads(data)


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
