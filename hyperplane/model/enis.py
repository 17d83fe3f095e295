"""Hyperplane ENIs: one per (subnet, security-group set), shared (pure).

Since 2019 Lambda creates one Hyperplane ENI for each unique combination of
subnet and *set* of security groups, when a function is created or its VPC
configuration changes, and shares it across every function and execution
environment with that combination (in the VPC's own account: a VPC may name another
account than the file's, the ENI id includes it).  ``plan_enis`` computes the ENIs a topology
needs from the ones that already exist: existing ENIs whose key is still
wanted are kept as they are (same id, address and interface), new keys get a
new ENI with the lowest free address of the subnet, and ENIs whose key no
function uses any more are left out (the caller deletes them).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace

from hyperplane.model import ipam, names
from hyperplane.model.topology import Topology


@dataclass(frozen=True)
class EniKey:
    vpc_id: str
    subnet_id: str
    security_group_ids: tuple[str, ...]  # sorted, without duplicates


@dataclass(frozen=True)
class Eni:
    id: str
    index: int
    key: EniKey
    ip: str
    mac: str
    subnet_cidr: str
    functions: tuple[str, ...] = ()
    status: str = "in-use"        # creating -> in-use -> deleting (then gone)
    ready_at: float = 0.0         # creating until then (emulated clock)
    delete_at: float | None = None  # deleting: removed then
    spill: int = 0                # 0: the key's first ENI; 1, 2...: added at the connection limit
    legacy_env: int | None = None  # legacy mode: the one environment this ENI serves

    @property
    def plane_link(self) -> str:
        return names.eni_plane_link(self.index)

    @property
    def vpc_link(self) -> str:
        return names.eni_vpc_link(self.index)

    @property
    def description(self) -> str:
        """AWS names the ENI after the function whose creation made it, and a uuid."""
        first = self.functions[0] if self.functions else ""
        return f"AWS Lambda VPC ENI-{first}-{uuid.uuid5(uuid.NAMESPACE_URL, self.id)}"

    def to_dict(self) -> dict:
        return {"id": self.id, "index": self.index, "vpc_id": self.key.vpc_id,
                "subnet_id": self.key.subnet_id,
                "security_groups": list(self.key.security_group_ids), "ip": self.ip,
                "mac": self.mac, "subnet_cidr": self.subnet_cidr,
                "functions": list(self.functions), "status": self.status,
                "ready_at": self.ready_at, "delete_at": self.delete_at, "spill": self.spill,
                "legacy_env": self.legacy_env}

    @classmethod
    def from_dict(cls, data: dict) -> Eni:
        key = EniKey(data["vpc_id"], data["subnet_id"], tuple(data["security_groups"]))
        return cls(data["id"], data["index"], key, data["ip"], data["mac"],
                   data["subnet_cidr"], tuple(data["functions"]),
                   data.get("status", "in-use"), data.get("ready_at", 0.0),
                   data.get("delete_at"), data.get("spill", 0), data.get("legacy_env"))


def eni_id(account: str, key: EniKey, extra: str = "") -> str:
    """A stable id; ``extra`` tells apart ENIs of one key (spill, legacy, a later one)."""
    digest = hashlib.sha256(
        f"{account}/{key.vpc_id}/{key.subnet_id}/{','.join(key.security_group_ids)}"
        f"{extra}".encode())
    return "eni-" + digest.hexdigest()[:17]


def wanted_keys(topology: Topology) -> dict[EniKey, tuple[str, ...]]:
    """Every ENI key the functions of a topology need, with the functions using it."""
    users: dict[EniKey, list[str]] = {}
    for function in topology.functions:
        config = function.vpc_config
        if config is None:
            continue
        groups = tuple(sorted(set(config.security_group_ids)))
        for subnet_id in config.subnet_ids:
            key = EniKey(config.vpc_id, subnet_id, groups)
            users.setdefault(key, []).append(function.name)
    return {key: tuple(fns) for key, fns in users.items()}


def used_addresses(topology: Topology, enis: list[Eni], subnet_id: str) -> set[str]:
    subnet = topology.subnet(subnet_id)
    hosts = {h.ip for v in topology.vpcs for h in v.hosts if h.subnet == subnet_id}
    gateways = {n.private_ip for v in topology.vpcs for n in v.network.nat_gateways
                if n.subnet == subnet_id}
    return hosts | gateways | {e.ip for e in enis if e.key.subnet_id == subnet.id}


def plan_enis(topology: Topology, existing: list[Eni]) -> list[Eni]:
    """The ENIs ``topology`` needs, keeping existing ones where their key matches."""
    wanted = wanted_keys(topology)
    by_key = {eni.key: eni for eni in existing}
    result = [replace(by_key[key], functions=fns) for key, fns in wanted.items() if key in by_key]
    next_index = max((e.index for e in existing), default=-1) + 1
    for key, functions in wanted.items():
        if key in by_key:
            continue
        subnet = topology.subnet(key.subnet_id)
        ip = ipam.allocate_in_subnet(subnet.cidr, used_addresses(topology, result, subnet.id))
        account = topology.vpc(key.vpc_id).network.account or topology.account
        result.append(Eni(eni_id(account, key), next_index, key, ip,
                          names.mac(names.MAC_ENI, next_index), subnet.cidr, functions))
        next_index += 1
    return sorted(result, key=lambda eni: eni.index)
