"""Security groups, their rules and route tables of a stack, in the topology's terms (pure).

CloudFormation's rule shape (``IpProtocol``, ``FromPort``/``ToPort``, ``CidrIp`` or
``SourceSecurityGroupId``/``DestinationSecurityGroupId``) becomes the topology file's
(``protocol``, ``ports``, ``cidr`` or ``source_security_group``/
``destination_security_group``).  ``IpProtocol`` ``-1`` is ``all``, ``6``/``17``/``1`` are
tcp/udp/icmp; ``FromPort``/``ToPort`` of ``-1`` or ``0-65535`` mean every port.  What the
emulator has no counterpart for (IPv6 ranges, prefix lists, other protocols) is left
out with one note each.  A group without ``SecurityGroupEgress`` allows all egress, as
AWS's default rule does.

A route table's routes to an internet gateway (``GatewayId``) or a NAT gateway
(``NatGatewayId``) become each associated subnet's ``route_table``; other targets are
noted and left out.
"""

from __future__ import annotations

from collections.abc import Callable

PROTOCOLS = {"-1": "all", "all": "all", "6": "tcp", "tcp": "tcp", "17": "udp", "udp": "udp",
             "1": "icmp", "icmp": "icmp"}
ALL_PORTS = {(0, 65535), (1, 65535), (-1, -1)}


def security_group(r, notes: list[str]) -> dict:  # noqa: ANN001 - stack.Resource
    props = r.properties
    group = {"id": r.physical_id, "name": str(props.get("GroupName") or r.physical_id),
             "description": str(props.get("GroupDescription") or "")}
    ingress = props.get("SecurityGroupIngress") or []
    group["ingress"] = [x for i, raw in enumerate(ingress if isinstance(ingress, list) else [])
                        if (x := rule(raw, "ingress", f"{r.logical_id} ingress[{i}]", notes))]
    egress = props.get("SecurityGroupEgress")
    if egress is None:
        group["egress"] = [{"protocol": "all", "cidr": "0.0.0.0/0"}]
        group["_default_egress"] = True  # popped by the caller once rules are added
    else:
        group["egress"] = [x for i, raw in enumerate(egress if isinstance(egress, list) else [])
                           if (x := rule(raw, "egress", f"{r.logical_id} egress[{i}]",
                                         notes))]
    return group


def rule(raw: object, direction: str, where: str, notes: list[str]) -> dict | None:
    """One CloudFormation rule as a topology rule; None (with a note) if not emulated."""
    if not isinstance(raw, dict):
        notes.append(f"{where}: a rule that is not a mapping is left out")
        return None
    protocol = PROTOCOLS.get(str(raw.get("IpProtocol", "")).lower())
    if protocol is None:
        notes.append(f"{where}: protocol {raw.get('IpProtocol')!r} is not emulated; left out")
        return None
    out: dict = {"protocol": protocol}
    if protocol in ("tcp", "udp"):
        low, high = _port(raw.get("FromPort"), 0), _port(raw.get("ToPort"), 65535)
        if (low, high) not in ALL_PORTS:
            out["ports"] = f"{max(low, 1)}-{high}" if low != high else str(low)
    peer = "SourceSecurityGroupId" if direction == "ingress" else "DestinationSecurityGroupId"
    ours = "source_security_group" if direction == "ingress" else \
        "destination_security_group"
    cidr_key = "CidrIp" if direction == "ingress" or "CidrIp" in raw else "CidrIp"
    if raw.get(cidr_key):
        out["cidr"] = str(raw[cidr_key])
    elif raw.get(peer):
        out[ours] = str(raw[peer])
    else:
        given = [k for k in ("CidrIpv6", "SourcePrefixListId", "DestinationPrefixListId",
                             "SourceSecurityGroupName") if raw.get(k)]
        notes.append(f"{where}: {given[0] if given else 'a rule without a peer'} is not "
                     "emulated; left out")
        return None
    return out


def _port(value: object, default: int) -> int:
    try:
        return int(str(value)) if value is not None else default
    except ValueError:
        return default


def add_rule_resource(r, groups: dict[str, dict], fail: Callable, notes: list[str],  # noqa: ANN001
                      replaced: set[str]) -> None:
    """An ``AWS::EC2::SecurityGroupIngress``/``Egress`` added to its group (the first
    separate egress rule of a group without inline egress replaces AWS's default one:
    ``replaced`` holds the groups where that happened)."""
    direction = "ingress" if r.type.endswith("Ingress") else "egress"
    group_id = r.properties.get("GroupId")
    if group_id not in groups:
        fail(f"Resources.{r.logical_id}.Properties.GroupId", f"needs the GroupId of a "
             f"security group of this template (got {group_id!r})")
    converted = rule(r.properties, direction, r.logical_id, notes)
    if converted is None:
        return
    group = groups[group_id]
    if direction == "egress" and group_id not in replaced and group.get("_default_egress"):
        group["egress"] = []
        replaced.add(group_id)
    group[direction].append(converted)


def route_tables(stack, subnets: dict[str, dict],  # noqa: ANN001
                 notes: list[str]) -> None:
    """Each associated subnet gets its table's routes (``route_table``)."""
    routes: dict[str, list[dict]] = {r.physical_id: [] for r in
                                     stack.of_type("AWS::EC2::RouteTable")}
    for r in stack.of_type("AWS::EC2::Route"):
        props = r.properties
        target = props.get("NatGatewayId") or props.get("GatewayId")
        table = routes.get(props.get("RouteTableId"))
        if table is None or not target or not props.get("DestinationCidrBlock"):
            other = [k for k in ("TransitGatewayId", "VpcPeeringConnectionId",
                                 "NetworkInterfaceId", "VpcEndpointId", "InstanceId",
                                 "DestinationIpv6CidrBlock") if props.get(k)]
            notes.append(f"{r.logical_id}: a route to {other[0] if other else 'this target'} "
                         "is not emulated; left out")
            continue
        table.append({"destination": str(props["DestinationCidrBlock"]), "target": target})
    for r in stack.of_type("AWS::EC2::SubnetRouteTableAssociation"):
        subnet_id, table_id = r.properties.get("SubnetId"), r.properties.get("RouteTableId")
        vpc = subnets.get(subnet_id)
        if vpc is None or table_id not in routes:
            notes.append(f"{r.logical_id}: associates what this template does not make; "
                         "left out")
            continue
        for subnet in vpc["subnets"]:
            if subnet["id"] == subnet_id:
                subnet["route_table"] = {"routes": list(routes[table_id])}
