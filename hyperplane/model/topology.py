"""The declarative account: VPCs, subnets, security groups, hosts, functions (pure).

A topology describes one AWS account the way the console or CloudFormation would:

    account   the 12-digit account id
    vpcs      each with a CIDR, subnets (one per AZ), security groups, customer hosts
              and its networking (``VpcNetwork``: owner account, DNS zone, internet
              gateway, NAT gateways, route tables)
    functions Lambda functions; ``vpc_config`` attaches one to subnets and groups
    settings  a mapping for the runtime, stored as given (``settings.check`` validates it)

These are frozen, hashable records and look-ups, nothing more: ``parser`` makes
them from a loaded document (``document`` reads the file), ``fabric`` turns them
into kernel objects and the controller plans ENIs and environments from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import netaddr

from hyperplane.model.flowlogs import FlowLogSpec
from hyperplane.model.layout import Layout

RESERVED_LABELS = ("network address", "VPC router", "DNS", "reserved for future use", "broadcast")


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
    name: str = ""          # the file's ``name`` (AWS's GroupName), else the id
    description: str = ""


@dataclass(frozen=True)
class Subnet:
    id: str
    cidr: str
    az: str
    vpc_id: str


SERVICE_KINDS = ("http", "mysql", "postgres", "redis", "memcached", "tcp", "proxy")


@dataclass(frozen=True)
class Service:
    """What a host serves: ``kind`` on ``port`` (``services.hub`` for http, a real
    server from Debian for a database or cache, a plain listener, or a TCP proxy)."""
    kind: str                # one of SERVICE_KINDS
    port: int
    user: str = ""           # mysql / postgres: the master user
    password: str = ""       # mysql / postgres / redis (AUTH)
    database: str = ""       # mysql / postgres: created at start
    target: str = ""         # proxy: the host it forwards to


@dataclass(frozen=True)
class Host:
    name: str
    subnet: str
    ip: str
    security_groups: tuple[str, ...]
    service: Service | None
    vpc_id: str

    @property
    def http_port(self) -> int | None:
        """The port of an http service (the one ``reach`` asks ``/whoami``), else None."""
        return self.service.port if self.service and self.service.kind == "http" else None


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
    flow_logs: tuple[tuple[str, FlowLogSpec], ...] = ()  # (VPC or subnet id, its flow log)

    def routes(self, subnet_id: str) -> tuple[Route, ...]:
        """The routes of a subnet's table beyond ``local`` (empty: no route table)."""
        return dict(self.route_tables).get(subnet_id, ())

    def nat_gateway(self, gateway_id: str) -> NatGateway:
        return next(n for n in self.nat_gateways if n.id == gateway_id)


@dataclass(frozen=True)
class AccessPoint:
    id: str                  # fsap-...
    path: str = "/"          # its root directory in the file system


@dataclass(frozen=True)
class FileSystem:
    """An EFS file system: its mount targets are hosts of the VPC serving TCP 2049."""
    id: str                  # fs-...
    mount_targets: tuple[str, ...]
    access_points: tuple[AccessPoint, ...]


@dataclass(frozen=True)
class Vpc:
    id: str
    cidr: str
    subnets: tuple[Subnet, ...]
    security_groups: tuple[SecurityGroup, ...]
    hosts: tuple[Host, ...]
    network: VpcNetwork = VpcNetwork()  # account, DNS zone, gateways, route tables
    file_systems: tuple[FileSystem, ...] = ()


@dataclass(frozen=True)
class VpcConfig:
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    vpc_id: str
    ipv6_allowed_for_dual_stack: bool = False


@dataclass(frozen=True)
class FileSystemConfig:
    access_point: str        # fsap-... of the function's VPC
    local_mount_path: str    # /mnt/...


@dataclass(frozen=True)
class Function:
    name: str
    code: str  # absolute path of the code directory
    handler: str  # module.function
    vpc_config: VpcConfig | None
    memory: int = 128
    timeout: int = 3
    networking: str | None = None  # hyperplane | legacy; None: settings.networking's
    reserved_concurrency: int | None = None  # None: unreserved
    runtime: str | None = None     # python3.x | provided.* | ...; None: python3.12
    environment: tuple[tuple[str, str], ...] = ()  # the runtime's variables
    file_systems: tuple[FileSystemConfig, ...] = ()  # EFS, through an access point


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
    layout: Layout = field(default_factory=Layout, compare=False, hash=False)

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

    def access_point(self, ap_id: str) -> tuple[Vpc, FileSystem, AccessPoint]:
        for vpc in self.vpcs:
            for fs in vpc.file_systems:
                for ap in fs.access_points:
                    if ap.id == ap_id:
                        return vpc, fs, ap
        raise KeyError(ap_id)

    def vpc_account(self, vpc_id: str) -> str:
        """The account that owns a VPC (its own, or the file's)."""
        return self.vpc(vpc_id).network.account or self.account


def function_account(topology: Topology, function: Function) -> str:
    """The account a function belongs to: its VPC's, or the file's without VpcConfig."""
    if function.vpc_config is None:
        return topology.account
    return topology.vpc_account(function.vpc_config.vpc_id)


def reserved_addresses(cidr: str) -> list[str]:
    """The five addresses AWS reserves in a subnet, in the order of ``RESERVED_LABELS``."""
    net = netaddr.IPNetwork(cidr)
    if net.size < 8:
        raise ValueError(f"{cidr} is too small to hold the five AWS-reserved addresses")
    picks = (net.first, net.first + 1, net.first + 2, net.first + 3, net.last)
    return [str(netaddr.IPAddress(value)) for value in picks]
