"""The Lambda Extensions API and the external extensions of an environment (I/O).

The model is AWS's (the developer guide's "Extensions API"): every executable file in
the code's ``extensions/`` directory (what a layer puts in ``/opt/extensions``) is an
external extension.  At init the agent starts them all, in name order, before the
runtime; each registers with ``POST /2020-01-01/extension/register`` (header
``Lambda-Extension-Name``: its file name; body ``{"events": ["INVOKE", "SHUTDOWN"]}``)
and gets its ``Lambda-Extension-Identifier``; the runtime starts once every one has
registered, and init ends when the runtime and every extension have asked for their
next event (``GET /2020-01-01/extension/event/next``).  A name that is no launched
file registers an internal extension (one the runtime process runs), INVOKE only and
while init lasts.  At most ``MAX_EXTENSIONS``.

Events, answered to ``event/next`` with a ``Lambda-Extension-Event-Identifier``:

    {"eventType": "INVOKE", "deadlineMs": .., "requestId": .., "invokedFunctionArn": ..,
     "tracing": {"type": "X-Amzn-Trace-Id", "value": ..}}
    {"eventType": "SHUTDOWN", "deadlineMs": .., "shutdownReason": "spindown"|"timeout"|..}

An invocation's event goes to the runtime and to the extensions together; the next
one waits until every extension has asked for its next event again (``ready``).  At
shutdown (the environment reaped or reset) the extensions subscribed to SHUTDOWN get
it and ``SHUTDOWN_TIMEOUT`` to exit, the others are killed at once, as Lambda does.
Errors are AWS's: 403 ``Extension.InvalidExtensionName``, ``...MissingExtensionIdentifier``,
``...UnknownExtensionIdentifier``, ``...RegistrationClosed``, ``...InvalidEventType``,
``...TooManyExtensions``; ``POST .../init/error`` fails init with the type it names, and
an extension that exits during init fails it with ``Extension.Crash``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lambda_vm.httpserver import Exchange
from lambda_vm.loop import Loop

MAX_EXTENSIONS = 10
SHUTDOWN_TIMEOUT = 2.0  # seconds for the whole shutdown with external extensions
EXTERNAL_EVENTS = ("INVOKE", "SHUTDOWN")
IDENTIFIER = "lambda-extension-identifier"
MAX_BODY = 64 * 1024


@dataclass
class Extension:
    name: str
    external: bool
    ident: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: tuple[str, ...] = ()
    registered: bool = False
    proc: subprocess.Popen | None = None
    waiting: Exchange | None = None   # its parked event/next
    pending: list[bytes] = field(default_factory=list)  # events not yet asked for
    busy: bool = True                 # between an event and its next event/next
    exited: bool = False


def executables(code: str) -> list[str]:
    """The code's external extensions: the executable files of ``code/extensions``."""
    folder = os.path.join(code, "extensions")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    paths = [os.path.join(folder, n) for n in names]
    return [p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)]


class ExtensionsApi:
    def __init__(self, loop: Loop, function: str, handler: str, account: str,
                 on_change: Callable[[], None]) -> None:
        self.loop, self.function, self.handler, self.account = loop, function, handler, account
        self.on_change = on_change  # something that init or an invocation waits for moved
        self.extensions: list[Extension] = []
        self.registration_open = True
        self.failure: dict | None = None
        self.shutting_down = False

    # -- processes -----------------------------------------------------------------------
    def launch(self, paths: list[str], env: dict[str, str], cwd: str,
               start: Callable[..., subprocess.Popen]) -> None:
        """Start every external extension (``start`` is the agent's ``Popen``)."""
        self.extensions, self.registration_open, self.failure = [], True, None
        self.shutting_down = False
        for path in paths[:MAX_EXTENSIONS]:
            extension = Extension(os.path.basename(path), external=True)
            self.extensions.append(extension)
            try:
                extension.proc = start([path], cwd=cwd, env=env)
            except OSError as exc:
                self.failure = {"errorType": "Extension.LaunchError",
                                "errorMessage": f"{extension.name}: {exc}"}
                extension.exited = True
                continue
            self.loop.watch(extension.proc.pid, lambda e=extension: self._exited(e))
        if len(paths) > MAX_EXTENSIONS:
            self.failure = {"errorType": "Extension.LaunchError",
                            "errorMessage": f"Extension limit ({MAX_EXTENSIONS}) reached"}

    def _exited(self, extension: Extension) -> None:
        extension.exited = True
        if extension.proc is not None:
            extension.proc.wait()
        if extension.waiting is not None:
            extension.waiting.connection.close()
            extension.waiting = None
        if not self.shutting_down and self.failure is None and self.registration_open:
            code = extension.proc.returncode if extension.proc else None
            self.failure = {"errorType": "Extension.Crash", "errorMessage":
                            f"Extension {extension.name} exited during init (status {code})"}
        self.on_change()

    def registered(self) -> bool:
        """Every external extension has registered (the runtime may start)."""
        return all(e.registered or e.exited for e in self.extensions if e.external)

    def ready(self) -> bool:
        """Every live extension waits for its next event."""
        return all(e.exited or (e.registered and not e.busy) for e in self.extensions)

    def close_registration(self) -> None:
        self.registration_open = False

    def alive(self) -> list[Extension]:
        return [e for e in self.extensions if not e.exited and e.proc is not None]

    # -- events --------------------------------------------------------------------------
    def invoke_event(self, invocation: object, function_arn: str) -> None:
        event = {"eventType": "INVOKE", "deadlineMs": invocation.deadline_ms,
                 "requestId": invocation.request_id, "invokedFunctionArn": function_arn,
                 "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id}}
        self._send([e for e in self.extensions if "INVOKE" in e.events], event)

    def shutdown(self, reason: str, deadline: float, done: Callable[[], None]) -> None:
        """SHUTDOWN to the subscribers, SIGKILL to the others; ``done`` once all exited
        or at ``deadline`` (the rest killed)."""
        self.shutting_down = True
        event = {"eventType": "SHUTDOWN", "deadlineMs": int(
            (time.time() + max(0.0, deadline - time.monotonic())) * 1000),
                 "shutdownReason": reason}
        subscribed = [e for e in self.alive() if e.registered and "SHUTDOWN" in e.events]
        for extension in self.alive():
            if extension not in subscribed:
                kill(extension.proc)
        self._send(subscribed, event)
        finished = [False]

        def check() -> None:
            if finished[0] or any(not e.exited for e in subscribed):
                return
            finished[0] = True
            timer.cancel()
            done()

        def expire() -> None:
            for extension in self.alive():
                kill(extension.proc)
            if not finished[0]:
                finished[0] = True
                done()
        timer = self.loop.call_at(deadline, expire)
        self.on_change = check
        check()

    def _send(self, extensions: list[Extension], event: dict) -> None:
        body = json.dumps(event).encode()
        for extension in extensions:
            if extension.exited:
                continue
            extension.busy = True
            if extension.waiting is not None:
                exchange, extension.waiting = extension.waiting, None
                answer_event(exchange, body)
            else:
                extension.pending.append(body)

    # -- the HTTP side ---------------------------------------------------------------------
    def route(self, exchange: Exchange, path: str) -> None:
        method = exchange.method
        if path == "/register":
            if method != "POST":
                return exchange.reply(405)
            return collect_json(exchange, lambda body: self.register(exchange, body))
        if path in ("/event/next", "/init/error", "/exit/error"):
            if method != ("GET" if path == "/event/next" else "POST"):
                return exchange.reply(405)
            extension = self.identified(exchange)
            if extension is None:
                return None
            if path == "/event/next":
                return self.next(exchange, extension)
            return collect_json(exchange, lambda _body: self.reported(
                exchange, extension, path == "/init/error"))
        exchange.reply(404, b"404 page not found\n")

    def register(self, exchange: Exchange, body: object) -> None:
        name = exchange.header("lambda-extension-name")
        if not name:
            return exchange.error(403, "Extension.InvalidExtensionName", "Empty extension name")
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            return exchange.error(403, "InvalidRequestFormat", "the body must be a JSON "
                                  "object with a list of events")
        events = tuple(str(e) for e in body.get("events", []))
        extension = next((e for e in self.extensions if e.name == name), None)
        allowed = EXTERNAL_EVENTS if extension is not None and extension.external \
            else ("INVOKE",)  # an internal extension never sees SHUTDOWN
        wrong = [e for e in events if e not in allowed]
        if wrong:
            return exchange.error(403, "Extension.InvalidEventType",
                                  f"{wrong[0]}: ErrorInvalidEventType")
        if extension is not None and extension.registered:
            return exchange.error(403, "Extension.InvalidExtensionState",
                                  "Extension with this name already registered")
        if extension is None:
            if not self.registration_open:
                return exchange.error(403, "Extension.RegistrationClosed",
                                      "Extension registration closed already")
            if len(self.extensions) >= MAX_EXTENSIONS:
                return exchange.error(403, "Extension.TooManyExtensions",
                                      f"Extension limit ({MAX_EXTENSIONS}) reached")
            extension = Extension(name, external=False)
            self.extensions.append(extension)
        extension.events, extension.registered = events, True
        answer: dict[str, str] = {}
        if "accountId" in [f.strip() for f in exchange.header(
                "lambda-extension-accept-feature").split(",")]:
            answer["accountId"] = self.account
        answer.update(functionName=self.function, functionVersion="$LATEST",
                      handler=self.handler)
        exchange.reply_json(200, answer, [("Lambda-Extension-Identifier", extension.ident)])
        self.on_change()

    def identified(self, exchange: Exchange) -> Extension | None:
        ident = exchange.header(IDENTIFIER)
        if not ident:
            exchange.error(403, "Extension.MissingExtensionIdentifier",
                           "Missing Lambda-Extension-Identifier header")
            return None
        try:
            uuid.UUID(ident)
        except ValueError:
            exchange.error(403, "Extension.InvalidExtensionIdentifier",
                           "Invalid Lambda-Extension-Identifier")
            return None
        extension = next((e for e in self.extensions if e.ident == ident), None)
        if extension is None:
            exchange.error(403, "Extension.UnknownExtensionIdentifier",
                           f"Unknown extension {ident}")
        return extension

    def next(self, exchange: Exchange, extension: Extension) -> None:
        if not extension.registered:
            return exchange.error(403, "Extension.InvalidExtensionState",
                                  f"State transition from Launched to Ready failed for "
                                  f"extension {extension.ident}. Error: not registered")
        if extension.pending:
            answer_event(exchange, extension.pending.pop(0))
            return
        if extension.waiting is not None:
            extension.waiting.connection.close()
        extension.waiting, extension.busy = exchange, False
        exchange.connection.on_close.append(lambda: self._gone(extension, exchange))
        self.on_change()

    def _gone(self, extension: Extension, exchange: Exchange) -> None:
        if extension.waiting is exchange:
            extension.waiting = None

    def reported(self, exchange: Exchange, extension: Extension, init: bool) -> None:
        error_type = exchange.header("lambda-extension-function-error-type")
        if not error_type:
            return exchange.error(403, "Extension.MissingHeader",
                                  "Lambda-Extension-Function-Error-Type not found")
        exchange.reply_json(202, {"status": "OK"})
        if init and self.failure is None:
            self.failure = {"errorType": error_type, "errorMessage":
                            f"Extension {extension.name} failed to initialise"}
            self.on_change()


def answer_event(exchange: Exchange, body: bytes) -> None:
    exchange.reply(200, body, [("Content-Type", "application/json"),
                               ("Lambda-Extension-Event-Identifier", str(uuid.uuid4()))])


def collect_json(exchange: Exchange, complete: Callable[[object], None]) -> None:
    kept = bytearray()

    def data(chunk: bytes) -> None:
        if len(kept) < MAX_BODY:
            kept.extend(chunk[:MAX_BODY - len(kept)])

    def end(_trailers: dict[str, str]) -> None:
        try:
            complete(json.loads(kept) if kept.strip() else {})
        except ValueError:
            exchange.error(403, "InvalidRequestFormat", "the body is not JSON")
    exchange.on_body, exchange.on_end = data, end


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL a process and its group (it may have children of its own)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass
