"""The topology as a picture: a graph of what a user wrote and what Lambda made (pure).

``scene(view)`` turns a ``View`` (a topology, its ENIs, its functions) into a ``Scene``:
nested clusters (account > VPC > subnet, and each account's Lambda functions), nodes and
edges, with no notation of its own; ``fabric.draw`` writes a scene as Graphviz DOT (the
source of truth, which ``dot -Tsvg`` turns into SVG) or as a mermaid ``flowchart LR``.

What is drawn:

    account     a cluster per account: the file's, and each VPC's own ``account``
    VPC         a cluster (id, CIDR) holding its security groups, its internet
                gateway and a cluster per subnet (id, CIDR, AZ)
    subnet      its ENIs (id, address, groups, the functions sharing it; a state other
                than in-use), hosts (name, address, service, groups), NAT gateways
                (private address, Elastic IP) and, when it has one, its route table
    functions   per account, in a "Lambda" cluster (name, state, environments); an edge
                to each ENI whose function list names it; a function without VpcConfig
                has an edge to the emulated internet (Lambda's own egress)
    internet    the emulated internet, when some VPC has an internet gateway or some
                function has no VpcConfig; the internet gateway leads to it, a NAT
                gateway to its VPC's internet gateway, a route table to its targets
    groups      a node per security group (its CIDR rules as lines); a rule that names
                another group is an edge in the direction traffic is opened:
                an ingress rule of A naming B is B -> A labelled ``tcp/8080``; an egress
                rule of A naming B is A -> B labelled ``egress tcp/8080``

It lives in ``fabric`` beside ``desired``: both turn a topology and its ENIs into what
its network is made of (kernel objects there, a drawing here), from ``model`` records only;
security-group references come straight from the model's rules, so ``policy`` (a sibling
it may not import) is not needed.

``file_view`` is a topology file's view before anything runs: the ENIs predicted by
``model.enis.plan_enis`` (one per subnet and security-group set, the ids and addresses
the controller gives them), none for functions in legacy mode (one ENI per environment).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from hyperplane.fabric.egress import nat_gateways
from hyperplane.model import names, timing
from hyperplane.model.enis import Eni, plan_enis
from hyperplane.model.topology import Rule, SecurityGroup, Subnet, Topology, Vpc

DATABASES = ("mysql", "postgres", "redis", "memcached")
MAX_RULE_LINES = 4  # CIDR rules shown in a group's node; the rest as "+N more"
INTERNET = "internet"
LINE_WIDTH = 40  # a label's list of functions or groups is wrapped at this width


@dataclass(frozen=True)
class FunctionView:
    """A function as the picture shows it (from the file, or from the controller)."""
    name: str
    account: str
    in_vpc: bool
    state: str = ""                  # "" for a file's view
    environments: int | None = None  # None for a file's view
    note: str = ""


@dataclass(frozen=True)
class View:
    topology: Topology
    enis: tuple[Eni, ...]
    functions: tuple[FunctionView, ...]
    title: str = ""


@dataclass(frozen=True)
class Node:
    id: str
    kind: str                 # function eni host database sg natgw igw internet routes
    lines: tuple[str, ...]
    muted: bool = False       # an ENI being created or deleted


@dataclass(frozen=True)
class Cluster:
    id: str
    kind: str                 # account lambda vpc subnet
    label: str
    nodes: tuple[Node, ...]
    clusters: tuple[Cluster, ...] = ()


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str                 # uses egress sg_in sg_out route uplink
    label: str = ""


@dataclass(frozen=True)
class Scene:
    title: str
    clusters: tuple[Cluster, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def all_nodes(self) -> list[Node]:
        found = list(self.nodes)
        stack = list(self.clusters)
        while stack:
            cluster = stack.pop(0)
            found += cluster.nodes
            stack += cluster.clusters
        return found


def node_id(kind: str, *parts: str) -> str:
    """An identifier DOT and mermaid both take, one-to-one with (kind, parts)."""
    def clean(text: str) -> str:
        return "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in text)
    return "_".join([kind, *(clean(p) for p in parts)])


def rule_text(rule: Rule) -> str:
    """``tcp/8080``, ``udp/1000-2000``, ``icmp``, ``all``."""
    if rule.ports is None:
        return rule.protocol
    low, high = rule.ports
    return f"{rule.protocol}/{low}" if low == high else f"{rule.protocol}/{low}-{high}"


# -- views ------------------------------------------------------------------------------------
def file_view(topology: Topology, title: str = "") -> View:
    """A topology file before ``up``: ENIs predicted as the controller makes them."""
    shared = tuple(f for f in topology.functions
                   if timing.networking(f.networking, topology.settings) != "legacy")
    enis = plan_enis(replace(topology, functions=shared), [])
    functions = []
    for f in topology.functions:
        config = f.vpc_config
        account = topology.vpc_account(config.vpc_id) if config else topology.account
        legacy = f not in shared and config is not None
        functions.append(FunctionView(f.name, account, config is not None,
                                      note="legacy: an ENI per environment" if legacy else ""))
    return View(topology, tuple(enis), tuple(functions), title)


# -- the scene --------------------------------------------------------------------------------
def _accounts(view: View) -> list[str]:
    ordered = [view.topology.account]
    ordered += [view.topology.vpc_account(v.id) for v in view.topology.vpcs]
    ordered += [f.account for f in view.functions]
    return list(dict.fromkeys(ordered))


def _function_node(fn: FunctionView) -> Node:
    status = [fn.state] if fn.state else []
    if fn.environments is not None:
        status.append(f"{fn.environments} environment{'' if fn.environments == 1 else 's'}")
    lines = [fn.name, " · ".join(status)] if status else [fn.name]
    if not fn.in_vpc:
        lines.append("no VPC")
    if fn.note:
        lines.append(fn.note)
    return Node(node_id("fn", fn.name), "function", tuple(lines))


def wrapped(words: Iterable[str], width: int = LINE_WIDTH) -> list[str]:
    """``a, b, c`` in lines of at most ``width`` characters (a longer word stays whole)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 2 + len(word) <= width:
            lines[-1] += f", {word}"
        else:
            lines.append(word)
    return lines


def _eni_node(eni: Eni) -> Node:
    lines = [eni.id, eni.ip, *(wrapped(eni.key.security_group_ids) or ["(no group)"]),
             *(wrapped(eni.functions) or ["(no function)"])]
    if eni.legacy_env is not None:
        lines.append(f"legacy: env-{eni.legacy_env}")
    elif eni.spill:
        lines.append(f"spill {eni.spill}")
    if eni.status != "in-use":
        lines.append(eni.status)
    return Node(node_id("eni", eni.id), "eni", tuple(lines), muted=eni.status != "in-use")


def _subnet_cluster(vpc: Vpc, subnet: Subnet, enis: Iterable[Eni]) -> Cluster:
    nodes = [_eni_node(e) for e in sorted(enis, key=lambda e: e.index)
             if e.key.subnet_id == subnet.id]
    for host in (h for h in vpc.hosts if h.subnet == subnet.id):
        service = host.service
        lines = [host.name, host.ip]
        if service:
            lines.append(f"{service.kind}:{service.port}")
        lines += wrapped(host.security_groups) or ["(default group)"]
        kind = "database" if service and service.kind in DATABASES else "host"
        nodes.append(Node(node_id("host", host.name), kind, tuple(lines)))
    for nat in (n for n in vpc.network.nat_gateways if n.subnet == subnet.id):
        nodes.append(Node(node_id("nat", nat.id), "natgw",
                          (nat.id, f"private {nat.private_ip}", f"Elastic IP {nat.elastic_ip}")))
    routes = vpc.network.routes(subnet.id)
    if routes:
        nodes.append(Node(node_id("rt", subnet.id), "routes",
                          (f"route table of {subnet.id}",
                           *(f"{r.destination} → {r.target}" for r in routes))))
    return Cluster(node_id("subnet", subnet.id), "subnet",
                   f"{subnet.id}  {subnet.cidr}  {subnet.az}", tuple(nodes))


def _group_node(vpc: Vpc, group: SecurityGroup) -> Node:
    lines = [group.id] + ([group.name] if group.name and group.name != group.id else [])
    cidr_rules = [f"{'in' if d == 'ingress' else 'out'} {rule_text(r)} {r.cidr}"
                  for d in ("ingress", "egress") for r in getattr(group, d) if r.cidr]
    lines += cidr_rules[:MAX_RULE_LINES]
    if len(cidr_rules) > MAX_RULE_LINES:
        lines.append(f"+{len(cidr_rules) - MAX_RULE_LINES} more")
    return Node(node_id("sg", vpc.id, group.id), "sg", tuple(lines))


def _vpc_cluster(vpc: Vpc, enis: tuple[Eni, ...]) -> Cluster:
    nodes = [_group_node(vpc, g) for g in vpc.security_groups]
    if vpc.network.internet_gateway:
        nodes.append(Node(node_id("igw", vpc.id), "igw",
                          (vpc.network.internet_gateway, "internet gateway")))
    subnets = tuple(_subnet_cluster(vpc, s, enis) for s in vpc.subnets)
    return Cluster(node_id("vpc", vpc.id), "vpc", f"{vpc.id}  {vpc.cidr}", tuple(nodes),
                   subnets)


def _needs_internet(view: View) -> bool:
    return any(v.network.internet_gateway for v in view.topology.vpcs) or \
        any(not f.in_vpc for f in view.functions)


def scene(view: View) -> Scene:
    """The clusters, nodes and edges of a view (see the module's docstring)."""
    topology = view.topology
    clusters = []
    for account in _accounts(view):
        inner = [_vpc_cluster(v, view.enis) for v in topology.vpcs
                 if topology.vpc_account(v.id) == account]
        functions = tuple(_function_node(f) for f in view.functions if f.account == account)
        if functions:
            inner.insert(0, Cluster(node_id("lambda", account), "lambda", "Lambda functions",
                                    functions))
        clusters.append(Cluster(node_id("account", account), "account", f"account {account}",
                                (), tuple(inner)))
    nodes = ()
    if _needs_internet(view):
        nodes = (Node(INTERNET, "internet", ("emulated internet",
                                             f"public server {names.PUBLIC_SERVER}")),)
    edges = _function_edges(view) + _group_edges(topology) + _gateway_edges(topology)
    return Scene(view.title, tuple(clusters), nodes, tuple(edges))


def _function_edges(view: View) -> list[Edge]:
    edges = []
    for fn in view.functions:
        if not fn.in_vpc:
            edges.append(Edge(node_id("fn", fn.name), INTERNET, "egress",
                              f"Lambda egress {names.EGRESS_IP}"))
        for eni in sorted(view.enis, key=lambda e: e.index):
            if fn.name in eni.functions:
                edges.append(Edge(node_id("fn", fn.name), node_id("eni", eni.id), "uses"))
    return edges


def _group_edges(topology: Topology) -> list[Edge]:
    """Rules naming a group, one edge per (tail, head, direction), labels joined."""
    labels: dict[tuple[str, str, str], list[str]] = {}
    for vpc in topology.vpcs:
        known = {g.id for g in vpc.security_groups}
        for group in vpc.security_groups:
            for direction, kind in (("ingress", "sg_in"), ("egress", "sg_out")):
                for rule in getattr(group, direction):
                    if rule.security_group not in known:
                        continue
                    here = node_id("sg", vpc.id, group.id)
                    peer = node_id("sg", vpc.id, rule.security_group)
                    ends = (peer, here) if direction == "ingress" else (here, peer)
                    text = rule_text(rule)
                    labels.setdefault((*ends, kind), []).append(
                        text if direction == "ingress" else f"egress {text}")
    return [Edge(src, dst, kind, ", ".join(dict.fromkeys(texts)))
            for (src, dst, kind), texts in labels.items()]


def _gateway_edges(topology: Topology) -> list[Edge]:
    edges = []
    for vpc in topology.vpcs:
        igw = vpc.network.internet_gateway
        if igw:
            edges.append(Edge(node_id("igw", vpc.id), INTERNET, "uplink"))
        for nat in vpc.network.nat_gateways:
            if igw:
                edges.append(Edge(node_id("nat", nat.id), node_id("igw", vpc.id), "uplink",
                                  f"as {nat.elastic_ip}"))
        for subnet in vpc.subnets:
            for route in vpc.network.routes(subnet.id):
                target = _route_target(topology, vpc, route.target)
                if target:
                    edges.append(Edge(node_id("rt", subnet.id), target, "route",
                                      route.destination))
    return edges


def _route_target(topology: Topology, vpc: Vpc, target: str) -> str | None:
    if target == vpc.network.internet_gateway:
        return node_id("igw", vpc.id)
    if any(n.id == target for n in nat_gateways(topology)):
        return node_id("nat", target)
    return None
