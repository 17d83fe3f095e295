"""The init agent of one execution environment: Runtime API server and runtime keeper.

Started inside the environment's namespace (forked by ``lambda_vm.zygote``).
It starts the function's runtime and serves it the Lambda Runtime API on
127.0.0.1:9001 (``runtime_api``), exactly as AWS's environment does, with
``AWS_LAMBDA_RUNTIME_API`` and the other documented variables set:

    python    ``module.function`` handlers: ``lambda_vm.bootstrap`` runs in a thread of
              the agent (no second interpreter: a thousand environments stay cheap)
    nodejs    ``file.export`` handlers (``nodejs18.x``, ``20.x``, ``22.x``): our own runtime,
              ``lambda_vm/nodejs/runtime.js``, run as ``node runtime.js`` in the code
              directory with ``NODE_PATH`` as AWS sets it (the code's and
              ``/opt/nodejs``'s ``node_modules``); without Node.js (Debian package
              ``nodejs``) every invocation fails with ``Runtime.Unsupported``
    custom    an executable ``bootstrap`` in the code directory, run as its own process
              (a custom runtime, e.g. one that runs ``python -m awslambdaric handler.fn``)

Invocations arrive from the controller on a Unix socket in the state
directory (``hyperplane.jsonline``: one JSON line each way), one at a time:

    request : {"payload": <JSON>, "request_id": "..."}
    reply   : {"result": <JSON>, "duration_ms": ..., "init_duration_ms": ...}
           or {"errorMessage": "...", "errorType": "...", "stackTrace": [...]}

Init is measured from the runtime's start to its first ``/invocation/next``.
A failed init (``/runtime/init/error``, or a runtime that dies first) is
returned to every invocation.  After a timeout (``Sandbox.Timedout``) the
environment is reset, as AWS does: a runtime process is killed and started
again; with the built-in Python runtime (a thread cannot be killed) the agent
replies, then re-executes itself in place (same process id, new init).  A
runtime process that exits during an invocation fails it with
``Runtime.ExitError``; one found dead after its init (it reported a crash and
exited) is started again, with a new init, for the next invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from hyperplane import jsonline
from lambda_vm import bootstrap, efs
from lambda_vm.runtime_api import Broker

API_HOST, API_PORT = "127.0.0.1", 9001
INIT_TIMEOUT = 10.0


LOG_TAIL = 4096  # bytes of an invocation's log that ``LogType: Tail`` returns


NODE_RUNTIME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodejs", "runtime.js")


def node_binary() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def _has_bootstrap(code: str) -> bool:
    return os.access(os.path.join(code, "bootstrap"), os.X_OK)


def unsupported(runtime: str, code: str) -> dict | None:
    """The init error of a runtime this environment cannot run, or None."""
    if runtime.startswith("provided") and not _has_bootstrap(code):
        return {"errorType": "Runtime.InvalidEntrypoint", "errorMessage": "Couldn't find "
                "valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"}
    if runtime.startswith("nodejs") and not _has_bootstrap(code) and node_binary() is None:
        return {"errorType": "Runtime.Unsupported", "errorMessage": f"The runtime {runtime} "
                "needs Node.js (Debian package nodejs), which is not installed"}
    if not runtime.startswith(("python", "nodejs", "provided")):
        return {"errorType": "Runtime.Unsupported", "errorMessage": f"The runtime {runtime} "
                "is not one this emulator runs (python3.x with its built-in runtime, "
                "nodejs18.x/20.x/22.x with its built-in runtime, provided.* with the code's "
                "bootstrap)"}
    return None


def node_environment(code: str, runtime: str) -> dict[str, str]:
    """The environment of the Node.js runtime: AWS's ``NODE_PATH`` (a function's own
    ``NODE_PATH`` comes first)."""
    major = runtime.removeprefix("nodejs").split(".")[0]
    paths = [f"/opt/nodejs/node{major}/node_modules", "/opt/nodejs/node_modules",
             os.path.join(code, "node_modules"), code]
    own = os.environ.get("NODE_PATH")
    return {**os.environ, "NODE_PATH": ":".join(([own] if own else []) + paths)}


class Runtime:
    """The function's runtime: a process (``bootstrap``, ``node``), or the built-in thread.

    ``provided.*`` runs the code's ``bootstrap``, ``nodejs*`` runs ``node`` with our
    ``runtime.js``, a Python runtime runs the built-in thread; an executable
    ``bootstrap`` in the code wins over either built-in runtime (a custom runtime
    such as awslambdaric, as the topology file and the CLI allow).
    """

    def __init__(self, code: str, runtime: str = "python3.12") -> None:
        self.code = code
        self.failure = unsupported(runtime, code)
        self.name = runtime
        self.command: list[str] | None = None
        self.node = False
        if _has_bootstrap(code):
            self.command = [os.path.join(code, "bootstrap")]
        elif runtime.startswith("nodejs") and not self.failure:
            self.command = [node_binary() or "node", NODE_RUNTIME]
            self.node = True
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        if self.failure:
            return
        if self.command:
            env = node_environment(self.code, self.name) if self.node else None
            self.proc = subprocess.Popen(self.command, cwd=self.code, env=env)
        else:
            self.thread = threading.Thread(target=bootstrap.run, name="runtime", daemon=True)
            self.thread.start()

    def alive(self) -> bool:
        if self.failure:
            return False
        if self.proc is not None:
            return self.proc.poll() is None
        return self.thread is not None and self.thread.is_alive()

    def can_restart(self) -> bool:
        return self.command is not None and not self.failure

    def exit_reason(self) -> str:
        """How the process ended, as AWS words it (``exit status 1``, ``signal: killed``)."""
        code = self.proc.poll() if self.proc is not None else None
        if not code:
            return "Runtime exited without providing a reason"
        if code > 0:
            return f"Runtime exited with error: exit status {code}"
        try:
            name = signal.Signals(-code).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-code)
        name = {"kill": "killed", "segv": "segmentation fault"}.get(name, name)
        return f"Runtime exited with error: signal: {name}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Agent:
    def __init__(self, args: argparse.Namespace, runtime: Runtime) -> None:
        self.args = args
        self.runtime = runtime
        self.broker: Broker | None = None
        self.init_duration_ms: float | None = None
        self.lock = asyncio.Lock()
        self.reset_after_reply = False

    def arn(self) -> str:
        return (f"arn:aws:lambda:{self.args.region}:{self.args.account}:function:"
                f"{self.args.function}")

    async def wait_init(self) -> None:
        """Until the runtime asks for its first event, reports an init error, or dies.

        Waits on the event itself; the runtime's liveness is looked at every 50 ms
        only (a thousand environments starting at once must not spin).
        """
        if self.runtime.failure:
            self.broker.init_error = dict(self.runtime.failure)
            self.init_duration_ms = 0.0
            return
        deadline = time.monotonic() + INIT_TIMEOUT
        while not self.broker.first_next.done():
            await asyncio.wait({self.broker.first_next}, timeout=0.05)
            if self.broker.first_next.done():
                break
            if not self.runtime.alive():
                self.broker.init_error = {"errorMessage": "the runtime exited during init",
                                          "errorType": "Runtime.ExitError"}
                break
            if time.monotonic() > deadline:
                self.broker.init_error = {"errorMessage": "init timed out",
                                          "errorType": "Sandbox.Timedout"}
                break
        self.init_duration_ms = round((time.monotonic() - self.runtime.started) * 1000, 3)

    async def restart(self) -> None:
        self.runtime.kill()
        self.broker.first_next = asyncio.get_running_loop().create_future()
        self.broker.init_error = None
        self.runtime.start()
        await self.wait_init()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = jsonline.decode(line or b"{}")
            except ValueError as exc:
                reply = {"errorMessage": str(exc), "errorType": "InvalidRequestContentException"}
            else:
                async with self.lock:
                    reply = await self.invoke(request)
            writer.write(jsonline.encode(reply))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
        if self.reset_after_reply:
            self.reset()

    def reset(self) -> None:
        """Start this environment's agent afresh in the same process (a new init)."""
        if os.path.exists(self.args.socket):
            os.unlink(self.args.socket)
        os.execv(sys.executable, [sys.executable, "-m", "lambda_vm.agent", *self.args.argv])

    async def invoke(self, request: dict) -> dict:
        request_id = request.get("request_id") or ""
        mark = _log_size()
        _log(f"START RequestId: {request_id} Version: $LATEST\n")
        reply = await self.run(request)
        billed = max(1, int(-(-reply["duration_ms"] // 1)))
        _log(f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: "
             f"{reply['duration_ms']:.2f} ms\tBilled Duration: {billed} ms\tMemory Size: "
             f"{self.args.memory} MB\tMax Memory Used: {_max_rss_mb()} MB\t\n")
        if request.get("log_tail"):
            reply["log_tail"] = _log_since(mark)[-LOG_TAIL:]
        return reply

    async def mounted(self) -> bool:
        """The function's EFS mount targets answer (``efs``); else the init error."""
        failure = await efs.check(json.loads(self.args.efs))
        if failure:
            self.broker.init_error = failure
            self.init_duration_ms = 0.0
        return failure is None

    async def run(self, request: dict) -> dict:
        started = time.monotonic()
        if (self.broker.init_error or {}).get("errorType") in efs.ERRORS and \
                await self.mounted():  # a rule added since lets the file system mount now
            self.broker.init_error = None
            self.runtime.start()
            await self.wait_init()
        if not self.broker.init_error and self.runtime.can_restart() and \
                not self.runtime.alive():
            await self.restart()  # it crashed after its init: a new init
        if self.broker.init_error:
            reply = dict(self.broker.init_error)
        else:
            reply = await self.outcome(request)
            if reply.get("errorType") == "Sandbox.Timedout":
                if self.runtime.can_restart():
                    await self.restart()
                else:
                    self.reset_after_reply = True
        reply["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        reply["init_duration_ms"], self.init_duration_ms = self.init_duration_ms, None
        return reply

    async def outcome(self, request: dict) -> dict:
        """The invocation's reply.  The runtime process's liveness is looked at every
        50 ms: one that exits after taking the event fails it (``Runtime.ExitError``);
        one that exits before (just after reporting a crash) is started again."""
        request_id = request.get("request_id") or str(uuid.uuid4())
        invocation = self.broker.invoke(request.get("payload"), request_id, self.args.timeout)
        if self.runtime.proc is None:  # the built-in thread
            return await invocation
        pending = asyncio.ensure_future(invocation)
        try:
            while not pending.done():
                await asyncio.wait({pending}, timeout=0.05)
                if pending.done() or self.runtime.alive():
                    continue
                await asyncio.sleep(0.01)  # an outcome posted just before the exit
                if pending.done():
                    break
                if request_id in self.broker.running:
                    return {"errorType": "Runtime.ExitError", "errorMessage": f"RequestId: "
                            f"{request_id} Error: {self.runtime.exit_reason()}"}
                await self.restart()
                if self.broker.init_error:
                    return dict(self.broker.init_error)
            return pending.result()
        finally:
            if not pending.done():
                pending.cancel()
                self.drop_queued()

    def drop_queued(self) -> None:
        """Forget an event no runtime took (the next runtime must not receive it)."""
        while not self.broker.queue.empty():
            invocation = self.broker.queue.get_nowait()
            if not invocation.done.done():
                invocation.done.cancel()

    async def serve(self) -> None:
        self.broker = Broker(self.arn())
        # a socket bound by hand: asyncio's own host lookup would start a thread pool
        api = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        api.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        api.bind((API_HOST, API_PORT))
        await asyncio.start_server(self.broker.handle, sock=api)
        if await self.mounted():
            self.runtime.start()
            await self.wait_init()
        sock = self.args.socket
        if os.path.exists(sock):
            os.unlink(sock)
        server = await asyncio.start_unix_server(self.handle, sock + ".tmp",
                                                 limit=jsonline.MAX_LINE)
        os.rename(sock + ".tmp", sock)  # appears only once the runtime is initialised
        async with server:
            await server.serve_forever()


def _log(text: str) -> None:
    sys.stdout.flush()
    os.write(1, text.encode())


def _log_size() -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return os.fstat(1).st_size
    except OSError:
        return 0


def _log_since(offset: int) -> str:
    """What this environment logged since ``offset`` (its stdout is its log file)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with open("/proc/self/fd/1", "rb") as fh:
            fh.seek(offset)
            return fh.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def _max_rss_mb() -> int:
    import resource
    return max(1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def runtime_environment(args: argparse.Namespace) -> dict:
    return {
        "AWS_LAMBDA_RUNTIME_API": f"{API_HOST}:{API_PORT}", "_HANDLER": args.handler,
        "LAMBDA_TASK_ROOT": args.code, "LAMBDA_RUNTIME_DIR": os.path.dirname(__file__),
        "AWS_LAMBDA_FUNCTION_NAME": args.function, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(args.memory),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{args.function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "hyperplane", "AWS_REGION": args.region,
        "AWS_DEFAULT_REGION": args.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{args.runtime}",
        "TZ": ":UTC", "HYPERPLANE_ACCOUNT": args.account, "HYPERPLANE_PYTHON": sys.executable,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execution environment init agent")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--code", required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--memory", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--account", default="000000000000")
    parser.add_argument("--runtime", default="python3.12")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--environment", default="{}", help="the function's variables, JSON")
    parser.add_argument("--efs", default="[]", help="file systems to check, JSON (``efs``)")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    os.environ.update(json.loads(args.environment))  # Lambda's own variables win
    os.environ.update(runtime_environment(args))
    os.chdir(args.code)
    runtime = Runtime(args.code, args.runtime)
    signal.signal(signal.SIGTERM, lambda *_: (runtime.kill(), os._exit(0)))
    try:
        asyncio.run(Agent(args, runtime).serve())
    finally:
        runtime.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
