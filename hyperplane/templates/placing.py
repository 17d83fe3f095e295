"""The hosts a stack's servers become, placed while the stack resolves (pure).

A template's databases, caches, instances and EFS mount targets are customer hosts of
the emulated VPC.  Their addresses must be known while the template resolves, since a
function's ``DB_HOST: !GetAtt Db.Endpoint.Address`` reads them; ``Placer.attributes`` is
the ``stack.resolve`` callback that places each one when its turn comes (its subnets and
groups are resolved by then) and answers the attributes AWS would give:

    AWS::RDS::DBInstance / DBCluster    mysql (engines mysql, mariadb, aurora-mysql) or
                                        postgres (postgres, aurora-postgresql) with the
                                        master user and password (``{{resolve:
                                        secretsmanager:...}}`` of a generated secret
                                        read), ``Endpoint.Address`` / ``.Port``; an
                                        instance of a cluster answers the cluster's
    AWS::RDS::DBProxy                   a proxy to its target group's database:
                                        ``Endpoint``
    AWS::ElastiCache::CacheCluster /    redis (valkey too) or memcached:
    ReplicationGroup                    ``RedisEndpoint``, ``ConfigurationEndpoint``,
                                        ``PrimaryEndPoint``, ``ReaderEndPoint``
    AWS::EC2::Instance                  a plain host: ``PrivateIp``
    AWS::EFS::MountTarget               a TCP 2049 listener: ``IpAddress``
    AWS::EC2::EIP                       ``PublicIp`` from 198.51.100.0/24
    AWS::SecretsManager::Secret         ``GenerateSecretString``: a password derived
                                        from the stack name and logical id (stable)

An address is the lowest free one of the subnet (after the five AWS reserves), or the
one the template gives.  Host names come from logical ids (``Db`` -> ``db``).  Errors are
``TopologyError``\\ s naming the resource's property.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

import netaddr

from hyperplane.errors import TopologyError
from hyperplane.model import ipam
from hyperplane.model.fields import shown

EIP_POOL = "198.51.100.0/24"
EIP_FIRST = 10
ENGINES = {"mysql": "mysql", "mariadb": "mysql", "aurora-mysql": "mysql", "aurora": "mysql",
           "postgres": "postgres", "aurora-postgresql": "postgres"}
CACHES = {"redis": "redis", "valkey": "redis", "memcached": "memcached"}
DEFAULT_PORTS = {"mysql": 3306, "postgres": 5432, "redis": 6379, "memcached": 11211}
DEFAULT_USER = {"mysql": "admin", "postgres": "postgres"}
_DYNAMIC = re.compile(r"\{\{resolve:secretsmanager:([^:}]+(?::[^:}]+)*?)"
                      r"(?::SecretString(?::([^:}]*))?[^}]*)?\}\}")
_HOST_CHARS = re.compile(r"[^a-z0-9-]+")


@dataclass
class PlacedHost:
    """One host of the topology document, and where in the template it came from."""
    name: str
    logical_id: str
    type: str
    subnet: str
    ip: str
    security_groups: list[str]
    service: dict | None = None
    proxy_of: str = ""            # a DBProxy's name, until its target group is known


@dataclass
class SubnetInfo:
    cidr: str
    vpc: str
    az: str
    logical_id: str


@dataclass
class Placer:
    """The ``stack.resolve`` callback's state: subnets, groups, hosts, addresses."""
    source: str
    subnets: dict[str, SubnetInfo] = field(default_factory=dict)
    subnet_groups: dict[str, list[str]] = field(default_factory=dict)  # name -> subnet ids
    hosts: list[PlacedHost] = field(default_factory=list)
    used: dict[str, set[str]] = field(default_factory=dict)            # subnet -> addresses
    secrets: dict[str, dict] = field(default_factory=dict)             # physical -> value
    endpoints: dict[str, dict] = field(default_factory=dict)           # physical -> attrs
    eips: dict[str, str] = field(default_factory=dict)                 # allocation -> ip
    proxies: dict[str, str] = field(default_factory=dict)              # proxy name -> host

    def fail(self, path: str, reason: str) -> NoReturn:
        raise TopologyError(self.source, path, reason)

    # -- the callback ---------------------------------------------------------------
    def attributes(self, resource) -> Mapping[str, object]:  # noqa: ANN001 - stack.Resource
        handler = _HANDLERS.get(resource.type)
        return handler(self, resource) if handler else {}

    def _subnet(self, r) -> dict:  # noqa: ANN001
        props = r.properties
        self.subnets[r.physical_id] = SubnetInfo(str(props.get("CidrBlock")),
                                                 str(props.get("VpcId")),
                                                 str(r.attributes.get("AvailabilityZone")),
                                                 r.logical_id)
        return {}

    def _subnet_group(self, r) -> dict:  # noqa: ANN001
        ids = r.properties.get("SubnetIds")
        self.subnet_groups[r.physical_id] = [str(s) for s in ids] if isinstance(ids, list) \
            else []
        return {}

    def _eip(self, r) -> dict:  # noqa: ANN001
        pool = netaddr.IPNetwork(EIP_POOL)
        address = str(netaddr.IPAddress(pool.first + EIP_FIRST + len(self.eips)))
        self.eips[str(r.attributes.get("AllocationId"))] = address
        return {"PublicIp": address}

    def _secret(self, r) -> dict:  # noqa: ANN001
        props = r.properties
        generate = props.get("GenerateSecretString")
        if isinstance(generate, dict):
            value = _json_object(generate.get("SecretStringTemplate"))
            key = str(generate.get("GenerateStringKey") or "password")
            value[key] = _password(r.physical_id, generate)
        else:
            value = _json_object(props.get("SecretString"))
        self.secrets[r.physical_id] = value
        self.secrets[r.logical_id] = value
        return {}

    # -- hosts -----------------------------------------------------------------------
    def place(self, r, subnet_ids: list[str], groups: object, service: dict | None,  # noqa: ANN001
              ip: object = None, subnet_path: str = "SubnetId") -> PlacedHost:
        path = f"Resources.{r.logical_id}.Properties"
        subnet = next((s for s in subnet_ids if s in self.subnets), None)
        if subnet is None:
            given = shown(subnet_ids[0]) if subnet_ids else "none"
            self.fail(f"{path}.{subnet_path}", f"needs a subnet of this template (got "
                      f"{given}; subnets outside the template are not emulated)")
        info = self.subnets[subnet]
        used = self.used.setdefault(subnet, set())
        if ip is None:
            try:
                ip = ipam.allocate_in_subnet(info.cidr, used)
            except (ipam.AddressExhaustedError, netaddr.AddrFormatError):
                self.fail(f"{path}.{subnet_path}", f"subnet {subnet} has no free address")
        used.add(str(ip))
        host = PlacedHost(self._host_name(r.logical_id), r.logical_id, r.type, subnet,
                          str(ip), _strings(groups), service)
        self.hosts.append(host)
        return host

    def _host_name(self, logical_id: str) -> str:
        base = _HOST_CHARS.sub("-", logical_id.lower()).strip("-") or "host"
        if not base[0].isalpha():
            base = "h-" + base
        base = base[:28]
        taken = {h.name for h in self.hosts}
        name, n = base, 2
        while name in taken:
            name, n = f"{base[:28 - len(str(n))]}-{n}", n + 1
        return name

    def password(self, value: object, path: str) -> str:
        """A string with ``{{resolve:secretsmanager:...}}`` of this template's secrets read
        (a master password, a function's variable)."""
        text = "" if value is None else str(value)

        def read(match: re.Match) -> str:
            secret_id, key = match.group(1), match.group(2) or "password"
            secret = self._secret_named(secret_id)
            if secret is None or key not in secret:
                self.fail(path, f"{shown(match.group(0))}: no secret of this template holds "
                          f"{shown(key)}")
            return str(secret[key])
        return _DYNAMIC.sub(read, text)

    def _secret_named(self, secret_id: str) -> dict | None:
        for name, value in self.secrets.items():
            if secret_id == name or secret_id.endswith(f":secret:{name}") or \
                    secret_id.split(":secret:")[-1] == name:
                return value
        return None


def _database(p: Placer, r) -> dict:  # noqa: ANN001
    props, path = r.properties, f"Resources.{r.logical_id}.Properties"
    if r.type == "AWS::RDS::DBInstance" and props.get("DBClusterIdentifier"):
        cluster = str(props["DBClusterIdentifier"]).lower()
        return dict(p.endpoints.get(cluster, {}))
    engine = str(props.get("Engine") or "").lower()
    kind = ENGINES.get(engine)
    if kind is None:
        p.fail(f"{path}.Engine", f"engine {shown(engine)} is not emulated (known: "
               f"{', '.join(ENGINES)})")
    port = _port(p, props.get("Port"), DEFAULT_PORTS[kind], f"{path}.Port")
    user = str(props.get("MasterUsername") or DEFAULT_USER[kind])
    password = p.password(props.get("MasterUserPassword"), f"{path}.MasterUserPassword")
    if props.get("ManageMasterUserPassword") and not password:
        password = _password(r.physical_id, {})
    if not password:
        p.fail(f"{path}.MasterUserPassword", "the emulated database needs a master password "
               "(MasterUserPassword, a {{resolve:secretsmanager:...}} of this template, or "
               "ManageMasterUserPassword)")
    database = str(props.get("DBName") or props.get("DatabaseName") or "")
    group = str(props.get("DBSubnetGroupName") or "").lower()
    subnets = p.subnet_groups.get(group) or p.subnet_groups.get(str(props.get(
        "DBSubnetGroupName")), [])
    groups = props.get("VPCSecurityGroups") or props.get("VpcSecurityGroupIds") or []
    service = {kind: port, "user": user, "password": password}
    if database:
        service["database"] = database
    host = p.place(r, subnets, groups, service, subnet_path="DBSubnetGroupName")
    attributes = {"Endpoint.Address": host.ip, "Endpoint.Port": str(port)}
    if r.type == "AWS::RDS::DBCluster":
        attributes.update({"ReadEndpoint.Address": host.ip})
    p.endpoints[r.physical_id] = attributes
    return attributes


def _proxy(p: Placer, r) -> dict:  # noqa: ANN001
    props = r.properties
    host = p.place(r, _strings(props.get("VpcSubnetIds")), props.get("VpcSecurityGroupIds"),
                   None, subnet_path="VpcSubnetIds")
    host.proxy_of = r.physical_id
    p.proxies[r.physical_id] = host.name
    return {"Endpoint": host.ip}


def _cache(p: Placer, r) -> dict:  # noqa: ANN001
    props, path = r.properties, f"Resources.{r.logical_id}.Properties"
    engine = str(props.get("Engine") or "redis").lower()
    kind = CACHES.get(engine)
    if kind is None:
        p.fail(f"{path}.Engine", f"engine {shown(engine)} is not emulated (known: "
               f"{', '.join(CACHES)})")
    port = _port(p, props.get("Port"), DEFAULT_PORTS[kind], f"{path}.Port")
    group = props.get("CacheSubnetGroupName")
    subnets = p.subnet_groups.get(str(group), []) if group else []
    groups = props.get("VpcSecurityGroupIds") or props.get("SecurityGroupIds") or []
    service: dict = {kind: port}
    if kind == "redis" and props.get("AuthToken"):
        service["password"] = str(props["AuthToken"])
    host = p.place(r, subnets, groups, service, subnet_path="CacheSubnetGroupName")
    address, port_text = host.ip, str(port)
    if r.type == "AWS::ElastiCache::ReplicationGroup":
        return {"PrimaryEndPoint.Address": address, "PrimaryEndPoint.Port": port_text,
                "ReaderEndPoint.Address": address, "ReaderEndPoint.Port": port_text,
                "ConfigurationEndPoint.Address": address,
                "ConfigurationEndPoint.Port": port_text}
    if kind == "memcached":
        return {"ConfigurationEndpoint.Address": address,
                "ConfigurationEndpoint.Port": port_text}
    return {"RedisEndpoint.Address": address, "RedisEndpoint.Port": port_text}


def _instance(p: Placer, r) -> dict:  # noqa: ANN001
    props = r.properties
    nics = props.get("NetworkInterfaces")
    nic = nics[0] if isinstance(nics, list) and nics and isinstance(nics[0], dict) else {}
    subnet = props.get("SubnetId") or nic.get("SubnetId")
    groups = props.get("SecurityGroupIds") or nic.get("GroupSet") or []
    ip = _address(p, r, props.get("PrivateIpAddress") or nic.get("PrivateIpAddress"),
                  subnet, "PrivateIpAddress")
    host = p.place(r, _strings([subnet] if subnet else []), groups, None, ip)
    az = p.subnets[host.subnet].az
    return {"PrivateIp": host.ip, "AvailabilityZone": az,
            "PrivateDnsName": f"ip-{host.ip.replace('.', '-')}.ec2.internal"}


def _mount_target(p: Placer, r) -> dict:  # noqa: ANN001
    props = r.properties
    subnet = props.get("SubnetId")
    ip = _address(p, r, props.get("IpAddress"), subnet, "IpAddress")
    host = p.place(r, _strings([subnet] if subnet else []), props.get("SecurityGroups"),
                   {"tcp": 2049}, ip)
    return {"IpAddress": host.ip}


def _address(p: Placer, r, raw: object, subnet: object, prop: str) -> str | None:  # noqa: ANN001
    if raw is None:
        return None
    path = f"Resources.{r.logical_id}.Properties.{prop}"
    info = p.subnets.get(str(subnet))
    try:
        ip = netaddr.IPAddress(str(raw), version=4)
    except (netaddr.AddrFormatError, ValueError):
        p.fail(path, f"{shown(raw)} is not an IPv4 address")
    if info is not None and (ip not in netaddr.IPNetwork(info.cidr) or
                             str(ip) in ipam.aws_reserved(info.cidr)):
        p.fail(path, f"{ip} is not a usable address of subnet {subnet} ({info.cidr})")
    if info is not None and str(ip) in p.used.get(str(subnet), set()):
        p.fail(path, f"{ip} is already used in subnet {subnet}")
    return str(ip)


def _port(p: Placer, raw: object, default: int, path: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        port = int(str(raw))
    except ValueError:
        p.fail(path, f"port {shown(raw)} is not a number")
    if not 1 <= port <= 65535:
        p.fail(path, f"port {port} is outside 1-65535")
    return port


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _json_object(raw: object) -> dict:
    if isinstance(raw, dict):
        return dict(raw)
    try:
        value = json.loads(str(raw)) if raw else {}
    except ValueError:
        return {"SecretString": str(raw)}
    return value if isinstance(value, dict) else {}


def _password(seed: str, spec: dict) -> str:
    """A stable password: letters and digits (never a character RDS refuses)."""
    length = int(spec.get("PasswordLength") or 24) if str(spec.get("PasswordLength") or "24")\
        .isdigit() else 24
    excluded = set(str(spec.get("ExcludeCharacters") or ""))
    alphabet = [c for c in "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
                if c not in excluded]
    number = int(hashlib.sha256(f"hyperplane-secret/{seed}".encode()).hexdigest(), 16)
    chars = []
    for _ in range(max(8, min(length, 64))):
        number, digit = divmod(number, len(alphabet))
        chars.append(alphabet[digit])
        if number == 0:
            number = int(hashlib.sha256("".join(chars).encode()).hexdigest(), 16)
    return "".join(chars)


_HANDLERS = {
    "AWS::EC2::Subnet": Placer._subnet,
    "AWS::RDS::DBSubnetGroup": Placer._subnet_group,
    "AWS::ElastiCache::SubnetGroup": Placer._subnet_group,
    "AWS::EC2::EIP": Placer._eip,
    "AWS::SecretsManager::Secret": Placer._secret,
    "AWS::RDS::DBInstance": _database,
    "AWS::RDS::DBCluster": _database,
    "AWS::RDS::DBProxy": _proxy,
    "AWS::ElastiCache::CacheCluster": _cache,
    "AWS::ElastiCache::ReplicationGroup": _cache,
    "AWS::EC2::Instance": _instance,
    "AWS::EFS::MountTarget": _mount_target,
}
