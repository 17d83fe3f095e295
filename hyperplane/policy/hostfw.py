"""Security groups of customer hosts as nftables scripts (pure).

A host's security groups are enforced by the kernel of the host's own namespace, with one
nftables table, ``ip hp_sg``, rendered here from the topology and the current membership
of every group (``secgroups.members``: ENIs come and go, so the caller renders again on
any change).  The table has two base chains:

    input   policy drop: established/related, loopback, then one accept per ingress
            rule of the host's groups (peer = CIDR, or the addresses of a group's
            members), then the flow-log update of set ``rej`` (``flowsets``: what
            is dropped, per flow) and ``counter name "sg_ingress_deny" drop``
    output  policy drop: established/related, loopback, the VPC resolver (AWS does not
            filter DNS to base+2), one accept per egress rule, then
            ``counter name "sg_egress_deny" drop``

Stateful as AWS: the kernel's connection tracking lets replies of an allowed flow through
both ways.  A script deletes and re-creates the table in one transaction, so a change is
atomic; conntrack entries live in the namespace, not in the table, so tracked flows keep
going while new flows follow the new rules; the named counters are carried over.
A host without security groups gets no table (it is not filtered; documented).

``render_host`` returns the script; ``firewall.apply`` runs ``nft -f -`` in the namespace.
"""

from __future__ import annotations

from hyperplane.model.topology import Host, Topology
from hyperplane.policy import flowsets, secgroups

TABLE = "hp_sg"
INGRESS_DENY = "sg_ingress_deny"
EGRESS_DENY = "sg_egress_deny"


def _match(rule: dict, peer: str) -> str | None:
    """The nft match of one compiled rule (None when a group peer has no member)."""
    cidrs = [c.removesuffix("/32") for c in rule["cidrs"]]
    if not cidrs:
        return None
    addresses = cidrs[0] if len(cidrs) == 1 else "{ " + ", ".join(cidrs) + " }"
    parts = [f"ip {peer} {addresses}"]
    protocol = rule["protocol"]
    if protocol in ("tcp", "udp"):
        if rule.get("ports"):
            low, high = rule["ports"]
            parts.append(f"{protocol} dport {low}" if low == high else
                         f"{protocol} dport {low}-{high}")
        else:
            parts.append(f"meta l4proto {protocol}")
    elif protocol == "icmp":
        parts.append("meta l4proto icmp")
    return " ".join(parts)


def _chain(name: str, hook: str, iface: str, rules: list[dict], peer: str, deny: str,
           extra: list[str]) -> list[str]:
    lines = [f"\tchain {name} {{",
             f"\t\ttype filter hook {hook} priority filter; policy drop;",
             "\t\tct state established,related accept",
             f'\t\t{iface} "lo" accept']
    lines += [f"\t\t{line}" for line in extra]
    for rule in rules:
        match = _match(rule, peer)
        label = rule["rule"]
        if match is None:
            lines.append(f"\t\t# {label}: group {rule.get('peer_group')} has no member")
        else:
            lines.append(f'\t\t{match} accept comment "{label}"')
    lines += [f"\t\t{rule}" for rule in flowsets.update_lines("rej")]  # (flow logs)
    lines += [f'\t\tcounter name "{deny}" drop', "\t}"]
    return lines


def render(ingress: list[dict], egress: list[dict], resolver: str | None = None,
           start: dict[str, int] | None = None) -> str:
    """The nft script for an interface with these compiled rules.

    ``start`` carries the named counters' packets over from the table being replaced.
    """
    start = start or {}
    extra = [f'ip daddr {resolver} udp dport 53 accept comment "VPC resolver"',
             f'ip daddr {resolver} tcp dport 53 accept comment "VPC resolver"'] \
        if resolver else []
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{",
             *(f"\tcounter {name} {{ packets {start.get(name, 0)} bytes 0 }}"
               for name in (INGRESS_DENY, EGRESS_DENY)), *flowsets.set_lines("rej")]
    lines += _chain("input", "input", "iif", ingress, "saddr", INGRESS_DENY, [])
    lines += _chain("output", "output", "oif", egress, "daddr", EGRESS_DENY, extra)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_unfiltered() -> str:
    """A script that removes the table (a host without security groups)."""
    return f"table ip {TABLE}\ndelete table ip {TABLE}\n"


def render_host(topology: Topology, host: Host, membership: dict[str, tuple[str, ...]],
                resolver: str | None = None, start: dict[str, int] | None = None) -> str:
    if not host.security_groups:
        return render_unfiltered()
    ingress = secgroups.compile_rules(topology, host.security_groups, "ingress", membership)
    egress = secgroups.compile_rules(topology, host.security_groups, "egress", membership)
    return render(ingress, egress, resolver, start)
