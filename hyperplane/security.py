"""``hyperplane sg``: security groups of the running topology (side effects).

``change`` applies ``sg authorize|revoke`` without restarting anything: under the state
lock it edits the recorded topology document (``secgroups.edit_document``), validates it
again with the topology parser (an invalid rule exits 2 and changes nothing), records it,
pushes the whole new snapshot to the dataplane (the ENIs' egress rules) and renders every
host's nftables again (``vpcnet.apply_firewalls``).  Tracked flows keep going on both
sides (dataplane sessions, the hosts' conntrack); new flows follow the new rules.

``describe`` is ``sg list``: each group with its members, its rules and, for the hosts
that use it, their firewall's drop counters.
"""

from __future__ import annotations

from hyperplane import engine, fabric, firewall, hostfw, secgroups, settings, state, vpcnet
from hyperplane.topology import parse_topology


def change(action: str, group_id: str, direction: str, protocol: str, ports: str | None,
           cidr: str | None, peer_group: str | None) -> dict:
    """Authorize or revoke one rule; returns the group as ``describe`` shows it."""
    with state.locked():
        running = engine.require()
        try:
            rule = secgroups.rule_document(direction, protocol, ports, cidr, peer_group)
            document = secgroups.edit_document(running.data["document"], group_id,
                                               direction, rule, revoke=action == "revoke")
        except secgroups.RuleEditError as exc:
            raise engine.UsageError(str(exc)) from None
        topology = parse_topology(document, running.data["source"])
        settings.check(topology.settings, running.data["source"])
        running.data["document"] = document
        state.save(running.data)
        updated = engine.Running(running.data, topology)
        engine.push_config(updated)
        vpcnet.apply_firewalls(topology, updated.enis)
        state.save(running.data)
    return next(g for g in describe(updated, counters=False) if g["id"] == group_id)


def describe(running: engine.Running, counters: bool = True) -> list[dict]:
    """Every security group: VPC, members, rules (peers resolved), hosts' drop counters."""
    topology = running.topology
    membership = secgroups.members(topology, running.enis)
    host_counters: dict[str, dict[str, int]] = {}
    if counters:
        for vpc in topology.vpcs:
            for host in vpc.hosts:
                if host.security_groups:
                    host_counters[host.name] = firewall.counters(
                        fabric.host_netns(topology, host.name), hostfw.TABLE)
    groups = []
    for vpc in topology.vpcs:
        for group in vpc.security_groups:
            hosts = [h.name for h in vpc.hosts if group.id in h.security_groups]
            groups.append({
                "id": group.id, "vpc": vpc.id, "members": list(membership[group.id]),
                "enis": [e.id for e in running.enis if group.id in e.key.security_group_ids],
                "hosts": hosts,
                "ingress": secgroups.compile_rules(topology, [group.id], "ingress",
                                                   membership),
                "egress": secgroups.compile_rules(topology, [group.id], "egress", membership),
                "host_drops": {h: host_counters[h] for h in hosts if h in host_counters},
            })
    return groups


def rule_text(rule: dict) -> str:
    ports = "" if not rule["ports"] else (
        f"/{rule['ports'][0]}" if rule["ports"][0] == rule["ports"][1]
        else f"/{rule['ports'][0]}-{rule['ports'][1]}")
    peer = rule["peer_group"] or ",".join(rule["cidrs"])
    members = f" ({', '.join(rule['cidrs']) or 'no member'})" if rule["peer_group"] else ""
    return f"{rule['protocol']}{ports} {peer}{members}"
