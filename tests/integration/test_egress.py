"""VPC routing and egress with real packets (examples/nat-gateway.yaml).

A private subnet reaches the emulated internet only through the NAT gateway, and the
public server sees the gateway's Elastic IP; a subnet without a route table times out;
nothing opens a flow from the internet through the gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

EIP, SERVER = "198.51.100.10", "203.0.113.10"
PROBE = [sys.executable, "-m", "hyperplane.services.reachprobe"]


@pytest.fixture(scope="module")
def natgw(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/nat-gateway.yaml")



def in_inet(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command inside the emulated internet (tests only: the CLI does not exec there)."""
    return subprocess.run(["ip", "netns", "exec", "hp-inet", *argv], capture_output=True,
                          text=True, timeout=60, check=check, cwd=hp.REPO)


def natgw_counters(state_dir: Path) -> dict:
    return hp.run_json("stats", state_dir=state_dir)["nat_gateways"]["gateways"]["nat-a"]


def test_private_subnet_reaches_the_internet_as_the_elastic_ip(natgw: dict,
                                                               state_dir: Path) -> None:
    reply = hp.run_json("invoke", "fetch", state_dir=state_dir)["result"]
    assert reply["saw"] == {"client": EIP, "port": reply["saw"]["port"], "host": "www"}
    host = json.loads(hp.run("exec", "app", "--", "curl", "-sS", "--max-time", "5",
                             f"http://{SERVER}/whoami", state_dir=state_dir).stdout)
    assert host["client"] == EIP  # hosts of the private subnet go the same way
    assert natgw_counters(state_dir)["sessions_created"] >= 2


def test_without_a_nat_route_the_connection_times_out(natgw: dict, state_dir: Path) -> None:
    reply = hp.run_json("invoke", "sealed", "--payload", '{"timeout": 2}',
                        state_dir=state_dir)["result"]
    assert "timed out" in reply["error"]
    out = hp.run("exec", "--function", "sealed", "--", *PROBE, "--timeout", "1.5",
                 f"tcp:{SERVER}:80", state_dir=state_dir).stdout
    assert json.loads(out)[0]["result"] == "timeout"  # silently dropped, not unreachable


def test_the_internet_sees_only_the_elastic_ip(natgw: dict, state_dir: Path,
                                               tmp_path: Path) -> None:
    from scapy.all import IP, rdpcap

    pcap, ready = tmp_path / "inet.pcap", tmp_path / "ready"
    capture = subprocess.Popen(["ip", "netns", "exec", "hp-inet", sys.executable, "-m",
                                "tests.integration.capture", "--iface", "hpy0", "--out",
                                str(pcap), "--ready", str(ready)], cwd=hp.REPO)
    try:
        assert hp.wait_for(ready.exists)
        hp.run("exec", "--function", "fetch", "--", "sh", "-c",
               f"curl -sS --max-time 5 http://{SERVER}/whoami && "
               f"ping -c 2 -i 0.2 -W 2 {SERVER}", state_dir=state_dir)
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    sources = {p[IP].src for p in rdpcap(str(pcap)) if IP in p}
    assert sources == {EIP, SERVER}


def test_nothing_opens_a_flow_from_the_internet(natgw: dict, state_dir: Path) -> None:
    before = natgw_counters(state_dir).get("inbound_to_nat_gateway", 0)
    assert in_inet("ping", "-c", "2", "-i", "0.2", "-W", "1", EIP, check=False).returncode
    result = in_inet(*PROBE, "--timeout", "1", f"tcp:{EIP}:8080", "tcp:10.0.1.20:8080")
    to_eip, to_private = (r["result"] for r in json.loads(result.stdout))
    assert to_eip == "timeout"  # dropped by the NAT gateway (no session)
    assert to_private in ("error", "unreachable")  # no route to a private address at all
    assert natgw_counters(state_dir)["inbound_to_nat_gateway"] - before >= 3


def test_handlers_use_vpc_names_and_the_internet(natgw: dict, state_dir: Path) -> None:
    reply = hp.run_json("invoke", "fetch", "--payload",
                        '{"url": "http://app.vpc-app.internal:8080/whoami"}',
                        state_dir=state_dir)["result"]
    assert reply["saw"]["host"] == "app"


def test_reach_matrix_names_the_missing_route(natgw: dict, state_dir: Path) -> None:
    cells = {(r["source"], r["target"]): r
             for r in hp.run_json("reach", state_dir=state_dir)["results"]}
    assert {pair: c["verdict"] for pair, c in cells.items()} == {
        ("fetch", "app:8080"): "allowed", ("fetch", "internet:80"): "allowed",
        ("sealed", "app:8080"): "allowed", ("sealed", "internet:80"): "unreachable",
        ("app", "internet:80"): "allowed"}
    assert "no route to the internet in subnet-isolated" in \
        cells["sealed", "internet:80"]["reason"]
