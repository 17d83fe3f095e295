"""A Runtime API on 127.0.0.1 for unit tests: the real ``RuntimeApi`` (and an
``ExtensionsApi``) behind the real h11 server, on a ``Loop`` the test turns itself.

No namespaces and no root: clients (``curl``, ``node``, ``http.client``) reach it on
an ephemeral loopback port.  Every wait is bounded by ``WAIT``.
"""

from __future__ import annotations

import json
import socket
import time

from hyperplane import jsonline
from lambda_vm.agent import Agent
from lambda_vm.bootstrap import timed_out
from lambda_vm.extensions import ExtensionsApi
from lambda_vm.httpserver import Exchange, Server, listen
from lambda_vm.loop import Conn, Loop
from lambda_vm.runtime_api import Invocation, RuntimeApi

ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"
WAIT = 15.0  # seconds: the bound of every wait


class RecordingApi(RuntimeApi):
    """A RuntimeApi that keeps every request made to it: (method, path, headers, body)."""

    def __init__(self, extensions: ExtensionsApi | None = None) -> None:
        super().__init__(ARN, extensions)
        self.requests: list[tuple[str, str, dict, bytearray]] = []

    def begin(self, exchange: Exchange) -> None:
        record = (exchange.method, exchange.path, dict(exchange.headers), bytearray())
        self.requests.append(record)
        super().begin(exchange)
        inner = exchange.on_body

        def body(chunk: bytes) -> None:
            record[3].extend(chunk)
            if inner is not None:
                inner(chunk)
        exchange.on_body = body

    def posted(self, suffix: str) -> list[tuple[dict, bytes]]:
        return [(h, bytes(b)) for m, p, h, b in self.requests
                if m == "POST" and p.endswith(suffix)]


class Harness:
    def __init__(self, with_extensions: bool = False) -> None:
        self.loop = Loop()
        self.extensions = ExtensionsApi(self.loop, "fn", "index.handler", "123456789012",
                                        self.changed) if with_extensions else None
        self.api = RecordingApi(self.extensions)
        if self.extensions is not None:
            self.api.gate = self.extensions.ready
        self.server = Server(self.loop, listen("127.0.0.1", 0), self.api)
        self.port = self.server.listener.getsockname()[1]

    def changed(self) -> None:
        self.api.dispatch()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait(self, predicate, timeout: float = WAIT) -> bool:  # noqa: ANN001
        """Turn the loop until ``predicate()`` (looked at every 10 ms: it may watch a
        process), False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.loop.run_once(0.01)
        return True

    def submit(self, payload: object, request_id: str = "req-1", timeout: float = 5.0,
               **fields: object) -> Invocation:
        invocation = Invocation(request_id, json.dumps(payload).encode(), timeout,
                                lambda _outcome: None, payload, **fields)
        timer = self.loop.call_at(invocation.deadline,
                                  lambda: invocation.finish(timed_out(timeout)))
        invocation.on_done = lambda _outcome: (timer.cancel(), self.api.done(invocation))
        self.api.submit(invocation)
        return invocation

    def invoke(self, payload: object, request_id: str = "req-1", timeout: float = 5.0,
               **fields: object) -> dict:
        invocation = self.submit(payload, request_id, timeout, **fields)
        assert self.wait(lambda: invocation.outcome is not None, timeout + WAIT)
        return invocation.outcome

    def close(self) -> None:
        self.server.close()
        self.loop.selector.close()


def agent_invoke(the_agent: Agent, request: dict) -> list[dict]:
    """One request on the agent's control path (a socket pair): every line it answers."""
    ours, theirs = socket.socketpair()
    conn = Conn(the_agent.loop, theirs, lambda _data: None)
    ours.setblocking(False)
    got = bytearray()

    def answered() -> bool:
        try:
            got.extend(ours.recv(1 << 20))
        except BlockingIOError:
            pass
        return conn.closed and not conn.out or b'"duration_ms"' in got and got.endswith(b"\n")
    the_agent.request(jsonline.encode(request), conn)
    assert the_agent.loop.run_until(answered, WAIT)
    ours.close()
    return [json.loads(line) for line in bytes(got).splitlines() if line]
