"""Which kernel objects a topology needs (pure).

Mininet's split between a topology (a graph of names) and the build that turns
it into kernel objects: ``desired(topology, enis, envs)`` lists every object
(``objects``) for a topology with these ENIs and environments; what VPC egress
adds (route tables, internet and NAT gateways, the emulated internet, the
resolver's address) comes from ``egress``, and the permanent neighbour entries that
resolve every address of a subnet without ARP from ``neighbours``.  ``eni_objects`` and
``env_objects`` are what one ENI or one environment adds at run time (their neighbour
entries included).

The picture (one VPC, one subnet shown)::

    hp-e0 (env)            hp-plane (Hyperplane)           hp-r0 (VPC router)      hp-h-db
    eth0 169.254.128.1 --- hpe0   [userspace NAT]  hpi0 --- hpn0 -+- hpbr0 10.0.1.1
                                  (no kernel IPs)                  +- hph0 ------- eth0 10.0.1.10
"""

from __future__ import annotations

from hyperplane.fabric import egress
from hyperplane.fabric.neighbours import eni_neighbours, env_neighbours, topology_neighbours
from hyperplane.fabric.objects import (
    Address,
    Bridge,
    KernelObject,
    Master,
    Netns,
    Route,
    Up,
    Veth,
    namespace_objects,
)
from hyperplane.model import ipam, names
from hyperplane.model.enis import Eni
from hyperplane.model.envs import Env
from hyperplane.model.topology import Topology, Vpc


def _vpc(topology: Topology, vpc: Vpc) -> list[KernelObject]:
    router = router_netns(topology, vpc.id)
    objs = namespace_objects(router, forwarding=True)
    for subnet in vpc.subnets:
        br = names.bridge(topology.layout.subnet(subnet.id))
        gateway = ipam.gateway(subnet.cidr)
        objs += [Bridge(router, br, names.router_mac(gateway)), Up(router, br),
                 Address(router, br, gateway, ipam.prefixlen(subnet.cidr))]
    return objs


def host_index(topology: Topology, name: str) -> int:
    all_hosts = [h.name for v in topology.vpcs for h in v.hosts]
    return all_hosts.index(name)


def router_netns(topology: Topology, vpc_id: str) -> str:
    """The namespace of a VPC's router, ``hp-r<V>`` (``V`` from the layout)."""
    return names.router_ns(topology.layout.vpc(vpc_id))


def subnet_location(topology: Topology, subnet_id: str) -> tuple[str, str]:
    """(router namespace, bridge name) of a subnet."""
    subnet = topology.subnet(subnet_id)
    return (router_netns(topology, subnet.vpc_id),
            names.bridge(topology.layout.subnet(subnet_id)))


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
        Veth(router, link, ns, "eth0", peer_mac=names.host_mac(host.ip)),
        Master(router, link, br), Up(router, link),
        Up(ns, "eth0"), Address(ns, "eth0", host.ip, ipam.prefixlen(subnet.cidr)),
        Route(ns, None, ipam.gateway(subnet.cidr)),
    ]


def eni_objects(topology: Topology, eni: Eni) -> list[KernelObject]:
    """An ENI's link: its plane side (no kernel address), its port on the subnet bridge, and
    its address and MAC in its subnet's hosts and router (``neighbours``)."""
    router, br = subnet_location(topology, eni.key.subnet_id)
    return [Veth(names.PLANE_NS, eni.plane_link, router, eni.vpc_link, mac=eni.mac),
            Master(router, eni.vpc_link, br), Up(router, eni.vpc_link),
            Up(names.PLANE_NS, eni.plane_link)] + eni_neighbours(topology, eni)


def env_objects(env: Env) -> list[KernelObject]:
    ns = env.netns
    return namespace_objects(ns) + [
        Veth(names.PLANE_NS, env.plane_link, ns, "eth0", mac=env.gateway_mac,
             peer_mac=env.mac),
        Up(names.PLANE_NS, env.plane_link), Up(ns, "eth0"),
        Address(ns, "eth0", env.ip, 32),
        Route(ns, names.ENV_GATEWAY + "/32", None, "eth0"),
        Route(ns, None, names.ENV_GATEWAY, "eth0"),
    ] + env_neighbours(env)


def desired(topology: Topology, enis: list[Eni], envs: list[Env]) -> frozenset[KernelObject]:
    """Every kernel object for a topology with these ENIs and environments."""
    objs: list[KernelObject] = namespace_objects(names.PLANE_NS)
    for vpc in topology.vpcs:
        objs += _vpc(topology, vpc)
        for host in vpc.hosts:
            objs += _host(topology, host.name)
    for eni in enis:
        objs += eni_objects(topology, eni)
    objs += egress.objects(topology)
    objs += topology_neighbours(topology)
    for env in envs:
        objs += env_objects(env)
    return frozenset(objs)


def namespaces(objs: frozenset[KernelObject]) -> list[str]:
    return sorted(o.name for o in objs if isinstance(o, Netns))

