"""The built-in Python runtime: a Runtime API client for ``module.function`` handlers.

What AWS's Python runtime does, in small: import the handler named by
``_HANDLER`` from ``LAMBDA_TASK_ROOT`` (reporting a failure to
``/runtime/init/error``), then loop: ``GET .../invocation/next``, call
``handler(event, context)``, ``POST`` the JSON result to ``.../response`` or
an ``{errorMessage, errorType, stackTrace}`` to ``.../error``.  It talks to
the agent only through ``AWS_LAMBDA_RUNTIME_API``, like any other runtime.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
import traceback
from http.client import HTTPConnection

from lambda_vm.context import LambdaContext

PREFIX = "/2018-06-01/runtime"


def _error(exc: BaseException, error_type: str | None = None,
           message: str | None = None) -> dict:
    return {"errorMessage": message or str(exc), "errorType": error_type or type(exc).__name__,
            "stackTrace": traceback.format_exception(exc)[1:]}


def _post(conn: HTTPConnection, path: str, body: object, headers: dict | None = None) -> None:
    conn.request("POST", PREFIX + path, json.dumps(body).encode(),
                 {"Content-Type": "application/json", **(headers or {})})
    conn.getresponse().read()


def load_handler():
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    return getattr(importlib.import_module(module_name), function_name)


def connect() -> HTTPConnection:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
    deadline = time.monotonic() + 10
    while True:  # the agent may still be opening its server
        conn = HTTPConnection(host, int(port or 80))
        try:
            conn.connect()
            # http.client sends a POST's head and body separately: without this, Nagle's
            # algorithm holds the body until the head is acknowledged
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def run() -> int:
    conn = connect()
    try:
        handler = load_handler()
    except Exception as exc:  # reported to the Runtime API, as AWS's runtime does
        _post(conn, "/init/error", _error(exc, "Runtime.ImportModuleError",
                                          f"Unable to import module '{os.environ['_HANDLER']}'"
                                          f": {exc}"))
        return 1
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    memory = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    while True:
        conn.request("GET", PREFIX + "/invocation/next")
        response = conn.getresponse()
        body = response.read()
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id", "")
        deadline_ms = int(response.getheader("Lambda-Runtime-Deadline-Ms", "0"))
        context = LambdaContext(name, memory, request_id,
                                max(0.0, deadline_ms / 1000 - time.time()),
                                account=os.environ.get("HYPERPLANE_ACCOUNT", "000000000000"))
        context.invoked_function_arn = response.getheader(
            "Lambda-Runtime-Invoked-Function-Arn", context.invoked_function_arn)
        try:
            result = handler(json.loads(body) if body else None, context)
            payload = json.dumps(result)
        except Exception as exc:  # the handler's failure is the invocation's outcome
            _post(conn, f"/invocation/{request_id}/error", _error(exc),
                  {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
            continue
        conn.request("POST", f"{PREFIX}/invocation/{request_id}/response", payload.encode(),
                     {"Content-Type": "application/json"})
        conn.getresponse().read()


if __name__ == "__main__":
    sys.exit(run())
