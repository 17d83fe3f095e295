"""The agent with the built-in Python runtime, in this process (no namespaces): results
and errors as AWS's Python runtime shapes them, the payload limits, the deadline, the
init limit and a suppressed init, and the log lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lambda_vm import agent
from lambda_vm.httpserver import Server, listen
from lambda_vm.runtime_api import MAX_REQUEST
from tests.unit.lambda_vm.harness import agent_invoke

HANDLERS = '''
import time
time.sleep(float(__import__("os").environ.get("INIT_SLEEP", "0")))

def echo(event, context):
    return {"event": event, "id": context.aws_request_id, "arn": context.invoked_function_arn,
            "left": context.get_remaining_time_in_millis(), "name": context.function_name,
            "client": context.client_context.custom if context.client_context else None,
            "identity": context.identity.cognito_identity_id if context.identity else None}

def fail(event, context):
    raise KeyError("order")

def slow(event, context):
    time.sleep(5)

def stubborn(event, context):
    for _ in range(25):  # 2.5 s: past the third alarm (0.3 + 1 + 1 s)
        try:
            time.sleep(0.1)
        except BaseException:
            pass
    return "never"

def huge(event, context):
    return "x" * (6 * 1024 * 1024 + 100)

def unencodable(event, context):
    return {1, 2}
'''


@pytest.fixture()
def code(tmp_path: Path) -> Path:
    (tmp_path / "fns.py").write_text(HANDLERS)
    return tmp_path


def make(code: Path, handler: str, timeout: float = 3.0) -> agent.Agent:
    args = agent.Args(["--socket", str(code / "agent.sock"), "--code", str(code), "--handler",
                       handler, "--function", "fn", "--timeout", str(timeout),
                       "--account", "123456789012"])
    the_agent = agent.Agent(args)
    the_agent.server = Server(the_agent.loop, listen("127.0.0.1", 0), the_agent.api)
    the_agent.reexecs = []
    the_agent.reexec = lambda: the_agent.reexecs.append(True)  # not this test process
    return the_agent


def run(the_agent: agent.Agent, payload: object = None, **request: object) -> dict:
    return agent_invoke(the_agent, {"payload": payload, "request_id": "r-1", **request})[-1]


@pytest.fixture(autouse=True)
def fresh_modules() -> None:
    yield
    sys.modules.pop("fns", None)


def test_a_result_with_the_context_aws_gives(code: Path) -> None:
    the_agent = make(code, "fns.echo")
    the_agent.initialise(5)
    reply = run(the_agent, {"a": 1}, client_context='{"custom": {"k": 1}}',
                identity='{"cognitoIdentityId": "id-7"}')
    result = reply.pop("result")
    assert result["event"] == {"a": 1} and result["id"] == "r-1" and result["name"] == "fn"
    assert result["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert 0 < result["left"] <= 3000
    assert result["client"] == {"k": 1} and result["identity"] == "id-7"
    assert reply["init_duration_ms"] > 0 and reply["duration_ms"] > 0
    assert run(the_agent, 2)["init_duration_ms"] is None  # warm


def test_errors_as_the_python_runtime_shapes_them(code: Path) -> None:
    failing = make(code, "fns.fail")
    failing.initialise(5)
    reply = run(failing)
    assert reply["errorType"] == "KeyError" and reply["errorMessage"] == "'order'"
    assert any("fns.py" in line and "in fail" in line for line in reply["stackTrace"])
    missing = make(code, "nope.handler")
    missing.initialise(5)
    assert run(missing)["errorMessage"] == ("Unable to import module 'nope': No module named "
                                            "'nope'")
    absent = make(code, "fns.absent")
    absent.initialise(5)
    assert run(absent)["errorType"] == "Runtime.HandlerNotFound"
    unencodable = make(code, "fns.unencodable")
    unencodable.initialise(5)
    assert run(unencodable)["errorType"] == "Runtime.MarshalError"


def test_the_payload_limits(code: Path) -> None:
    huge = make(code, "fns.huge")
    huge.initialise(5)
    assert run(huge)["errorMessage"] == ("Response payload size (6291558 bytes) exceeded "
                                         "maximum allowed payload size (6291556 bytes).")
    echo = make(code, "fns.echo")
    echo.initialise(5)
    reply = run(echo, "y" * MAX_REQUEST)
    assert reply["errorType"] == "RequestEntityTooLargeException"
    assert reply["errorMessage"] == ("Request must be smaller than 6291456 bytes for the "
                                     "InvokeFunction operation")


def test_the_deadline_stops_a_handler_and_resets_the_environment(code: Path) -> None:
    slow = make(code, "fns.slow", timeout=0.3)
    slow.initialise(5)
    reply = run(slow)
    assert reply["errorType"] == "Sandbox.Timedout"
    assert reply["errorMessage"] == "Task timed out after 0.30 seconds"
    slow.loop.run_until(lambda: bool(slow.reexecs), 5)
    assert slow.reexecs  # the built-in runtime starts afresh (a new process image)
    stubborn = make(code, "fns.stubborn", timeout=0.3)
    stubborn.initialise(5)
    assert run(stubborn)["errorType"] == "Sandbox.Timedout"  # it swallowed the alarm


def test_an_init_past_its_limit_runs_again_in_the_first_invocation(
        code: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INIT_SLEEP", "0.4")
    the_agent = make(code, "fns.echo", timeout=3)
    the_agent.initialise(0.1)
    assert the_agent.needs_init and the_agent.init_error is None
    reply = run(the_agent, 5)
    assert reply["result"]["event"] == 5
    assert reply["init_duration_ms"] >= 400  # the suppressed init, in the invocation
    sys.modules.pop("fns", None)  # each environment is its own process: a fresh import
    short = make(code, "fns.echo", timeout=0.2)
    short.initialise(0.1)
    assert run(short)["errorType"] == "Sandbox.Timedout"
