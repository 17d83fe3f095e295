"""The topology file's VPC networking keys: accounts, DNS, gateways, route tables (pure).

Extensions of a VPC entry (all optional; a file without them means what it always meant):

    account: "222222222222"        the VPC's owner (several tenants in one file); default:
                                   the file's top-level account
    dns_zone: vpc-app.internal     the zone the VPC resolver (base + 2) answers for;
                                   default ``<vpc id>.internal``
    internet_gateway: igw-app      an internet gateway attached to the VPC
    nat_gateways:                  NAT gateways, each in a (public) subnet of the VPC
      - {id: nat-a, subnet: subnet-pub, elastic_ip: 198.51.100.10, private_ip: 10.0.0.5}
    subnets:
      - id: subnet-priv
        route_table:               the subnet's route table; ``local`` (the VPC CIDR) is
          routes:                  implicit, as in AWS
            - {destination: 0.0.0.0/0, target: nat-a}

A route's target is ``local`` (only for the VPC CIDR), the VPC's internet gateway, or one of
its NAT gateways.  Elastic IPs come from 198.51.100.0/24, the emulated internet's public
pool.  A NAT gateway's private address defaults to the lowest free one of its subnet
(after the five AWS reserves and the hosts' addresses); ENIs are then placed after it.

``parse_vpc`` is called by ``topology._Parser.vpc`` with the parser itself (its ``fail``,
``mapping``, ``ident``, ``cidr`` and ``list_of`` helpers, so errors have the usual
``FILE: field.path: reason`` shape) and returns a frozen ``VpcNetwork``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import netaddr

VPC_KEYS = ("account", "dns_zone", "internet_gateway", "nat_gateways")
SUBNET_KEYS = ("route_table",)
EIP_POOL = "198.51.100.0/24"  # Elastic IPs (documentation range, never routed out)
MAX_INTERNET_GATEWAYS = 32    # each takes a /30 of names.IGW_TRANSIT
_ACCOUNT = re.compile(r"[0-9]{12}")
_ZONE = re.compile(r"(?=.{1,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                   r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class Route:
    destination: str  # CIDR
    target: str       # "local", the VPC's internet gateway id, or a NAT gateway id


@dataclass(frozen=True)
class NatGateway:
    id: str
    subnet: str
    elastic_ip: str
    private_ip: str
    vpc_id: str


@dataclass(frozen=True)
class VpcNetwork:
    account: str = ""
    dns_zone: str = ""
    internet_gateway: str | None = None
    nat_gateways: tuple[NatGateway, ...] = ()
    route_tables: tuple[tuple[str, tuple[Route, ...]], ...] = ()  # (subnet id, routes)

    def routes(self, subnet_id: str) -> tuple[Route, ...]:
        """The routes of a subnet's table beyond ``local`` (empty: no route table)."""
        return dict(self.route_tables).get(subnet_id, ())

    def nat_gateway(self, gateway_id: str) -> NatGateway:
        return next(n for n in self.nat_gateways if n.id == gateway_id)


def _key(path: str, key: str) -> str:
    return f"{path}.{key}"


def parse_vpc(p: Any, m: dict, path: str, vpc_id: str, vpc_net: netaddr.IPNetwork,
              subnets: tuple, hosts: tuple) -> VpcNetwork:
    """The networking keys of one VPC mapping ``m`` (already checked for unknown keys)."""
    account = p.default_account
    if "account" in m:
        raw = m["account"]
        if not isinstance(raw, str) or not _ACCOUNT.fullmatch(raw):
            p.fail(_key(path, "account"), f"must be a quoted 12-digit string, got {raw!r}")
        account = raw
    zone = m.get("dns_zone", f"{vpc_id}.internal")
    if not isinstance(zone, str) or not _ZONE.fullmatch(zone):
        p.fail(_key(path, "dns_zone"), f"{zone!r} is not a lower-case DNS name")
    igw = None
    if m.get("internet_gateway") is not None:
        igw = p.ident(m["internet_gateway"], _key(path, "internet_gateway"))
        p.unique(p.gateway_paths, igw, _key(path, "internet_gateway"), "gateway id")
        if len(p.internet_gateways) >= MAX_INTERNET_GATEWAYS:
            p.fail(_key(path, "internet_gateway"),
                   f"at most {MAX_INTERNET_GATEWAYS} internet gateways per file")
        p.internet_gateways.append(igw)
    by_id = {s.id: s for s in subnets}
    used = {h.ip for h in hosts}
    nats = []
    nats_path = _key(path, "nat_gateways")
    for index, raw in enumerate(p.list_of(m.get("nat_gateways") or [], nats_path)):
        nats.append(_nat_gateway(p, raw, f"{nats_path}[{index}]", vpc_id, by_id, used))
    targets = {"local"} | ({igw} if igw else set()) | {n.id for n in nats}
    tables = []
    for index, raw in enumerate(m.get("subnets") or []):
        if isinstance(raw, dict) and raw.get("route_table") is not None:
            item = f"{_key(path, 'subnets')}[{index}].route_table"
            routes = _route_table(p, raw["route_table"], item, vpc_net, targets)
            tables.append((raw["id"], routes))
    return VpcNetwork(account, zone, igw, tuple(nats), tuple(tables))


def _nat_gateway(p: Any, raw: object, path: str, vpc_id: str, subnets: dict,
                 used: set[str]) -> NatGateway:
    m = p.mapping(raw, path, ("id", "subnet", "elastic_ip"), ("private_ip",))
    gateway_id = p.ident(m["id"], _key(path, "id"))
    p.unique(p.gateway_paths, gateway_id, _key(path, "id"), "gateway id")
    subnet_id = p.ident(m["subnet"], _key(path, "subnet"))
    if subnet_id not in subnets:
        p.fail(_key(path, "subnet"), f"unknown subnet '{subnet_id}' in {vpc_id}")
    subnet_net = netaddr.IPNetwork(subnets[subnet_id].cidr)
    eip = _address(p, m["elastic_ip"], _key(path, "elastic_ip"))
    if eip not in netaddr.IPNetwork(EIP_POOL):
        p.fail(_key(path, "elastic_ip"), f"{eip} is outside {EIP_POOL}, the emulated "
               "internet's Elastic IP pool")
    p.unique(p.eip_paths, str(eip), _key(path, "elastic_ip"), "Elastic IP")
    reserved = {subnet_net.first + i for i in range(4)} | {subnet_net.last}
    if "private_ip" in m:
        ip = _address(p, m["private_ip"], _key(path, "private_ip"))
        if ip not in subnet_net or int(ip) in reserved:
            p.fail(_key(path, "private_ip"), f"{ip} is not a usable address of subnet "
                   f"{subnet_id} ({subnet_net.cidr})")
        if str(ip) in used:
            p.fail(_key(path, "private_ip"), f"{ip} is already used in {vpc_id}")
        private = str(ip)
    else:
        free = (str(netaddr.IPAddress(v)) for v in range(subnet_net.first, subnet_net.last)
                if v not in reserved)
        private = next((a for a in free if a not in used), None)
        if private is None:
            p.fail(_key(path, "subnet"), f"subnet {subnet_id} has no free address")
    used.add(private)
    return NatGateway(gateway_id, subnet_id, str(eip), private, vpc_id)


def _address(p: Any, raw: object, path: str) -> netaddr.IPAddress:
    net = p.cidr(f"{raw}/32" if isinstance(raw, str) else raw, path, None, "address")
    return net.ip


def _route_table(p: Any, raw: object, path: str, vpc_net: netaddr.IPNetwork,
                 targets: set[str]) -> tuple[Route, ...]:
    m = p.mapping(raw, path, (), ("routes",))
    routes: list[Route] = []
    seen: dict[str, str] = {}
    routes_path = _key(path, "routes")
    for index, item in enumerate(p.list_of(m.get("routes") or [], routes_path)):
        item_path = f"{routes_path}[{index}]"
        r = p.mapping(item, item_path, ("destination", "target"))
        net = p.cidr(r["destination"], _key(item_path, "destination"), None, "route")
        target = p.ident(r["target"], _key(item_path, "target"))
        if target not in targets:
            p.fail(_key(item_path, "target"), f"unknown route target '{target}' (this VPC "
                   f"has: {', '.join(sorted(targets))})")
        p.unique(seen, str(net.cidr), _key(item_path, "destination"), "route destination")
        overlaps = net.first <= vpc_net.last and vpc_net.first <= net.last
        inside = overlaps and not (net.first <= vpc_net.first and vpc_net.last <= net.last)
        if target == "local" and net != vpc_net:
            p.fail(_key(item_path, "target"), f"local routes only the VPC CIDR {vpc_net.cidr}")
        if target != "local" and inside:
            p.fail(_key(item_path, "destination"), f"{net.cidr} overlaps the VPC CIDR "
                   f"{vpc_net.cidr}, which is routed locally")
        if target != "local":
            routes.append(Route(str(net.cidr), target))
    return tuple(routes)


def function_account(topology: Any, function: Any) -> str:
    """The account a function belongs to: its VPC's, or the file's without VpcConfig."""
    if function.vpc_config is None:
        return topology.account
    return topology.vpc(function.vpc_config.vpc_id).network.account or topology.account
