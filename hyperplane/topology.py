"""The declarative topology: VPCs, subnets, security groups, hosts and functions (pure).

A topology file describes one AWS account the way the console or CloudFormation would:

    account   the 12-digit account id
    vpcs      each with a CIDR, subnets (one per AZ), security groups and customer hosts
    functions Lambda functions; ``vpc_config`` attaches one to subnets and security groups
    settings  a mapping for the runtime, stored as given (``settings.check`` validates it)

``load_topology`` reads a YAML file and ``parse_topology`` validates a loaded document into
frozen, hashable dataclasses (``Topology`` > ``Vpc`` > ``Subnet``/``SecurityGroup``/``Host``,
and ``Function`` > ``VpcConfig``).  Every problem raises one ``TopologyError`` naming the
file, the field path (``vpcs[0].subnets[1].cidr``) and a reason.  The rules are AWS's where
AWS has one (prefix /16../28, the five reserved addresses of a subnet, 16 subnets and 5
security groups per function) plus ours (no unknown keys, names that fit namespace names).

Two parts live in their own modules and are called with the parser: ``topology_egress``
(a VPC's accounts, DNS zone, gateways and route tables) and ``topology_functions``
(``functions:``; its ``Function``, ``VpcConfig``, ``_FUNCTION_NAME`` and ``_valid_handler``
are re-exported here, where they used to live: the ``X as X`` imports).

This module only describes and checks; it never touches the kernel.  ``fabric`` turns a
``Topology`` into kernel objects and the controller plans ENIs and environments from it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import netaddr
import yaml

from hyperplane import topology_egress
from hyperplane.topology_egress import VpcNetwork
from hyperplane.topology_functions import _FUNCTION_NAME as _FUNCTION_NAME
from hyperplane.topology_functions import MAX_SECURITY_GROUPS, parse_function
from hyperplane.topology_functions import Function as Function
from hyperplane.topology_functions import VpcConfig as VpcConfig
from hyperplane.topology_functions import _valid_handler as _valid_handler

FILE_PATH = "<file>"  # the field path of errors about the file itself (I/O, YAML, root)
PREFIX_RANGE = (16, 28)  # allowed prefix lengths of VPCs and subnets (AWS)
PROTOCOLS = ("tcp", "udp", "icmp", "all")
PORT_PROTOCOLS = ("tcp", "udp")
# no `egress` key: AWS's default egress rule of a new group (no `ingress`: no rule)
DEFAULT_RULES = {"ingress": [], "egress": [{"protocol": "all", "cidr": "0.0.0.0/0"}]}
RESERVED_LABELS = ("network address", "VPC router", "DNS", "reserved for future use", "broadcast")

_ACCOUNT = re.compile(r"[0-9]{12}")
_HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_PREFIX = re.compile(r"0|[1-9][0-9]?")
_PORTS = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


class TopologyError(Exception):
    """A topology file is invalid: which file, where in it, and why."""

    def __init__(self, file: str, path: str, reason: str):
        super().__init__(f"{file}: {path}: {reason}")
        self.file = file
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    protocol: str  # tcp | udp | icmp | all
    ports: tuple[int, int] | None  # inclusive range; None means every port
    cidr: str | None
    security_group: str | None


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]


@dataclass(frozen=True)
class Subnet:
    id: str
    cidr: str
    az: str
    vpc_id: str


@dataclass(frozen=True)
class Host:
    name: str
    subnet: str
    ip: str
    security_groups: tuple[str, ...]
    http_port: int | None
    vpc_id: str


@dataclass(frozen=True)
class Vpc:
    id: str
    cidr: str
    subnets: tuple[Subnet, ...]
    security_groups: tuple[SecurityGroup, ...]
    hosts: tuple[Host, ...]
    network: VpcNetwork = VpcNetwork()  # account, DNS zone, gateways, route tables


def _find(items: Iterable[Any], attr: str, key: str) -> Any:
    for item in items:
        if getattr(item, attr) == key:
            return item
    raise KeyError(key)


@dataclass(frozen=True)
class Topology:
    account: str
    vpcs: tuple[Vpc, ...]
    functions: tuple[Function, ...]
    source: str
    settings: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def subnet(self, subnet_id: str) -> Subnet:
        return _find((s for v in self.vpcs for s in v.subnets), "id", subnet_id)

    def vpc(self, vpc_id: str) -> Vpc:
        return _find(self.vpcs, "id", vpc_id)

    def host(self, name: str) -> Host:
        return _find((h for v in self.vpcs for h in v.hosts), "name", name)

    def function(self, name: str) -> Function:
        return _find(self.functions, "name", name)

    def security_group(self, sg_id: str) -> SecurityGroup:
        return _find((g for v in self.vpcs for g in v.security_groups), "id", sg_id)


def reserved_addresses(cidr: str) -> list[str]:
    """The five addresses AWS reserves in a subnet, in the order of ``RESERVED_LABELS``."""
    net = netaddr.IPNetwork(cidr)
    if net.size < 8:
        raise ValueError(f"{cidr} is too small to hold the five AWS-reserved addresses")
    picks = (net.first, net.first + 1, net.first + 2, net.first + 3, net.last)
    return [str(netaddr.IPAddress(value)) for value in picks]


def load_topology(path: str) -> Topology:
    """Read and validate a topology file; relative ``code`` may be relative to its folder."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(path, FILE_PATH, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(path, FILE_PATH, f"cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TopologyError(path, FILE_PATH, _yaml_reason(exc)) from None
    return parse_topology(data, path, str(Path(path).resolve().parent))


def parse_topology(data: object, source: str, base_dir: str | None = None) -> Topology:
    """Validate a loaded YAML document; ``source`` names it in errors."""
    return _Parser(source, base_dir).topology(data)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key_node.value}'", key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _kind(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _ipv4(text: object) -> netaddr.IPAddress | None:
    """A strict dotted quad (no leading zeros, no shorthand), else None."""
    if not isinstance(text, str) or not _IPV4.fullmatch(text):
        return None
    if any(int(octet) > 255 for octet in text.split(".")):
        return None
    return netaddr.IPAddress(text)


def _overlap(a: netaddr.IPNetwork, b: netaddr.IPNetwork) -> bool:
    return a.first <= b.last and b.first <= a.last


def _reserved_label(ip: netaddr.IPAddress, cidr: str) -> str | None:
    for address, label in zip(reserved_addresses(cidr), RESERVED_LABELS, strict=True):
        if str(ip) == address:
            return label
    return None


class _Parser:
    """One validation run: the file name for errors and the ids seen so far."""

    def __init__(self, source: str, base_dir: str | None):
        self.source = source
        self.base_dir = base_dir
        self.vpc_paths: dict[str, str] = {}
        self.subnets: dict[str, tuple[Subnet, str]] = {}  # id -> (subnet, path)
        self.groups: dict[str, tuple[str, str]] = {}  # id -> (vpc id, path)
        self.host_paths: dict[str, str] = {}
        self.function_paths: dict[str, str] = {}
        self.group_refs: list[tuple[str, str, str]] = []  # (path, group id, vpc id)
        self.default_account = ""  # for topology_egress: VPCs, gateways, Elastic IPs
        self.gateway_paths: dict[str, str] = {}
        self.eip_paths: dict[str, str] = {}
        self.internet_gateways: list[str] = []

    def fail(self, path: str, reason: str) -> NoReturn:
        raise TopologyError(self.source, path, reason)

    # -- generic shapes ---------------------------------------------------------------

    def mapping(self, raw: object, path: str, required: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(path or FILE_PATH, f"expected a mapping, got {_kind(raw)}")
        allowed = required + optional
        for key in raw:
            if not isinstance(key, str):
                self.fail(path or FILE_PATH, f"key {key!r} is not a string")
            if key not in allowed:
                self.fail(_key(path, key), self._unknown_key(key, allowed))
        for key in required:
            if key not in raw:
                self.fail(_key(path, key), "missing required field")
        return raw

    @staticmethod
    def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown key '{key}' (allowed: {', '.join(allowed)}){hint}"

    def list_of(self, raw: object, path: str) -> list[Any]:
        if not isinstance(raw, list):
            self.fail(path, f"expected a list, got {_kind(raw)}")
        return raw

    def string(self, raw: object, path: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            self.fail(path, f"expected a non-empty string, got {_kind(raw)} {raw!r}")
        return raw

    def ident(self, raw: object, path: str) -> str:
        text = self.string(raw, path)
        if any(c.isspace() for c in text):
            self.fail(path, f"id {text!r} must not contain whitespace")
        return text

    def integer(self, raw: object, path: str, bounds: tuple[int, int]) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.fail(path, f"expected an integer, got {_kind(raw)} {raw!r}")
        if not bounds[0] <= raw <= bounds[1]:
            self.fail(path, f"{raw} is outside the allowed range {bounds[0]}..{bounds[1]}")
        return raw

    def boolean(self, raw: object, path: str) -> bool:
        if not isinstance(raw, bool):
            self.fail(path, f"expected a boolean, got {_kind(raw)}")
        return raw

    def ident_list(self, raw: object, path: str, limit: int | None, what: str) -> tuple[str, ...]:
        items = self.list_of(raw, path)
        if limit is not None and len(items) > limit:
            self.fail(path, f"at most {limit} {what}s are allowed, got {len(items)}")
        result: list[str] = []
        for index, item in enumerate(items):
            value = self.ident(item, f"{path}[{index}]")
            if value in result:
                self.fail(f"{path}[{index}]", f"duplicate {what} '{value}' "
                          f"(already at index {result.index(value)})")
            result.append(value)
        return tuple(result)

    def unique(self, seen: dict[str, str], value: str, path: str, what: str) -> None:
        if value in seen:
            self.fail(path, f"duplicate {what} '{value}' (first defined at {seen[value]})")
        seen[value] = path

    def cidr(self, raw: object, path: str, prefixes: tuple[int, int] | None,
             what: str) -> netaddr.IPNetwork:
        address, _, prefix = raw.partition("/") if isinstance(raw, str) else ("", "", "")
        if _ipv4(address) is None or not _PREFIX.fullmatch(prefix) or int(prefix) > 32:
            self.fail(path, f"{raw!r} is not a valid IPv4 CIDR")
        net = netaddr.IPNetwork(raw)
        if net.ip != net.network:
            self.fail(path, f"{raw!r} has host bits set; did you mean {net.cidr}?")
        if prefixes and not prefixes[0] <= net.prefixlen <= prefixes[1]:
            self.fail(path, f"{what} prefix /{net.prefixlen} is outside the AWS-allowed range "
                      f"/{prefixes[0]}../{prefixes[1]}")
        return net

    # -- document ---------------------------------------------------------------------

    def topology(self, data: object) -> Topology:
        if data is None:
            self.fail(FILE_PATH, "the document is empty; expected a mapping with an account")
        doc = self.mapping(data, "", ("account",), ("vpcs", "functions", "settings"))
        account = self.default_account = self.account(doc["account"])
        vpcs = tuple(self.vpc(raw, f"vpcs[{i}]")
                     for i, raw in enumerate(self.list_of(doc.get("vpcs", []), "vpcs")))
        for v_index, vpc in enumerate(vpcs):
            self.check_hosts(vpc, f"vpcs[{v_index}]")
        for path, group_id, vpc_id in self.group_refs:
            self.check_group_ref(path, group_id, vpc_id)
        raw_functions = self.list_of(doc.get("functions", []), "functions")
        functions = tuple(parse_function(self, raw, f"functions[{i}]")
                          for i, raw in enumerate(raw_functions))
        settings = {} if doc.get("settings") is None else doc["settings"]
        if not isinstance(settings, dict):
            self.fail("settings", f"expected a mapping, got {_kind(settings)}")
        return Topology(account, vpcs, functions, self.source, dict(settings))

    def account(self, raw: object) -> str:
        if isinstance(raw, int) and not isinstance(raw, bool):
            self.fail("account", f"must be a quoted 12-digit string, got the integer {raw} "
                      "(quote it: YAML drops leading zeros)")
        if not isinstance(raw, str) or not _ACCOUNT.fullmatch(raw):
            self.fail("account", f"must be a 12-digit string, got {raw!r}")
        return raw

    # -- VPCs -------------------------------------------------------------------------

    def vpc(self, raw: object, path: str) -> Vpc:
        m = self.mapping(raw, path, ("id", "cidr"), ("subnets", "security_groups", "hosts") +
                         topology_egress.VPC_KEYS)
        vpc_id = self.ident(m["id"], _key(path, "id"))
        self.unique(self.vpc_paths, vpc_id, _key(path, "id"), "VPC id")
        net = self.cidr(m["cidr"], _key(path, "cidr"), PREFIX_RANGE, "VPC")
        subnets = self.subnets_of(m.get("subnets", []), _key(path, "subnets"), vpc_id, net)
        groups_path = _key(path, "security_groups")
        groups = tuple(self.security_group(g, f"{groups_path}[{i}]", vpc_id)
                       for i, g in enumerate(self.list_of(m.get("security_groups", []),
                                                          groups_path)))
        hosts_path = _key(path, "hosts")
        hosts = tuple(self.host(h, f"{hosts_path}[{i}]", vpc_id)
                      for i, h in enumerate(self.list_of(m.get("hosts", []), hosts_path)))
        network = topology_egress.parse_vpc(self, m, path, vpc_id, net, subnets, hosts)
        return Vpc(vpc_id, str(net.cidr), subnets, groups, hosts, network)

    def subnets_of(self, raw: object, path: str, vpc_id: str,
                   vpc_net: netaddr.IPNetwork) -> tuple[Subnet, ...]:
        placed: list[tuple[Subnet, netaddr.IPNetwork]] = []
        for index, item in enumerate(self.list_of(raw, path)):
            item_path = f"{path}[{index}]"
            subnet, net = self.subnet(item, item_path, vpc_id)
            cidr_path = _key(item_path, "cidr")
            if not (vpc_net.first <= net.first and net.last <= vpc_net.last):
                self.fail(cidr_path, f"{subnet.cidr} is outside VPC {vpc_id} ({vpc_net.cidr})")
            for other, other_net in placed:
                if _overlap(net, other_net):
                    self.fail(cidr_path, f"{subnet.cidr} ({subnet.id}) overlaps subnet "
                              f"{other.id} ({other.cidr}) in VPC {vpc_id}")
            placed.append((subnet, net))
        return tuple(subnet for subnet, _ in placed)

    def subnet(self, raw: object, path: str, vpc_id: str) -> tuple[Subnet, netaddr.IPNetwork]:
        m = self.mapping(raw, path, ("id", "cidr", "az"), topology_egress.SUBNET_KEYS)
        subnet_id = self.ident(m["id"], _key(path, "id"))
        if subnet_id in self.subnets:
            self.fail(_key(path, "id"), f"duplicate subnet id '{subnet_id}' "
                      f"(first defined at {self.subnets[subnet_id][1]})")
        net = self.cidr(m["cidr"], _key(path, "cidr"), PREFIX_RANGE, "subnet")
        subnet = Subnet(subnet_id, str(net.cidr), self.ident(m["az"], _key(path, "az")), vpc_id)
        self.subnets[subnet_id] = (subnet, _key(path, "id"))
        return subnet, net

    # -- security groups --------------------------------------------------------------

    def security_group(self, raw: object, path: str, vpc_id: str) -> SecurityGroup:
        m = self.mapping(raw, path, ("id",), ("ingress", "egress"))
        group_id = self.ident(m["id"], _key(path, "id"))
        if group_id in self.groups:
            self.fail(_key(path, "id"), f"duplicate security group id '{group_id}' "
                      f"(first defined at {self.groups[group_id][1]})")
        self.groups[group_id] = (vpc_id, _key(path, "id"))
        rules = {}
        for direction in ("ingress", "egress"):
            rules_path = _key(path, direction)
            items = self.list_of(m.get(direction, DEFAULT_RULES[direction]), rules_path)
            rules[direction] = tuple(self.rule(r, f"{rules_path}[{i}]", direction, vpc_id)
                                     for i, r in enumerate(items))
        return SecurityGroup(group_id, rules["ingress"], rules["egress"])

    def rule(self, raw: object, path: str, direction: str, vpc_id: str) -> Rule:
        peer_key = "source_security_group" if direction == "ingress" else \
            "destination_security_group"
        targets = ("cidr", peer_key, "security_group")
        m = self.mapping(raw, path, ("protocol",), ("ports",) + targets)
        protocol = self.protocol(m["protocol"], _key(path, "protocol"))
        ports = None
        if "ports" in m:
            if protocol not in PORT_PROTOCOLS:
                self.fail(_key(path, "ports"), f"ports are only allowed with tcp or udp, "
                          f"not with protocol {protocol}")
            ports = self.ports(m["ports"], _key(path, "ports"))
        given = [key for key in targets if key in m]
        if not given:
            self.fail(path, f"a rule needs one of cidr, {peer_key}")
        if len(given) > 1:
            self.fail(_key(path, given[1]), f"give only one of {' / '.join(targets)} "
                      f"(got {given[0]} and {given[1]})")
        if given[0] == "cidr":
            net = self.cidr(m["cidr"], _key(path, "cidr"), None, "rule")
            return Rule(protocol, ports, str(net.cidr), None)
        group_id = self.ident(m[given[0]], _key(path, given[0]))
        self.group_refs.append((_key(path, given[0]), group_id, vpc_id))
        return Rule(protocol, ports, None, group_id)

    def protocol(self, raw: object, path: str) -> str:
        value = raw.lower() if isinstance(raw, str) else raw
        if value not in PROTOCOLS:
            self.fail(path, f"unknown protocol {raw!r} (expected one of {', '.join(PROTOCOLS)})")
        return value

    def ports(self, raw: object, path: str) -> tuple[int, int]:
        if isinstance(raw, int) and not isinstance(raw, bool):
            low = high = raw
        else:
            match = _PORTS.fullmatch(raw.replace(" ", "")) if isinstance(raw, str) else None
            if match is None:
                self.fail(path, f"ports must be 'N' or 'N-M', got {raw!r}")
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
            self.fail(path, f"unknown security group '{group_id}'")
        owner = self.groups[group_id][0]
        if owner != vpc_id:
            self.fail(path, f"security group '{group_id}' is in {owner}, not in {vpc_id}"
                      f"{user}; security groups can only be used in their own VPC")

    # -- hosts ------------------------------------------------------------------------

    def host(self, raw: object, path: str, vpc_id: str) -> Host:
        m = self.mapping(raw, path, ("name", "subnet", "ip"), ("security_groups", "service"))
        name = self.string(m["name"], _key(path, "name"))
        if not _HOST_NAME.fullmatch(name):
            self.fail(_key(path, "name"), f"host name {name!r} must match "
                      f"^{_HOST_NAME.pattern}$ (it is used in namespace names)")
        self.unique(self.host_paths, name, _key(path, "name"), "host name")
        subnet_id = self.ident(m["subnet"], _key(path, "subnet"))
        ip = _ipv4(m["ip"])
        if ip is None:
            self.fail(_key(path, "ip"), f"{m['ip']!r} is not a valid IPv4 address")
        groups = self.ident_list(m.get("security_groups", []), _key(path, "security_groups"),
                                 MAX_SECURITY_GROUPS, "security group")
        http_port = self.service(m.get("service"), _key(path, "service"))
        return Host(name, subnet_id, str(ip), groups, http_port, vpc_id)

    def service(self, raw: object, path: str) -> int | None:
        if raw is None:
            return None
        m = self.mapping(raw, path, ("http",))
        return self.integer(m["http"], _key(path, "http"), (1, 65535))

    def check_hosts(self, vpc: Vpc, path: str) -> None:
        used: dict[tuple[str, str], str] = {}
        for index, host in enumerate(vpc.hosts):
            host_path = f"{path}.hosts[{index}]"
            subnet = self.local_subnet(host.subnet, _key(host_path, "subnet"), vpc.id)
            self.check_host_ip(host, subnet, _key(host_path, "ip"))
            if (subnet.id, host.ip) in used:
                self.fail(_key(host_path, "ip"), f"{host.ip} is already used by host "
                          f"'{used[subnet.id, host.ip]}' in subnet {subnet.id}")
            used[subnet.id, host.ip] = host.name
            for g_index, group_id in enumerate(host.security_groups):
                self.check_group_ref(f"{host_path}.security_groups[{g_index}]", group_id, vpc.id)

    def local_subnet(self, subnet_id: str, path: str, vpc_id: str) -> Subnet:
        if subnet_id not in self.subnets:
            self.fail(path, f"unknown subnet '{subnet_id}'")
        subnet = self.subnets[subnet_id][0]
        if subnet.vpc_id != vpc_id:
            self.fail(path, f"subnet '{subnet_id}' is in {subnet.vpc_id}, not in {vpc_id}")
        return subnet

    def check_host_ip(self, host: Host, subnet: Subnet, path: str) -> None:
        ip = netaddr.IPAddress(host.ip)
        if ip not in netaddr.IPNetwork(subnet.cidr):
            self.fail(path, f"{ip} is outside subnet {subnet.id} ({subnet.cidr})")
        label = _reserved_label(ip, subnet.cidr)
        if label is not None:
            self.fail(path, f"{ip} is reserved by AWS in subnet {subnet.id} "
                      f"({subnet.cidr}): {label}")
