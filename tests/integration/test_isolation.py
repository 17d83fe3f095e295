"""Tenant isolation with real packets (examples/two-tenants.yaml).

Two accounts, two VPCs with identical CIDRs, subnets and host addresses (both databases
are 10.0.1.10, both ENIs 10.0.1.4).  Traffic runs in both at the same time while each
database's link is captured: neither capture holds a packet of the other tenant.  An
environment reaches no other environment, no Hyperplane address, and nothing with a
forged source address; each drop is counted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

DB = "10.0.1.10"
PROBE = [sys.executable, "-m", "hyperplane.services.reachprobe"]


@pytest.fixture(scope="module")
def tenants(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/two-tenants.yaml")



def eni_of(state_dir: Path, function: str) -> dict:
    return next(e for e in hp.run_json("eni", "list", state_dir=state_dir)
                if function in e["functions"])


def counters(state_dir: Path, function: str) -> dict:
    stats = hp.run_json("stats", state_dir=state_dir)
    return dict(stats["enis"][eni_of(state_dir, function)["id"]], **{
        f"global:{k}": v for k, v in stats["global"].items()})


def delta(before: dict, after: dict, key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def own_address(state_dir: Path, function: str) -> str:
    """The address of the environment ``function``'s next exec gets (its only idle one)."""
    out = hp.run("exec", "--function", function, "--", "ip", "-4", "-o", "addr", "show",
                 "eth0", state_dir=state_dir).stdout
    return out.split()[3].split("/")[0]


def test_identical_addresses_in_two_accounts(tenants: dict, state_dir: Path) -> None:
    blue, green = eni_of(state_dir, "blue"), eni_of(state_dir, "green")
    assert blue["ip"] == green["ip"] == "10.0.1.4"
    assert blue["id"] != green["id"] and blue["vpc"] != green["vpc"]
    hosts = {h["name"]: h for h in tenants["hosts"]}
    assert hosts["blue-db"]["ip"] == hosts["green-db"]["ip"] == DB


def test_concurrent_traffic_never_crosses_tenants(tenants: dict, state_dir: Path,
                                                  tmp_path: Path) -> None:
    from scapy.all import IP, TCP, Raw, rdpcap

    captures = {}
    for tenant in ("blue", "green"):
        pcap, ready = tmp_path / f"{tenant}.pcap", tmp_path / f"{tenant}.ready"
        captures[tenant] = (pcap, hp.start(
            "exec", f"{tenant}-db", "--", sys.executable, "-m", "tests.integration.capture",
            "--out", str(pcap), "--ready", str(ready), state_dir=state_dir))
        assert hp.wait_for(ready.exists), f"capture in {tenant} did not start"

    def traffic(tenant: str) -> list[dict]:
        script = "; ".join(f"curl -sS --max-time 5 http://{DB}:8080/whoami?tenant={tenant}-{i}"
                           for i in range(10))
        out = hp.run("exec", "--function", tenant, "--", "sh", "-c", script,
                     state_dir=state_dir).stdout
        return [json.loads(line) for line in out.splitlines()]

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            replies = dict(zip(("blue", "green"), pool.map(traffic, ("blue", "green")),
                               strict=True))
    finally:
        for _pcap, proc in captures.values():
            proc.terminate()
            proc.wait(timeout=10)
    for tenant, answers in replies.items():
        assert {a["host"] for a in answers} == {f"{tenant}-db"}
        assert {a["client"] for a in answers} == {"10.0.1.4"}
    for tenant, (pcap, _proc) in captures.items():
        other = "green" if tenant == "blue" else "blue"
        payloads = b"".join(bytes(p[Raw].load) for p in rdpcap(str(pcap))
                            if TCP in p and Raw in p)
        assert payloads.count(f"tenant={tenant}-".encode()) == 10
        assert f"tenant={other}".encode() not in payloads
        frames = rdpcap(str(pcap))
        own_mac, other_mac = eni_of(state_dir, tenant)["mac"], eni_of(state_dir, other)["mac"]
        assert any(IP in f and f[IP].src == "10.0.1.4" and f.src == own_mac for f in frames)
        assert not any(other_mac in (f.src, f.dst) for f in frames)


def test_a_function_reaches_only_its_own_vpc(tenants: dict, state_dir: Path) -> None:
    """blue-cache (10.0.1.20) exists only in blue: from green that address is nobody."""
    out = hp.run("exec", "--function", "green", "--", *PROBE, "--timeout", "1.5",
                 "tcp:10.0.1.20:8080", state_dir=state_dir).stdout
    assert json.loads(out)[0]["result"] == "timeout"
    out = hp.run("exec", "--function", "blue", "--", *PROBE, "--timeout", "1.5",
                 "tcp:10.0.1.20:8080", state_dir=state_dir).stdout
    assert json.loads(out)[0]["result"] == "connected"


def test_no_environment_reaches_another(tenants: dict, state_dir: Path) -> None:
    hp.run_json("invoke", "green", "--payload", '{"url": "http://10.0.1.10:8080/health"}',
                state_dir=state_dir)  # green has an environment too
    before = counters(state_dir, "blue")
    own = own_address(state_dir, "blue")
    peers = [p for p in ("169.254.128.1", "169.254.128.2", "169.254.128.3") if p != own]
    for peer in peers:
        result = hp.run("exec", "--function", "blue", "--", "ping", "-c", "1", "-W", "1", peer,
                        state_dir=state_dir, check=False)
        assert result.returncode != 0
    after = counters(state_dir, "blue")
    assert delta(before, after, "env_to_env") == len(peers)


def test_no_hyperplane_address_but_the_gateway(tenants: dict, state_dir: Path) -> None:
    """The gateway answers ARP (the route works) but nothing at Hyperplane answers IP."""
    before = counters(state_dir, "blue")
    for target in ("169.254.0.1", "169.254.0.2", "10.0.1.4"):  # gateway, other, own ENI
        result = hp.run("exec", "--function", "blue", "--", "ping", "-c", "1", "-W", "1",
                        target, state_dir=state_dir, check=False)
        assert result.returncode != 0
    after = counters(state_dir, "blue")
    assert delta(before, after, "to_hyperplane") >= 3
    neighbours = hp.run("exec", "--function", "blue", "--", "ip", "neigh", "show",
                        "169.254.0.1", state_dir=state_dir).stdout
    assert "lladdr" in neighbours


def test_spoofed_sources_are_dropped(tenants: dict, state_dir: Path, tmp_path: Path) -> None:
    from scapy.all import Raw, rdpcap

    pcap, ready = tmp_path / "spoof.pcap", tmp_path / "spoof.ready"
    capture = hp.start("exec", "blue-db", "--", sys.executable, "-m",
                       "tests.integration.capture", "--out", str(pcap), "--ready", str(ready),
                       state_dir=state_dir)
    assert hp.wait_for(ready.exists)
    own = own_address(state_dir, "blue")
    other_env = next(a for a in ("169.254.128.1", "169.254.128.2") if a != own)
    before = counters(state_dir, "blue")
    script = ("from scapy.all import Ether, IP, UDP, conf, sendp, get_if_hwaddr;"
              "import subprocess;"
              "gw = subprocess.run(['ip', 'neigh', 'show', '169.254.0.1'], capture_output=True,"
              " text=True).stdout.split('lladdr ')[1].split()[0];"
              "[sendp(Ether(dst=gw, src=get_if_hwaddr('eth0')) / IP(src=s, dst='10.0.1.10')"
              " / UDP(sport=7, dport=7) / b'SPOOFED', iface='eth0', verbose=False)"
              f" for s in ('{other_env}', '10.0.1.4', '10.0.1.99')]")
    try:
        hp.run("exec", "--function", "blue", "--", "sh", "-c",
               f"ping -c 1 -W 1 169.254.0.1 >/dev/null; {sys.executable} -c \"{script}\"",
               state_dir=state_dir)
        after = counters(state_dir, "blue")
        assert delta(before, after, "spoofed") == 3
        assert delta(before, after, "global:spoofed") == 3
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    assert not any(Raw in p and b"SPOOFED" in bytes(p[Raw].load) for p in rdpcap(str(pcap)))


def test_each_vpc_has_its_own_resolver(tenants: dict, state_dir: Path) -> None:
    def lookup(function: str, name: str) -> str:
        return hp.run("exec", "--function", function, "--", "getent", "hosts", name,
                      state_dir=state_dir, check=False).stdout.strip()
    assert lookup("blue", "blue-db.vpc-blue.internal").startswith(DB)
    assert lookup("green", "green-db.vpc-green.internal").startswith(DB)
    assert lookup("green", "blue-db.vpc-blue.internal") == ""  # unknown in green's VPC
    assert lookup("blue", "green-db") == ""


def test_reach_matrix_keeps_tenants_apart(tenants: dict, state_dir: Path) -> None:
    cells = {(r["source"], r["target"]): r
             for r in hp.run_json("reach", state_dir=state_dir)["results"]}
    assert cells["blue", "blue-db:8080"]["verdict"] == "allowed"
    assert cells["green", "green-db:8080"]["verdict"] == "allowed"
    for pair in (("blue", "green-db:8080"), ("green", "blue-db:8080")):
        # the probe connects to the same address in its own VPC: another host answers
        assert cells[pair]["verdict"] == "unreachable"
        assert "are not connected" in cells[pair]["reason"]
        assert "answered as" in cells[pair]["reason"]
    assert cells["green", "blue-cache:8080"]["verdict"] == "unreachable"
