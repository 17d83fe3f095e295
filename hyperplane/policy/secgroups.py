"""Security groups: membership, compiled rule sets, and rule edits (pure).

The model, as AWS documents it:

* A security group is two allow-lists, ``ingress`` and ``egress``; a packet that opens a
  flow passes when some rule of some group of the interface allows it, otherwise it is
  silently dropped.  Groups are stateful: the replies of an allowed flow always pass, and
  a rule change applies to new flows only (tracked flows keep going).
* A rule allows one protocol (``tcp``, ``udp``, ``icmp`` or ``all``), for tcp/udp a port
  range, toward (egress) or from (ingress) either a CIDR or another group.  A group as
  peer means its *members*: the addresses of every interface in it, here the Hyperplane
  ENIs whose key holds the group and the customer hosts that list it (``members``).
* A group whose file entry has no ``egress`` key has AWS's default egress rule (all
  protocols to 0.0.0.0/0, made explicit by the topology parser); ``egress: []`` means
  no egress at all.  A group has no default ingress rule.

Division of labour: ``compile_rules`` turns the groups of one interface into plain data
(JSON-able, shipped in the dataplane snapshot and used to render host nftables);
``dataplane.acl.RuleSet`` is what the dataplane evaluates on a session miss (never on
the fast path) and what ``reachability`` uses to name the rule set that denies a flow;
``edit_document``
applies ``hyperplane sg authorize|revoke`` to the recorded topology document, which the
caller validates again with the topology parser.  Nothing here touches the kernel.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from hyperplane.dataplane.acl import ip_int
from hyperplane.errors import RuleEditError
from hyperplane.model import ipam
from hyperplane.model.enis import Eni
from hyperplane.model.topology import Rule, Topology

DEFAULT_EGRESS = {"protocol": "all", "cidr": "0.0.0.0/0"}
PEER_KEYS = {"ingress": "source_security_group", "egress": "destination_security_group"}


def members(topology: Topology, enis: Iterable[Eni]) -> dict[str, tuple[str, ...]]:
    """Every group id -> the addresses of its members (ENIs and hosts), sorted."""
    found: dict[str, set[str]] = {g.id: set() for v in topology.vpcs
                                  for g in v.security_groups}
    for vpc in topology.vpcs:
        for host in vpc.hosts:
            for group_id in host.security_groups:
                found[group_id].add(host.ip)
    for eni in enis:
        for group_id in eni.key.security_group_ids:
            found.setdefault(group_id, set()).add(eni.ip)
    return {g: tuple(sorted(ips, key=ip_int)) for g, ips in found.items()}


def peer_cidrs(rule: Rule, membership: dict[str, tuple[str, ...]]) -> list[str]:
    if rule.cidr is not None:
        return [rule.cidr]
    return [f"{ip}/32" for ip in membership.get(rule.security_group or "", ())]


def compile_rules(topology: Topology, group_ids: Iterable[str], direction: str,
                  membership: dict[str, tuple[str, ...]]) -> list[dict]:
    """The rules of ``direction`` of these groups, with group peers resolved to addresses."""
    compiled = []
    for group_id in group_ids:
        group = topology.security_group(group_id)
        for index, rule in enumerate(getattr(group, direction)):
            compiled.append({"protocol": rule.protocol,
                             "ports": list(rule.ports) if rule.ports else None,
                             "cidrs": peer_cidrs(rule, membership),
                             "peer_group": rule.security_group,
                             "rule": f"{group_id} {direction}[{index}]"})
    return compiled


def resolver_rules(resolver: str) -> list[dict]:
    """DNS to the VPC resolver (base + 2), which AWS never filters with security groups."""
    return [{"protocol": protocol, "ports": [53, 53], "cidrs": [f"{resolver}/32"],
             "peer_group": None, "rule": "VPC resolver"} for protocol in ("udp", "tcp")]


def eni_egress(topology: Topology, eni: Eni, membership: dict[str, tuple[str, ...]]) -> list:
    """The snapshot's ``egress`` of one ENI: every egress rule of its groups, and DNS."""
    resolver = ipam.resolver(topology.vpc(eni.key.vpc_id).cidr)
    return compile_rules(topology, eni.key.security_group_ids, "egress", membership) + \
        resolver_rules(resolver)


# -- sg authorize | revoke ----------------------------------------------------------------
def rule_document(direction: str, protocol: str, ports: str | None, cidr: str | None,
                  peer_group: str | None) -> dict:
    """A rule as the topology file writes it, from the CLI's options."""
    if (cidr is None) == (peer_group is None):
        raise RuleEditError("give exactly one of --cidr or --source-group")
    rule: dict[str, Any] = {"protocol": protocol}
    if ports is not None:
        rule["ports"] = ports
    if cidr is not None:
        rule["cidr"] = cidr
    else:
        rule[PEER_KEYS[direction]] = peer_group
    return rule


def _ports_of(raw: object) -> tuple[int, int] | None:
    if raw is None:
        return None
    if isinstance(raw, int):
        return (raw, raw)
    low, _, high = str(raw).replace(" ", "").partition("-")
    try:
        return (int(low), int(high or low))
    except ValueError:
        return None


def _normal(rule: dict) -> tuple:
    """A rule's meaning, whatever keys or spelling the file used."""
    if not isinstance(rule, dict):
        return (rule,)
    peer = rule.get("cidr") or rule.get("source_security_group") or \
        rule.get("destination_security_group") or rule.get("security_group")
    return (str(rule.get("protocol", "")).lower(), _ports_of(rule.get("ports")),
            "cidr" in rule, peer)


def find_group(document: dict, group_id: str) -> dict:
    for vpc in document.get("vpcs") or []:
        for group in vpc.get("security_groups") or []:
            if isinstance(group, dict) and group.get("id") == group_id:
                return group
    raise RuleEditError(f"no security group {group_id!r} (InvalidGroup.NotFound)")


def edit_document(document: dict, group_id: str, direction: str, rule: dict,
                  revoke: bool) -> dict:
    """A copy of ``document`` with ``rule`` added to (or removed from) a group."""
    if direction not in PEER_KEYS:
        raise RuleEditError(f"direction must be ingress or egress, not {direction!r}")
    document = copy.deepcopy(document)
    group = find_group(document, group_id)
    if direction == "egress" and "egress" not in group:
        group["egress"] = [dict(DEFAULT_EGRESS)]  # AWS's default rule, now explicit
    rules = group.get(direction)
    if rules is None:
        rules = group[direction] = []
    wanted = _normal(rule)
    same = [i for i, r in enumerate(rules) if _normal(r) == wanted]
    if revoke:
        if not same:
            raise RuleEditError(f"{group_id} has no such {direction} rule "
                                "(InvalidPermission.NotFound)")
        del rules[same[0]]
    else:
        if same:
            raise RuleEditError(f"{group_id} already has this {direction} rule "
                                "(InvalidPermission.Duplicate)")
        rules.append(rule)
    return document
