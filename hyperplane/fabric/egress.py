"""Kernel objects for VPC routing and egress, added to ``desired.desired`` (pure).

Per VPC router ``hp-r<V>``:

* the resolver's address (VPC base + 2, ``ipam.resolver``) on ``lo``;
* a ``blackhole`` default route in the main table: a destination no route knows is
  dropped silently (a connection times out, as in AWS; no ICMP unreachable);
* for each subnet with a ``route_table``: table ``100 + S`` chosen by a policy rule
  ``iif hpbr<S>`` (packets arriving from that subnet), holding the VPC's subnets (the
  implicit ``local`` route), a blackhole for the rest of the VPC CIDR, the file's routes
  (``0.0.0.0/0 via <NAT gateway's private address> dev hpbr<pub>`` or
  ``via <hp-inet's transit address> dev hpx<V>``), and a blackhole default when the
  table has none; subnets without a table use the main table (VPC only);
* with an internet gateway: the veth ``hpx<V>`` / ``hpy<V>`` into ``hp-inet`` on a /30 of
  ``names.IGW_TRANSIT``, and per NAT gateway of the VPC its Elastic IP routed back to its
  private address (main table) and, in ``hp-inet``, to the router.

Per NAT gateway K (whatever its VPC): the veth ``hpz<K>`` (in ``hp-plane``, served by the
NAT gateway dataplane, MAC ``02:e3:<K>``) / ``hpm<K>`` on its subnet's bridge.

The emulated internet ``hp-inet`` exists when some VPC has an internet gateway or some
function has no VpcConfig: forwarding on, strict reverse-path filtering (a packet whose
source is not routed back through the link it came from, such as a private address
leaking through an internet gateway, is dropped), the public test server's address
``names.PUBLIC_SERVER`` on ``lo``, a blackhole default route, and Lambda's own egress
link ``hpw0`` (``hp-plane``, address ``names.EGRESS_IP``) / ``hpw1`` for functions
without VpcConfig.  Only documentation ranges are used; nothing leaves our namespaces.
"""

from __future__ import annotations

from hyperplane.fabric.objects import (
    Address,
    Master,
    PolicyRule,
    Route,
    Sysctl,
    Up,
    Veth,
    namespace_objects,
)
from hyperplane.model import ipam, names
from hyperplane.model.topology import Topology, Vpc

ROUTE_TABLE_BASE = 100  # table (and rule priority) of subnet S is ROUTE_TABLE_BASE + S


def needs_internet(topology: Topology) -> bool:
    return any(v.network.internet_gateway for v in topology.vpcs) or \
        any(f.vpc_config is None for f in topology.functions)


def has_egress_port(topology: Topology) -> bool:
    """Lambda's own egress exists when some function has no VpcConfig."""
    return any(f.vpc_config is None for f in topology.functions)


def nat_gateways(topology: Topology) -> list:
    """Every NAT gateway of the file, in order: its index is its link number."""
    return [n for v in topology.vpcs for n in v.network.nat_gateways]


def igw_indices(topology: Topology) -> dict[str, int]:
    """VPC id -> its internet gateway's ordinal (which /30 of the transit range)."""
    with_igw = [v.id for v in topology.vpcs if v.network.internet_gateway]
    return {vpc_id: i for i, vpc_id in enumerate(with_igw)}


def _bridge_of(topology: Topology, subnet_id: str) -> str:
    return names.bridge(topology.layout.subnet(subnet_id))


def _route_tables(topology: Topology, vpc: Vpc, igw_index: int | None) -> list:
    objs: list = []
    layout = topology.layout
    router = names.router_ns(layout.vpc(vpc.id))
    for subnet in vpc.subnets:
        routes = vpc.network.routes(subnet.id)
        if not routes:
            continue
        table = ROUTE_TABLE_BASE + layout.subnet(subnet.id)
        objs.append(PolicyRule(router, _bridge_of(topology, subnet.id), table, table))
        for other in vpc.subnets:  # local
            objs.append(Route(router, other.cidr, None, _bridge_of(topology, other.id), table))
        objs.append(Route(router, vpc.cidr, None, None, table, "blackhole"))
        for route in routes:
            if route.target == vpc.network.internet_gateway and igw_index is not None:
                inet_ip, _ = names.igw_transit(igw_index)
                objs.append(Route(router, route.destination, inet_ip,
                                  names.igw_router_link(layout.vpc(vpc.id)), table))
            else:
                nat = vpc.network.nat_gateway(route.target)
                objs.append(Route(router, route.destination, nat.private_ip,
                                  _bridge_of(topology, nat.subnet), table))
        if not any(r.destination == "0.0.0.0/0" for r in routes):
            objs.append(Route(router, None, None, None, table, "blackhole"))
    return objs


def _internet(topology: Topology) -> list:
    """``hp-inet`` itself, and Lambda's own egress link into it."""
    objs: list = []
    inet = names.INET_NS
    if needs_internet(topology):
        objs += namespace_objects(inet, forwarding=True)
        objs += [Sysctl(inet, "net.ipv4.conf.all.rp_filter", "1"),
                 Address(inet, "lo", names.PUBLIC_SERVER, 32),
                 Route(inet, None, None, None, None, "blackhole")]
    if has_egress_port(topology):
        objs += [Veth(names.PLANE_NS, names.EGRESS_PLANE_LINK, inet, names.EGRESS_INET_LINK,
                      mac=names.mac(names.MAC_EGRESS, 0)),
                 Up(names.PLANE_NS, names.EGRESS_PLANE_LINK),
                 Up(inet, names.EGRESS_INET_LINK),
                 Address(inet, names.EGRESS_INET_LINK, names.EGRESS_GATEWAY,
                         ipam.prefixlen(names.EGRESS_NET))]
    return objs


def _internet_gateway(topology: Topology, vpc: Vpc, igw_index: int) -> list:
    v_index = topology.layout.vpc(vpc.id)
    router, inet = names.router_ns(v_index), names.INET_NS
    inet_ip, router_ip = names.igw_transit(igw_index)
    link, peer = names.igw_router_link(v_index), names.igw_inet_link(v_index)
    objs: list = [Veth(router, link, inet, peer, mac=names.transit_mac(router_ip),
                       peer_mac=names.transit_mac(inet_ip)), Up(router, link), Up(inet, peer),
                  Address(router, link, router_ip, 30), Address(inet, peer, inet_ip, 30)]
    for nat in vpc.network.nat_gateways:
        objs += [Route(router, f"{nat.elastic_ip}/32", nat.private_ip,
                       _bridge_of(topology, nat.subnet)),
                 Route(inet, f"{nat.elastic_ip}/32", router_ip, peer)]
    return objs


def objects(topology: Topology) -> list:
    objs = _internet(topology)
    igws = igw_indices(topology)
    for vpc in topology.vpcs:
        router = names.router_ns(topology.layout.vpc(vpc.id))
        objs += [Address(router, "lo", ipam.resolver(vpc.cidr), 32),
                 Route(router, None, None, None, None, "blackhole")]
        objs += _route_tables(topology, vpc, igws.get(vpc.id))
        if vpc.id in igws:
            objs += _internet_gateway(topology, vpc, igws[vpc.id])
    for k, nat in enumerate(nat_gateways(topology)):
        router = names.router_ns(topology.layout.vpc(nat.vpc_id))
        vpc_link = names.natgw_vpc_link(k)
        objs += [Veth(names.PLANE_NS, names.natgw_plane_link(k), router, vpc_link,
                      mac=names.mac(names.MAC_NATGW, k)),
                 Master(router, vpc_link, _bridge_of(topology, nat.subnet)),
                 Up(router, vpc_link), Up(names.PLANE_NS, names.natgw_plane_link(k))]
    return objs
