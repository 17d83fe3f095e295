"""The walking skeleton end to end: the quickstart topology with real packets."""

from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hyperplane.services.httpwire import pattern_bytes
from tests.integration import hp

DB = "10.0.1.10"


@pytest.fixture(scope="module")
def enis(quickstart: dict, state_dir: Path) -> list[dict]:
    return hp.run_json("eni", "list", state_dir=state_dir)


def eni_ip_of(enis: list[dict], subnet: str) -> str:
    return next(e["ip"] for e in enis if e["subnet"] == subnet)


def test_up_reports_functions_active(quickstart: dict) -> None:
    assert quickstart["up"] is True
    assert {f["name"]: f["state"] for f in quickstart["functions"]} == \
        {"orders": "Active", "billing": "Active"}
    assert quickstart["dataplane"]["alive"] is True


def test_invoke_orders_database_sees_the_eni_address(state_dir: Path, enis: list[dict]) -> None:
    reply = hp.run_json("invoke", "orders", "--payload", '{"n": 1}', state_dir=state_dir)
    result = reply["result"]
    assert result["event"] == {"n": 1}
    assert result["database_saw"] == eni_ip_of(enis, reply["subnet"])
    assert result["database_saw"] != result["environment_ip"]
    assert result["environment_ip"].startswith("169.254.")
    assert reply["eni"] in {e["id"] for e in enis}


def test_invoke_reuses_a_warm_environment(state_dir: Path, quickstart: dict) -> None:
    first = hp.run_json("invoke", "billing", state_dir=state_dir)
    second = hp.run_json("invoke", "billing", state_dir=state_dir)
    assert second["cold"] is False
    assert second["environment"] == first["environment"]


def test_plain_invoke_prints_the_handler_result(state_dir: Path, enis: list[dict]) -> None:
    out = hp.run("invoke", "billing", state_dir=state_dir).stdout
    result = json.loads(out)
    assert result["function"] == "billing"
    assert result["database_saw"] in {e["ip"] for e in enis}


def test_orders_and_billing_share_exactly_two_enis(enis: list[dict]) -> None:
    assert len(enis) == 2
    assert sorted(e["subnet"] for e in enis) == ["subnet-a", "subnet-b"]
    for eni in enis:
        assert eni["functions"] == ["orders", "billing"]
        assert eni["security_groups"] == ["sg-lambda"]
        assert eni["interface_type"] == "lambda"
        assert eni["description"].startswith("AWS Lambda VPC ENI-")
        assert eni["vpc"] == "vpc-app"
        assert eni["ip"] not in ("10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", DB)


def test_ping_from_an_environment_reaches_db(state_dir: Path, quickstart: dict) -> None:
    """sg-db admits icmp from sg-lambda (the quickstart's second ingress rule)."""
    result = hp.run("exec", "--function", "orders", "--", "ping", "-c", "3", "-i", "0.2",
                    "-W", "2", DB, state_dir=state_dir)
    assert "3 received" in result.stdout


def test_ping_is_refused_once_sg_db_stops_admitting_icmp(state_dir: Path,
                                                         quickstart: dict) -> None:
    """Security groups are enforced on hosts: without the icmp rule db drops the echo."""
    rule = ["--group", "sg-db", "--direction", "ingress", "--protocol", "icmp",
            "--source-group", "sg-lambda"]
    before = hp.run_json("sg", "list", state_dir=state_dir)
    hp.run("sg", "revoke", *rule, state_dir=state_dir)
    try:
        result = hp.run("exec", "--function", "orders", "--", "ping", "-c", "3", "-i", "0.2",
                        "-W", "1", DB, state_dir=state_dir, check=False)
        assert result.returncode != 0 and "0 received" in result.stdout
        after = hp.run_json("sg", "list", state_dir=state_dir)
    finally:
        hp.run("sg", "authorize", *rule, state_dir=state_dir)

    def db_denied(groups: list[dict]) -> int:
        return next(g for g in groups if g["id"] == "sg-db")["host_drops"]["db"][
            "sg_ingress_deny"]
    assert db_denied(after) - db_denied(before) >= 3


def test_curl_from_an_environment_shows_the_eni_address(state_dir: Path,
                                                        enis: list[dict]) -> None:
    result = hp.run("exec", "--function", "orders", "--", "curl", "-sS", "--max-time", "5",
                    f"http://{DB}:8080/whoami", state_dir=state_dir)
    assert json.loads(result.stdout)["client"] in {e["ip"] for e in enis}


def test_exec_returns_the_command_exit_code(state_dir: Path, quickstart: dict) -> None:
    assert hp.run("exec", "db", "--", "sh", "-c", "exit 7", state_dir=state_dir,
                  check=False).returncode == 7
    assert hp.run("exec", "--function", "orders", "--", "false", state_dir=state_dir,
                  check=False).returncode == 1


def test_db_cannot_reach_an_environment(state_dir: Path, quickstart: dict) -> None:
    """Nothing opens a connection into a function: unsolicited inbound goes nowhere."""
    before = hp.run_json("stats", state_dir=state_dir)["global"]
    result = hp.run("exec", "db", "--", "ping", "-c", "2", "-i", "0.2", "-W", "1",
                    eni_ip_of(hp.run_json("eni", "list", state_dir=state_dir), "subnet-a"),
                    state_dir=state_dir, check=False)
    assert result.returncode != 0
    after = hp.run_json("stats", state_dir=state_dir)["global"]
    assert after["inbound_to_eni"] - before["inbound_to_eni"] >= 2


def test_twenty_concurrent_invocations(state_dir: Path, enis: list[dict]) -> None:
    def one(_i: int) -> dict:
        return hp.run_json("invoke", "orders", state_dir=state_dir)

    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(pool.map(one, range(20)))
    assert all("result" in r for r in replies), replies
    environments = {r["environment"] for r in replies}
    assert 1 <= len(environments) <= 20
    eni_ips = {e["ip"] for e in enis}
    assert {r["result"]["database_saw"] for r in replies} <= eni_ips
    for r in replies:  # each environment uses its own subnet's ENI
        assert r["result"]["database_saw"] == eni_ip_of(enis, r["subnet"])
    status = hp.run_json("status", state_dir=state_dir)
    orders = next(f for f in status["functions"] if f["name"] == "orders")
    assert orders["environments"] <= 20
    assert status["enis"] == 2
    assert len(hp.run_json("eni", "list", state_dir=state_dir)) == 2
    if len(environments) > 1:  # environments are spread over both subnets
        assert {r["subnet"] for r in replies} == {"subnet-a", "subnet-b"}


def test_tcp_transfer_is_byte_identical_both_ways(state_dir: Path, quickstart: dict,
                                                  tmp_path: Path) -> None:
    size = 5 * 1024 * 1024 + 123
    down = tmp_path / "down.bin"
    hp.run("exec", "--function", "orders", "--", "curl", "-sS", "--max-time", "60", "-o",
           str(down), f"http://{DB}:8080/bytes?n={size}", state_dir=state_dir)
    assert hashlib.sha256(down.read_bytes()).hexdigest() == \
        hashlib.sha256(pattern_bytes(size)).hexdigest()
    up = tmp_path / "up.bin"
    payload = bytes((i * 7 + i // 251) & 0xFF for i in range(4 * 1024 * 1024))
    up.write_bytes(payload)
    result = hp.run("exec", "--function", "orders", "--", "curl", "-sS", "--max-time", "60",
                    "--data-binary", f"@{up}", "-H", "Content-Type: application/octet-stream",
                    f"http://{DB}:8080/sha256", state_dir=state_dir)
    assert json.loads(result.stdout) == {"sha256": hashlib.sha256(payload).hexdigest(),
                                         "length": len(payload)}


def test_translated_packets_have_valid_checksums(state_dir: Path, enis: list[dict],
                                                 tmp_path: Path) -> None:
    """Capture on db's link (VPC side); recompute every checksum with scapy."""
    from scapy.all import ICMP, IP, TCP, rdpcap

    pcap, ready = tmp_path / "vpc-side.pcap", tmp_path / "ready"
    capture = hp.start("exec", "db", "--", sys.executable, "-m", "tests.integration.capture",
                       "--out", str(pcap), "--ready", str(ready), state_dir=state_dir)
    try:
        assert hp.wait_for(ready.exists), "capture did not start"
        # full checksums leave the environment (no offload), so the rewrite is what we test
        hp.run("exec", "--function", "orders", "--", "sh", "-c",
               "ethtool -K eth0 tx off >/dev/null 2>&1; "
               f"curl -sS --max-time 5 http://{DB}:8080/bytes?n=200000 -o /dev/null && "
               f"ping -c 3 -i 0.2 -W 2 {DB} >/dev/null", state_dir=state_dir)
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    eni_ips = {e["ip"] for e in enis}
    translated = [p for p in rdpcap(str(pcap)) if IP in p and p[IP].src in eni_ips]
    assert any(TCP in p for p in translated) and any(ICMP in p for p in translated)
    for p in translated:
        ip = p[IP]
        fresh = ip.copy()
        del fresh.chksum
        for layer in (TCP, ICMP):
            if layer in fresh:
                del fresh[layer].chksum
        rebuilt = IP(bytes(fresh))
        assert ip.chksum == rebuilt.chksum, p.summary()
        for layer in (TCP, ICMP):
            if layer in ip:
                assert ip[layer].chksum == rebuilt[layer].chksum, p.summary()

