"""The fabric's vocabulary: kernel objects as records, and the plan between two sets (pure).

Every namespace, sysctl, bridge, veth, bridge port, link state, address, route,
policy rule and permanent neighbour entry the project makes is a frozen record
here, with a ``stage`` that orders creation.  ``plan(old, new)`` is Snabb-style
configuration diff: the ordered actions that turn the ``old`` set into the
``new`` one (``kernel.build`` performs them).  ``desired`` says which objects a
topology needs; tearing down is ``plan(current, set())``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Netns:
    name: str
    stage: ClassVar[int] = 0

    @property
    def ns(self) -> str:
        return self.name


@dataclass(frozen=True)
class Sysctl:
    ns: str
    key: str
    value: str
    stage: ClassVar[int] = 1


@dataclass(frozen=True)
class Bridge:
    ns: str
    name: str
    mac: str | None = None  # None: the kernel's choice (a VPC router's is fixed: ``names``)
    stage: ClassVar[int] = 2


@dataclass(frozen=True)
class Veth:
    ns: str
    name: str
    peer_ns: str
    peer_name: str
    mac: str | None = None
    peer_mac: str | None = None
    stage: ClassVar[int] = 3


@dataclass(frozen=True)
class Master:
    ns: str
    ifname: str
    bridge: str
    stage: ClassVar[int] = 4


@dataclass(frozen=True)
class Up:
    ns: str
    ifname: str
    stage: ClassVar[int] = 5


@dataclass(frozen=True)
class Address:
    ns: str
    ifname: str
    ip: str
    prefixlen: int
    stage: ClassVar[int] = 6


@dataclass(frozen=True)
class Route:
    ns: str
    dst: str | None
    gateway: str | None
    ifname: str | None = None
    table: int | None = None  # None: main
    kind: str | None = None   # None: unicast; "blackhole" drops silently
    stage: ClassVar[int] = 7


@dataclass(frozen=True)
class PolicyRule:
    """``ip rule add iif IIF lookup TABLE pref PRIORITY`` (a subnet's route table)."""

    ns: str
    iif: str
    table: int
    priority: int
    stage: ClassVar[int] = 8


@dataclass(frozen=True)
class Neighbour:
    """A permanent neighbour entry (``NUD_PERMANENT``): ``ip`` is at ``mac`` on ``ifname``.

    The VPC's mapping service in kernel form (``fabric.neighbours``): exempt from the
    neighbour table's garbage-collection limit (``gc_thresh3``), never resolved by ARP.
    """

    ns: str
    ifname: str
    ip: str
    mac: str
    stage: ClassVar[int] = 9


KernelObject = (Netns | Sysctl | Bridge | Veth | Master | Up | Address | Route | PolicyRule |
                Neighbour)


@dataclass(frozen=True)
class Action:
    verb: str  # "create" or "delete"
    obj: KernelObject


# What keeps namespaces quiet: no IPv6 (no router solicitations, MLD, DAD), and no IGMP
# reports for link-local groups (a VPC carries no multicast; such reports would reach the
# ENIs as stray frames, counted as drops)
QUIET = (("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"),
         ("net.ipv4.igmp_link_local_mcast_reports", "0"))


def namespace_objects(name: str, forwarding: bool = False) -> list[KernelObject]:
    objs: list[KernelObject] = [Netns(name)] + [Sysctl(name, k, v) for k, v in QUIET]
    if forwarding:
        objs.append(Sysctl(name, "net.ipv4.ip_forward", "1"))
    return objs


def plan(old: frozenset[KernelObject], new: frozenset[KernelObject]) -> list[Action]:
    """Ordered actions turning ``old`` into ``new``.

    Deletions come first, deepest stage first; an object inside a namespace
    that is itself deleted needs no action of its own.  Creations follow in
    stage order (namespaces, sysctls, bridges, veths, ports, links up,
    addresses, routes, rules, neighbour entries).
    """
    gone = old - new
    dead_ns = {o.name for o in gone if isinstance(o, Netns)}
    deletions = [o for o in gone if isinstance(o, Netns) or
                 (o.ns not in dead_ns and not _goes_with_link(o, gone))]
    # settings of a link that is deleted and made again go with it: make them again too
    again = {o for o in new & old if _goes_with_link(o, gone) or _uses_link(o, gone)}
    creations = sorted((new - old) | again, key=_order)
    return ([Action("delete", o) for o in sorted(deletions, key=_order, reverse=True)] +
            [Action("create", o) for o in creations])


def _goes_with_link(obj: KernelObject, gone: frozenset[KernelObject]) -> bool:
    """Ports, link states, addresses and neighbour entries vanish with a deleted veth or
    bridge."""
    if not isinstance(obj, (Master, Up, Address, Neighbour)):
        return False
    for o in gone:
        if isinstance(o, Veth) and ((o.ns, o.name) == (obj.ns, obj.ifname) or
                                    (o.peer_ns, o.peer_name) == (obj.ns, obj.ifname)):
            return True
        if isinstance(o, Bridge) and (o.ns, o.name) == (obj.ns, obj.ifname):
            return True
    return False


def _uses_link(obj: KernelObject, gone: frozenset[KernelObject]) -> bool:
    """Routes leave with the links of their namespace (blackholes use no link)."""
    if not isinstance(obj, Route) or obj.kind == "blackhole":
        return False
    return any(isinstance(o, Veth) and obj.ns in (o.ns, o.peer_ns) for o in gone)


def _order(obj: KernelObject) -> tuple:
    return (obj.stage, repr(obj))
