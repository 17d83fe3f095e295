"""The controller's EC2 requests: describe the account, and change it while it runs.

Each ``op_*`` takes the ``Controller`` and one decoded request (``account`` and
``region`` from the caller; the CLI's defaults are the file's account and
us-east-1) and returns EC2's output fields (``ec2view`` renders the Describe
calls).  Changes edit the recorded document (``model.edits``) and go through
``network.apply_document``; what a Lambda ENI, a host, a rule or a subnet still
depends on is refused with AWS's ``DependencyViolation`` first.  Names and
messages are EC2's (``InvalidVpcID.NotFound``, ``InvalidGroup.Duplicate``,
``resource sg-... has a dependent object``...); ``vpc.delete_subnet`` and
``vpc.delete_security_group`` are also the CLI's ``vpc`` commands.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from hyperplane.controller import ec2view, network
from hyperplane.controller.functions import aws_time
from hyperplane.errors import ApiError, RuleEditError, TopologyError
from hyperplane.model import edits
from hyperplane.policy import secgroups
from hyperplane.policy.groups import peers

if TYPE_CHECKING:
    from hyperplane.controller.service import Controller

PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
             "-1": "all", "all": "all"}


def _who(ctl: Controller, request: dict) -> tuple[str, str]:
    return request.get("account") or ctl.topology.account, request.get("region") or "us-east-1"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:17]}"


def _filtered(rows: list[dict], request: dict, key: str, ids_param: str,
              missing: tuple[str, str]) -> list[dict]:
    ids = request.get(ids_param) or []
    for ident in ids:
        if not any(r[key] == ident for r in rows):
            raise ApiError(missing[0], missing[1].format(ident))
    if ids:
        rows = [r for r in rows if r[key] in ids]
    try:
        return ec2view.select(rows, request.get("filters"))
    except ec2view.UnknownFilterError as exc:
        raise ApiError("InvalidParameterValue", f"The filter '{exc}' is invalid") from None


# -- Describe -------------------------------------------------------------------------------
def op_describe_vpcs(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        rows = ec2view.vpcs(ctl.topology, *_who(ctl, request))
    return {"Vpcs": _filtered(rows, request, "VpcId", "ids", (
        "InvalidVpcID.NotFound", "The vpc ID '{}' does not exist"))}


def op_describe_subnets(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        rows = ec2view.subnets(ctl.topology, ctl.model.enis, *_who(ctl, request))
    return {"Subnets": _filtered(rows, request, "SubnetId", "ids", (
        "InvalidSubnetID.NotFound", "The subnet ID '{}' does not exist"))}


def op_describe_security_groups(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        rows = ec2view.groups(ctl.topology, *_who(ctl, request))
    names = request.get("names") or []
    rows = [r for r in rows if not names or r["GroupName"] in names]
    return {"SecurityGroups": _filtered(rows, request, "GroupId", "ids", (
        "InvalidGroup.NotFound", "The security group '{}' does not exist"))}


def op_describe_network_interfaces(ctl: Controller, request: dict) -> dict:
    account, _region = _who(ctl, request)
    with ctl.lock:
        rows = ec2view.interfaces(ctl.topology, ctl.model.enis, account,
                                  aws_time(ctl.clock.now()))
    return {"NetworkInterfaces": _filtered(rows, request, "NetworkInterfaceId", "ids", (
        "InvalidNetworkInterfaceID.NotFound",
        "The networkInterface ID '{}' does not exist"))}


# -- changes ------------------------------------------------------------------------------
def _apply(ctl: Controller, document: dict, code: str = "InvalidParameterValue") -> None:
    try:
        network.apply_document(ctl, document)
    except TopologyError as exc:
        if "overlaps" in exc.reason:
            code = code.replace(".Range", ".Conflict")
        raise ApiError(code, exc.reason) from None


def _vpc(ctl: Controller, vpc_id: str, account: str):  # noqa: ANN202 - a model Vpc
    if not any(v.id == vpc_id for v in ec2view.owned(ctl.topology, account)):
        raise ApiError("InvalidVpcID.NotFound", f"The vpc ID '{vpc_id}' does not exist")
    return ctl.topology.vpc(vpc_id)


def op_create_vpc(ctl: Controller, request: dict) -> dict:
    cidr = request.get("cidr") or ""
    vpc_id = _new_id("vpc")
    with ctl.lock:
        document = edits.add_vpc(ctl.data["document"], vpc_id, cidr)
        account = _who(ctl, request)[0]
        if account != ctl.topology.account:
            document["vpcs"][-1]["account"] = account
        _apply(ctl, document, "InvalidVpc.Range")
        return {"Vpc": ec2view.select(ec2view.vpcs(ctl.topology, *_who(ctl, request)),
                                      [{"Name": "vpc-id", "Values": [vpc_id]}])[0]}


def op_delete_vpc(ctl: Controller, request: dict) -> dict:
    vpc_id = request.get("id") or ""
    with ctl.lock:
        vpc = _vpc(ctl, vpc_id, _who(ctl, request)[0])
        default = f"sg-{vpc_id.removeprefix('vpc-')[:17]}"
        if vpc.subnets or vpc.network.internet_gateway or vpc.network.nat_gateways or \
                any(g.id != default for g in vpc.security_groups):
            raise ApiError("DependencyViolation", f"The vpc '{vpc_id}' has dependencies and "
                           "cannot be deleted.")
        _apply(ctl, edits.remove_vpc(ctl.data["document"], vpc_id))
    return {}


def op_create_subnet(ctl: Controller, request: dict) -> dict:
    account, region = _who(ctl, request)
    subnet_id = _new_id("subnet")
    with ctl.lock:
        _vpc(ctl, request.get("vpc_id") or "", account)
        az = request.get("az") or f"{region}a"
        _apply(ctl, edits.add_subnet(ctl.data["document"], request["vpc_id"], subnet_id,
                                     request.get("cidr") or "", az), "InvalidSubnet.Range")
        rows = ec2view.subnets(ctl.topology, ctl.model.enis, account, region)
    return {"Subnet": next(r for r in rows if r["SubnetId"] == subnet_id)}


def _dependency(what: str, ident: str, holder: str, **extra: str) -> ApiError:
    return ApiError("DependencyViolation", f"The {what} '{ident}' has dependencies and "
                    f"cannot be deleted: {holder}.", **extra)


def op_delete_subnet(ctl: Controller, request: dict) -> dict:
    subnet_id = request.get("id") or ""
    with ctl.lock:
        try:
            subnet = ctl.topology.subnet(subnet_id)
        except KeyError:
            raise ApiError("InvalidSubnetID.NotFound",
                           f"The subnet ID '{subnet_id}' does not exist") from None
        for eni in ctl.model.enis:
            if eni.key.subnet_id == subnet_id:
                raise _dependency("subnet", subnet_id, f"network interface {eni.id} "
                                  f"({eni.status}) is in it", eni=eni.id)
        vpc = ctl.topology.vpc(subnet.vpc_id)
        for host in vpc.hosts:
            if host.subnet == subnet_id:
                raise _dependency("subnet", subnet_id, f"host {host.name} ({host.ip}) is in it")
        if any(n.subnet == subnet_id for n in vpc.network.nat_gateways) or \
                vpc.network.routes(subnet_id):
            raise _dependency("subnet", subnet_id, "a NAT gateway or a route table uses it")
        _apply(ctl, edits.remove_subnet(ctl.data["document"], subnet_id))
    return {"deleted": subnet_id}


def op_create_security_group(ctl: Controller, request: dict) -> dict:
    account, _region = _who(ctl, request)
    name = request.get("name") or ""
    group_id = _new_id("sg")
    with ctl.lock:
        vpc = _vpc(ctl, request.get("vpc_id") or "", account)
        if any((g.name or g.id) == name for g in vpc.security_groups):
            raise ApiError("InvalidGroup.Duplicate", f"The security group '{name}' already "
                           f"exists for VPC '{vpc.id}'")
        _apply(ctl, edits.add_group(ctl.data["document"], vpc.id, group_id, name,
                                    request.get("description") or name))
    return {"GroupId": group_id,
            "SecurityGroupArn": f"arn:aws:ec2:{_region}:{account}:security-group/{group_id}"}


def _group_dependency(group_id: str, holder: str, **extra: str) -> ApiError:
    return ApiError("DependencyViolation", f"resource {group_id} has a dependent object "
                    f"({holder})", **extra)


def op_delete_security_group(ctl: Controller, request: dict) -> dict:
    group_id = request.get("id") or ""
    with ctl.lock:
        try:
            ctl.topology.security_group(group_id)
        except KeyError:
            raise ApiError("InvalidGroup.NotFound",
                           f"The security group '{group_id}' does not exist") from None
        for eni in ctl.model.enis:
            if group_id in eni.key.security_group_ids:
                raise _group_dependency(group_id, f"network interface {eni.id}, "
                                        f"{eni.status}", eni=eni.id)
        for vpc in ctl.topology.vpcs:
            for host in vpc.hosts:
                if group_id in host.security_groups:
                    raise _group_dependency(group_id, f"host {host.name}")
            for group in vpc.security_groups:
                if group.id != group_id and group_id in peers(group):
                    raise _group_dependency(group_id, f"a rule of {group.id}")
        _apply(ctl, edits.remove_group(ctl.data["document"], group_id))
    return {"deleted": group_id}


def _rules(permission: dict, direction: str) -> list[dict]:
    """One IpPermission as rules of the topology file (one per peer)."""
    protocol = PROTOCOLS.get(str(permission.get("IpProtocol", "")).lower())
    if protocol is None:
        raise ApiError("InvalidParameterValue", "Invalid value "
                       f"'{permission.get('IpProtocol')}' for IP protocol. Unknown protocol.")
    ports = None
    low, high = permission.get("FromPort"), permission.get("ToPort")
    if protocol in ("tcp", "udp") and low is not None and low != -1:
        high = low if high in (None, -1) else high
        ports = f"{low}" if low == high else f"{low}-{high}"
    peers_of = [(c.get("CidrIp"), None) for c in permission.get("IpRanges") or []] + \
        [(None, g.get("GroupId")) for g in permission.get("UserIdGroupPairs") or []]
    if permission.get("Ipv6Ranges") or permission.get("PrefixListIds"):
        raise ApiError("InvalidParameterValue", "IPv6 ranges and prefix lists are not "
                       "supported by this emulator")
    return [secgroups.rule_document(direction, protocol, ports, cidr, group)
            for cidr, group in peers_of]


def op_change_rules(ctl: Controller, request: dict) -> dict:
    """Authorize or revoke IpPermissions (``direction`` ingress or egress)."""
    group_id, direction = request.get("id") or "", request["direction"]
    revoke = request["action"] == "revoke"
    with ctl.lock:
        try:
            ctl.topology.security_group(group_id)
        except KeyError:
            raise ApiError("InvalidGroup.NotFound",
                           f"The security group '{group_id}' does not exist") from None
        document = ctl.data["document"]
        try:
            for permission in request.get("permissions") or []:
                for rule in _rules(permission, direction):
                    document = secgroups.edit_document(document, group_id, direction, rule,
                                                       revoke)
        except RuleEditError as exc:
            code = "InvalidPermission.NotFound" if revoke else "InvalidPermission.Duplicate"
            raise ApiError(code, str(exc)) from None
        _apply(ctl, document)
    return {"Return": True}


def op_delete_network_interface(ctl: Controller, request: dict) -> dict:
    eni_id = request.get("id") or ""
    with ctl.lock:
        known = {r["NetworkInterfaceId"] for r in ec2view.interfaces(
            ctl.topology, ctl.model.enis, *_who(ctl, request)[:1], "")}
    if eni_id not in known:
        raise ApiError("InvalidNetworkInterfaceID.NotFound",
                       f"The networkInterface ID '{eni_id}' does not exist")
    raise ApiError("OperationNotPermitted", "You are not allowed to manage 'ela-attach' "
                   f"attachments: {eni_id} is managed by AWS Lambda (or by its host or "
                   "NAT gateway) and goes away with what made it.")


OPS = {
    "ec2.describe_vpcs": op_describe_vpcs, "ec2.describe_subnets": op_describe_subnets,
    "ec2.describe_security_groups": op_describe_security_groups,
    "ec2.describe_network_interfaces": op_describe_network_interfaces,
    "ec2.create_vpc": op_create_vpc, "ec2.delete_vpc": op_delete_vpc,
    "ec2.create_subnet": op_create_subnet, "ec2.delete_subnet": op_delete_subnet,
    "ec2.create_security_group": op_create_security_group,
    "ec2.delete_security_group": op_delete_security_group,
    "ec2.change_rules": op_change_rules,
    "ec2.delete_network_interface": op_delete_network_interface,
    # the CLI's ``hyperplane vpc`` commands
    "vpc.delete_subnet": op_delete_subnet, "vpc.delete_security_group": op_delete_security_group,
}
