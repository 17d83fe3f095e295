"""The init agent of one execution environment: its APIs, its runtime, its extensions.

Forked by ``lambda_vm.zygote`` inside the environment's namespace, one thread with one
event loop (``loop``): it serves the Lambda Runtime API and the Extensions API on
127.0.0.1:9001 (``runtime_api``, ``extensions``, over h11: ``httpserver``), with
``AWS_LAMBDA_RUNTIME_API`` and the other documented variables set, and the
controller's requests on a Unix socket in the state directory.  The runtime is the
code's ``bootstrap``, ``node`` with our ``runtime.js``, or the built-in Python runtime
in this very process (``runtimes``, ``bootstrap``).

Init, as Lambda's: the EFS check (``efs``), the code's extensions started and
registered, the runtime started, until the runtime and every extension ask for their
first event; ``INIT_TIMEOUT`` for all of it.  Past it the init is abandoned and run
again by the first invocation, within the function's timeout (AWS's "suppressed
init").  A failed init (``/runtime/init/error``, a runtime or extension that dies) is
returned to every invocation.  The control socket is bound under a temporary name and
renamed into place when init is over: its path appearing means "ready".

Invocations, one at a time (others wait in a bounded queue):

    request : {"payload": <JSON>, "request_id": "...", "log_tail": bool, "stream": bool,
               "client_context": "<JSON>", "identity": "<JSON>"}
    reply   : {"result": <JSON>, "duration_ms": ..., "init_duration_ms": ...}
           or {"errorMessage": "...", "errorType": "...", ..., "duration_ms": ...}

With ``"stream": true`` a streamed response is relayed as it comes: first the line
``{"stream": {"content_type": "..."}}``, then each chunk as its own
line ``{"chunk": "<base64>"}`` as the runtime sends it, and last the reply, without
``result`` (the chunks were the body) but with ``streamed_bytes``; a response that is not
streamed is the reply alone, as without ``"stream"``.  Bounded: once ``STREAM_WINDOW``
bytes wait for a slow caller, the runtime's connection is no longer read until they have
gone (the runtime's writes then block in its socket, as TCP does); the function's
timeout still applies.  A payload over 6 MiB is refused with
``RequestEntityTooLargeException``.  Past the timeout the reply is ``Sandbox.Timedout``
and the environment is reset, as AWS does: extensions get SHUTDOWN (``timeout``), a
runtime process is killed, and the next invocation runs a new init; with the built-in
runtime the agent re-executes itself in place (same process id).  A runtime process that
exits during an invocation fails it with ``Runtime.ExitError``; one found dead later is
started again with a new init.  SIGTERM (the environment reaped) shuts down: the runtime
first, then SHUTDOWN (``spindown``) to the extensions, within ``extensions.SHUTDOWN_TIMEOUT``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections import deque

from hyperplane import jsonline
from lambda_vm import efs, extensions, logs, runtimes
from lambda_vm.bootstrap import Builtin, timed_out
from lambda_vm.httpserver import Server, listen
from lambda_vm.loop import Conn, Interrupted, Loop
from lambda_vm.runtime_api import MAX_REQUEST, MAX_RESPONSE, Invocation, RuntimeApi

API_HOST, API_PORT = "127.0.0.1", 9001
INIT_TIMEOUT = 10.0
RUNTIME_SHUTDOWN = 0.5  # seconds a runtime process gets after SIGTERM
LOG_TAIL = 4096  # bytes of an invocation's log that ``LogType: Tail`` returns
MAX_WAITING = 64  # invocations queued behind the running one
STREAM_WINDOW = 1 << 20  # bytes of a relayed stream waiting for the caller, at most
EXIT_SETTLE = 0.02  # seconds for an outcome sent just before the runtime exited
OPTIONS = {"socket": None, "code": None, "handler": None, "function": None, "memory": "128",
           "timeout": "3.0", "account": "000000000000", "runtime": "python3.12",
           "region": "us-east-1", "environment": "{}", "efs": "[]"}
TOO_LARGE = {"errorType": "RequestEntityTooLargeException", "errorMessage":
             f"Request must be smaller than {MAX_REQUEST} bytes for the InvokeFunction "
             "operation"}


class Args:
    """The agent's options (``--name value`` pairs; no argparse: it costs a forked
    agent about a MiB of its own memory)."""

    def __init__(self, argv: list[str]) -> None:
        values = dict(OPTIONS)
        for i in range(0, len(argv) - 1, 2):
            key = argv[i].removeprefix("--")
            if key not in OPTIONS or not argv[i].startswith("--"):
                raise SystemExit(f"agent: unknown option {argv[i]}")
            values[key] = argv[i + 1]
        missing = [k for k, v in values.items() if v is None]
        if missing or len(argv) % 2:
            raise SystemExit(f"agent: missing --{', --'.join(missing) or 'value'}")
        self.argv = list(argv)
        self.socket, self.code, self.handler = values["socket"], values["code"], values["handler"]
        self.function, self.account = values["function"], values["account"]
        self.runtime, self.region = values["runtime"], values["region"]
        self.memory, self.timeout = int(values["memory"]), float(values["timeout"])
        self.environment = json.loads(values["environment"])
        self.efs = json.loads(values["efs"])

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.function}"


class Agent:
    def __init__(self, args: Args, loop: Loop | None = None) -> None:
        self.args, self.loop = args, loop or Loop()
        self.ext = extensions.ExtensionsApi(self.loop, args.function, args.handler,
                                            args.account, self.changed)
        self.api = RuntimeApi(args.arn, self.ext)
        self.api.gate = self.ext.ready
        self.api.on_ready = self.changed
        self.failure = runtimes.unsupported(args.runtime, args.code)
        self.command = None if self.failure else runtimes.command(args.code, args.runtime)
        self.builtin = None if self.command else Builtin(
            args.handler, args.code, args.function, args.memory, MAX_RESPONSE)
        self.proc = None  # the runtime process
        self.init_error: dict | None = None
        self.init_duration_ms: float | None = None
        self.needs_init = True
        self.resetting = False
        self.waiting: deque[tuple[dict, Conn]] = deque()
        self.current: tuple[Invocation, Conn, dict] | None = None
        self.timer = None
        self.stopping = False
        self.control = None
        self.server = None

    def changed(self) -> None:
        """Something init or the dispatch of an event waits for happened."""
        self.api.dispatch()

    # -- init -------------------------------------------------------------------------------
    def initialise(self, seconds: float, phase: str = "init") -> None:
        """Run an init (blocking on the loop) within ``seconds``."""
        started = time.monotonic()
        deadline = started + seconds
        self.loop.run_until(lambda: not self.resetting)
        if self._alive() or self.ext.alive():
            self.stop_processes("failure")
        self.api.reset()
        self.needs_init = False
        self.init_error = self.failure or efs.check(self.args.efs)
        if self.init_error is None:
            self.init_error = self._init_steps(deadline)
        timed = (self.init_error or {}).get("errorType") == "Sandbox.Timedout"
        self.init_duration_ms = round((time.monotonic() - started) * 1000, 3)
        if self.init_error:  # AWS logs a successful init in the first REPORT line
            status = "timeout" if timed else f"error\tError Type: {self.init_error['errorType']}"
            logs.write(f"INIT_REPORT Init Duration: {self.init_duration_ms:.2f} ms\tPhase: {phase}"
                 f"\tStatus: {status}\n")
        if timed:  # abandoned: the next invocation runs it again (a suppressed init)
            self.init_error, self.needs_init = None, True
            self.stop_processes()

    def _init_steps(self, deadline: float) -> dict | None:
        paths = extensions.executables(self.args.code)
        if paths:
            self.ext.launch(paths, dict(os.environ), self.args.code, runtimes.start)
            if not self.loop.run_until(lambda: self.ext.failure or self.ext.registered(),
                                       deadline - time.monotonic()):
                return _init_timeout()
            if self.ext.failure:
                return self.ext.failure
            self._log_extensions()
        if self.builtin is not None:
            self.api.direct = self.run_builtin
            error = self.builtin.load(deadline - time.monotonic(), self.hard_stop)
            if error is not None:
                return error
        else:
            self.start_runtime()
            if not self.loop.run_until(lambda: self.api.ready or self.api.init_error or
                                       not self._alive() or self.ext.failure,
                                       deadline - time.monotonic()):
                return _init_timeout()
            if self.api.init_error:
                return self.api.init_error
            if not self._alive():
                return {"errorType": "Runtime.ExitError", "errorMessage":
                        runtimes.exit_reason(self.proc)}
        if not self.loop.run_until(lambda: self.ext.failure or self.ext.ready(),
                                   deadline - time.monotonic()):
            return _init_timeout()
        self.ext.close_registration()
        return self.ext.failure

    def _log_extensions(self) -> None:
        for ext in self.ext.extensions:
            if ext.registered:
                logs.write(f"EXTENSION\tName: {ext.name}\tState: Ready\tEvents: "
                     f"[{','.join(ext.events)}]\n")

    def start_runtime(self) -> None:
        env = dict(os.environ)
        if self.command[0] == runtimes.node_binary() and len(self.command) == 2:
            env = runtimes.node_environment(self.args.code, self.args.runtime, env)
        self.proc = runtimes.start(self.command, self.args.code, env)
        self.loop.watch(self.proc.pid, self.runtime_exited)

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_processes(self, reason: str = "timeout") -> None:
        """The runtime process and the extensions, stopped (blocking on the loop)."""
        if self.proc is not None:
            self.loop.unwatch(self.proc.pid)
            runtimes.kill(self.proc)
        if self.ext.alive():
            self.resetting = True
            self.ext.shutdown(reason, time.monotonic() + extensions.SHUTDOWN_TIMEOUT,
                              lambda: setattr(self, "resetting", False))
            self.loop.run_until(lambda: not self.resetting)

    # -- invocations ------------------------------------------------------------------------
    def request(self, line: bytes, conn: Conn) -> None:
        """One line from the controller."""
        try:
            request = jsonline.decode(line)
        except ValueError as exc:
            conn.send(jsonline.encode({"errorMessage": str(exc),
                                       "errorType": "InvalidRequestContentException"}))
            conn.finish()
            return
        if len(self.waiting) >= MAX_WAITING:
            conn.send(jsonline.encode({"errorType": "TooManyRequestsException",
                                       "errorMessage": "Rate Exceeded."}))
            conn.finish()
            return
        self.waiting.append((request, conn))
        self.next_request()

    def next_request(self) -> None:
        while self.current is None and self.waiting and not self.stopping:
            request, conn = self.waiting.popleft()
            if not conn.closed:
                self.start(request, conn)

    def start(self, request: dict, conn: Conn) -> None:
        payload = json.dumps(request.get("payload")).encode()
        if len(payload) > MAX_REQUEST:  # refused before it reaches the environment, as AWS
            conn.send(jsonline.encode(TOO_LARGE))
            conn.finish()
            return
        invocation = Invocation(request.get("request_id") or str(uuid.uuid4()), payload,
                                self.args.timeout, self.finished, request.get("payload"),
                                request.get("client_context"), request.get("identity"))
        mark = logs.size()
        self.current = (invocation, conn, {"mark": mark, "tail": request.get("log_tail")})
        if request.get("stream"):
            invocation.on_stream = lambda content_type: conn.send(jsonline.encode(
                {"stream": {"content_type": content_type}}))
            invocation.on_chunk = lambda chunk: relay(invocation, conn, chunk)
        logs.write(f"START RequestId: {invocation.request_id} Version: $LATEST\n")
        self.prepare(invocation)
        if invocation.outcome is not None:
            return
        if self.init_error:
            invocation.finish(dict(self.init_error))
            return
        if self.builtin is None:
            self.timer = self.loop.call_at(invocation.deadline, lambda: invocation.finish(
                timed_out(self.args.timeout)))
        self.api.submit(invocation)

    def prepare(self, invocation: Invocation) -> None:
        """The init this invocation needs first, if any: a suppressed one, a new runtime
        after a crash, or a file system that answers now."""
        if (self.init_error or {}).get("errorType") in efs.ERRORS:
            self.needs_init = True
        elif self.command and not self.init_error and not self._alive():
            self.needs_init = True  # it exited after its init (a crash it reported)
        if not self.needs_init:
            return
        self.initialise(invocation.deadline - time.monotonic(), "invoke")
        if self.needs_init:  # it did not finish within the invocation's time
            invocation.finish(timed_out(self.args.timeout))

    def run_builtin(self, invocation: Invocation) -> None:
        invocation.finish(self.builtin.invoke(invocation, self.args.arn, self.hard_stop))

    def runtime_exited(self) -> None:
        proc = self.proc
        self.loop.call_later(EXIT_SETTLE, lambda: self._exited(proc))

    def _exited(self, proc: object) -> None:
        if self.current is None or proc is not self.proc:
            return
        invocation = self.current[0]
        if invocation.outcome is not None:
            return
        if self.api.running is invocation:  # it had taken the event
            invocation.finish({"errorType": "Runtime.ExitError", "errorMessage":
                               f"RequestId: {invocation.request_id} Error: "
                               f"{runtimes.exit_reason(proc)}"})
            return
        self.initialise(invocation.deadline - time.monotonic(), "invoke")  # a new runtime
        if invocation.outcome is not None:
            return
        if self.needs_init:
            invocation.finish(timed_out(self.args.timeout))
        elif self.init_error:
            invocation.finish(dict(self.init_error))
        else:
            self.api.dispatch()

    def finished(self, outcome: dict) -> None:
        invocation, conn, meta = self.current
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.api.done(invocation)
        reply = dict(outcome)
        reply["duration_ms"] = round((time.monotonic() - invocation.started) * 1000, 3)
        reply["init_duration_ms"], self.init_duration_ms = self.init_duration_ms, None
        billed = max(1, int(-(-reply["duration_ms"] // 1)))
        init = "" if reply["init_duration_ms"] is None else \
            f"Init Duration: {reply['init_duration_ms']:.2f} ms\t"
        logs.write(f"END RequestId: {invocation.request_id}\nREPORT RequestId: "
             f"{invocation.request_id}\tDuration: {reply['duration_ms']:.2f} ms\tBilled "
             f"Duration: {billed} ms\tMemory Size: {self.args.memory} MB\tMax Memory Used: "
             f"{logs.max_rss_mb()} MB\t{init}\n")
        if meta["tail"]:
            reply["log_tail"] = logs.since(meta["mark"])[-LOG_TAIL:]
        conn.send(jsonline.encode(reply))
        conn.finish()
        self.current = None
        if outcome.get("errorType") == "Sandbox.Timedout":
            self.reset()
        self.loop.call_later(0, self.next_request)

    def reset(self) -> None:
        """After a timeout: a new init for the next invocation, as AWS resets."""
        if self.builtin is not None:
            self.loop.call_later(0, self.reexec)
            return
        self.stop_processes("timeout")
        self.needs_init = True

    def reexec(self) -> None:
        """The built-in runtime cannot be stopped alone: this process starts afresh."""
        self.stop_processes("timeout")
        if os.path.exists(self.args.socket):
            os.unlink(self.args.socket)
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "lambda_vm.agent", *self.args.argv])

    def hard_stop(self) -> None:
        """A handler that ignored its deadline: answer the caller and start afresh."""
        if self.current is not None:
            invocation, conn, _meta = self.current
            conn.sock.setblocking(True)
            try:
                conn.sock.sendall(jsonline.encode({**timed_out(self.args.timeout),
                                                   "duration_ms": round((time.monotonic() -
                                                   invocation.started) * 1000, 3)}))
            except OSError:
                pass
        self.reexec()

    # -- the process ----------------------------------------------------------------------------
    def serve(self, listener: socket.socket | None = None) -> None:
        """Init, then serve until SIGTERM (the Runtime API on ``listener``, or 9001)."""
        self.server = Server(self.loop, listener or listen(API_HOST, API_PORT), self.api)
        self.initialise(INIT_TIMEOUT)
        self.control = bind_unix(self.args.socket)
        self.control.setblocking(False)
        self.loop.reader(self.control, self.accept)
        try:
            self.loop.run_until(lambda: self.stopping)
        except Interrupted:
            pass
        self.shutdown()

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.control.accept()
            except (BlockingIOError, InterruptedError):
                return
            ControlConn(self, sock)

    def shutdown(self) -> None:
        if self.proc is not None and self._alive():
            self.loop.unwatch(self.proc.pid)
            runtimes.terminate(self.proc, RUNTIME_SHUTDOWN)
        if self.ext.alive():
            done = []
            self.ext.shutdown("spindown", time.monotonic() + extensions.SHUTDOWN_TIMEOUT -
                              RUNTIME_SHUTDOWN, lambda: done.append(True))
            self.loop.run_until(lambda: bool(done))
        if os.path.exists(self.args.socket):
            os.unlink(self.args.socket)

    def stop(self, *_args: object) -> None:
        """SIGTERM: stop serving (at once when idle, else after what runs)."""
        self.stopping = True
        if self.loop.selecting:
            raise Interrupted()


class ControlConn:
    """One connection from the controller: a request line in, lines out."""

    def __init__(self, agent: Agent, sock: socket.socket) -> None:
        self.agent, self.buffer = agent, bytearray()
        self.conn = Conn(agent.loop, sock, self.data)

    def data(self, chunk: bytes) -> None:
        self.buffer += chunk
        if chunk.endswith(b"\n"):
            self.conn.pause()
            self.agent.request(bytes(self.buffer), self.conn)
        elif len(self.buffer) > jsonline.MAX_LINE:
            self.conn.close()


def relay(invocation: Invocation, conn: Conn, chunk: bytes) -> None:
    """One chunk of a streamed response to the caller; the runtime's connection paused
    while more than ``STREAM_WINDOW`` bytes wait for the caller, resumed when they have
    gone (or the caller has: the rest is then read and dropped)."""
    conn.send(jsonline.encode({"chunk": base64.b64encode(chunk).decode()}))
    if conn.closed or conn.pending <= STREAM_WINDOW or invocation.pause is None:
        return
    invocation.pause()
    conn.on_drain = lambda: invocation.outcome is None and invocation.resume()


def _init_timeout() -> dict:
    return {"errorType": "Sandbox.Timedout", "errorMessage": "init timed out"}


def bind_unix(path: str) -> socket.socket:
    """The control socket, bound under a temporary name and renamed into place."""
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path + ".tmp"):
        os.unlink(path + ".tmp")
    sock.bind(path + ".tmp")
    sock.listen(64)
    os.rename(path + ".tmp", path)
    return sock


CONSTANT_ENVIRONMENT = ("AWS_LAMBDA_RUNTIME_API", "LAMBDA_RUNTIME_DIR",
                        "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
                        "AWS_LAMBDA_LOG_STREAM_NAME", "TZ", "HYPERPLANE_PYTHON")


def runtime_environment(args: Args) -> dict:
    return {
        "AWS_LAMBDA_RUNTIME_API": f"{API_HOST}:{API_PORT}", "_HANDLER": args.handler,
        "LAMBDA_TASK_ROOT": args.code, "LAMBDA_RUNTIME_DIR": os.path.dirname(__file__),
        "AWS_LAMBDA_FUNCTION_NAME": args.function, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(args.memory),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{args.function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "hyperplane", "AWS_REGION": args.region,
        "AWS_DEFAULT_REGION": args.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{args.runtime}",
        "TZ": ":UTC", "HYPERPLANE_ACCOUNT": args.account, "HYPERPLANE_PYTHON": sys.executable,
    }


def main(argv: list[str] | None = None) -> int:
    args = Args(list(argv if argv is not None else sys.argv[1:]))
    os.environ.update(args.environment)  # Lambda's own variables win
    for key, value in runtime_environment(args).items():
        if os.environ.get(key) != value:  # the zygote set the constant ones already
            os.environ[key] = value
    os.chdir(args.code)
    sys.stdout.reconfigure(line_buffering=True)
    agent = Agent(args)
    signal.signal(signal.SIGTERM, agent.stop)
    try:
        agent.serve()
    except Interrupted:  # SIGTERM while an init waited
        pass
    finally:
        if agent.proc is not None:
            runtimes.kill(agent.proc)
        for ext in agent.ext.alive():
            extensions.kill(ext.proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
