"""The controller-to-dataplane snapshot: one typed schema for both sides, and its diff (pure).

The controller hands a dataplane its whole desired configuration every time,
never a delta (``controller.snapshot`` builds it; the NAT gateway's comes from
``kernel.vpcservices``).  On the wire it is the JSON of ``Snapshot.to_dict()``
(or ``NatSnapshot``); the dataplane reads it back with ``from_dict``, which
refuses a malformed snapshot with a ``ValueError`` naming the field.

    Snapshot     enis: [EniConfig]  envs: [EnvConfig]  timeouts  max_sessions
    EniConfig    id ifname ip mac cidr gateway connection_limit port_range mtu
                 egress: compiled rules (``policy.secgroups.compile_rules``) or None (all)
    EnvConfig    ifname ip mac gateway_ip gateway_mac
                 eni: its primary ENI's id, or None (no VPC access)
                 spill: more ENIs of the same key, in order of preference, that take the
                 environment's new flows while the primary is at its connection limit
    NatSnapshot  nat_gateways: [NatGatewayConfig]
    NatGatewayConfig  id ifname ip mac cidr gateway elastic_ip vpc_cidr per_destination
                      port_range idle_timeout

``plan(existing, new)`` is the diff the dataplane applies (``loop.Dataplane``):
from the ports it has (``Existing``: each ENI's address and link, each
environment link's address) to the snapshot's, the ports to close (gone, or
their address or link changed: sessions cannot follow), the ports to open, and
the settings every wanted port gets again (the connection limit, the egress
rules, the MTU, an environment's ENI and spill list).  Unknown spill ids, the
primary itself and repeats are dropped here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from hyperplane.model.settings import Timeouts

T = TypeVar("T")


def _build(cls: type[T], data: object, where: str) -> T:
    """A config record from its dict: unknown keys ignored, missing required ones refused."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class PortConfig:
    """A link the dataplane owns an address on: an ENI, or a NAT gateway's."""

    id: str
    ifname: str
    ip: str
    mac: str
    cidr: str       # its subnet
    gateway: str    # the subnet's router

    def __post_init__(self) -> None:  # JSON has lists; the records hold tuples
        for name in ("port_range", "egress"):
            value = getattr(self, name, None)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class EniConfig(PortConfig):
    connection_limit: int = 65000
    port_range: tuple[int, int] = (1024, 65535)
    mtu: int = 1500
    egress: tuple[dict, ...] | None = None


@dataclass(frozen=True)
class EnvConfig:
    ifname: str
    ip: str
    mac: str
    gateway_ip: str
    gateway_mac: str
    eni: str | None = None
    spill: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "spill", tuple(self.spill or ()))


@dataclass(frozen=True)
class Snapshot:
    enis: tuple[EniConfig, ...] = ()
    envs: tuple[EnvConfig, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_sessions: int = 1_000_000

    def to_dict(self) -> dict[str, Any]:
        return {"enis": [asdict(e) for e in self.enis], "envs": [asdict(e) for e in self.envs],
                "timeouts": asdict(self.timeouts), "max_sessions": self.max_sessions}

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        return cls(tuple(_build(EniConfig, e, f"enis[{i}]")
                         for i, e in enumerate(data.get("enis") or [])),
                   tuple(_build(EnvConfig, e, f"envs[{i}]")
                         for i, e in enumerate(data.get("envs") or [])),
                   Timeouts.from_dict(data.get("timeouts")),
                   int(data.get("max_sessions", 1_000_000)))


@dataclass(frozen=True)
class NatGatewayConfig(PortConfig):
    elastic_ip: str
    vpc_cidr: str
    per_destination: int = 55000
    port_range: tuple[int, int] = (1024, 65535)
    idle_timeout: float = 350.0


@dataclass(frozen=True)
class NatSnapshot:
    nat_gateways: tuple[NatGatewayConfig, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"nat_gateways": [asdict(g) for g in self.nat_gateways]}

    @classmethod
    def from_dict(cls, data: dict) -> NatSnapshot:
        return cls(tuple(_build(NatGatewayConfig, g, f"nat_gateways[{i}]")
                         for i, g in enumerate(data.get("nat_gateways") or [])))


@dataclass(frozen=True)
class Existing:
    """The ports a dataplane has now, by what identifies them (address and link)."""

    enis: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (ip, link)
    envs: dict[str, str] = field(default_factory=dict)              # link -> ip

    @classmethod
    def of(cls, snapshot: Snapshot | NatSnapshot) -> Existing:
        """The ports a dataplane has once ``snapshot`` is applied."""
        if isinstance(snapshot, NatSnapshot):
            return cls({g.id: (g.ip, g.ifname) for g in snapshot.nat_gateways})
        return cls({e.id: (e.ip, e.ifname) for e in snapshot.enis},
                   {e.ifname: e.ip for e in snapshot.envs})


@dataclass(frozen=True)
class Plan:
    """What turns the ports a dataplane has into those a snapshot wants."""

    close_enis: tuple[str, ...] = ()          # ids
    open_enis: tuple[EniConfig, ...] = ()
    enis: tuple[EniConfig, ...] = ()          # every wanted ENI: its settings, again
    close_envs: tuple[str, ...] = ()          # link names
    open_envs: tuple[EnvConfig, ...] = ()
    envs: tuple[EnvConfig, ...] = ()          # every wanted environment: ENI and spill


def _spill(env: EnvConfig, known: set[str]) -> EnvConfig:
    if env.eni is None or env.eni not in known:
        return EnvConfig(env.ifname, env.ip, env.mac, env.gateway_ip, env.gateway_mac,
                         None, ())
    spill = tuple(dict.fromkeys(i for i in env.spill if i in known and i != env.eni))
    return EnvConfig(env.ifname, env.ip, env.mac, env.gateway_ip, env.gateway_mac, env.eni,
                     spill)


def _keyed(existing: dict[str, tuple[str, str]], wanted: dict[str, Any],
           ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """(ids to close, items to open): a port whose address or link changed is both."""
    close = tuple(i for i, (ip, link) in existing.items()
                  if i not in wanted or (wanted[i].ip, wanted[i].ifname) != (ip, link))
    return close, tuple(e for i, e in wanted.items() if i not in existing or i in close)


def plan(existing: Existing, new: Snapshot) -> Plan:
    """The diff between the ports a dataplane has and a new snapshot."""
    wanted = {e.id: e for e in new.enis}
    close_enis, open_enis = _keyed(existing.enis, wanted)
    known = set(wanted)
    envs = {e.ifname: _spill(e, known) for e in new.envs}
    close_envs = tuple(n for n, ip in existing.envs.items()
                       if n not in envs or envs[n].ip != ip)
    open_envs = tuple(e for n, e in envs.items() if n not in existing.envs or n in close_envs)
    return Plan(close_enis, open_enis, tuple(wanted.values()), close_envs, open_envs,
                tuple(envs.values()))


def plan_gateways(existing: Existing, new: NatSnapshot,
                  ) -> tuple[tuple[str, ...], tuple[NatGatewayConfig, ...]]:
    """(gateway ids to close, gateways to open) for a NAT gateway snapshot."""
    return _keyed(existing.enis, {g.id: g for g in new.nat_gateways})
