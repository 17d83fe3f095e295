"""The small numbers kernel names are made of, stable while a topology runs (pure).

A VPC's router namespace is ``hp-r<V>`` and a subnet's bridge ``hpbr<S>`` inside it
(``names``).  At ``up`` the numbers are the positions in the file; once VPCs and
subnets come and go at run time (the EC2 API's CreateVpc, CreateSubnet, DeleteVpc,
DeleteSubnet) a position would shift and rename what exists, so the numbers are
kept instead: ``Layout`` maps each VPC id to its router number and each subnet id to
its bridge number within its VPC.  ``extend`` keeps the numbers of what is still
there, drops what is gone, and gives a newcomer the lowest free number (a VPC among
all VPCs, a subnet among its VPC's subnets).

The recorded copy of the topology document carries it as ``_layout``
(``to_dict``); the parser reads it back, so every process that parses the
recorded document names the kernel objects alike.  A topology file may not set it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


def _lowest_free(taken: Iterable[int]) -> int:
    used = set(taken)
    return next(i for i in range(len(used) + 1) if i not in used)


@dataclass(frozen=True)
class Layout:
    vpcs: dict[str, int] = field(default_factory=dict)      # VPC id -> router number
    subnets: dict[str, int] = field(default_factory=dict)   # subnet id -> bridge number

    def vpc(self, vpc_id: str) -> int:
        return self.vpcs[vpc_id]

    def subnet(self, subnet_id: str) -> int:
        return self.subnets[subnet_id]

    def extend(self, vpcs: Iterable[tuple[str, Iterable[str]]]) -> Layout:
        """The layout of these VPCs (id, subnet ids): known numbers kept, new ones given."""
        listed = [(vpc_id, list(subnet_ids)) for vpc_id, subnet_ids in vpcs]
        new_vpcs = {v: n for v, n in self.vpcs.items() if v in {v for v, _ in listed}}
        new_subnets: dict[str, int] = {}
        for vpc_id, subnet_ids in listed:
            if vpc_id not in new_vpcs:
                new_vpcs[vpc_id] = _lowest_free(new_vpcs.values())
            mine = {s: self.subnets[s] for s in subnet_ids if s in self.subnets}
            for subnet_id in subnet_ids:
                if subnet_id not in mine:
                    mine[subnet_id] = _lowest_free(mine.values())
            new_subnets.update(mine)
        return Layout(new_vpcs, new_subnets)

    def to_dict(self) -> dict:
        return {"vpcs": dict(self.vpcs), "subnets": dict(self.subnets)}

    @classmethod
    def from_dict(cls, data: object) -> Layout:
        if not isinstance(data, dict):
            return cls()
        vpcs, subnets = data.get("vpcs") or {}, data.get("subnets") or {}
        return cls({str(k): int(v) for k, v in vpcs.items()},
                   {str(k): int(v) for k, v in subnets.items()})
