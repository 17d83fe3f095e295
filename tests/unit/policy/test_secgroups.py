"""Security groups: membership, compiled rule sets, the policy on a miss, rule edits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP

from hyperplane.dataplane import acl
from hyperplane.dataplane.acl import RuleSet
from hyperplane.errors import RuleEditError
from hyperplane.model.enis import plan_enis
from hyperplane.model.parser import parse_topology
from hyperplane.policy import secgroups
from tests.unit.dataplane.frames import (
    DB_IP,
    ENI_IP,
    drops,
    eni_port_of,
    env_frame,
    make_rig,
    only_session,
    send,
    send_and_assert_no_replies,
    send_and_expect,
    syn,
    synack,
    tcp_in,
    tcp_out,
    udp_out,
    vpc_frame,
)

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def quickstart_doc() -> dict:
    """The quickstart as issue 2 defines it: sg-db admits tcp 8080 only (the shipped file
    also admits icmp, so that the demo's ping works)."""
    doc = yaml.safe_load(QUICKSTART.read_text())
    db = doc["vpcs"][0]["security_groups"][1]
    db["ingress"] = [r for r in db["ingress"] if r["protocol"] != "icmp"]
    for function in doc["functions"]:
        function["code"] = str(ROOT / function["code"])
    return doc


def rules(*compiled: dict) -> RuleSet:
    return RuleSet(compiled)


def rule(protocol: str, cidrs: list[str], ports: list[int] | None = None,
         label: str = "r") -> dict:
    return {"protocol": protocol, "ports": ports, "cidrs": cidrs, "rule": label}


# -- membership and compilation ------------------------------------------------------------


def test_members_are_the_enis_and_hosts_of_each_group() -> None:
    topology = parse_topology(quickstart_doc(), "q.yaml")
    enis = plan_enis(topology, [])
    membership = secgroups.members(topology, enis)
    assert membership == {"sg-lambda": ("10.0.1.4", "10.0.2.4"), "sg-db": ("10.0.1.10",)}
    # membership follows the ENIs: without them, sg-lambda has no member
    assert secgroups.members(topology, [])["sg-lambda"] == ()


def test_compile_resolves_group_peers_and_keeps_cidrs() -> None:
    topology = parse_topology(quickstart_doc(), "q.yaml")
    membership = secgroups.members(topology, plan_enis(topology, []))
    assert secgroups.compile_rules(topology, ["sg-db"], "ingress", membership) == [
        {"protocol": "tcp", "ports": [8080, 8080], "cidrs": ["10.0.1.4/32", "10.0.2.4/32"],
         "peer_group": "sg-lambda", "rule": "sg-db ingress[0]"}]
    assert secgroups.compile_rules(topology, ["sg-lambda"], "egress", membership) == [
        {"protocol": "all", "ports": None, "cidrs": ["0.0.0.0/0"], "peer_group": None,
         "rule": "sg-lambda egress[0]"}]
    # sg-db has no egress key in the file: AWS's default egress rule
    assert secgroups.compile_rules(topology, ["sg-db"], "egress", membership)[0]["cidrs"] == \
        ["0.0.0.0/0"]


def test_explicit_empty_egress_means_no_egress_rule() -> None:
    doc = quickstart_doc()
    doc["vpcs"][0]["security_groups"][0]["egress"] = []
    topology = parse_topology(doc, "q.yaml")
    assert topology.security_group("sg-lambda").egress == ()


@pytest.mark.parametrize(("compiled", "proto", "addr", "port", "expected"), [
    (rule("tcp", ["10.0.1.10/32"], [8080, 8080]), 6, "10.0.1.10", 8080, "r"),
    (rule("tcp", ["10.0.1.10/32"], [8080, 8080]), 6, "10.0.1.10", 8081, None),
    (rule("tcp", ["10.0.1.10/32"], [8080, 8080]), 17, "10.0.1.10", 8080, None),
    (rule("tcp", ["10.0.1.10/32"], [8080, 8080]), 6, "10.0.1.11", 8080, None),
    (rule("udp", ["10.0.0.0/16"], [1000, 2000]), 17, "10.0.200.1", 1000, "r"),
    (rule("udp", ["10.0.0.0/16"], [1000, 2000]), 17, "10.0.200.1", 2001, None),
    (rule("udp", ["10.0.0.0/16"], [1000, 2000]), 17, "10.1.0.1", 1500, None),
    (rule("tcp", ["10.0.0.0/8"]), 6, "10.9.9.9", 1, "r"),  # no ports: every port
    (rule("icmp", ["0.0.0.0/0"]), 1, "203.0.113.10", 0, "r"),
    (rule("icmp", ["0.0.0.0/0"]), 6, "203.0.113.10", 80, None),
    (rule("all", ["10.0.1.0/24"]), 17, "10.0.1.200", 53, "r"),
    (rule("all", ["10.0.1.0/24"]), 1, "10.0.2.1", 0, None),
    (rule("all", []), 6, "10.0.1.10", 80, None),  # a group peer with no member
])
def test_rule_matching(compiled: dict, proto: int, addr: str, port: int,
                       expected: str | None) -> None:
    assert rules(compiled).match(proto, acl.ip_int(addr), port) == expected


def test_first_allowing_rule_is_named() -> None:
    rs = rules(rule("tcp", ["10.0.1.10/32"], [22, 22], "sg-a egress[0]"),
               rule("all", ["10.0.0.0/16"], None, "sg-b egress[3]"))
    assert rs.match(6, acl.ip_int("10.0.1.10"), 22) == "sg-a egress[0]"
    assert rs.match(6, acl.ip_int("10.0.1.10"), 23) == "sg-b egress[3]"
    assert len(rs) == 2


def test_admit_refuses_link_local_destinations_and_unmatched_flows() -> None:
    def frame(dst: str) -> bytearray:
        buf = bytearray(60)
        buf[40:44] = bytes(int(x) for x in dst.split("."))
        return buf
    allow_db = rules(rule("tcp", ["10.0.1.10/32"], [8080, 8080]))
    assert acl.admit(None, frame("169.254.128.7"), 6, 80) == "env_to_env"
    assert acl.admit(None, frame("169.254.0.1"), 1, 0) == "to_hyperplane"
    assert acl.admit(None, frame("10.0.1.10"), 6, 22) is None  # no rules: allow all
    assert acl.admit(allow_db, frame("10.0.1.10"), 6, 8080) is None
    assert acl.admit(allow_db, frame("10.0.1.10"), 6, 22) == "sg_egress_deny"
    assert acl.admit(RuleSet([]), frame("10.0.1.10"), 6, 8080) == "sg_egress_deny"


# -- the pipeline: policy on a miss only ---------------------------------------------------


def test_denied_new_flow_is_dropped_silently_and_counted_per_eni() -> None:
    rig = make_rig()
    rig.eni.egress = rules(rule("tcp", [f"{DB_IP}/32"], [8080, 8080]))
    send_and_assert_no_replies(rig.pipeline, rig.env, syn(dport=22), rig.outs(),
                               "sg_egress_deny")
    assert rig.eni.counters["sg_egress_deny"] == 1
    assert rig.pipeline.counters["icmp_errors_sent"] == 0  # AWS answers nothing
    send_and_assert_no_replies(rig.pipeline, rig.env, udp_out(), rig.outs(), "sg_egress_deny")
    ping = IP(src="169.254.128.1", dst=DB_IP) / ICMP(id=7)
    send_and_assert_no_replies(rig.pipeline, rig.env, env_frame(ping), rig.outs(),
                               "sg_egress_deny")
    assert rig.eni.counters["sg_egress_deny"] == 3
    assert len(rig.eni.table) == 0
    send_and_expect(rig.pipeline, rig.env, syn(dport=8080), rig.eni_out)  # allowed


def test_replies_pass_and_tracked_flows_survive_a_rule_change() -> None:
    rig = make_rig()
    rig.eni.egress = rules(rule("tcp", [f"{DB_IP}/32"], [8080, 8080]))
    out = send_and_expect(rig.pipeline, rig.env, syn(sport=40000), rig.eni_out)
    eni_port = eni_port_of(out)
    send_and_expect(rig.pipeline, rig.eni, synack(eni_port), rig.env_out[0])
    send_and_expect(rig.pipeline, rig.env, tcp_out("A", 1001, 5001), rig.eni_out)
    # the rule is revoked: every egress rule gone
    rig.eni.egress = RuleSet([])
    send_and_expect(rig.pipeline, rig.env, tcp_out("PA", 1001, 5001, payload=b"GET"),
                    rig.eni_out)
    send_and_expect(rig.pipeline, rig.eni, tcp_in("A", 5001, 1004, eni_port=eni_port),
                    rig.env_out[0])
    assert only_session(rig).replied
    before = drops(rig.pipeline)["sg_egress_deny"]
    send(rig.pipeline, rig.env, syn(sport=40001))  # a new flow follows the new rules
    assert drops(rig.pipeline)["sg_egress_deny"] == before + 1


def test_inbound_never_opens_whatever_the_rules() -> None:
    rig = make_rig()
    rig.eni.egress = rules(rule("all", ["0.0.0.0/0"]))
    inbound_syn = vpc_frame(IP(src=DB_IP, dst=ENI_IP) / TCP(sport=5555, dport=8080, flags="S"))
    send_and_assert_no_replies(rig.pipeline, rig.eni, inbound_syn, rig.outs(), "inbound_to_eni")
    inbound_ping = vpc_frame(IP(src=DB_IP, dst=ENI_IP) / ICMP(id=9))
    send_and_assert_no_replies(rig.pipeline, rig.eni, inbound_ping, rig.outs(),
                               "inbound_to_eni")


# -- sg authorize | revoke on the document -------------------------------------------------


def test_authorize_then_revoke_round_trip() -> None:
    doc = quickstart_doc()
    rule_doc = secgroups.rule_document("ingress", "icmp", None, None, "sg-lambda")
    assert rule_doc == {"protocol": "icmp", "source_security_group": "sg-lambda"}
    added = secgroups.edit_document(doc, "sg-db", "ingress", rule_doc, revoke=False)
    assert doc == quickstart_doc()  # the input is left alone
    topology = parse_topology(added, "q.yaml")
    assert len(topology.security_group("sg-db").ingress) == 2
    with pytest.raises(RuleEditError, match="Duplicate"):
        secgroups.edit_document(added, "sg-db", "ingress", rule_doc, revoke=False)
    removed = secgroups.edit_document(added, "sg-db", "ingress", rule_doc, revoke=True)
    assert parse_topology(removed, "q.yaml") == parse_topology(doc, "q.yaml")
    with pytest.raises(RuleEditError, match="NotFound"):
        secgroups.edit_document(removed, "sg-db", "ingress", rule_doc, revoke=True)


def test_revoke_matches_the_meaning_not_the_spelling() -> None:
    doc = quickstart_doc()  # sg-db ingress: {tcp, ports: "8080", source_security_group}
    rule_doc = secgroups.rule_document("ingress", "TCP", "8080-8080", None, "sg-lambda")
    removed = secgroups.edit_document(doc, "sg-db", "ingress", rule_doc, revoke=True)
    assert parse_topology(removed, "q.yaml").security_group("sg-db").ingress == ()


def test_egress_default_becomes_explicit_when_edited() -> None:
    doc = quickstart_doc()
    rule_doc = secgroups.rule_document("egress", "all", None, "0.0.0.0/0", None)
    removed = secgroups.edit_document(doc, "sg-db", "egress", rule_doc, revoke=True)
    assert removed["vpcs"][0]["security_groups"][1]["egress"] == []
    assert parse_topology(removed, "q.yaml").security_group("sg-db").egress == ()


def test_edit_errors() -> None:
    doc = quickstart_doc()
    with pytest.raises(RuleEditError, match="InvalidGroup.NotFound"):
        secgroups.edit_document(doc, "sg-nope", "ingress", {"protocol": "all"}, False)
    with pytest.raises(RuleEditError, match="direction"):
        secgroups.edit_document(doc, "sg-db", "sideways", {"protocol": "all"}, False)
    with pytest.raises(RuleEditError, match="exactly one"):
        secgroups.rule_document("ingress", "tcp", None, "10.0.0.0/8", "sg-db")
    with pytest.raises(RuleEditError, match="exactly one"):
        secgroups.rule_document("ingress", "tcp", None, None, None)


def test_eni_egress_always_allows_the_vpc_resolver() -> None:
    doc = quickstart_doc()
    doc["vpcs"][0]["security_groups"][0]["egress"] = []
    topology = parse_topology(doc, "q.yaml")
    eni = plan_enis(topology, [])[0]
    rs = RuleSet(secgroups.eni_egress(topology, eni, secgroups.members(topology, [eni])))
    resolver = acl.ip_int("10.0.0.2")
    assert rs.match(17, resolver, 53) == rs.match(6, resolver, 53) == "VPC resolver"
    assert rs.match(17, resolver, 54) is None
    assert rs.match(17, acl.ip_int("10.0.1.10"), 53) is None
