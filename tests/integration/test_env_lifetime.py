"""Environments are recycled after ``settings.timing.env_max_lifetime`` on the emulated
clock, even while they are used (AWS recycles every few hours)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up


@pytest.fixture(scope="module")
def lifetime(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "tests/integration/functions/lifetime.yaml")


def invoke(state_dir: Path) -> dict:
    return json.loads(hp.run("invoke", "ok", "--json", state_dir=state_dir).stdout)


def test_a_used_environment_is_recycled_after_its_lifetime(state_dir: Path,
                                                           lifetime: dict) -> None:
    first = invoke(state_dir)
    assert first["cold"] is True
    for _ in range(2):  # used every 25 minutes: never idle long enough to be reaped
        hp.run("clock", "advance", "25m", state_dir=state_dir)
        again = invoke(state_dir)
        assert again["cold"] is False and again["result"]["request_id"]
    pid = hp.recorded(state_dir)["procs"][first["environment"]]
    hp.run("clock", "advance", "11m", state_dir=state_dir)  # 61 minutes old
    recycled = invoke(state_dir)
    assert recycled["cold"] is True
    assert hp.recorded(state_dir)["procs"][recycled["environment"]] != pid
