"""The Lambda Runtime API inside execution environments, with three kinds of runtime.

The built-in Python runtime, custom runtimes written in shell with curl (as in AWS's
tutorial: a piped, chunked response; a 2 MB one, which curl sends after `Expect:
100-continue`; an oversized one; a streamed one), a streaming runtime in Python, and the
official runtime interface client (`awslambdaric` from PyPI, unmodified) all talk to the
agent's Runtime API on 127.0.0.1:9001 in the environment.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperplane import jsonline
from tests.integration import hp
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/functions/runtime.yaml"


@pytest.fixture(scope="module")
def runtimes(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, TOPOLOGY)


def invoke(state_dir: Path, name: str, payload: str = "{}", check: bool = True) -> dict:
    """`hyperplane invoke NAME --json`; with check=False a failed invocation is returned too."""
    result = hp.run("invoke", name, "--payload", payload, "--json", state_dir=state_dir,
                    check=check)
    return json.loads(result.stdout)


def test_builtin_runtime_gets_the_documented_event_and_context(state_dir: Path,
                                                               runtimes: dict) -> None:
    reply = invoke(state_dir, "ok", '{"order": 7}')
    result = reply["result"]
    assert result["event"] == {"order": 7}
    assert result["runtime_api"] == "127.0.0.1:9001"
    assert result["arn"] == "arn:aws:lambda:us-east-1:111111111111:function:ok"
    assert 0 < result["remaining_ms"] <= 3000
    assert reply["cold"] is True and reply["init_duration_ms"] > 0
    warm = invoke(state_dir, "ok")
    assert warm["cold"] is False and warm["init_duration_ms"] is None


def test_handler_error_comes_back_aws_shaped(state_dir: Path, runtimes: dict) -> None:
    result = hp.run("invoke", "fail", state_dir=state_dir, check=False)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error == {"errorMessage": "the order is not valid", "errorType": "ValueError"}


def test_timeout_is_sandbox_timedout_and_the_environment_recovers(state_dir: Path,
                                                                   runtimes: dict) -> None:
    reply = invoke(state_dir, "slow", '{"sleep": 5}', check=False)
    assert reply["errorType"] == "Sandbox.Timedout"
    assert reply["errorMessage"] == "Task timed out after 1.00 seconds"
    again = invoke(state_dir, "slow", '{"sleep": 0}')
    assert again["result"] == "finished"


def test_init_error_is_reported_to_every_invocation(state_dir: Path, runtimes: dict) -> None:
    for _ in range(2):
        reply = invoke(state_dir, "broken", check=False)
        assert reply["errorType"] == "Runtime.ImportModuleError"
        assert "missing" in reply["errorMessage"]


def test_custom_runtime_bootstrap_in_shell(state_dir: Path, runtimes: dict) -> None:
    result = invoke(state_dir, "custom", '{"n": 1}')["result"]
    assert result == {"runtime": "custom", "handler": "function.handler", "event": {"n": 1}}


def test_awslambdaric_runs_unmodified_as_the_bootstrap(state_dir: Path, runtimes: dict) -> None:
    reply = invoke(state_dir, "ric", '{"hello": "ric"}')
    assert reply["result"]["via"] == "awslambdaric"
    assert reply["result"]["event"] == {"hello": "ric"}
    assert reply["result"]["function"] == "ric"
    second = invoke(state_dir, "ric", '{"again": true}')
    assert second["cold"] is False and second["result"]["event"] == {"again": True}


# -- issue 16: the Runtime API with ordinary clients -----------------------------------------
def test_a_curl_runtime_may_send_its_response_chunked(state_dir: Path, runtimes: dict) -> None:
    assert invoke(state_dir, "chunked", '{"n": 2}')["result"] == {"via": "chunked",
                                                                  "event": {"n": 2}}


def test_a_2mb_response_goes_through_expect_100_continue(state_dir: Path, runtimes: dict) -> None:
    for _ in range(2):  # cold, then warm
        result = invoke(state_dir, "big")["result"]
        assert result == "a" * 2097152


def test_an_explicit_expect_100_continue(state_dir: Path, runtimes: dict) -> None:
    assert invoke(state_dir, "expect")["result"] == {"via": "expect"}


def test_an_oversized_response_is_function_response_size_too_large(state_dir: Path,
                                                                    runtimes: dict) -> None:
    reply = invoke(state_dir, "oversized", check=False)
    assert reply["errorType"] == "Function.ResponseSizeTooLarge"
    assert reply["errorMessage"] == ("Response payload size (7340032 bytes) exceeded maximum "
                                     "allowed payload size (6291556 bytes).")
    log = (state_dir / "logs" / f"{reply['environment']}.log").read_text()
    assert 'answered 413 {"errorMessage": "Exceeded maximum allowed payload size (6291556 ' \
           'bytes).", "errorType": "RequestEntityTooLarge"}' in log


def test_a_streamed_response_is_the_whole_body(state_dir: Path, runtimes: dict) -> None:
    reply = invoke(state_dir, "stream")
    assert reply["result"] == "first,second,third"
    assert reply["response_mode"] == "streaming" and reply["content_type"] == "text/plain"


def test_a_stream_reaches_the_agents_caller_as_it_is_sent(state_dir: Path,
                                                          runtimes: dict) -> None:
    environment = invoke(state_dir, "pystream")["environment"]  # cold: the runtime is up
    path = state_dir / "envs" / f"{environment.removeprefix('env-')}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    sock.sendall(json.dumps({"payload": {}, "request_id": "s-1", "stream": True}).encode()
                 + b"\n")
    with sock.makefile("rb") as lines:
        arrivals = [json.loads(line) for line in lines]
    sock.close()
    assert arrivals[0] == {"stream": {"content_type": "text/plain"}}
    chunks = [base64.b64decode(m["chunk"]) for m in arrivals[1:-1]]
    assert chunks == [b"first,", b"second,", b"third"]
    assert "result" not in arrivals[-1] and arrivals[-1]["streamed_bytes"] == 18
    # that each came before the function finished: tests/integration/test_streaming.py


def test_a_request_over_6_mb_is_request_entity_too_large(state_dir: Path,
                                                          runtimes: dict) -> None:
    reply = jsonline.request(str(state_dir / "controller.sock"), {
        "op": "invoke", "name": "ok", "payload": "x" * (6 * 1024 * 1024)}, timeout=60)
    assert reply["ok"] is False
    assert reply["error"] == {"errorType": "RequestEntityTooLargeException", "errorMessage":
                              "Request must be smaller than 6291456 bytes for the "
                              "InvokeFunction operation", "statusCode": 413}
