"""``hyperplane reach``: which (function or host, host:port) pairs, and why not (pure).

The matrix covers every declared pair: each function and each host as a source, each host
with a service (``service: {http: PORT}``, or a database, cache or listener: probed with
a TCP handshake) as a target, and the emulated internet's public
server when the topology has one.  ``reach`` (the side-effect half) probes every pair with
real packets; this module says what the topology means for a pair, so that a failed probe
can be explained by the rule set or the route that stops it:

    allowed      the connection was established
    denied       a security group drops it: the source's egress rules (for a function,
                 the ENI's groups, counted ``sg-egress-deny``) or the target's ingress rules
    unreachable  no path: another VPC, a function without VpcConfig toward a VPC, a VPC
                 without a route (or only an internet gateway, which serves no private
                 address) toward the internet, or nothing answering
    machine      not probed: this machine ran out of something (descriptors, a kernel
                 table, memory); the reason names it

``explain`` follows the packet the way the emulator does: the source's egress rules,
then the routes (same VPC: local; the internet: the subnet's route table, and a NAT
gateway's own subnet must route to the internet gateway), then the target's ingress
rules.  The probe decides the verdict; the model only names the reason (and says so when
the probe and the model disagree).
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperplane.dataplane.acl import RuleSet, ip_int
from hyperplane.model import names
from hyperplane.model.enis import Eni
from hyperplane.model.topology import Topology, Vpc
from hyperplane.policy import secgroups

TCP = 6


@dataclass(frozen=True)
class Source:
    name: str
    kind: str                      # "function" or "host"
    vpc_id: str | None             # None: a function without VpcConfig
    subnet_id: str | None
    address: str | None            # the address the VPC sees (ENI or host), None: no VPC
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    name: str
    ip: str
    port: int
    vpc_id: str | None             # None: the emulated internet
    groups: tuple[str, ...]
    filtered: bool                 # a host without security groups is not filtered
    answers_as: str = ""           # the name its /whoami gives (default: ``name``)
    probe: str = "http"            # http: ask /whoami; tcp: a handshake (a database...)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.port}"


def targets(topology: Topology, internet: bool) -> list[Target]:
    found = [Target(h.name, h.ip, h.service.port, v.id, h.security_groups,
                    bool(h.security_groups),
                    probe="http" if h.service.kind == "http" else "tcp")
             for v in topology.vpcs for h in v.hosts if h.service is not None]
    if internet:
        found.append(Target("internet", names.PUBLIC_SERVER, names.PUBLIC_PORT, None, (),
                            False, "www"))
    return found


def host_sources(topology: Topology) -> list[Source]:
    return [Source(h.name, "host", v.id, h.subnet, h.ip, h.security_groups)
            for v in topology.vpcs for h in v.hosts]


def function_source(topology: Topology, name: str, eni: Eni | None) -> Source:
    function = topology.function(name)
    if function.vpc_config is None or eni is None:
        return Source(name, "function", None, None, None, ())
    return Source(name, "function", eni.key.vpc_id, eni.key.subnet_id, eni.ip,
                  eni.key.security_group_ids)


def _internet_route(vpc: Vpc, subnet_id: str, source: Source) -> str | None:
    """Why ``source`` in ``subnet_id`` cannot reach the internet, or None if it can."""
    network = vpc.network
    route = next((r for r in network.routes(subnet_id) if r.destination == "0.0.0.0/0"), None)
    if route is None:
        return f"no route to the internet in {subnet_id}'s route table (local only)"
    if route.target == network.internet_gateway:
        return (f"{subnet_id} routes to {route.target}, but {source.address} has no public "
                "address (use a NAT gateway)")
    nat = network.nat_gateway(route.target)
    if not any(r.destination == "0.0.0.0/0" and r.target == network.internet_gateway
               for r in network.routes(nat.subnet)):
        return f"{nat.id} is in {nat.subnet}, which has no route to an internet gateway"
    return None


class Explainer:
    """``explain`` for many pairs: membership computed once, rule sets and their answers
    kept (a matrix of a million pairs asks the same few questions again and again)."""

    def __init__(self, topology: Topology, enis: list[Eni]) -> None:
        self.topology = topology
        self.membership = secgroups.members(topology, enis)
        self._rulesets: dict[tuple, RuleSet] = {}
        self._matches: dict[tuple, bool] = {}

    def allows(self, groups: tuple[str, ...], direction: str, ip: str, port: int) -> bool:
        key = (groups, direction, ip, port)
        found = self._matches.get(key)
        if found is None:
            rules = self._rulesets.get((groups, direction))
            if rules is None:
                rules = RuleSet(secgroups.compile_rules(self.topology, groups, direction,
                                                        self.membership))
                self._rulesets[(groups, direction)] = rules
            found = self._matches[key] = rules.match(TCP, ip_int(ip), port) is not None
        return found

    def explain(self, source: Source, target: Target) -> tuple[str, str]:
        """(expected verdict, reason) for one pair, from the topology alone."""
        if source.vpc_id is None:  # Lambda's own egress
            if target.vpc_id is None:
                return "allowed", "Lambda's own internet egress"
            return "unreachable", "a function without VpcConfig reaches no VPC"
        if source.groups and not self.allows(source.groups, "egress", target.ip,
                                             target.port):
            where = "ENI" if source.kind == "function" else "host"
            return "denied", (f"egress of {','.join(source.groups)} ({where} "
                              f"{source.address}) allows no tcp/{target.port} to {target.ip}")
        if target.vpc_id is None:
            why = _internet_route(self.topology.vpc(source.vpc_id), source.subnet_id, source)
            return ("unreachable", why) if why else ("allowed", "through the NAT gateway")
        if target.vpc_id != source.vpc_id:
            return "unreachable", f"{source.vpc_id} and {target.vpc_id} are not connected"
        if target.filtered and not self.allows(target.groups, "ingress", source.address,
                                               target.port):
            return "denied", (f"ingress of {','.join(target.groups)} ({target.name}) admits "
                              f"no tcp/{target.port} from {source.address}")
        return "allowed", "local route"


def explain(topology: Topology, enis: list[Eni], source: Source,
            target: Target) -> tuple[str, str]:
    """(expected verdict, reason) for one pair, from the topology alone."""
    return Explainer(topology, enis).explain(source, target)


def stand_ins(source: Source, targets: list[Target],
              expected: list[tuple[str, str]]) -> tuple[list[int], dict[int, list[int]]]:
    """Which of ``source``'s targets to probe: (indexes probed, stand-in -> the indexes it
    stands for).

    Targets in the source's own VPC and on the internet are each probed.  Targets in
    another VPC share their fate with every other target of that VPC the model expects
    the same of: the same route (or none) leads there, so one probe, the stand-in,
    answers for them; if it does get through, ``reach`` probes the others one by one.
    """
    probed: list[int] = []
    groups: dict[tuple, list[int]] = {}
    for i, target in enumerate(targets):
        if target.vpc_id is None or target.vpc_id == source.vpc_id:
            probed.append(i)
        else:
            groups.setdefault((target.vpc_id, expected[i][0]), []).append(i)
    stood = {members[0]: members[1:] for members in groups.values()}
    return probed + list(stood), stood


def verdict(probe_result: str, expected: tuple[str, str], answered_by: str | None = None,
            target: Target | None = None) -> tuple[str, str]:
    """The matrix cell: the probe decides, the model explains.

    ``answered_by`` is the host that answered the probe's ``/whoami``: the same address
    may be another host in the source's own VPC (overlapping tenants), which is not the
    target.  ``machine``: the probe failed for a reason of this machine (a descriptor
    limit, a full kernel table), named in ``answered_by`` (the probe's detail): its own
    verdict, never "unreachable".
    """
    model, reason = expected
    if probe_result == "connected" and target is not None and target.probe == "http" and \
            answered_by and \
            answered_by != (target.answers_as or target.name):
        return "unreachable", f"{reason}; {target.ip} answered as {answered_by}, not " \
            f"{target.name}"
    if probe_result == "connected":
        if model == "allowed":
            return "allowed", reason
        return "allowed", f"connected, although the model expected {model}: {reason}"
    if probe_result == "refused":
        return "unreachable", "connection refused: nothing listens on that port"
    if probe_result == "machine":  # the probe was never made: says nothing of the network
        return "machine", f"not probed: {answered_by or 'a limit of this machine'}; " \
            f"the model expects {model}: {reason}"
    if model == "allowed":
        return "unreachable", f"no answer ({probe_result}), although {reason} should allow it"
    return model, reason


def render(rows: list[dict]) -> str:
    """A matrix (sources down, targets across), then the reason of every failed pair."""
    target_labels = list(dict.fromkeys(r["target"] for r in rows))
    source_labels = list(dict.fromkeys(r["source"] for r in rows))
    cell = {(r["source"], r["target"]): r for r in rows}
    first = max([len("SOURCE")] + [len(s) for s in source_labels]) + 2
    widths = [max(len(t), len("unreachable [99]")) + 2 for t in target_labels]
    lines = [("SOURCE".ljust(first) + "".join(t.ljust(w) for t, w in
                                              zip(target_labels, widths, strict=True))).rstrip()]
    notes = []
    for source in source_labels:
        line = source.ljust(first)
        for target, width in zip(target_labels, widths, strict=True):
            row = cell.get((source, target))
            text = "-" if row is None else row["verdict"]
            if row is not None and row["verdict"] != "allowed":
                notes.append(f"[{len(notes) + 1}] {source} ({row['address'] or 'no VPC'}) -> "
                             f"{target}: {row['reason']}")
                text = f"{text} [{len(notes)}]"
            line += text.ljust(width)
        lines.append(line.rstrip())
    return "\n".join(lines + ([""] + notes if notes else []))


MATRIX_LIMIT = 40  # targets: past this, ``render_summary`` (a matrix no one can read)


def render_summary(rows: list[dict], probes: int | None = None, limit: int = 50) -> str:
    """Counts by verdict, then the pairs worth a look: the probe and the model disagree
    (``although``/``answered as``) or the machine stopped the probe (at most ``limit``)."""
    counts: dict[str, int] = {}
    worth = []
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
        if row["verdict"] == "machine" or "although" in row["reason"] or \
                "answered as" in row["reason"]:
            worth.append(row)
    sources = len({r["source"] for r in rows})
    targets = len({r["target"] for r in rows})
    disagree = sum(1 for r in worth if r["verdict"] != "machine")
    lines = [f"{len(rows)} pairs ({sources} sources x {targets} targets"
             + (f", {probes} probes" if probes is not None else "") + "): "
             + ", ".join(f"{v} {counts[v]}" for v in sorted(counts))
             + f"; probe and model disagree on {disagree}"]
    for row in worth[:limit]:
        lines.append(f"  {row['source']} ({row['address'] or 'no VPC'}) -> {row['target']}: "
                     f"{row['verdict']}: {row['reason']}")
    if len(worth) > limit:
        lines.append(f"  ... and {len(worth) - limit} more (--json lists every pair)")
    return "\n".join(lines)
