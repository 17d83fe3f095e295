"""The topology file's parser: a loaded document in, a ``Topology`` out (pure).

One typed parser, ``Parser``, checks the whole document in one pass and builds the
frozen records of ``topology``.  Its parts live in three modules: the shape checks
(``fields.Fields``), the VPC networking keys (``parse_network.NetworkParser``) and
``functions:`` (``parse_functions.FunctionParser``); this module holds the
document, VPCs, subnets, security groups and hosts.  Every problem raises one
``TopologyError`` naming the file, the field path (``vpcs[0].subnets[1].cidr``) and a
reason.  The rules are AWS's where AWS has one (prefix /16../28, the five reserved
addresses of a subnet, 16 subnets and 5 security groups per function) plus ours (no
unknown keys, names that fit namespace names).

``parse_topology(document, source)`` validates a document already loaded (the state
database keeps it; ``document.load_topology`` reads and bounds a file first).
"""

from __future__ import annotations

import re

import netaddr

from hyperplane.model.fields import FILE_PATH, ipv4, key, kind, shown
from hyperplane.model.layout import Layout
from hyperplane.model.parse_functions import MAX_SECURITY_GROUPS, FunctionParser
from hyperplane.model.parse_network import SUBNET_KEYS, VPC_KEYS, NetworkParser
from hyperplane.model.parse_storage import StorageParser
from hyperplane.model.topology import (
    RESERVED_LABELS,
    SERVICE_KINDS,
    Host,
    Rule,
    SecurityGroup,
    Service,
    Subnet,
    Topology,
    Vpc,
    reserved_addresses,
)

PREFIX_RANGE = (16, 28)  # allowed prefix lengths of VPCs and subnets (AWS)
PROTOCOLS = ("tcp", "udp", "icmp", "all")
PORT_PROTOCOLS = ("tcp", "udp")
_SERVICE_OPTIONS = {"http": (), "tcp": (), "memcached": (), "redis": ("password",),
                    "mysql": ("user", "password", "database"),
                    "postgres": ("user", "password", "database"), "proxy": ("target",)}
# no `egress` key: AWS's default egress rule of a new group (no `ingress`: no rule)
DEFAULT_RULES = {"ingress": [], "egress": [{"protocol": "all", "cidr": "0.0.0.0/0"}]}

_ACCOUNT = re.compile(r"[0-9]{12}")
_HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
_PORTS = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def parse_topology(data: object, source: str, base_dir: str | None = None) -> Topology:
    """Validate a loaded document; ``source`` names it in errors."""
    return Parser(source, base_dir).topology(data)


def _overlap(a: netaddr.IPNetwork, b: netaddr.IPNetwork) -> bool:
    return a.first <= b.last and b.first <= a.last


def _reserved_label(ip: netaddr.IPAddress, cidr: str) -> str | None:
    for address, label in zip(reserved_addresses(cidr), RESERVED_LABELS, strict=True):
        if str(ip) == address:
            return label
    return None


class Parser(NetworkParser, StorageParser, FunctionParser):
    """One validation run: the file name for errors and the ids seen so far."""

    def __init__(self, source: str, base_dir: str | None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.vpc_paths: dict[str, str] = {}
        self.subnets: dict[str, tuple[Subnet, str]] = {}  # id -> (subnet, path)
        self.groups: dict[str, tuple[str, str]] = {}  # id -> (vpc id, path)
        self.host_paths: dict[str, str] = {}
        self.function_paths: dict[str, str] = {}
        self.group_refs: list[tuple[str, str, str]] = []  # (path, group id, vpc id)
        self.default_account = ""  # for the VPCs, gateways and Elastic IPs
        self.gateway_paths: dict[str, str] = {}
        self.eip_paths: dict[str, str] = {}
        self.internet_gateways: list[str] = []
        self.access_points: dict[str, str] = {}

    # -- document ---------------------------------------------------------------------

    def topology(self, data: object) -> Topology:
        if data is None:
            self.fail(FILE_PATH, "the document is empty; expected a mapping with an account")
        doc = self.mapping(data, "", ("account",), ("vpcs", "functions", "settings", "_layout"))
        account = self.default_account = self.account(doc["account"])
        vpcs = tuple(self.vpc(raw, f"vpcs[{i}]")
                     for i, raw in enumerate(self.list_of(doc.get("vpcs", []), "vpcs")))
        for v_index, vpc in enumerate(vpcs):
            self.check_hosts(vpc, f"vpcs[{v_index}]")
        for path, group_id, vpc_id in self.group_refs:
            self.check_group_ref(path, group_id, vpc_id)
        raw_functions = self.list_of(doc.get("functions", []), "functions")
        functions = tuple(self.function(raw, f"functions[{i}]")
                          for i, raw in enumerate(raw_functions))
        settings = {} if doc.get("settings") is None else doc["settings"]
        if not isinstance(settings, dict):
            self.fail("settings", f"expected a mapping, got {kind(settings)}")
        layout = Layout.from_dict(doc.get("_layout")).extend(
            (v.id, [s.id for s in v.subnets]) for v in vpcs)
        return Topology(account, vpcs, functions, self.source, dict(settings), layout)

    def account(self, raw: object) -> str:
        if isinstance(raw, int) and not isinstance(raw, bool):
            self.fail("account", f"must be a quoted 12-digit string, got the integer {shown(raw)} "
                      "(quote it: YAML drops leading zeros)")
        if not isinstance(raw, str) or not _ACCOUNT.fullmatch(raw):
            self.fail("account", f"must be a 12-digit string, got {shown(raw)}")
        return raw

    # -- VPCs -------------------------------------------------------------------------

    def vpc(self, raw: object, path: str) -> Vpc:
        m = self.mapping(raw, path, ("id", "cidr"), ("subnets", "security_groups", "hosts",
                                                     "file_systems") + VPC_KEYS)
        vpc_id = self.ident(m["id"], key(path, "id"))
        self.unique(self.vpc_paths, vpc_id, key(path, "id"), "VPC id")
        net = self.cidr(m["cidr"], key(path, "cidr"), PREFIX_RANGE, "VPC")
        subnets = self.subnets_of(m.get("subnets", []), key(path, "subnets"), vpc_id, net)
        groups_path = key(path, "security_groups")
        groups = tuple(self.security_group(g, f"{groups_path}[{i}]", vpc_id)
                       for i, g in enumerate(self.list_of(m.get("security_groups", []),
                                                          groups_path)))
        hosts_path = key(path, "hosts")
        hosts = tuple(self.host(h, f"{hosts_path}[{i}]", vpc_id)
                      for i, h in enumerate(self.list_of(m.get("hosts", []), hosts_path)))
        network = self.vpc_network(m, path, vpc_id, net, subnets, hosts)
        file_systems = self.file_systems(m.get("file_systems"), key(path, "file_systems"),
                                         vpc_id, hosts)
        return Vpc(vpc_id, str(net.cidr), subnets, groups, hosts, network, file_systems)

    def subnets_of(self, raw: object, path: str, vpc_id: str,
                   vpc_net: netaddr.IPNetwork) -> tuple[Subnet, ...]:
        placed: list[tuple[Subnet, netaddr.IPNetwork]] = []
        for index, item in enumerate(self.list_of(raw, path)):
            item_path = f"{path}[{index}]"
            subnet, net = self.subnet(item, item_path, vpc_id)
            cidr_path = key(item_path, "cidr")
            if not (vpc_net.first <= net.first and net.last <= vpc_net.last):
                self.fail(cidr_path, f"{subnet.cidr} is outside VPC {vpc_id} ({vpc_net.cidr})")
            for other, other_net in placed:
                if _overlap(net, other_net):
                    self.fail(cidr_path, f"{subnet.cidr} ({subnet.id}) overlaps subnet "
                              f"{other.id} ({other.cidr}) in VPC {vpc_id}")
            placed.append((subnet, net))
        return tuple(subnet for subnet, _ in placed)

    def subnet(self, raw: object, path: str, vpc_id: str) -> tuple[Subnet, netaddr.IPNetwork]:
        m = self.mapping(raw, path, ("id", "cidr", "az"), SUBNET_KEYS)
        subnet_id = self.ident(m["id"], key(path, "id"))
        if subnet_id in self.subnets:
            self.fail(key(path, "id"), f"duplicate subnet id {shown(subnet_id)} "
                      f"(first defined at {self.subnets[subnet_id][1]})")
        net = self.cidr(m["cidr"], key(path, "cidr"), PREFIX_RANGE, "subnet")
        subnet = Subnet(subnet_id, str(net.cidr), self.ident(m["az"], key(path, "az")), vpc_id)
        self.subnets[subnet_id] = (subnet, key(path, "id"))
        return subnet, net

    # -- security groups --------------------------------------------------------------

    def security_group(self, raw: object, path: str, vpc_id: str) -> SecurityGroup:
        m = self.mapping(raw, path, ("id",), ("ingress", "egress", "name", "description"))
        group_id = self.ident(m["id"], key(path, "id"))
        name = self.string(m.get("name", group_id), key(path, "name"))
        description = m.get("description", "")
        if not isinstance(description, str):
            self.fail(key(path, "description"), f"expected a string, got {kind(description)}")
        if group_id in self.groups:
            self.fail(key(path, "id"), f"duplicate security group id {shown(group_id)} "
                      f"(first defined at {self.groups[group_id][1]})")
        self.groups[group_id] = (vpc_id, key(path, "id"))
        rules = {}
        for direction in ("ingress", "egress"):
            rules_path = key(path, direction)
            items = self.list_of(m.get(direction, DEFAULT_RULES[direction]), rules_path)
            rules[direction] = tuple(self.rule(r, f"{rules_path}[{i}]", direction, vpc_id)
                                     for i, r in enumerate(items))
        return SecurityGroup(group_id, rules["ingress"], rules["egress"], name, description)

    def rule(self, raw: object, path: str, direction: str, vpc_id: str) -> Rule:
        peer_key = "source_security_group" if direction == "ingress" else \
            "destination_security_group"
        targets = ("cidr", peer_key, "security_group")
        m = self.mapping(raw, path, ("protocol",), ("ports",) + targets)
        protocol = self.protocol(m["protocol"], key(path, "protocol"))
        ports = None
        if "ports" in m:
            if protocol not in PORT_PROTOCOLS:
                self.fail(key(path, "ports"), f"ports are only allowed with tcp or udp, "
                          f"not with protocol {protocol}")
            ports = self.ports(m["ports"], key(path, "ports"))
        given = [key for key in targets if key in m]
        if not given:
            self.fail(path, f"a rule needs one of cidr, {peer_key}")
        if len(given) > 1:
            self.fail(key(path, given[1]), f"give only one of {' / '.join(targets)} "
                      f"(got {given[0]} and {given[1]})")
        if given[0] == "cidr":
            net = self.cidr(m["cidr"], key(path, "cidr"), None, "rule")
            return Rule(protocol, ports, str(net.cidr), None)
        group_id = self.ident(m[given[0]], key(path, given[0]))
        self.group_refs.append((key(path, given[0]), group_id, vpc_id))
        return Rule(protocol, ports, None, group_id)

    def protocol(self, raw: object, path: str) -> str:
        value = raw.lower() if isinstance(raw, str) else raw
        if value not in PROTOCOLS:
            self.fail(path, f"unknown protocol {shown(raw)} "
                      f"(expected one of {', '.join(PROTOCOLS)})")
        return value

    def ports(self, raw: object, path: str) -> tuple[int, int]:
        if isinstance(raw, int) and not isinstance(raw, bool):
            low = high = raw
        else:
            match = _PORTS.fullmatch(raw.replace(" ", "")) if isinstance(raw, str) else None
            if match is None:
                self.fail(path, f"ports must be 'N' or 'N-M', got {shown(raw)}")
            low = int(match.group(1))
            high = int(match.group(2) or low)
        for port in (low, high):
            if not 1 <= port <= 65535:
                self.fail(path, f"port {port} is outside 1-65535")
        if low > high:
            self.fail(path, f"port range {low}-{high} is reversed (N must be <= M)")
        return (low, high)

    def check_group_ref(self, path: str, group_id: str, vpc_id: str,
                        user: str = "") -> None:
        if group_id not in self.groups:
            self.fail(path, f"unknown security group {shown(group_id)}")
        owner = self.groups[group_id][0]
        if owner != vpc_id:
            self.fail(path, f"security group {shown(group_id)} is in {owner}, not in {vpc_id}"
                      f"{user}; security groups can only be used in their own VPC")

    # -- hosts ------------------------------------------------------------------------

    def host(self, raw: object, path: str, vpc_id: str) -> Host:
        m = self.mapping(raw, path, ("name", "subnet", "ip"), ("security_groups", "service"))
        name = self.name(m["name"], key(path, "name"), _HOST_NAME, self.host_paths,
                         "host name", " (it is used in namespace names)")
        subnet_id = self.ident(m["subnet"], key(path, "subnet"))
        ip = ipv4(m["ip"])
        if ip is None:
            self.fail(key(path, "ip"), f"{shown(m['ip'])} is not a valid IPv4 address")
        groups = self.ident_list(m.get("security_groups", []), key(path, "security_groups"),
                                 MAX_SECURITY_GROUPS, "security group")
        service = self.service(m.get("service"), key(path, "service"))
        return Host(name, subnet_id, str(ip), groups, service, vpc_id)

    def service(self, raw: object, path: str) -> Service | None:
        """``{KIND: PORT, ...options}``: exactly one kind, with that kind's options."""
        if raw is None:
            return None
        named = [k for k in SERVICE_KINDS if isinstance(raw, dict) and k in raw]
        if isinstance(raw, dict) and len(named) != 1:
            self.fail(path, f"name exactly one service kind of {', '.join(SERVICE_KINDS)} "
                      f"as the key of its port (got {', '.join(named) or 'none'})")
        kind_name = named[0] if named else "http"
        m = self.mapping(raw, path, (kind_name,), _SERVICE_OPTIONS[kind_name])
        port = self.integer(m[kind_name], key(path, kind_name), (1, 65535))
        text = {o: self.credential(m[o], key(path, o)) for o in _SERVICE_OPTIONS[kind_name]
                if o in m}
        if kind_name in ("mysql", "postgres") and "password" not in text:
            self.fail(key(path, "password"), f"a {kind_name} service needs the master "
                      "user's password")
        if kind_name == "proxy" and "target" not in text:
            self.fail(key(path, "target"), "a proxy needs the host it forwards to")
        user = text.get("user", "admin" if kind_name in ("mysql", "postgres") else "")
        return Service(kind_name, port, user, text.get("password", ""),
                       text.get("database", ""), text.get("target", ""))

    def credential(self, raw: object, path: str) -> str:
        text = self.string(raw, path)
        if len(text) > 128 or not text.isprintable():
            self.fail(path, f"{shown(text[:40])} must be at most 128 printable characters")
        return text

    def check_hosts(self, vpc: Vpc, path: str) -> None:
        used: dict[tuple[str, str], str] = {}
        for index, host in enumerate(vpc.hosts):
            host_path = f"{path}.hosts[{index}]"
            subnet = self.local_subnet(host.subnet, key(host_path, "subnet"), vpc.id)
            self.check_host_ip(host, subnet, key(host_path, "ip"))
            if (subnet.id, host.ip) in used:
                self.fail(key(host_path, "ip"), f"{host.ip} is already used by host "
                          f"'{used[subnet.id, host.ip]}' in subnet {subnet.id}")
            used[subnet.id, host.ip] = host.name
            for g_index, group_id in enumerate(host.security_groups):
                self.check_group_ref(f"{host_path}.security_groups[{g_index}]", group_id, vpc.id)
            if host.service and host.service.kind == "proxy":
                self.check_proxy(vpc, host, key(key(host_path, "service"), "target"))

    def check_proxy(self, vpc: Vpc, host: Host, path: str) -> None:
        target = next((h for h in vpc.hosts if h.name == host.service.target), None)
        if target is None or target is host or target.service is None:
            self.fail(path, f"{shown(host.service.target)} is not another host of {vpc.id} "
                      "with a service")

    def local_subnet(self, subnet_id: str, path: str, vpc_id: str) -> Subnet:
        if subnet_id not in self.subnets:
            self.fail(path, f"unknown subnet {shown(subnet_id)}")
        subnet = self.subnets[subnet_id][0]
        if subnet.vpc_id != vpc_id:
            self.fail(path, f"subnet {shown(subnet_id)} is in {subnet.vpc_id}, not in {vpc_id}")
        return subnet

    def check_host_ip(self, host: Host, subnet: Subnet, path: str) -> None:
        ip = netaddr.IPAddress(host.ip)
        if ip not in netaddr.IPNetwork(subnet.cidr):
            self.fail(path, f"{ip} is outside subnet {subnet.id} ({subnet.cidr})")
        label = _reserved_label(ip, subnet.cidr)
        if label is not None:
            self.fail(path, f"{ip} is reserved by AWS in subnet {subnet.id} "
                      f"({subnet.cidr}): {label}")
