"""Execution environments: records and placement (pure).

An execution environment is one namespace (``hp-e<N>``) running one function's
runtime.  It has a private address from ``names.ENV_POOL`` and reaches its
VPC through the Hyperplane ENI of the subnet it was placed in.  Environments
of one function are spread over the function's subnets: a new one goes to
the subnet that has the fewest environments of that function.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hyperplane.model import ipam, names
from hyperplane.model.enis import Eni
from hyperplane.model.topology import Function


@dataclass(frozen=True)
class Env:
    index: int
    function: str
    ip: str
    subnet_id: str | None   # None for a function without VpcConfig
    eni_id: str | None
    last_used: float = 0.0  # emulated clock: when its last invocation ended
    stale: bool = False     # made for an older configuration: reaped once idle
    created: float | None = None  # emulated clock: when it was made (None: at last_used)

    @property
    def id(self) -> str:
        return f"env-{self.index}"

    @property
    def netns(self) -> str:
        return names.env_ns(self.index)

    @property
    def plane_link(self) -> str:
        return names.env_link(self.index)

    @property
    def mac(self) -> str:
        return names.mac(names.MAC_ENV, self.index)

    @property
    def gateway_mac(self) -> str:
        return names.mac(names.MAC_ENV_GATEWAY, self.index)

    def to_dict(self) -> dict:
        return {"index": self.index, "function": self.function, "ip": self.ip,
                "subnet_id": self.subnet_id, "eni_id": self.eni_id,
                "last_used": self.last_used, "stale": self.stale, "created": self.created}

    @classmethod
    def from_dict(cls, data: dict) -> Env:
        return cls(data["index"], data["function"], data["ip"], data["subnet_id"],
                   data["eni_id"], data.get("last_used", 0.0), data.get("stale", False),
                   data.get("created"))

    @property
    def born(self) -> float:
        """When it was made, for ``env_max_lifetime`` (its last use if not recorded)."""
        return self.last_used if self.created is None else self.created


def choose_subnet(function: Function, envs: list[Env]) -> str | None:
    """The function's subnet with the fewest of its environments (first on a tie)."""
    if function.vpc_config is None:
        return None
    load = Counter(e.subnet_id for e in envs if e.function == function.name)
    return min(function.vpc_config.subnet_ids, key=lambda s: load[s])


def eni_for(function: Function, subnet_id: str | None, enis: list[Eni]) -> Eni | None:
    if function.vpc_config is None or subnet_id is None:
        return None
    groups = tuple(sorted(set(function.vpc_config.security_group_ids)))
    for eni in enis:  # the key's first shared ENI (spill ENIs are the dataplane's choice)
        if eni.key.subnet_id == subnet_id and eni.key.security_group_ids == groups \
                and eni.legacy_env is None and eni.spill == 0:
            return eni
    raise LookupError(f"no ENI for {function.name} in {subnet_id}")


def new_env(function: Function, envs: list[Env], enis: list[Eni]) -> Env:
    """The record of the next environment of ``function`` (nothing is created)."""
    index = max((e.index for e in envs), default=-1) + 1
    ip = ipam.allocate(names.ENV_POOL, {e.ip for e in envs})
    subnet_id = choose_subnet(function, envs)
    eni = eni_for(function, subnet_id, enis)
    return Env(index, function.name, ip, subnet_id, eni.id if eni else None)
