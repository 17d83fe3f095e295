"""The ``sg list`` view of security groups, and the rules' text (pure).

``describe`` lists every group of a topology with its VPC, its members (ENIs and
hosts, as addresses), its compiled rules (group peers resolved) and, for the hosts
that use it, the drop counters their firewalls counted (gathered by the caller).
``peers`` names the groups a group's rules refer to (a group named by a rule cannot
be deleted).
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperplane.model.enis import Eni
from hyperplane.model.topology import SecurityGroup, Topology
from hyperplane.policy import secgroups


def peers(group: SecurityGroup) -> set[str]:
    """The groups a group's rules name."""
    return {r.security_group for r in (*group.ingress, *group.egress) if r.security_group}


def describe(topology: Topology, enis: Iterable[Eni],
             host_drops: dict[str, dict[str, int]] | None = None) -> list[dict]:
    """Every security group: VPC, members, rules (peers resolved), hosts' drop counters."""
    enis = list(enis)
    host_drops = host_drops or {}
    membership = secgroups.members(topology, enis)
    groups = []
    for vpc in topology.vpcs:
        for group in vpc.security_groups:
            hosts = [h.name for h in vpc.hosts if group.id in h.security_groups]
            groups.append({
                "id": group.id, "vpc": vpc.id, "members": list(membership[group.id]),
                "enis": [e.id for e in enis if group.id in e.key.security_group_ids],
                "hosts": hosts,
                "ingress": secgroups.compile_rules(topology, [group.id], "ingress",
                                                   membership),
                "egress": secgroups.compile_rules(topology, [group.id], "egress", membership),
                "host_drops": {h: host_drops[h] for h in hosts if h in host_drops},
            })
    return groups


def rule_text(rule: dict) -> str:
    ports = "" if not rule["ports"] else (
        f"/{rule['ports'][0]}" if rule["ports"][0] == rule["ports"][1]
        else f"/{rule['ports'][0]}-{rule['ports'][1]}")
    peer = rule["peer_group"] or ",".join(rule["cidrs"])
    members = f" ({', '.join(rule['cidrs']) or 'no member'})" if rule["peer_group"] else ""
    return f"{rule['protocol']}{ports} {peer}{members}"
