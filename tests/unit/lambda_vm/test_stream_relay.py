"""A streamed response relayed to the agent's caller (``agent.relay``): chunk lines as they
arrive, byte for byte, and bounded: a caller that does not read pauses the runtime's
connection once ``STREAM_WINDOW`` bytes wait, and reading resumes it.  Real loopback HTTP
and a real socket pair; no namespaces, no root."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading

import pytest

from lambda_vm.agent import STREAM_WINDOW, relay
from lambda_vm.loop import Conn
from lambda_vm.runtime_api import PREFIX
from tests.unit.lambda_vm.harness import Harness

PIECE = 64 * 1024
TOTAL = 6 * STREAM_WINDOW  # several windows: the runtime must be paused on the way


@pytest.fixture()
def h() -> Harness:
    harness = Harness()
    yield harness
    harness.close()


def next_event(h: Harness) -> None:
    """The runtime's GET /next, answered (the event of the submitted invocation)."""
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.sendall(f"GET {PREFIX}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.setblocking(False)
    got = bytearray()

    def answered() -> bool:
        try:
            got.extend(sock.recv(1 << 16))
        except BlockingIOError:
            pass
        return b"\r\n\r\n" in got
    assert h.wait(answered)
    sock.close()


def stream(h: Harness, body: bytes) -> threading.Thread:
    """A runtime posting ``body`` as a streamed response, in a thread (its writes block
    while the agent reads nothing)."""
    sock = socket.create_connection(("127.0.0.1", h.port))

    def run() -> None:
        sock.sendall(f"POST {PREFIX}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
                     "Lambda-Runtime-Function-Response-Mode: streaming\r\nContent-Type: "
                     "application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for start in range(0, len(body), PIECE):
            part = body[start:start + PIECE]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        sock.recv(4096)  # the 202
        sock.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_relayed_stream_is_bounded_for_a_caller_that_does_not_read(h: Harness) -> None:
    body = os.urandom(TOTAL)
    ours, theirs = socket.socketpair()
    conn = Conn(h.loop, theirs, lambda _data: None)
    invocation = h.submit({})
    pending: list[int] = []

    def on_chunk(chunk: bytes) -> None:
        relay(invocation, conn, chunk)
        pending.append(conn.pending)
    invocation.on_chunk = on_chunk
    invocation.on_stream = lambda content_type: conn.send(json.dumps(
        {"stream": {"content_type": content_type}}).encode() + b"\n")
    next_event(h)
    writer = stream(h, body)
    assert h.wait(lambda: conn.on_drain is not None)  # the caller reads nothing: paused
    relayed_while_paused = len(pending)
    for _ in range(20):  # the loop turns; nothing more is read from the runtime
        h.loop.run_once(0.01)
    assert len(pending) == relayed_while_paused and invocation.outcome is None

    ours.setblocking(False)
    got = bytearray()

    def read_all() -> bool:
        try:
            got.extend(ours.recv(1 << 20))
        except BlockingIOError:
            pass
        return invocation.outcome is not None and not conn.out
    assert h.wait(read_all)  # reading resumes the runtime, to the end
    writer.join(10)
    lines = [json.loads(line) for line in bytes(got).splitlines()]
    assert lines[0] == {"stream": {"content_type": "application/octet-stream"}}
    assert b"".join(base64.b64decode(m["chunk"]) for m in lines[1:]) == body
    assert invocation.outcome == {"response_mode": "streaming", "streamed_bytes": TOTAL,
                                  "content_type": "application/octet-stream"}
    line_max = len(json.dumps({"chunk": base64.b64encode(b"x" * PIECE).decode()})) + 1
    assert max(pending) <= STREAM_WINDOW + line_max  # bounded, whatever the caller does
    ours.close()
    conn.close()


def test_a_caller_that_goes_away_leaves_the_stream_running_to_its_end(h: Harness) -> None:
    body = os.urandom(TOTAL)
    ours, theirs = socket.socketpair()
    conn = Conn(h.loop, theirs, lambda _data: None)
    invocation = h.submit({})
    invocation.on_chunk = lambda chunk: relay(invocation, conn, chunk)
    next_event(h)
    writer = stream(h, body)
    assert h.wait(lambda: conn.on_drain is not None)
    ours.close()  # the caller is gone: the paused runtime is read again (and dropped)
    h.loop.run_once(0.01)
    conn.send(b"x" * (1 << 20))  # a write that fails: the agent's side closes
    assert h.wait(lambda: invocation.outcome is not None)
    writer.join(10)
    assert conn.closed and invocation.outcome["streamed_bytes"] == TOTAL
