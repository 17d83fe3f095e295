"""Host security groups rendered as nftables scripts (pure)."""

from __future__ import annotations

from pathlib import Path

from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis
from hyperplane.policy import hostfw, secgroups

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def rendered(name: str, enis: bool = True, start: dict | None = None) -> str:
    topology = load_topology(str(EXAMPLES / "security-groups.yaml"))
    membership = secgroups.members(topology, plan_enis(topology, []) if enis else [])
    return hostfw.render_host(topology, topology.host(name), membership, "10.0.0.2", start)


def test_db_admits_members_of_sg_api_on_its_ports_only() -> None:
    script = rendered("db")
    assert script.startswith("table ip hp_sg\ndelete table ip hp_sg\n")  # atomic replace
    assert "type filter hook input priority filter; policy drop;" in script
    assert "ct state established,related accept" in script
    assert ('ip saddr { 10.0.1.4, 10.0.2.4, 10.0.2.20 } tcp dport 8080 accept '
            'comment "sg-db ingress[0]"') in script
    assert "udp dport 5000-5010 accept" in script
    assert 'ip saddr 10.0.0.0/16 meta l4proto icmp accept comment "sg-db ingress[2]"' in script
    assert 'ip daddr 0.0.0.0/0 accept comment "sg-db egress[0]"' in script  # AWS default
    assert 'ip daddr 10.0.0.2 udp dport 53 accept comment "VPC resolver"' in script
    assert 'counter name "sg_ingress_deny" drop' in script
    assert 'counter name "sg_egress_deny" drop' in script


def test_membership_follows_the_enis() -> None:
    without = rendered("db", enis=False)
    assert "ip saddr 10.0.2.20 tcp dport 8080 accept" in without  # only the host ops is left
    assert "10.0.1.4" not in without


def test_a_group_without_members_renders_no_accept() -> None:
    topology = load_topology(str(EXAMPLES / "security-groups.yaml"))
    membership = dict(secgroups.members(topology, []), **{"sg-api": ()})
    script = hostfw.render_host(topology, topology.host("db"), membership)
    assert "# sg-db ingress[0]: group sg-api has no member" in script
    assert "tcp dport 8080" not in script


def test_empty_egress_accepts_nothing_new_but_replies() -> None:
    script = rendered("cache")
    output = script[script.index("chain output"):]
    assert "ct state established,related accept" in output
    assert "accept comment \"sg-cache" not in output


def test_counters_are_carried_over() -> None:
    script = rendered("db", start={"sg_ingress_deny": 12})
    assert "counter sg_ingress_deny { packets 12 bytes 0 }" in script
    assert "counter sg_egress_deny { packets 0 bytes 0 }" in script


def test_a_host_without_groups_is_not_filtered() -> None:
    assert hostfw.render_unfiltered() == "table ip hp_sg\ndelete table ip hp_sg\n"


def test_membership_changes_re_render_the_hosts(monkeypatch) -> None:
    from hyperplane.kernel import vpcservices as vpcnet

    topology = load_topology(str(EXAMPLES / "security-groups.yaml"))
    enis = plan_enis(topology, [])
    applied: list[bool] = []
    monkeypatch.setattr(vpcnet, "apply_firewalls",
                        lambda _t, _e, fresh=False: applied.append(fresh))
    data: dict = {}
    assert vpcnet.follow_membership(data, topology, enis) and applied == [True]
    assert not vpcnet.follow_membership(data, topology, enis)  # nothing changed: no nft
    assert vpcnet.follow_membership(data, topology, enis[:1])  # an ENI went away
    assert applied == [True, False]
    assert data["membership"]["sg-api"] == ["10.0.1.4", "10.0.2.20"]
