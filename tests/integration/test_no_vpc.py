"""A function without VpcConfig: Lambda's own internet egress, no VPC (examples/no-vpc.yaml)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

PROBE = [sys.executable, "-m", "hyperplane.services.reachprobe"]
SERVER, DB = "203.0.113.10", "10.0.1.10"


@pytest.fixture(scope="module")
def no_vpc(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/no-vpc.yaml")


def probe(state_dir: Path, function: str, *targets: str) -> list[str]:
    out = hp.run("exec", "--function", function, "--", *PROBE, "--timeout", "1.5", *targets,
                 state_dir=state_dir).stdout
    return [r["result"] for r in json.loads(out)]


def test_no_vpc_function_reaches_the_internet_as_lambda(no_vpc: dict, state_dir: Path) -> None:
    reply = hp.run_json("invoke", "public", "--json", state_dir=state_dir)
    assert reply["result"]["saw"]["client"] == "192.0.2.10"
    assert reply["eni"] is None and reply["subnet"] is None
    stats = hp.run_json("stats", state_dir=state_dir)["enis"]["lambda-egress"]
    assert stats["sessions_created"] >= 1


def test_no_vpc_function_reaches_no_vpc(no_vpc: dict, state_dir: Path) -> None:
    """db admits everyone, yet nothing routes from Lambda's egress into a VPC."""
    assert probe(state_dir, "public", f"tcp:{DB}:8080", f"tcp:{SERVER}:80") == \
        ["timeout", "connected"]


def test_a_vpc_function_reaches_its_vpc_and_not_the_internet(no_vpc: dict,
                                                             state_dir: Path) -> None:
    assert probe(state_dir, "inside", f"tcp:{DB}:8080", f"tcp:{SERVER}:80") == \
        ["connected", "timeout"]
