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

from hyperplane import engine, fabric, firewall, hostfw, secgroups, settings, vpcnet
from hyperplane.topology import SecurityGroup, parse_topology


def change(action: str, group_id: str, direction: str, protocol: str, ports: str | None,
           cidr: str | None, peer_group: str | None) -> dict:
    """Authorize or revoke one rule (through the controller); the group as ``describe``
    shows it."""
    return engine.controller_request({
        "op": "sg.change", "action": action, "group": group_id, "direction": direction,
        "protocol": protocol, "ports": ports, "cidr": cidr, "peer_group": peer_group})


def change_running(ctl, request: dict) -> dict:  # noqa: ANN001 - a controller.service.Controller
    """Inside the controller, under its lock: edit, validate, record, push, re-render."""
    running = engine.Running(ctl.data, ctl.topology)
    try:
        rule = secgroups.rule_document(request["direction"], request["protocol"],
                                       request.get("ports"), request.get("cidr"),
                                       request.get("peer_group"))
        document = secgroups.edit_document(running.data["document"], request["group"],
                                           request["direction"], rule,
                                           revoke=request["action"] == "revoke")
    except secgroups.RuleEditError as exc:
        raise engine.UsageError(str(exc)) from None
    topology = parse_topology(document, running.data["source"])
    settings.check(topology.settings, running.data["source"])
    ctl.data["document"] = document
    ctl.retopology(topology)
    ctl.commit_now()
    vpcnet.apply_firewalls(topology, ctl.model.enis)
    updated = engine.Running(ctl.data, topology)
    return next(g for g in describe(updated, counters=False) if g["id"] == request["group"])


def peers(group: SecurityGroup) -> set[str]:
    """The groups a group's rules name."""
    return {r.security_group for r in (*group.ingress, *group.egress) if r.security_group}


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
