"""Rejected flows kept for VPC Flow Logs: egress denies and unsolicited inbound flows."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP

from hyperplane.dataplane import rejects
from hyperplane.dataplane.acl import RuleSet
from tests.unit.dataplane.frames import (
    DB_IP,
    ENI_IP,
    ENV_IPS,
    env_frame,
    make_rig,
    send,
    syn,
    to_eni,
)


def only_tcp_8080() -> RuleSet:
    return RuleSet([{"protocol": "tcp", "ports": [8080, 8080], "cidrs": ["10.0.0.0/16"],
                     "rule": "sg-lambda egress[0]"}])


def test_an_egress_deny_is_kept_as_the_eni_would_have_sent_it() -> None:
    rig = make_rig()
    rig.eni.egress = only_tcp_8080()
    for _ in range(2):  # the SYN and its retransmission: one flow, two packets
        send(rig.pipeline, rig.envs[0], syn(40000, dport=5432))
    send(rig.pipeline, rig.envs[0], env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(id=7)))
    assert rig.eni_out == [] and rig.eni.counters["sg_egress_deny"] == 3
    taken = rig.pipeline.take_rejects()
    size = len(IP() / TCP())
    assert taken == [
        {"eni": "eni-1", "protocol": 6, "src": ENI_IP, "dst": DB_IP, "sport": 40000,
         "dport": 5432, "packets": 2, "bytes": 2 * (size + 14)},
        {"eni": "eni-1", "protocol": 1, "src": ENI_IP, "dst": DB_IP, "sport": 0, "dport": 0,
         "packets": 1, "bytes": len(IP() / ICMP()) + 14}]
    assert rig.pipeline.take_rejects() == []  # taken: emptied


def test_an_allowed_flow_is_not_kept() -> None:
    rig = make_rig()
    rig.eni.egress = only_tcp_8080()
    send(rig.pipeline, rig.envs[0], syn(40000, dport=8080))
    assert len(rig.eni_out) == 1 and rig.pipeline.take_rejects() == []


def test_an_unsolicited_inbound_flow_is_kept_as_it_came() -> None:
    rig = make_rig()
    send(rig.pipeline, rig.eni, to_eni(UDP(sport=5555, dport=53)))
    send(rig.pipeline, rig.eni, to_eni(TCP(sport=5555, dport=22, flags="SA")))  # no_session
    assert rig.eni.counters["inbound_to_eni"] == 1
    (row,) = rig.pipeline.take_rejects()
    assert (row["src"], row["dst"], row["sport"], row["dport"], row["protocol"]) == \
        (DB_IP, ENI_IP, 5555, 53, 17)


def test_the_log_is_bounded_and_counts_what_it_lost(monkeypatch) -> None:
    monkeypatch.setattr(rejects, "MAX_FLOWS", 2)
    rig = make_rig()
    rig.eni.egress = only_tcp_8080()
    for port in (1, 2, 3, 4):
        send(rig.pipeline, rig.envs[0], syn(40000 + port, dport=5432))
    send(rig.pipeline, rig.envs[0], syn(40001, dport=5432))  # a kept flow still counts
    assert rig.pipeline.counters[rejects.LOST] == 2
    assert [r["packets"] for r in rig.pipeline.take_rejects()] == [2, 1]
