"""External extensions, as Lambda runs them: the executables of the code's ``extensions/``
start before the runtime's init, which waits for their registration; each INVOKE reaches
them; SHUTDOWN reaches them when the environment is reaped (``clock advance`` past
``env_idle``), and they get two seconds to exit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/functions/runtime.yaml"


@pytest.fixture(scope="module")
def runtimes(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, TOPOLOGY)


def invoke(state_dir: Path, name: str, payload: str = "{}") -> dict:
    return json.loads(hp.run("invoke", name, "--payload", payload, "--json",
                             state_dir=state_dir).stdout)


def test_an_extension_counts_invokes_and_sees_shutdown(state_dir: Path, runtimes: dict) -> None:
    replies = [invoke(state_dir, "ext", json.dumps({"n": n})) for n in range(3)]
    assert [r["result"]["event"] for r in replies] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert replies[0]["cold"] is True and replies[0]["init_duration_ms"] >= 300  # waited
    assert len({r["environment"] for r in replies}) == 1
    log_path = state_dir / "logs" / f"{replies[0]['environment']}.log"
    log = log_path.read_text()
    assert "EXTENSION\tName: counter\tState: Ready\tEvents: [INVOKE,SHUTDOWN]" in log
    for n, reply in enumerate(replies, 1):
        assert f"counter: INVOKE {n} {reply['result']['request_id']}" in log
    hp.run("clock", "advance", "16m", state_dir=state_dir)  # past env_idle: reaped
    deadline = time.monotonic() + 15
    while "counter: SHUTDOWN" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "counter: SHUTDOWN spindown after 3 invokes" in log_path.read_text()
