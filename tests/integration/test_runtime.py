"""The Lambda Runtime API inside execution environments, with three kinds of runtime.

The built-in Python runtime, a custom runtime written in shell with curl (as in AWS's
tutorial), and the official runtime interface client (`awslambdaric` from PyPI,
unmodified) all talk to the agent's Runtime API on 127.0.0.1:9001 in the environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

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
