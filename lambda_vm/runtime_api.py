"""The Lambda Runtime API, served by an environment's agent on 127.0.0.1:9001.

The model is AWS's: the function's runtime (the built-in Python bootstrap, the
function's own ``bootstrap`` executable, or ``awslambdaric``) long-polls
``GET /2018-06-01/runtime/invocation/next`` for an event, then posts the
result to ``.../invocation/{id}/response`` or ``.../invocation/{id}/error``;
``POST .../runtime/init/error`` reports a failed initialisation.  Each event
carries the documented headers (``Lambda-Runtime-Aws-Request-Id``,
``-Deadline-Ms``, ``-Invoked-Function-Arn``, ``-Trace-Id``).

``Broker`` holds the queue between the agent's side (``invoke`` awaits one
invocation's outcome) and the runtime's side (the HTTP handlers).  It is a
small asyncio HTTP/1.1 server with no threads, so the agent can fork a
runtime at any time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from dataclasses import dataclass, field

PREFIX = "/2018-06-01/runtime"


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Broker:
    """Invocations waiting for the runtime, and the outcome of each."""

    def __init__(self, function_arn: str) -> None:
        self.function_arn = function_arn
        self.queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self.running: dict[str, Invocation] = {}
        self.init_error: dict | None = None
        self.first_next = asyncio.get_running_loop().create_future()  # the runtime is ready

    async def invoke(self, payload: object, request_id: str | None, timeout: float) -> dict:
        """Queue one event; the runtime's outcome as {"result"} or an AWS-shaped error."""
        invocation = Invocation(request_id or str(uuid.uuid4()),
                                json.dumps(payload).encode(),
                                int((time.time() + timeout) * 1000))
        await self.queue.put(invocation)
        try:
            return await asyncio.wait_for(asyncio.shield(invocation.done), timeout)
        except asyncio.TimeoutError:
            return {"errorMessage": f"Task timed out after {timeout:.2f} seconds",
                    "errorType": "Sandbox.Timedout"}
        finally:
            self.running.pop(invocation.request_id, None)

    # -- the HTTP side -------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, headers, body = request
                status, reply_headers, reply = await self.route(method, path, headers, body)
                _write_response(writer, status, reply_headers, reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, headers: dict, body: bytes):
        if method == "GET" and path == PREFIX + "/invocation/next":
            return await self.next_invocation()
        if method == "POST" and path == PREFIX + "/init/error":
            self.init_error = _error_body(body, headers, "Runtime.InitError")
            if not self.first_next.done():
                self.first_next.set_result(False)
            return 202, {}, {"status": "OK"}
        parts = path[len(PREFIX):].split("/") if path.startswith(PREFIX) else []
        if method == "POST" and len(parts) == 4 and parts[1] == "invocation" \
                and parts[3] in ("response", "error"):
            invocation = self.running.get(parts[2])
            if invocation is None or invocation.done.done():
                return 400, {}, {"errorMessage": f"unknown request id {parts[2]}",
                                 "errorType": "InvalidRequestID"}
            if parts[3] == "response":
                invocation.done.set_result({"result": _json_or_text(body)})
            else:
                invocation.done.set_result(_error_body(body, headers, "Unhandled"))
            return 202, {}, {"status": "OK"}
        return 404, {}, {"errorMessage": f"{method} {path} is not part of the Runtime API",
                         "errorType": "InvalidRequest"}

    async def next_invocation(self):
        if not self.first_next.done():
            self.first_next.set_result(True)
        while True:
            invocation = await self.queue.get()
            if not invocation.done.done():  # skip events whose caller gave up
                break
        self.running[invocation.request_id] = invocation
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": "Root=1-" + uuid.uuid4().hex[:8] + "-" +
                                       uuid.uuid4().hex[:24] + ";Sampled=0",
        }
        return 200, headers, invocation.payload


def _json_or_text(body: bytes) -> object:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


def _error_body(body: bytes, headers: dict, default_type: str) -> dict:
    data = _json_or_text(body)
    if not isinstance(data, dict):
        data = {"errorMessage": str(data)}
    error = {"errorMessage": str(data.get("errorMessage", "")),
             "errorType": str(data.get("errorType") or
                              headers.get("lambda-runtime-function-error-type") or default_type),
             "stackTrace": data.get("stackTrace", [])}
    if isinstance(data.get("trace"), list):  # Node.js runtimes send ``trace``
        error = {"errorType": error["errorType"], "errorMessage": error["errorMessage"],
                 "trace": data["trace"]}
    return error


async def _read_request(reader: asyncio.StreamReader):
    line = await reader.readline()
    if not line:
        return None
    method, path, _version = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, path.split("?", 1)[0], headers, body


def _write_response(writer: asyncio.StreamWriter, status: int, headers: dict,
                    body: object) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}[status]
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
