"""NAT gateway port allocation: connections per destination, ErrorPortAllocation, recovery.

The nat-gateway example with ``settings.nat_gateway`` narrowed to 2 connections per
destination and a 2 s idle timeout, so exhaustion and recovery take seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration import hp
from tests.integration.conftest import bring_up

SERVER = "203.0.113.10"
PROBE = [sys.executable, "-m", "hyperplane.services.reachprobe"]


@pytest.fixture(scope="module")
def narrow(state_dir: Path, tmp_path_factory) -> Iterator[dict]:
    document = yaml.safe_load((hp.REPO / "examples" / "nat-gateway.yaml").read_text())
    document["settings"] = {"nat_gateway": {"connections_per_destination": 2,
                                            "idle_timeout": 2}}
    path = tmp_path_factory.mktemp("topology") / "narrow.yaml"
    path.write_text(yaml.safe_dump(document))
    yield from bring_up(state_dir, str(path))


def gateway(state_dir: Path) -> dict:
    return hp.run_json("stats", state_dir=state_dir)["nat_gateways"]["gateways"]["nat-a"]


def probe(state_dir: Path, timeout: float = 1.5) -> str:
    out = hp.run("exec", "app", "--", *PROBE, "--timeout", str(timeout), f"tcp:{SERVER}:80",
                 state_dir=state_dir).stdout
    return json.loads(out)[0]["result"]


def test_ports_per_destination_run_out_then_come_back(narrow: dict, state_dir: Path,
                                                      tmp_path: Path) -> None:
    held = []
    for i in range(2):
        ready, go = tmp_path / f"ready{i}", tmp_path / "go"
        held.append(hp.start_capture("exec", "app", "--", sys.executable, "-m",
                                     "tests.integration.keepalive", "--url",
                                     f"http://{SERVER}:80", "--ready", str(ready), "--go",
                                     str(go), "--wait", "1.5", state_dir=state_dir))
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
    before = gateway(state_dir).get("error_port_allocation", 0)
    assert probe(state_dir) == "timeout"  # a third connection to the same destination
    assert gateway(state_dir)["error_port_allocation"] > before
    for proc in held:
        proc.communicate(timeout=20)
    time.sleep(2.5)  # the idle timeout (2 s) frees the two ports
    assert probe(state_dir) == "connected"
