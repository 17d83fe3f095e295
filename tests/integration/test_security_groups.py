"""Security groups enforced with real packets (examples/security-groups.yaml).

Each rule kind is checked from both ends: what the source sees (connected, replied,
timeout) and where the drop was counted: the dataplane's ``sg-egress-deny`` on the
function's ENI, or the ``sg-ingress-deny`` / ``sg-egress-deny`` counters of a host's
nftables.  The run-time tests at the end change rules with ``hyperplane sg`` and put them
back.
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

DB, CACHE, OPS = "10.0.1.10", "10.0.1.30", "10.0.2.20"
FUNCTIONS = ("api", "batch", "worker")
PROBE = [sys.executable, "-m", "hyperplane.services.reachprobe"]


@pytest.fixture(scope="module")
def topology(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/security-groups.yaml")


@pytest.fixture(scope="module")
def udp_echo(topology: dict, state_dir: Path, tmp_path_factory) -> Iterator[None]:
    ready = tmp_path_factory.mktemp("echo") / "ready"
    proc = hp.start("exec", "db", "--", *PROBE, "--udp-echo", "5005", "--ready", str(ready),
                    state_dir=state_dir)
    assert hp.wait_for(ready.exists), "the UDP echo server did not start"
    yield
    proc.terminate()
    proc.wait(timeout=10)



def probe(state_dir: Path, source: str, *targets: str, timeout: float = 1.5) -> dict:
    where = ["--function", source] if source in FUNCTIONS else [source]
    out = hp.run("exec", *where, "--", *PROBE, "--timeout", str(timeout), *targets,
                 state_dir=state_dir).stdout
    return {r["target"]: r["result"] for r in json.loads(out)}


def eni_drops(state_dir: Path, function: str, reason: str = "sg_egress_deny") -> int:
    enis = [e["id"] for e in hp.run_json("eni", "list", state_dir=state_dir)
            if function in e["functions"]]
    stats = hp.run_json("stats", state_dir=state_dir)["enis"]
    return sum(stats.get(eni, {}).get(reason, 0) for eni in enis)


def host_drops(state_dir: Path, host: str) -> dict[str, int]:
    for group in hp.run_json("sg", "list", state_dir=state_dir):
        if host in group["host_drops"]:
            return group["host_drops"][host]
    raise AssertionError(f"no firewall counters for {host}")


def ping(state_dir: Path, source: str, dst: str) -> bool:
    where = ["--function", source] if source in FUNCTIONS else [source]
    return hp.run("exec", *where, "--", "ping", "-c", "2", "-i", "0.2", "-W", "1", dst,
                  state_dir=state_dir, check=False).returncode == 0


# -- each rule kind, both ends -------------------------------------------------------------


def test_hosts_get_their_groups_as_nftables(topology: dict, state_dir: Path) -> None:
    ruleset = hp.run("exec", "db", "--", "nft", "list", "table", "ip", "hp_sg",
                     state_dir=state_dir).stdout
    assert "policy drop" in ruleset and "ct state established,related accept" in ruleset
    assert 'comment "sg-db ingress[0]"' in ruleset


def test_tcp_rule_by_group_allows_and_the_eni_denies_the_rest(topology: dict,
                                                              state_dir: Path) -> None:
    eni_before = eni_drops(state_dir, "api")
    db_before, cache_before = host_drops(state_dir, "db"), host_drops(state_dir, "cache")
    result = probe(state_dir, "api", f"tcp:{DB}:8080", f"tcp:{DB}:22", f"tcp:{CACHE}:6379")
    assert result == {f"tcp:{DB}:8080": "connected", f"tcp:{DB}:22": "timeout",
                      f"tcp:{CACHE}:6379": "timeout"}
    assert eni_drops(state_dir, "api") - eni_before >= 2  # dropped at the ENI...
    assert host_drops(state_dir, "db") == db_before        # ...so never seen by db
    assert host_drops(state_dir, "cache") == cache_before


def test_udp_port_range_from_both_ends(topology: dict, udp_echo: None,
                                       state_dir: Path) -> None:
    before = eni_drops(state_dir, "api")
    assert probe(state_dir, "api", f"udp:{DB}:5005", f"udp:{DB}:5011") == {
        f"udp:{DB}:5005": "replied", f"udp:{DB}:5011": "timeout"}
    assert eni_drops(state_dir, "api") - before >= 1
    # batch may send anything (default egress), but db admits udp only from sg-api
    eni_before, db_before = eni_drops(state_dir, "batch"), host_drops(state_dir, "db")
    assert probe(state_dir, "batch", f"udp:{DB}:5005") == {f"udp:{DB}:5005": "timeout"}
    assert eni_drops(state_dir, "batch") == eni_before
    assert host_drops(state_dir, "db")["sg_ingress_deny"] > db_before["sg_ingress_deny"]


def test_icmp_rules_and_an_empty_egress_list(topology: dict, state_dir: Path) -> None:
    assert ping(state_dir, "api", DB)       # sg-api egress icmp, sg-db ingress icmp
    assert ping(state_dir, "batch", DB)     # default egress, sg-db admits icmp from the VPC
    before = host_drops(state_dir, "cache")
    assert not ping(state_dir, "cache", DB)  # sg-cache has `egress: []`
    assert host_drops(state_dir, "cache")["sg_egress_deny"] >= before["sg_egress_deny"] + 2


def test_group_peer_admits_every_member_and_only_members(topology: dict,
                                                         state_dir: Path) -> None:
    before = host_drops(state_dir, "db")["sg_ingress_deny"]
    assert probe(state_dir, "ops", f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "connected"}
    for function in ("batch", "worker"):  # not in sg-api: refused by db, not by their ENI
        eni_before = eni_drops(state_dir, function)
        assert probe(state_dir, function, f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "timeout"}
        assert eni_drops(state_dir, function) == eni_before
    assert host_drops(state_dir, "db")["sg_ingress_deny"] >= before + 2


def test_group_membership_is_every_eni_of_the_group(topology: dict, state_dir: Path) -> None:
    """sg-db admits api from either subnet: both of api's ENIs are members of sg-api."""
    enis = {e["ip"] for e in hp.run_json("eni", "list", state_dir=state_dir)
            if "api" in e["functions"]}
    members = next(g["members"] for g in hp.run_json("sg", "list", state_dir=state_dir)
                   if g["id"] == "sg-api")
    assert enis | {OPS} == set(members) and len(enis) == 2
    seen: set[str] = set()
    for _ in range(4):  # two environments busy at once: a second one in the other subnet
        pair = [hp.start_capture("exec", "--function", "api", "--", "sh", "-c",
                                 f"sleep 1; curl -sS --max-time 5 http://{DB}:8080/whoami",
                                 state_dir=state_dir) for _ in range(2)]
        for proc in pair:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            seen.add(json.loads(out)["client"])
        if seen == enis:
            break
    assert seen == enis


def test_cidr_rule_and_stateful_replies(topology: dict, state_dir: Path) -> None:
    before = host_drops(state_dir, "cache")
    # worker's ENI is in 10.0.2.0/24: admitted; cache answers although it may open nothing
    assert probe(state_dir, "worker", f"tcp:{CACHE}:6379") == {f"tcp:{CACHE}:6379":
                                                                "connected"}
    after = host_drops(state_dir, "cache")
    assert after["sg_egress_deny"] == before["sg_egress_deny"]
    # batch's ENI is in 10.0.1.0/24: refused by cache
    assert probe(state_dir, "batch", f"tcp:{CACHE}:6379") == {f"tcp:{CACHE}:6379": "timeout"}
    assert host_drops(state_dir, "cache")["sg_ingress_deny"] > after["sg_ingress_deny"]


def test_nothing_opens_a_flow_toward_an_eni_whatever_its_ingress(topology: dict,
                                                                  state_dir: Path) -> None:
    """sg-api admits the whole VPC; the host ops (in sg-api) is reachable, the ENIs not."""
    eni = next(e for e in hp.run_json("eni", "list", state_dir=state_dir)
               if "api" in e["functions"] and e["subnet"] == "subnet-a")
    before = hp.run_json("stats", state_dir=state_dir)["enis"][eni["id"]].get(
        "inbound_to_eni", 0)
    assert ping(state_dir, "db", OPS)
    assert not ping(state_dir, "db", eni["ip"])
    assert probe(state_dir, "db", f"tcp:{eni['ip']}:8080", timeout=1) == {
        f"tcp:{eni['ip']}:8080": "timeout"}
    after = hp.run_json("stats", state_dir=state_dir)["enis"][eni["id"]]["inbound_to_eni"]
    assert after - before >= 3


# -- run-time changes ----------------------------------------------------------------------


def sg(state_dir: Path, action: str, *args: str, check: bool = True):
    return hp.run("sg", action, *args, state_dir=state_dir, check=check)


def hold_connection(state_dir: Path, tmp: Path) -> tuple[subprocess.Popen, Path, Path]:
    """An HTTP keep-alive connection from api to db, paused until ``go`` exists."""
    ready, go = tmp / "ready", tmp / "go"
    proc = hp.start_capture("exec", "--function", "api", "--", sys.executable, "-m",
                            "tests.integration.keepalive", "--url", f"http://{DB}:8080",
                            "--ready", str(ready), "--go", str(go), state_dir=state_dir)
    assert hp.wait_for(lambda: ready.exists() or proc.poll() is not None), "no connection"
    assert proc.poll() is None, proc.communicate()
    return proc, ready, go


@pytest.mark.parametrize(("group", "direction", "peer", "where"), [
    ("sg-db", "ingress", "sg-api", "db"),
    ("sg-api", "egress", "sg-db", "eni"),
])
def test_revoke_keeps_tracked_flows_and_refuses_new_ones(topology: dict, state_dir: Path,
                                                         tmp_path: Path, group: str,
                                                         direction: str, peer: str,
                                                         where: str) -> None:
    rule = ["--group", group, "--direction", direction, "--protocol", "tcp", "--ports", "8080",
            "--source-group", peer]
    held, _ready, go = hold_connection(state_dir, tmp_path)
    try:
        sg(state_dir, "revoke", *rule)
        db_before, eni_before = host_drops(state_dir, "db"), eni_drops(state_dir, "api")
        assert probe(state_dir, "api", f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "timeout"}
        if where == "db":
            assert host_drops(state_dir, "db")["sg_ingress_deny"] > db_before["sg_ingress_deny"]
        else:
            assert eni_drops(state_dir, "api") > eni_before
            assert host_drops(state_dir, "db") == db_before
        go.touch()  # the tracked flow carries on after the rule change
        out, err = held.communicate(timeout=30)
        assert held.returncode == 0, err
        replies = json.loads(out)
        assert replies["second"]["port"] == replies["first"]["port"]  # one connection
    finally:
        go.touch()
        if held.poll() is None:
            held.kill()
        sg(state_dir, "authorize", *rule, check=False)
    assert probe(state_dir, "api", f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "connected"}


def test_authorize_a_cidr_rule_at_run_time(topology: dict, state_dir: Path) -> None:
    rule = ["--group", "sg-db", "--direction", "ingress", "--protocol", "tcp", "--ports", "8080",
            "--cidr", "10.0.1.0/24"]
    assert probe(state_dir, "batch", f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "timeout"}
    shown = json.loads(sg(state_dir, "authorize", *rule, "--json").stdout)
    assert any(r["cidrs"] == ["10.0.1.0/24"] for r in shown["ingress"])
    try:
        assert probe(state_dir, "batch", f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "connected"}
    finally:
        sg(state_dir, "revoke", *rule)
    assert probe(state_dir, "batch", f"tcp:{DB}:8080") == {f"tcp:{DB}:8080": "timeout"}


def test_bad_rule_changes_exit_2_and_change_nothing(topology: dict, state_dir: Path) -> None:
    before = hp.recorded(state_dir)["document"]
    for args, expected in [
        (["--group", "sg-nope", "--direction", "ingress", "--protocol", "all", "--cidr",
          "10.0.0.0/8"], "InvalidGroup.NotFound"),
        (["--group", "sg-db", "--direction", "ingress", "--protocol", "tcp", "--cidr",
          "10.0.1.5/24"], "host bits set"),
        (["--group", "sg-db", "--direction", "ingress", "--protocol", "icmp", "--ports", "80",
          "--cidr", "10.0.0.0/8"], "ports are only allowed"),
        (["--group", "sg-db", "--direction", "ingress", "--protocol", "tcp", "--ports", "8080",
          "--source-group", "sg-api"], "InvalidPermission.Duplicate"),
    ]:
        result = sg(state_dir, "authorize", *args, check=False)
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert hp.recorded(state_dir)["document"] == before


SECURITY_GROUPS_MATRIX = {
    ("api", "db:8080"): "allowed", ("api", "cache:6379"): "denied",
    ("batch", "db:8080"): "denied", ("batch", "cache:6379"): "denied",
    ("worker", "db:8080"): "denied", ("worker", "cache:6379"): "allowed",
    ("db", "cache:6379"): "denied", ("cache", "db:8080"): "denied",
    ("ops", "db:8080"): "allowed", ("ops", "cache:6379"): "denied",
}


def test_reach_matrix_names_the_rule_set(topology: dict, state_dir: Path) -> None:
    cells = {(r["source"], r["target"]): r
             for r in hp.run_json("reach", state_dir=state_dir)["results"]}
    assert {pair: c["verdict"] for pair, c in cells.items()} == SECURITY_GROUPS_MATRIX
    assert cells["api", "cache:6379"]["reason"].startswith("egress of sg-api (ENI ")
    assert cells["batch", "db:8080"]["reason"].startswith("ingress of sg-db (db) admits no")
    assert cells["cache", "db:8080"]["reason"].startswith("egress of sg-cache (host 10.0.1.30)")
