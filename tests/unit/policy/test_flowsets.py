"""Flow accounting on hosts for VPC Flow Logs: the nftables sets and their JSON (pure)."""

from __future__ import annotations

from hyperplane.model.flowwindow import Reading
from hyperplane.policy import flowsets
from tests.unit.policy.test_hostfw import rendered

ID = "eni-0a1b2c3d4e5f60718"


def listing() -> dict:
    """What ``nft -j list ruleset ip`` shows of the two tables (nft 1.0's shape)."""
    def elem(concat: list, packets: int, count: int) -> dict:
        return {"elem": {"val": {"concat": concat}, "timeout": 1800, "expires": 1795,
                         "counter": {"packets": packets, "bytes": count}}}
    return {"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "hp_fl", "handle": 1}},
        {"set": {"family": "ip", "name": "acc", "table": "hp_fl", "elem": [
            elem(["10.0.1.4", "10.0.1.10", "tcp", 1030, 8080], 6, 412),
            elem(["10.0.1.10", "10.0.1.4", "tcp", 8080, 1030], 5, 1290)]}},
        {"set": {"family": "ip", "name": "acc_o", "table": "hp_fl", "elem": [
            elem(["10.0.1.4", "10.0.1.10", "icmp"], 3, 252)]}},
        {"table": {"family": "ip", "name": "hp_sg", "handle": 2}},
        {"set": {"family": "ip", "name": "rej", "table": "hp_sg"}},  # empty: no "elem"
        {"set": {"family": "ip", "name": "rej_o", "table": "hp_sg", "elem": [
            elem(["10.0.1.4", "10.0.1.10", 1], 2, 168)]}},
        {"chain": {"family": "ip", "table": "hp_sg", "name": "input"}}]}


def test_readings_name_the_flow_its_action_and_counts() -> None:
    rows = flowsets.readings(listing(), ID)
    assert rows == [
        Reading(ID, "10.0.1.4", "10.0.1.10", 1030, 8080, 6, "ACCEPT", 6, 412),
        Reading(ID, "10.0.1.10", "10.0.1.4", 8080, 1030, 6, "ACCEPT", 5, 1290),
        Reading(ID, "10.0.1.4", "10.0.1.10", 0, 0, 1, "ACCEPT", 3, 252),
        Reading(ID, "10.0.1.4", "10.0.1.10", 0, 0, 1, "REJECT", 2, 168)]


def test_the_accounting_table_counts_after_the_groups_without_a_verdict() -> None:
    script = flowsets.render_accounting()
    assert script.startswith("table ip hp_fl\ndelete table ip hp_fl\n")
    assert script.count("priority filter + 10; policy accept;") == 2
    assert 'iif "lo" accept' in script and 'oif "lo" accept' in script
    assert ("meta l4proto { tcp, udp } update @acc { ip saddr . ip daddr . meta l4proto "
            ". th sport . th dport counter }") in script
    assert "size 65536" in script and "timeout 30m" in script


def test_the_groups_table_counts_what_it_drops_just_before_dropping() -> None:
    script = rendered("db")
    for chain, deny in (("input", "sg_ingress_deny"), ("output", "sg_egress_deny")):
        body = script[script.index(f"chain {chain}"):]
        lines = [line.strip() for line in body.splitlines()]
        at = lines.index(f'counter name "{deny}" drop')
        assert lines[at - 2].startswith("meta l4proto { tcp, udp } update @rej {")
        assert lines[at - 1].startswith("meta l4proto != { tcp, udp } update @rej_o {")
    assert "set rej {" in script and "set rej_o {" in script
