"""The init agent of one execution environment.

Started inside the environment's namespace.  It imports the handler
(``module.function`` under the code directory) once, measuring the init
duration, then listens on a Unix socket and serves one invocation at a time:

    request : {"payload": <JSON>, "request_id": "..."}
    reply   : {"result": <JSON>, "duration_ms": ..., "init_duration_ms": ...}
           or {"errorMessage": "...", "errorType": "...", "stackTrace": [...]}

A handler that raises, returns something that is not JSON, or runs past the
function's timeout gives an AWS-shaped error instead of a result.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import time
import traceback

from lambda_vm.context import LambdaContext


class TimedOutError(Exception):
    pass


def _on_alarm(_signum, _frame):
    raise TimedOutError()


def load_handler(code: str, handler: str):
    module_name, _, function_name = handler.rpartition(".")
    sys.path.insert(0, code)
    module = importlib.import_module(module_name)
    return getattr(module, function_name)


def error(exc: BaseException, error_type: str | None = None, message: str | None = None) -> dict:
    return {"errorMessage": message or str(exc), "errorType": error_type or type(exc).__name__,
            "stackTrace": traceback.format_exception(exc)[1:]}


def invoke(handler, request: dict, args) -> dict:
    context = LambdaContext(args.function, args.memory, request.get("request_id", ""),
                            args.timeout, account=args.account)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        result = handler(request.get("payload"), context)
        signal.setitimer(signal.ITIMER_REAL, 0)
        reply = {"result": json.loads(json.dumps(result))}
    except TimedOutError:
        reply = {"errorMessage": f"Task timed out after {args.timeout:.2f} seconds",
                 "errorType": "Sandbox.Timedout"}
    except Exception as exc:  # the handler's failure is the caller's result
        signal.setitimer(signal.ITIMER_REAL, 0)
        reply = error(exc)
    reply["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
    return reply


def serve(listener: socket.socket, handler, init_reply: dict, args) -> None:
    while True:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            try:
                request = json.loads(data or b"{}")
            except ValueError as exc:
                reply = error(exc, "InvalidRequestContentException")
            else:
                reply = dict(init_reply) if init_reply else invoke(handler, request, args)
            reply["init_duration_ms"] = args.init_duration_ms
            args.init_duration_ms = None  # reported once, with the cold invocation
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execution environment init agent")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--code", required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--memory", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--account", default="000000000000")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGALRM, _on_alarm)
    os.environ.update(AWS_LAMBDA_FUNCTION_NAME=args.function,
                      AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(args.memory),
                      AWS_REGION="us-east-1", LAMBDA_TASK_ROOT=args.code, _HANDLER=args.handler)
    os.chdir(args.code)
    started = time.monotonic()
    init_reply: dict = {}
    try:
        handler = load_handler(args.code, args.handler)
    except Exception as exc:  # reported to every invocation, like Runtime.ImportModuleError
        handler = None
        init_reply = error(exc, "Runtime.ImportModuleError",
                           f"Unable to import module '{args.handler}': {exc}")
    args.init_duration_ms = round((time.monotonic() - started) * 1000, 3)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket + ".tmp")
    listener.listen(4)
    os.rename(args.socket + ".tmp", args.socket)  # appears only once listening
    serve(listener, handler, init_reply, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
