"""The fabric: which kernel objects a topology needs, and the plan to get there (pure).

Mininet's split between a topology (a graph of names) and the build that turns
it into kernel objects, with Snabb's configuration diff: ``desired(...)``
lists every namespace, bridge, veth, address, route and sysctl as frozen
records; ``plan(old, new)`` is a pure function giving the ordered actions
that turn the ``old`` set into the ``new`` one; ``build.apply`` performs them.
What VPC egress adds (route tables, internet and NAT gateways, the emulated
internet, the resolver's address) comes from ``fabric_egress``.
Tearing down is ``plan(current, set())``.

The picture (one VPC, one subnet shown)::

    hp-e0 (env)            hp-plane (Hyperplane)           hp-r0 (VPC router)      hp-h-db
    eth0 169.254.128.1 --- hpe0   [userspace NAT]  hpi0 --- hpn0 -+- hpbr0 10.0.1.1
                                  (no kernel IPs)                  +- hph0 ------- eth0 10.0.1.10
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hyperplane import fabric_egress, names
from hyperplane.controller import ipam
from hyperplane.controller.enis import Eni
from hyperplane.controller.envs import Env
from hyperplane.topology import Topology


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


KernelObject = Netns | Sysctl | Bridge | Veth | Master | Up | Address | Route | PolicyRule


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


def _vpc(topology: Topology, vpc_index: int) -> list[KernelObject]:
    vpc = topology.vpcs[vpc_index]
    router = names.router_ns(vpc_index)
    objs = namespace_objects(router, forwarding=True)
    for s_index, subnet in enumerate(vpc.subnets):
        br = names.bridge(s_index)
        objs += [Bridge(router, br), Up(router, br),
                 Address(router, br, ipam.gateway(subnet.cidr), ipam.prefixlen(subnet.cidr))]
    return objs


def host_index(topology: Topology, name: str) -> int:
    all_hosts = [h.name for v in topology.vpcs for h in v.hosts]
    return all_hosts.index(name)


def subnet_location(topology: Topology, subnet_id: str) -> tuple[str, str]:
    """(router namespace, bridge name) of a subnet."""
    for v_index, vpc in enumerate(topology.vpcs):
        for s_index, subnet in enumerate(vpc.subnets):
            if subnet.id == subnet_id:
                return names.router_ns(v_index), names.bridge(s_index)
    raise KeyError(subnet_id)


def host_netns(topology: Topology, name: str) -> str:
    return names.host_ns(host_index(topology, name), name)


def _host(topology: Topology, name: str) -> list[KernelObject]:
    host = topology.host(name)
    index = host_index(topology, name)
    ns = names.host_ns(index, name)
    router, br = subnet_location(topology, host.subnet)
    subnet = topology.subnet(host.subnet)
    link = names.host_link(index)
    return namespace_objects(ns) + [
        Veth(router, link, ns, "eth0"), Master(router, link, br), Up(router, link),
        Up(ns, "eth0"), Address(ns, "eth0", host.ip, ipam.prefixlen(subnet.cidr)),
        Route(ns, None, ipam.gateway(subnet.cidr)),
    ]


def eni_objects(topology: Topology, eni: Eni) -> list[KernelObject]:
    """An ENI's link: its plane side (no kernel address) and its port on the subnet bridge."""
    router, br = subnet_location(topology, eni.key.subnet_id)
    return [Veth(names.PLANE_NS, eni.plane_link, router, eni.vpc_link, mac=eni.mac),
            Master(router, eni.vpc_link, br), Up(router, eni.vpc_link),
            Up(names.PLANE_NS, eni.plane_link)]


def env_objects(env: Env) -> list[KernelObject]:
    ns = env.netns
    return namespace_objects(ns) + [
        Veth(names.PLANE_NS, env.plane_link, ns, "eth0", mac=env.gateway_mac,
             peer_mac=env.mac),
        Up(names.PLANE_NS, env.plane_link), Up(ns, "eth0"),
        Address(ns, "eth0", env.ip, 32),
        Route(ns, names.ENV_GATEWAY + "/32", None, "eth0"),
        Route(ns, None, names.ENV_GATEWAY, "eth0"),
    ]


def desired(topology: Topology, enis: list[Eni], envs: list[Env]) -> frozenset[KernelObject]:
    """Every kernel object for a topology with these ENIs and environments."""
    objs: list[KernelObject] = namespace_objects(names.PLANE_NS)
    for v_index, vpc in enumerate(topology.vpcs):
        objs += _vpc(topology, v_index)
        for host in vpc.hosts:
            objs += _host(topology, host.name)
    for eni in enis:
        objs += eni_objects(topology, eni)
    objs += fabric_egress.objects(topology)
    for env in envs:
        objs += env_objects(env)
    return frozenset(objs)


def plan(old: frozenset[KernelObject], new: frozenset[KernelObject]) -> list[Action]:
    """Ordered actions turning ``old`` into ``new``.

    Deletions come first, deepest stage first; an object inside a namespace
    that is itself deleted needs no action of its own.  Creations follow in
    stage order (namespaces, sysctls, bridges, veths, ports, links up,
    addresses, routes).
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
    """Ports, link states and addresses vanish with a deleted veth or bridge."""
    if not isinstance(obj, (Master, Up, Address)):
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


def namespaces(objs: frozenset[KernelObject]) -> list[str]:
    return sorted(o.name for o in objs if isinstance(o, Netns))

