"""What EC2's Describe calls show of the running account, as AWS shows it (pure).

The views are built from the topology and the control plane's records, with EC2's
field names (botocore's ``ec2`` model): ``vpcs``, ``subnets`` (with
``AvailableIpAddressCount``: the subnet's size less AWS's five reserved addresses
and every address taken by a host, a NAT gateway or a Lambda ENI), ``groups``
(rules grouped per protocol and port range, peers as ``IpRanges`` and
``UserIdGroupPairs``) and ``interfaces``: the Lambda ENIs as Lambda makes them
(``InterfaceType: lambda``, ``RequesterManaged``, an ``ela-attach-`` attachment
owned by ``amazon-aws``), the hosts' interfaces and the NAT gateways'.
``select`` applies EC2 ``Filters`` (name -> values, ``*`` wildcards) to a view.
Each view covers one account: the VPCs it owns.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable

import netaddr

from hyperplane.model.enis import Eni
from hyperplane.model.topology import Rule, SecurityGroup, Topology, Vpc

STATUS = {"creating": "attaching", "in-use": "in-use", "deleting": "available"}
PROTOCOL = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "all": "-1"}


def _hex(text: str, size: int = 17) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def host_interface_id(name: str) -> str:
    """The id of a host's network interface (``DescribeNetworkInterfaces``, flow logs)."""
    return "eni-" + _hex(f"host/{name}")


def owned(topology: Topology, account: str) -> list[Vpc]:
    return [v for v in topology.vpcs if topology.vpc_account(v.id) == account]


def vpcs(topology: Topology, account: str, region: str) -> list[dict]:
    return [{"VpcId": v.id, "CidrBlock": v.cidr, "State": "available", "OwnerId": account,
             "IsDefault": False, "InstanceTenancy": "default",
             "DhcpOptionsId": "dopt-" + _hex(v.id),
             "CidrBlockAssociationSet": [{"AssociationId": "vpc-cidr-assoc-" + _hex(v.cidr),
                                          "CidrBlock": v.cidr,
                                          "CidrBlockState": {"State": "associated"}}],
             "Tags": []} for v in owned(topology, account)]


def taken(topology: Topology, enis: Iterable[Eni], subnet_id: str) -> set[str]:
    vpc = topology.vpc(topology.subnet(subnet_id).vpc_id)
    return ({h.ip for h in vpc.hosts if h.subnet == subnet_id} |
            {n.private_ip for n in vpc.network.nat_gateways if n.subnet == subnet_id} |
            {e.ip for e in enis if e.key.subnet_id == subnet_id})


def subnets(topology: Topology, enis: list[Eni], account: str, region: str) -> list[dict]:
    rows = []
    for vpc in owned(topology, account):
        for s in vpc.subnets:
            free = netaddr.IPNetwork(s.cidr).size - 5 - len(taken(topology, enis, s.id))
            rows.append({
                "SubnetId": s.id, "VpcId": vpc.id, "CidrBlock": s.cidr,
                "AvailabilityZone": s.az, "AvailabilityZoneId": s.az,
                "AvailableIpAddressCount": max(0, free), "State": "available",
                "OwnerId": account, "DefaultForAz": False, "MapPublicIpOnLaunch": False,
                "SubnetArn": f"arn:aws:ec2:{region}:{account}:subnet/{s.id}", "Tags": []})
    return rows


def _permissions(rules: Iterable[Rule], account: str) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for rule in rules:
        key = (rule.protocol, rule.ports)
        perm = merged.setdefault(key, {"IpProtocol": PROTOCOL[rule.protocol], "IpRanges": [],
                                       "UserIdGroupPairs": [], "Ipv6Ranges": [],
                                       "PrefixListIds": []})
        if rule.ports is not None:
            perm["FromPort"], perm["ToPort"] = rule.ports
        elif rule.protocol == "icmp":
            perm["FromPort"], perm["ToPort"] = -1, -1
        if rule.cidr is not None:
            perm["IpRanges"].append({"CidrIp": rule.cidr})
        else:
            perm["UserIdGroupPairs"].append({"GroupId": rule.security_group,
                                             "UserId": account})
    return list(merged.values())


def _group(vpc: Vpc, group: SecurityGroup, account: str, region: str) -> dict:
    return {"GroupId": group.id, "GroupName": group.name or group.id,
            "Description": group.description or group.name or group.id, "VpcId": vpc.id,
            "OwnerId": account, "IpPermissions": _permissions(group.ingress, account),
            "IpPermissionsEgress": _permissions(group.egress, account),
            "SecurityGroupArn": f"arn:aws:ec2:{region}:{account}:security-group/{group.id}",
            "Tags": []}


def groups(topology: Topology, account: str, region: str) -> list[dict]:
    return [_group(v, g, account, region) for v in owned(topology, account)
            for g in v.security_groups]


def _interface(topology: Topology, subnet_id: str, ip: str, mac: str, account: str,
               group_ids: Iterable[str]) -> dict:
    subnet = topology.subnet(subnet_id)
    vpc = topology.vpc(subnet.vpc_id)
    names = {g.id: g.name or g.id for g in vpc.security_groups}
    return {"AvailabilityZone": subnet.az, "SubnetId": subnet_id, "VpcId": vpc.id,
            "OwnerId": account, "PrivateIpAddress": ip, "MacAddress": mac,
            "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": ip}],
            "Groups": [{"GroupId": g, "GroupName": names.get(g, g)} for g in group_ids],
            "SourceDestCheck": True, "TagSet": [], "Ipv6Addresses": []}


def lambda_interface(topology: Topology, eni: Eni, account: str, when: str) -> dict:
    row = _interface(topology, eni.key.subnet_id, eni.ip, eni.mac, account,
                     eni.key.security_group_ids)
    row.update({
        "NetworkInterfaceId": eni.id, "InterfaceType": "lambda",
        "Description": eni.description, "Status": STATUS.get(eni.status, eni.status),
        "RequesterId": f"AROA{_hex(account, 17).upper()}:{account}",
        "RequesterManaged": True,
        "Attachment": {"AttachmentId": "ela-attach-" + _hex(eni.id), "DeviceIndex": 1,
                       "InstanceOwnerId": "amazon-aws", "Status": "attached",
                       "AttachTime": when, "DeleteOnTermination": False}})
    return row


def interfaces(topology: Topology, enis: list[Eni], account: str, when: str) -> list[dict]:
    """Lambda's ENIs, then the hosts' and the NAT gateways' interfaces, of one account."""
    mine = {v.id for v in owned(topology, account)}
    rows = [lambda_interface(topology, e, account, when) for e in enis
            if e.key.vpc_id in mine]
    for vpc in owned(topology, account):
        for h in vpc.hosts:
            row = _interface(topology, h.subnet, h.ip, "", account, h.security_groups)
            row.update({"NetworkInterfaceId": host_interface_id(h.name),
                        "InterfaceType": "interface", "Status": "in-use",
                        "Description": f"hyperplane host {h.name}", "RequesterManaged": False})
            rows.append(row)
        for n in vpc.network.nat_gateways:
            row = _interface(topology, n.subnet, n.private_ip, "", account, ())
            row.update({"NetworkInterfaceId": "eni-" + _hex(f"nat/{n.id}"),
                        "InterfaceType": "nat_gateway", "Status": "in-use",
                        "Description": f"Interface for NAT Gateway {n.id}",
                        "RequesterManaged": True,
                        "RequesterId": f"AROA{_hex('nat', 17).upper()}:{account}"})
            rows.append(row)
    return rows


# -- Filters ------------------------------------------------------------------------------
def _groups_of(row: dict) -> list[str]:
    return [g["GroupId"] for g in row.get("Groups", [])]


FILTERS: dict[str, Callable[[dict], list[str]]] = {
    "vpc-id": lambda r: [r.get("VpcId", "")],
    "subnet-id": lambda r: [r.get("SubnetId", "")],
    "group-id": lambda r: _groups_of(r) or [r.get("GroupId", "")],
    "group-name": lambda r: [g.get("GroupName", "") for g in r.get("Groups", [])] or
    [r.get("GroupName", "")],
    "network-interface-id": lambda r: [r.get("NetworkInterfaceId", "")],
    "interface-type": lambda r: [r.get("InterfaceType", "")],
    "description": lambda r: [r.get("Description", "")],
    "requester-id": lambda r: [r.get("RequesterId", "")],
    "requester-managed": lambda r: [str(r.get("RequesterManaged", False)).lower()],
    "status": lambda r: [r.get("Status", "")],
    "state": lambda r: [r.get("State", "")],
    "cidr": lambda r: [r.get("CidrBlock", "")],
    "cidr-block": lambda r: [r.get("CidrBlock", "")],
    "availability-zone": lambda r: [r.get("AvailabilityZone", "")],
    "owner-id": lambda r: [r.get("OwnerId", "")],
    "private-ip-address": lambda r: [r.get("PrivateIpAddress", "")],
    "addresses.private-ip-address": lambda r: [r.get("PrivateIpAddress", "")],
    "attachment.instance-owner-id": lambda r: [r.get("Attachment", {}).get(
        "InstanceOwnerId", "")],
    "is-default": lambda r: [str(r.get("IsDefault", False)).lower()],
}


class UnknownFilterError(ValueError):
    """A filter name this emulator does not know (EC2's InvalidParameterValue)."""


def select(rows: list[dict], filters: Iterable[dict] | None) -> list[dict]:
    """The rows every filter matches (a filter matches when any of its values does)."""
    for f in filters or ():
        name, values = f.get("Name", ""), f.get("Values") or []
        accessor = FILTERS.get(name)
        if accessor is None:
            raise UnknownFilterError(name)
        rows = [r for r in rows if any(fnmatch.fnmatchcase(have, want) for want in values
                                       for have in accessor(r))]
    return rows
