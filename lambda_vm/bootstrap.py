"""The built-in Python runtime: ``module.function`` handlers, in the agent's own process.

What AWS's Python runtime (awslambdaric) does, in small: import the handler named by
``_HANDLER`` from ``LAMBDA_TASK_ROOT`` (its init; failures are AWS's
``Runtime.ImportModuleError``, ``Runtime.UserCodeSyntaxError``,
``Runtime.HandlerNotFound``, ``Runtime.MalformedHandlerName``), then per event call
``handler(event, context)`` in the main thread and answer the JSON result, or
``{errorMessage, errorType, stackTrace}`` for an exception, ``Runtime.MarshalError``
for a result JSON cannot encode, and ``Function.ResponseSizeTooLarge`` past 6 MiB.

Where it differs from AWS's: it is called by the agent directly (``Builtin.invoke``), not
through HTTP to the Runtime API; that is what lets a thousand environments start at
over 100 per second in a few MiB each.  Extensions still see every INVOKE, and a
custom runtime (``bootstrap``, awslambdaric) still takes every event over HTTP.  The
deadline interrupts the handler with SIGALRM (``TimedOut``, a ``BaseException`` that
``except Exception`` does not catch); a handler that swallows it is stopped by
``hard_stop`` at the third alarm.  A handler blocked in C code that never returns to
Python cannot be interrupted: the controller's own timeout then ends the wait.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

from lambda_vm.context import LambdaContext

GRACE = 1.0  # seconds between two alarms to a handler that ignores the first


class TimedOut(BaseException):
    """The invocation's deadline passed (raised in the handler by SIGALRM)."""


class Alarm:
    """SIGALRM at a deadline: ``TimedOut`` in whatever runs, then ``hard_stop``."""

    def __init__(self, hard_stop: Callable[[], None]) -> None:
        self.hard_stop = hard_stop
        self.fired = 0

    def __enter__(self) -> Alarm:
        return self

    def arm(self, seconds: float) -> None:
        self.fired = 0
        signal.signal(signal.SIGALRM, self._ring)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def _ring(self, _signum: int, _frame: object) -> None:
        self.fired += 1
        if self.fired >= 3:
            self.hard_stop()
        signal.setitimer(signal.ITIMER_REAL, GRACE)
        raise TimedOut()

    def __exit__(self, *_exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _error(exc: BaseException, error_type: str | None = None,
           message: str | None = None) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in frames if f.filename != __file__]
    return {"errorMessage": message if message is not None else str(exc),
            "errorType": error_type or type(exc).__name__,
            "stackTrace": traceback.format_list(frames)}


class Builtin:
    """The function's handler, loaded once (``load``), called per event (``invoke``)."""

    def __init__(self, handler: str, task_root: str, function: str, memory: int,
                 max_response: int) -> None:
        self.name, self.task_root = handler, task_root
        self.function, self.memory, self.max_response = function, memory, max_response
        self.handler: Callable | None = None

    def load(self, seconds: float, hard_stop: Callable[[], None]) -> dict | None:
        """Import the handler within ``seconds``; the init error, or None."""
        module_name, _, function_name = self.name.rpartition(".")
        if not module_name or not function_name:
            return {"errorMessage": f"Bad handler '{self.name}': not enough values to "
                    "unpack (expected 2, got 1)", "errorType": "Runtime.MalformedHandlerName",
                    "stackTrace": []}
        module_name = module_name.replace("/", ".")
        if self.task_root not in sys.path:
            sys.path.insert(0, self.task_root)
        try:
            with Alarm(hard_stop) as alarm:
                alarm.arm(seconds)
                module = importlib.import_module(module_name)
        except TimedOut:
            sys.modules.pop(module_name, None)
            return {"errorType": "Sandbox.Timedout", "errorMessage": "init timed out"}
        except SyntaxError as exc:
            return _error(exc, "Runtime.UserCodeSyntaxError",
                          f"Syntax error in module '{module_name}': {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as AWS reports it
            return _error(exc, "Runtime.ImportModuleError",
                          f"Unable to import module '{module_name}': {exc}")
        self.handler = getattr(module, function_name, None)
        if self.handler is None:
            return {"errorMessage": f"Handler '{function_name}' missing on module "
                    f"'{module_name}'", "errorType": "Runtime.HandlerNotFound",
                    "stackTrace": []}
        return None

    def invoke(self, invocation: object, arn: str, hard_stop: Callable[[], None]) -> dict:
        """Run the handler on one event: ``{"result": ...}`` or an AWS-shaped error."""
        context = LambdaContext(self.function, self.memory, invocation.request_id,
                                invocation.deadline_ms, arn, invocation.client_context,
                                invocation.identity)
        os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
        event = invocation.event
        if event is None and invocation.payload not in (b"", b"null"):
            event = json.loads(invocation.payload)
        try:
            with Alarm(hard_stop) as alarm:
                alarm.arm(invocation.deadline - time.monotonic())
                result = self.handler(event, context)
        except TimedOut:
            return timed_out(invocation.timeout)
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the outcome
            return _error(exc)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        if time.monotonic() > invocation.deadline:  # it swallowed the alarm
            return timed_out(invocation.timeout)
        try:
            body = json.dumps(result)
        except (TypeError, ValueError) as exc:
            return {"errorMessage": f"Unable to marshal response: {exc}",
                    "errorType": "Runtime.MarshalError", "stackTrace": []}
        if len(body) > self.max_response:
            size = len(body.encode())
            if size > self.max_response:
                return {"errorType": "Function.ResponseSizeTooLarge", "errorMessage":
                        f"Response payload size ({size} bytes) exceeded maximum allowed "
                        f"payload size ({self.max_response} bytes)."}
        return {"result": result}


def timed_out(timeout: float) -> dict:
    return {"errorMessage": f"Task timed out after {timeout:.2f} seconds",
            "errorType": "Sandbox.Timedout"}
