"""A resolved stack as the emulator's topology document (pure).

``Mapper(source, template_dir, account, code)`` holds a ``placing.Placer`` (the
``attributes`` callback of ``stack.resolve``) and, once the stack is resolved,
``Mapper.map(stack) -> Mapped``: the topology file's document, which ``parser`` then
validates as any file, and what ``up`` prints:

    AWS::EC2::VPC                     a VPC (its default security group too)
    AWS::EC2::Subnet                  a subnet (CidrBlock, AvailabilityZone)
    AWS::EC2::SecurityGroup           a group with its inline rules; the separate
    (+ SecurityGroupIngress/Egress)   rule resources are added to their GroupId
    AWS::EC2::InternetGateway         attached by a VPCGatewayAttachment
    AWS::EC2::NatGateway, EIP         a NAT gateway with the EIP's address
    AWS::EC2::RouteTable, Route,      the route table of each associated subnet
    SubnetRouteTableAssociation       (routes to an internet or NAT gateway)
    AWS::Lambda::Function             a function: code from ``--code LogicalId=DIR``,
                                      a SAM ``CodeUri`` or inline ``Code.ZipFile``
    databases, caches, instances,     hosts (``placing``)
    EFS mount targets and proxies
    AWS::EFS::FileSystem, AccessPoint file systems of the VPC of their mount targets

Every other type is skipped with one line naming the type and the logical id
(``Mapped.skipped``); a property that is not emulated is said once (``notes``).
``Mapped.origins`` names, for each part of the document, the template path it came
from, so that the parser's errors can point into the template.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NoReturn

from hyperplane.errors import TopologyError
from hyperplane.model.fields import shown
from hyperplane.templates import rules
from hyperplane.templates.placing import Placer

CODE_URI_KEY = "HyperplaneCodeUri"
MAPPED = {"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::SecurityGroup",
          "AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress",
          "AWS::EC2::InternetGateway", "AWS::EC2::VPCGatewayAttachment",
          "AWS::EC2::NatGateway", "AWS::EC2::EIP", "AWS::EC2::RouteTable", "AWS::EC2::Route",
          "AWS::EC2::SubnetRouteTableAssociation", "AWS::Lambda::Function",
          "AWS::RDS::DBInstance", "AWS::RDS::DBCluster", "AWS::RDS::DBSubnetGroup",
          "AWS::RDS::DBProxy", "AWS::RDS::DBProxyTargetGroup",
          "AWS::ElastiCache::CacheCluster", "AWS::ElastiCache::ReplicationGroup",
          "AWS::ElastiCache::SubnetGroup", "AWS::EC2::Instance", "AWS::EFS::FileSystem",
          "AWS::EFS::MountTarget", "AWS::EFS::AccessPoint", "AWS::SecretsManager::Secret"}
INLINE_FILES = {"python": "index.py", "nodejs": "index.js"}


@dataclass
class Mapped:
    document: dict
    inline_code: dict[str, tuple[str, str]] = field(default_factory=dict)  # fn -> (file, text)
    resources: list[dict] = field(default_factory=list)  # logical_id, type, physical_id, as
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # document path -> template path
    functions: dict[str, str] = field(default_factory=dict)  # logical id -> function name


class Mapper:
    def __init__(self, source: str, template_dir: str, account: str,
                 code: dict[str, str] | None = None) -> None:
        self.source = source
        self.template_dir = template_dir
        self.account = account
        self.code = dict(code or {})
        self.placer = Placer(source)
        self.out: Mapped = Mapped({})

    def fail(self, path: str, reason: str) -> NoReturn:
        raise TopologyError(self.source, path, reason)

    def attributes(self, resource):  # noqa: ANN001, ANN201 - the stack.resolve callback
        return self.placer.attributes(resource)

    # -- the document ----------------------------------------------------------------
    def map(self, stack) -> Mapped:  # noqa: ANN001 - stack.Stack
        unknown = sorted(set(self.code) - {r.logical_id for r in
                                          stack.of_type("AWS::Lambda::Function")})
        if unknown:
            self.fail("--code", f"{shown(unknown[0])} is not an AWS::Lambda::Function or "
                      "AWS::Serverless::Function of the template")
        vpcs = self._vpcs(stack)
        self._groups(stack, vpcs)
        self._gateways(stack, vpcs)
        self._hosts(stack, vpcs)
        self._file_systems(stack, vpcs)
        document = {"account": self.account, "vpcs": list(vpcs.values()), "functions": []}
        for r in stack.of_type("AWS::Lambda::Function"):
            document["functions"].append(self._function(r, len(document["functions"])))
        self.out.document = document
        for r in stack.resources:
            self._row(r)
        return self.out

    def _row(self, r) -> None:  # noqa: ANN001
        if r.type not in MAPPED:
            self.out.skipped.append(f"skipped {r.type} {r.logical_id} (not emulated)")
        host = next((h for h in self.placer.hosts if h.logical_id == r.logical_id), None)
        shown_as = f"host {host.name} {host.ip}" if host else ""
        if r.type == "AWS::Lambda::Function":
            shown_as = f"function {r.physical_id}"
        self.out.resources.append({"logical_id": r.logical_id, "type": r.type,
                                   "physical_id": r.physical_id, "as": shown_as,
                                   "emulated": r.type in MAPPED})

    def _vpcs(self, stack) -> dict[str, dict]:  # noqa: ANN001
        vpcs: dict[str, dict] = {}
        for index, r in enumerate(stack.of_type("AWS::EC2::VPC")):
            cidr = r.properties.get("CidrBlock")
            if not isinstance(cidr, str):
                self.fail(f"Resources.{r.logical_id}.Properties.CidrBlock", "a VPC needs a "
                          "CidrBlock (IPAM pools are not emulated)")
            default_sg = str(r.attributes.get("DefaultSecurityGroup"))
            vpcs[r.physical_id] = {
                "id": r.physical_id, "cidr": cidr, "subnets": [], "hosts": [],
                "security_groups": [{"id": default_sg, "name": "default",
                                     "description": "default VPC security group",
                                     "ingress": [{"protocol": "all",
                                                  "source_security_group": default_sg}],
                                     "egress": [{"protocol": "all", "cidr": "0.0.0.0/0"}]}]}
            self.out.origins[f"vpcs[{index}]"] = f"Resources.{r.logical_id}"
        positions = {vpc_id: i for i, vpc_id in enumerate(vpcs)}
        for r in stack.of_type("AWS::EC2::Subnet"):
            vpc = self._vpc_of(vpcs, r.properties.get("VpcId"), r, "VpcId")
            vpc["subnets"].append({"id": r.physical_id, "cidr": r.properties.get("CidrBlock"),
                                   "az": r.attributes.get("AvailabilityZone")})
            where = f"vpcs[{positions[vpc['id']]}].subnets[{len(vpc['subnets']) - 1}]"
            self.out.origins[where] = f"Resources.{r.logical_id}"
            self.out.origins[f"{where}.cidr"] = f"Resources.{r.logical_id}.Properties.CidrBlock"
        return vpcs

    def _vpc_of(self, vpcs: dict[str, dict], vpc_id: object, r, prop: str) -> dict:  # noqa: ANN001
        if vpc_id not in vpcs:
            what = "none" if vpc_id is None else shown(vpc_id)
            self.fail(f"Resources.{r.logical_id}.Properties.{prop}", f"needs a VPC of this "
                      f"template (got {what}; default and existing VPCs are not emulated)")
        return vpcs[vpc_id]

    def _groups(self, stack, vpcs: dict[str, dict]) -> None:  # noqa: ANN001
        groups: dict[str, dict] = {}
        for r in stack.of_type("AWS::EC2::SecurityGroup"):
            vpc = self._vpc_of(vpcs, r.properties.get("VpcId"), r, "VpcId")
            group = rules.security_group(r, self.out.notes)
            vpc["security_groups"].append(group)
            groups[r.physical_id] = group
        for vpc in vpcs.values():
            for group in vpc["security_groups"]:
                groups.setdefault(group["id"], group)
        replaced: set[str] = set()
        for r in stack.resources:
            if r.type in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
                rules.add_rule_resource(r, groups, self.fail, self.out.notes, replaced)
        for group in groups.values():
            group.pop("_default_egress", None)

    def _gateways(self, stack, vpcs: dict[str, dict]) -> None:  # noqa: ANN001
        for r in stack.of_type("AWS::EC2::VPCGatewayAttachment"):
            igw = r.properties.get("InternetGatewayId")
            if igw:
                self._vpc_of(vpcs, r.properties.get("VpcId"), r, "VpcId")[
                    "internet_gateway"] = igw
        subnets = {s["id"]: vpc for vpc in vpcs.values() for s in vpc["subnets"]}
        for r in stack.of_type("AWS::EC2::NatGateway"):
            path = f"Resources.{r.logical_id}.Properties"
            if r.properties.get("ConnectivityType") == "private":
                self.out.notes.append(f"{r.logical_id}: a private NAT gateway is not emulated")
                continue
            vpc = subnets.get(r.properties.get("SubnetId"))
            if vpc is None:
                self.fail(f"{path}.SubnetId", "needs a subnet of this template")
            eip = self.placer.eips.get(str(r.properties.get("AllocationId")))
            if eip is None:
                self.fail(f"{path}.AllocationId", "needs the AllocationId of an AWS::EC2::EIP "
                          "of this template")
            vpc.setdefault("nat_gateways", []).append(
                {"id": r.physical_id, "subnet": r.properties["SubnetId"], "elastic_ip": eip})
        rules.route_tables(stack, subnets, self.out.notes)

    def _hosts(self, stack, vpcs: dict[str, dict]) -> None:  # noqa: ANN001
        subnets = {s["id"]: vpc for vpc in vpcs.values() for s in vpc["subnets"]}
        targets = {}
        for r in stack.of_type("AWS::RDS::DBProxyTargetGroup"):
            names = r.properties.get("DBInstanceIdentifiers") or \
                r.properties.get("DBClusterIdentifiers") or []
            targets[str(r.properties.get("DBProxyName"))] = str(names[0]).lower() \
                if names else ""
        by_logical = {r.physical_id.lower(): r.logical_id for r in stack.resources}
        for host in self.placer.hosts:
            vpc = subnets[host.subnet]
            entry = {"name": host.name, "subnet": host.subnet, "ip": host.ip,
                     "security_groups": host.security_groups}
            if host.proxy_of:
                entry["service"] = self._proxy_service(host, targets, by_logical, stack)
            elif host.service:
                entry["service"] = host.service
            if not entry["security_groups"]:  # AWS puts it in the VPC's default group
                entry["security_groups"] = [vpc["security_groups"][0]["id"]]
            if entry.get("service") is None:
                entry.pop("service", None)
            vpc["hosts"].append(entry)
            index = list(vpcs.values()).index(vpc)
            self.out.origins[f"vpcs[{index}].hosts[{len(vpc['hosts']) - 1}]"] = \
                f"Resources.{host.logical_id}"

    def _proxy_service(self, host, targets: dict, by_logical: dict, stack) -> dict | None:  # noqa: ANN001
        target_id = targets.get(host.proxy_of, "")
        logical = by_logical.get(target_id)
        target = next((h for h in self.placer.hosts if h.logical_id == logical), None)
        if target is None or not target.service:
            self.out.notes.append(f"{host.logical_id}: the proxy has no target database; it "
                                  "answers as a plain TCP listener")
            port = 3306 if "MYSQL" in str(stack.resource(host.logical_id).properties.get(
                "EngineFamily", "")).upper() else 5432
            return {"tcp": port}
        port = next(v for k, v in target.service.items() if isinstance(v, int))
        return {"proxy": port, "target": target.name}

    def _file_systems(self, stack, vpcs: dict[str, dict]) -> None:  # noqa: ANN001
        hosts = {h.logical_id: h for h in self.placer.hosts}
        subnets = {s["id"]: vpc for vpc in vpcs.values() for s in vpc["subnets"]}
        for r in stack.of_type("AWS::EFS::FileSystem"):
            targets = [m for m in stack.of_type("AWS::EFS::MountTarget")
                       if m.properties.get("FileSystemId") == r.physical_id]
            if not targets:
                self.out.notes.append(f"{r.logical_id}: a file system without a mount target "
                                      "cannot be mounted")
                continue
            vpc = subnets[hosts[targets[0].logical_id].subnet]
            points = [{"id": a.physical_id, "path": _root_path(a)}
                      for a in stack.of_type("AWS::EFS::AccessPoint")
                      if a.properties.get("FileSystemId") == r.physical_id]
            vpc.setdefault("file_systems", []).append(
                {"id": r.physical_id, "mount_targets": [hosts[m.logical_id].name
                                                        for m in targets],
                 "access_points": points})

    # -- functions --------------------------------------------------------------------
    def _function(self, r, index: int) -> dict:  # noqa: ANN001
        props, path = r.properties, f"Resources.{r.logical_id}.Properties"
        runtime = str(props.get("Runtime") or "python3.12")
        entry: dict = {"name": r.physical_id, "code": self._code(r, runtime),
                       "handler": str(props.get("Handler") or "index.handler"),
                       "runtime": runtime}
        for prop, name in (("MemorySize", "memory"), ("Timeout", "timeout"),
                           ("ReservedConcurrentExecutions", "reserved_concurrency")):
            if props.get(prop) is not None:
                entry[name] = _integer(props[prop])
        variables = (props.get("Environment") or {}).get("Variables") \
            if isinstance(props.get("Environment"), dict) else None
        if isinstance(variables, dict) and variables:
            entry["environment"] = {
                k: self.placer.password(v, f"{path}.Environment.Variables.{k}")
                if isinstance(v, str) and "{{resolve:" in v else _text(v)
                for k, v in variables.items()}
        vpc_config = props.get("VpcConfig")
        if isinstance(vpc_config, dict):
            entry["vpc_config"] = {"subnet_ids": list(vpc_config.get("SubnetIds") or []),
                                   "security_group_ids":
                                       list(vpc_config.get("SecurityGroupIds") or [])}
        configs = props.get("FileSystemConfigs")
        if isinstance(configs, list) and configs:
            entry["file_system_configs"] = [
                {"access_point": str(c.get("Arn")), "local_mount_path":
                 str(c.get("LocalMountPath"))} for c in configs if isinstance(c, dict)]
        for ignored in ("Layers", "Architectures", "TracingConfig", "DeadLetterConfig",
                        "KmsKeyArn", "SnapStart", "EphemeralStorage", "LoggingConfig"):
            if props.get(ignored):
                self.out.notes.append(f"{r.logical_id}: {ignored} is not emulated")
        self.out.origins[f"functions[{index}]"] = f"Resources.{r.logical_id}"
        self.out.origins[f"functions[{index}].code"] = f"{path}.Code"
        self.out.functions[r.logical_id] = r.physical_id
        return entry

    def _code(self, r, runtime: str) -> str:  # noqa: ANN001
        """The function's code directory ("" for inline code, written by the caller)."""
        path = f"Resources.{r.logical_id}.Properties"
        if r.logical_id in self.code:
            return self.code[r.logical_id]
        code = r.properties.get("Code")
        code = code if isinstance(code, dict) else {}
        local = (r.metadata or {}).get(CODE_URI_KEY)
        if isinstance(local, str):
            return os.path.normpath(os.path.join(self.template_dir, local))
        if isinstance(code.get("ZipFile"), str):
            family = "nodejs" if runtime.startswith("nodejs") else "python"
            self.out.inline_code[r.logical_id] = (INLINE_FILES[family], code["ZipFile"])
            return ""
        if r.properties.get("PackageType") == "Image" or code.get("ImageUri"):
            self.fail(f"{path}.Code.ImageUri", "container images are not run; give the "
                      f"function's code with --code {r.logical_id}=DIR")
        self.fail(f"{path}.Code", "code in S3 is not fetched; give the function's code "
                  f"directory with --code {r.logical_id}=DIR")


def _root_path(access_point) -> str:  # noqa: ANN001
    root = access_point.properties.get("RootDirectory")
    path = root.get("Path") if isinstance(root, dict) else None
    return str(path) if path else "/"


def _integer(value: object) -> object:
    try:
        return int(str(value))
    except ValueError:
        return value  # the parser names the field and the reason


def _text(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def point_error(error: TopologyError, mapped: Mapped, template: str) -> TopologyError:
    """A parser error on the document, pointed at the template part it came from."""
    best = max((p for p in mapped.origins if error.path == p or
                error.path.startswith(p + ".") or error.path.startswith(p + "[")),
               key=len, default=None)
    if best is None:
        return TopologyError(template, error.path, error.reason)
    return TopologyError(template, mapped.origins[best], f"{error.reason} (as {error.path})")
