"""EC2's and STS's operations on the endpoint: boto3 params in, the controller's answer out.

Each EC2 handler makes one controller request (``controller.ec2``: the views and
the changes of the running account) and returns EC2's output fields; an error
keeps EC2's code and message only (the CLI's extra fields, such as the ENI that
blocks a deletion, stay in the CLI).  STS answers ``GetCallerIdentity`` for the
account the access key selected.

    DescribeVpcs DescribeSubnets DescribeSecurityGroups DescribeNetworkInterfaces
    CreateVpc DeleteVpc CreateSubnet DeleteSubnet CreateSecurityGroup
    DeleteSecurityGroup AuthorizeSecurityGroupIngress AuthorizeSecurityGroupEgress
    RevokeSecurityGroupIngress RevokeSecurityGroupEgress DeleteNetworkInterface
    sts: GetCallerIdentity
"""

from __future__ import annotations

from collections.abc import Callable

from hyperplane.emulator.requests import controller_request
from hyperplane.endpoint.server import Call
from hyperplane.errors import ApiError


def _ask(call: Call, message: dict) -> dict:
    try:
        return controller_request({**message, "account": call.account, "region": call.region})
    except ApiError as exc:
        raise ApiError(exc.kind, exc.message, exc.status) from None


def _dry_run(call: Call) -> None:
    if call.params.get("DryRun"):
        raise ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag "
                       "is set.", 412)


def _describe(op: str, ids: str) -> Callable[[Call], dict]:
    def handler(call: Call) -> dict:
        _dry_run(call)
        return _ask(call, {"op": op, "ids": call.params.get(ids) or [],
                           "names": call.params.get("GroupNames") or [],
                           "filters": call.params.get("Filters") or []})
    return handler


def _required(call: Call, key: str) -> str:
    value = call.params.get(key)
    if not value:
        raise ApiError("MissingParameter", f"The request must contain the parameter {key}")
    return str(value)


def create_vpc(call: Call) -> dict:
    _dry_run(call)
    return _ask(call, {"op": "ec2.create_vpc", "cidr": _required(call, "CidrBlock")})


def delete_vpc(call: Call) -> dict:
    _dry_run(call)
    _ask(call, {"op": "ec2.delete_vpc", "id": _required(call, "VpcId")})
    return {}


def create_subnet(call: Call) -> dict:
    _dry_run(call)
    return _ask(call, {"op": "ec2.create_subnet", "vpc_id": _required(call, "VpcId"),
                       "cidr": _required(call, "CidrBlock"),
                       "az": call.params.get("AvailabilityZone")})


def delete_subnet(call: Call) -> dict:
    _dry_run(call)
    _ask(call, {"op": "ec2.delete_subnet", "id": _required(call, "SubnetId")})
    return {}


def create_security_group(call: Call) -> dict:
    _dry_run(call)
    return _ask(call, {"op": "ec2.create_security_group",
                       "name": _required(call, "GroupName"),
                       "description": _required(call, "Description"),
                       "vpc_id": _required(call, "VpcId")})


def _group_id(call: Call) -> str:
    if call.params.get("GroupId"):
        return str(call.params["GroupId"])
    name = call.params.get("GroupName")
    if not name:
        raise ApiError("MissingParameter", "The request must contain the parameter GroupId")
    groups = _ask(call, {"op": "ec2.describe_security_groups", "names": [name]})
    if not groups["SecurityGroups"]:
        raise ApiError("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
    return groups["SecurityGroups"][0]["GroupId"]


def delete_security_group(call: Call) -> dict:
    _dry_run(call)
    group_id = _group_id(call)
    _ask(call, {"op": "ec2.delete_security_group", "id": group_id})
    return {"Return": True, "GroupId": group_id}


def _permissions(params: dict) -> list[dict]:
    permissions = list(params.get("IpPermissions") or [])
    if params.get("IpProtocol") or params.get("CidrIp"):  # the old flat form
        permissions.append({"IpProtocol": params.get("IpProtocol", "-1"),
                            "FromPort": params.get("FromPort"),
                            "ToPort": params.get("ToPort"),
                            "IpRanges": [{"CidrIp": params["CidrIp"]}]
                            if params.get("CidrIp") else []})
    if not permissions:
        raise ApiError("MissingParameter", "The request must contain the parameter "
                       "IpPermissions")
    return permissions


def _rules(action: str, direction: str) -> Callable[[Call], dict]:
    def handler(call: Call) -> dict:
        _dry_run(call)
        _ask(call, {"op": "ec2.change_rules", "id": _group_id(call), "action": action,
                    "direction": direction, "permissions": _permissions(call.params)})
        return {"Return": True}
    return handler


def delete_network_interface(call: Call) -> dict:
    _dry_run(call)
    _ask(call, {"op": "ec2.delete_network_interface",
                "id": _required(call, "NetworkInterfaceId")})
    return {}


def get_caller_identity(call: Call) -> dict:
    return {"UserId": call.account, "Account": call.account,
            "Arn": f"arn:aws:iam::{call.account}:root"}


HANDLERS: dict[tuple[str, str], Callable[[Call], dict]] = {
    ("ec2", "DescribeVpcs"): _describe("ec2.describe_vpcs", "VpcIds"),
    ("ec2", "DescribeSubnets"): _describe("ec2.describe_subnets", "SubnetIds"),
    ("ec2", "DescribeSecurityGroups"): _describe("ec2.describe_security_groups", "GroupIds"),
    ("ec2", "DescribeNetworkInterfaces"): _describe("ec2.describe_network_interfaces",
                                                    "NetworkInterfaceIds"),
    ("ec2", "CreateVpc"): create_vpc,
    ("ec2", "DeleteVpc"): delete_vpc,
    ("ec2", "CreateSubnet"): create_subnet,
    ("ec2", "DeleteSubnet"): delete_subnet,
    ("ec2", "CreateSecurityGroup"): create_security_group,
    ("ec2", "DeleteSecurityGroup"): delete_security_group,
    ("ec2", "AuthorizeSecurityGroupIngress"): _rules("authorize", "ingress"),
    ("ec2", "AuthorizeSecurityGroupEgress"): _rules("authorize", "egress"),
    ("ec2", "RevokeSecurityGroupIngress"): _rules("revoke", "ingress"),
    ("ec2", "RevokeSecurityGroupEgress"): _rules("revoke", "egress"),
    ("ec2", "DeleteNetworkInterface"): delete_network_interface,
    ("sts", "GetCallerIdentity"): get_caller_identity,
}
