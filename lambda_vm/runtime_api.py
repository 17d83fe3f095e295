"""The Lambda Runtime API, served by an environment's agent on 127.0.0.1:9001 (I/O).

The model is AWS's (the Lambda developer guide's "Runtime API", and its reference
implementation, the runtime interface emulator): the function's runtime long-polls
``GET /2018-06-01/runtime/invocation/next`` for an event, then posts the result to
``.../invocation/{id}/response`` or ``.../invocation/{id}/error``; ``POST
.../runtime/init/error`` reports a failed initialisation.

    GET  .../invocation/next          200, the event; headers Lambda-Runtime-Aws-Request-Id,
                                      -Deadline-Ms, -Invoked-Function-Arn, -Trace-Id, and
                                      -Client-Context / -Cognito-Identity when given
    POST .../invocation/{id}/response 202 {"status":"OK"}; 400 InvalidRequestID for an id
                                      that is not the running invocation's; 413
                                      RequestEntityTooLarge past 6 MiB + 100 bytes (the
                                      invocation: Function.ResponseSizeTooLarge, its real
                                      size named); 400 InvalidFunctionResponseMode for a
                                      mode other than ``streaming``
    POST .../invocation/{id}/error    202; the type from Lambda-Runtime-Function-Error-Type
                                      or the body's errorType
    POST .../init/error               202; every invocation gets this error

Response streaming: ``Lambda-Runtime-Function-Response-Mode: streaming`` with a chunked
body.  When the invocation relays (its ``on_chunk`` is set: a caller that asked for a
stream), ``on_stream(content_type)`` says the stream began, each chunk goes to
``on_chunk`` as it arrives and none is kept: the outcome has no ``result``, only
``response_mode``, ``content_type`` and ``streamed_bytes``.  The relay may ``pause`` the
runtime's connection (its bytes then wait in the runtime's socket: TCP's own flow
control) and ``resume`` it; settling the invocation always resumes it.  Otherwise the
whole body, up to 20 MiB, is the result.  An error after the stream began comes in the
trailers
``Lambda-Runtime-Function-Error-Type`` and ``Lambda-Runtime-Function-Error-Body``
(base64 of the error's JSON).

``RuntimeApi`` holds the invocation in flight between the agent (``submit``; the outcome
comes to ``Invocation.on_done``) and the runtime's HTTP requests, and routes the whole
server's paths: the Extensions API (``extensions.ExtensionsApi``) under /2020-01-01,
and AWS's stubs of the Logs and Telemetry APIs (202 ``Logs.NotSupported``, as the
emulator answers).  A built-in runtime in the agent's own process takes events through
``direct`` instead of HTTP.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lambda_vm.httpserver import Exchange

PREFIX = "/2018-06-01/runtime"
EXTENSION_PREFIX = "/2020-01-01/extension"
MAX_REQUEST = 6 * 1024 * 1024           # an invoke's payload (6291456 bytes)
MAX_RESPONSE = 6 * 1024 * 1024 + 100    # a buffered response (AWS's MaxPayloadSize)
MAX_STREAMED = 20 * 1024 * 1024         # a streamed response (the documented 20 MiB)
MAX_ERROR = 1 << 20                     # an error or init error body kept
STUBS = {"/2020-08-15/logs": ("Logs.NotSupported", "Logs API is not supported"),
         "/2022-07-01/telemetry": ("Telemetry.NotSupported", "Telemetry API is not supported")}
MODE_HEADER = "lambda-runtime-function-response-mode"
ERROR_TYPE_HEADER = "lambda-runtime-function-error-type"
ERROR_BODY_TRAILER = "lambda-runtime-function-error-body"


def trace_id() -> str:
    """An X-Ray trace header as Lambda passes it (``Root=1-<time>-<id>;Parent=..``)."""
    ident = uuid.uuid4().hex
    return f"Root=1-{int(time.time()):08x}-{ident[:24]};Parent={ident[16:]};Sampled=0"


@dataclass
class Invocation:
    request_id: str
    payload: bytes                 # the event, as the runtime receives it
    timeout: float                 # seconds
    on_done: Callable[[dict], None]
    event: object = None           # the decoded event (the built-in runtime takes it)
    client_context: str | None = None  # JSON text
    identity: str | None = None        # JSON text
    on_chunk: Callable[[bytes], None] | None = None   # relays a streamed response
    on_stream: Callable[[str], None] | None = None    # its content type, when it begins
    pause: Callable[[], None] | None = None    # the runtime's streaming connection
    resume: Callable[[], None] | None = None
    started: float = field(default_factory=time.monotonic)
    deadline_ms: int = 0
    trace_id: str = field(default_factory=trace_id)
    outcome: dict | None = None

    def __post_init__(self) -> None:
        self.deadline_ms = int((time.time() + self.timeout) * 1000)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def finish(self, outcome: dict) -> bool:
        """Settle once; False when it was settled already."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        if self.resume is not None:  # a paused stream's connection is read again
            self.resume()
        self.on_done(outcome)
        return True

    def headers(self, function_arn: str) -> list[tuple[str, str]]:
        out = [("Content-Type", "application/json"),
               ("Lambda-Runtime-Aws-Request-Id", self.request_id),
               ("Lambda-Runtime-Deadline-Ms", str(self.deadline_ms)),
               ("Lambda-Runtime-Invoked-Function-Arn", function_arn),
               ("Lambda-Runtime-Trace-Id", self.trace_id)]
        if self.client_context:
            out.append(("Lambda-Runtime-Client-Context", self.client_context))
        if self.identity:
            out.append(("Lambda-Runtime-Cognito-Identity", self.identity))
        return out


class RuntimeApi:
    """The invocation in flight and the runtime's side of it."""

    def __init__(self, function_arn: str, extensions: object = None) -> None:
        self.function_arn = function_arn
        self.extensions = extensions  # an ``extensions.ExtensionsApi`` (or None)
        self.queue: deque[Invocation] = deque()
        self.running: Invocation | None = None
        self.waiting: Exchange | None = None  # the runtime's parked /next
        self.init_error: dict | None = None
        self.ready = False  # the runtime has asked for an event since its (re)start
        self.on_ready: Callable[[], None] = lambda: None
        self.direct: Callable[[Invocation], None] | None = None  # a built-in runtime
        self.gate: Callable[[], bool] = lambda: True  # extensions ready for an event

    def reset(self) -> None:
        """A new runtime: nothing it asked for before counts."""
        if self.waiting is not None:
            self.waiting.connection.close()
        self.waiting, self.running, self.ready, self.init_error = None, None, False, None

    def submit(self, invocation: Invocation) -> None:
        self.queue.append(invocation)
        self.dispatch()

    def dispatch(self) -> None:
        """Hand the next event to the runtime, once it and every extension are ready."""
        while self.queue and self.queue[0].outcome is not None:
            self.queue.popleft()  # its caller has its answer already (a timeout)
        if not self.queue or self.running is not None or not self.gate():
            return
        if self.direct is None and self.waiting is None:
            return
        invocation = self.running = self.queue.popleft()
        if self.extensions is not None:
            self.extensions.invoke_event(invocation, self.function_arn)
        if self.direct is not None:
            self.direct(invocation)
            return
        exchange, self.waiting = self.waiting, None
        exchange.reply(200, invocation.payload, invocation.headers(self.function_arn))

    def done(self, invocation: Invocation) -> None:
        """The running invocation is over (its outcome is known, or it was abandoned)."""
        if self.running is invocation:
            self.running = None

    # -- the HTTP side --------------------------------------------------------------------
    def begin(self, exchange: Exchange) -> None:
        path = exchange.path
        if path.startswith(PREFIX + "/"):
            self.route(exchange, path[len(PREFIX):])
        elif path.startswith(EXTENSION_PREFIX + "/") and self.extensions is not None:
            self.extensions.route(exchange, path[len(EXTENSION_PREFIX):])
        elif path in STUBS and exchange.method == "PUT":
            collect(exchange, MAX_ERROR, lambda _b, _n: exchange.error(202, *STUBS[path]))
        else:
            not_found(exchange)

    def route(self, exchange: Exchange, path: str) -> None:
        method, parts = exchange.method, path.split("/")
        if path == "/invocation/next":
            if method != "GET":
                return exchange.reply(405)
            return self.next(exchange)
        if path == "/init/error":
            if method != "POST":
                return exchange.reply(405)
            return collect(exchange, MAX_ERROR, lambda body, _n: self.init_failed(
                exchange, body))
        if len(parts) == 4 and parts[1] == "invocation" and parts[3] in ("response", "error"):
            if method != "POST":
                return exchange.reply(405)
            invocation = self.running
            if invocation is None or invocation.request_id != parts[2] or \
                    invocation.outcome is not None:
                return exchange.error(400, "InvalidRequestID", "Invalid request ID")
            if parts[3] == "error":
                return collect(exchange, MAX_ERROR, lambda body, _n: self.errored(
                    exchange, invocation, body))
            return self.response(exchange, invocation)
        not_found(exchange)

    def next(self, exchange: Exchange) -> None:
        if self.waiting is not None:  # a second poller: the first one is forgotten
            self.waiting.connection.close()
        self.waiting = exchange
        exchange.connection.on_close.append(lambda: self._gone(exchange))
        if not self.ready:
            self.ready = True
            self.on_ready()
        self.dispatch()

    def _gone(self, exchange: Exchange) -> None:
        if self.waiting is exchange:
            self.waiting = None

    def init_failed(self, exchange: Exchange, body: bytes) -> None:
        self.init_error = error_body(body, exchange.header(ERROR_TYPE_HEADER),
                                     "Runtime.Unknown")
        exchange.reply_json(202, {"status": "OK"})
        self.on_ready()

    def errored(self, exchange: Exchange, invocation: Invocation, body: bytes) -> None:
        exchange.reply_json(202, {"status": "OK"})
        invocation.finish(error_body(body, exchange.header(ERROR_TYPE_HEADER), "Unhandled"))

    def response(self, exchange: Exchange, invocation: Invocation) -> None:
        mode = exchange.header(MODE_HEADER)
        if mode and mode != "streaming":
            exchange.error(400, "InvalidFunctionResponseMode", "Invalid function response mode")
            invocation.finish({"errorType": "Runtime.InvalidResponseModeHeader",
                               "errorMessage": ""})
            return
        if mode == "streaming":
            return self.streamed(exchange, invocation)
        declared = exchange.header("content-length")
        if declared.isdigit() and int(declared) > MAX_RESPONSE and \
                exchange.header("expect").lower() == "100-continue":
            return self.too_large(exchange, invocation, int(declared), MAX_RESPONSE)

        def complete(body: bytes, size: int) -> None:
            if size > MAX_RESPONSE:
                return self.too_large(exchange, invocation, size, MAX_RESPONSE)
            exchange.reply_json(202, {"status": "OK"})
            invocation.finish({"result": json_or_text(body)})
        collect(exchange, MAX_RESPONSE, complete)
        self._truncation(exchange, invocation)

    def streamed(self, exchange: Exchange, invocation: Invocation) -> None:
        kept = bytearray()
        size = [0]
        content_type = exchange.header("content-type", "application/octet-stream")
        relay = invocation.on_chunk is not None
        if relay:
            conn = exchange.connection.conn
            invocation.pause, invocation.resume = conn.pause, conn.resume
            if invocation.on_stream is not None:
                invocation.on_stream(content_type)

        def data(chunk: bytes) -> None:
            size[0] += len(chunk)
            if size[0] > MAX_STREAMED or invocation.outcome is not None:
                return
            if relay:
                invocation.on_chunk(chunk)
            else:
                kept.extend(chunk)

        def end(trailers: dict[str, str]) -> None:
            if size[0] > MAX_STREAMED:
                return self.too_large(exchange, invocation, size[0], MAX_STREAMED)
            exchange.reply_json(202, {"status": "OK"})
            error_type = trailers.get(ERROR_TYPE_HEADER)
            if error_type:
                try:
                    raw = base64.b64decode(trailers.get(ERROR_BODY_TRAILER, ""))
                except ValueError:
                    raw = b""
                invocation.finish(error_body(raw, error_type, error_type))
                return
            outcome = {"response_mode": "streaming", "content_type": content_type}
            if relay:
                outcome["streamed_bytes"] = size[0]
            else:
                outcome["result"] = json_or_text(bytes(kept))
            invocation.finish(outcome)
        exchange.on_body, exchange.on_end = data, end
        self._truncation(exchange, invocation)

    def too_large(self, exchange: Exchange, invocation: Invocation, size: int,
                  limit: int) -> None:
        exchange.error(413, "RequestEntityTooLarge",
                       f"Exceeded maximum allowed payload size ({limit} bytes).")
        invocation.finish({"errorType": "Function.ResponseSizeTooLarge", "errorMessage":
                           f"Response payload size ({size} bytes) exceeded maximum allowed "
                           f"payload size ({limit} bytes)."})

    def _truncation(self, exchange: Exchange, invocation: Invocation) -> None:
        def closed() -> None:
            if not exchange.body_done:
                invocation.finish({"errorType": "Runtime.TruncatedResponse",
                                   "errorMessage": "HTTP request detected as truncated"})
        exchange.connection.on_close.append(closed)


def collect(exchange: Exchange, limit: int, complete: Callable[[bytes, int], None]) -> None:
    """Take a request body: its first ``limit`` bytes and its whole size, then
    ``complete(body, size)``."""
    kept = bytearray()
    size = [0]

    def data(chunk: bytes) -> None:
        if size[0] < limit:
            kept.extend(chunk[:limit - size[0]])
        size[0] += len(chunk)
    exchange.on_body = data
    exchange.on_end = lambda _trailers: complete(bytes(kept), size[0])


def not_found(exchange: Exchange) -> None:
    exchange.reply(404, b"404 page not found\n")


def json_or_text(body: bytes) -> object:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


def error_body(body: bytes, header_type: str, default_type: str) -> dict:
    """An error the runtime posted, as the invocation's outcome."""
    data = json_or_text(body)
    if not isinstance(data, dict):
        data = {"errorMessage": "" if data is None else str(data)}
    error = {"errorMessage": str(data.get("errorMessage", "")),
             "errorType": str(data.get("errorType") or header_type or default_type),
             "stackTrace": data.get("stackTrace", [])}
    if isinstance(data.get("trace"), list):  # Node.js runtimes send ``trace``
        error = {"errorType": error["errorType"], "errorMessage": error["errorMessage"],
                 "trace": data["trace"]}
    return error
