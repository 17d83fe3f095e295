"""Address resolution as the VPC does it: permanent neighbour entries (pure).

A VPC's instances never learn each other by ARP broadcast: the VPC's mapping service
knows every address and MAC of a subnet and answers for them.  The fabric knows them
too (every MAC is deterministic, ``model.names``), so it installs them as permanent
neighbour entries (``objects.Neighbour``, ``NUD_PERMANENT``) in each namespace that
sends to them.  Permanent entries are exempt from the kernel's neighbour-table limit
(``net.ipv4.neigh.default.gc_thresh3``, shared by every namespace of the machine), so a
topology of thousands of hosts resolves nothing by ARP; ARP itself stays on, for
whatever a user adds by hand.

Who holds which entries (the subnet's members: its hosts, its ENIs, its NAT gateways):

* a host ``hp-h-<name>``, on ``eth0``: its gateway (the router's bridge, subnet base + 1)
  and every other member of its subnet;
* a VPC router ``hp-r<V>``, on the subnet's bridge ``hpbr<S>``: every member;
* an internet gateway's /30: the router has ``hp-inet``'s end on ``hpx<V>``, ``hp-inet``
  the router's on ``hpy<V>``; ``hp-inet`` has Lambda's egress address on ``hpw1``;
* an execution environment ``hp-e<N>``, on ``eth0``: Hyperplane's ``169.254.0.1``.

``topology_neighbours`` gives the entries of a topology's hosts, routers and gateways;
``eni_neighbours`` what one ENI adds (its subnet's hosts and router learn it: part of
``desired.eni_objects``, so an ENI made or deleted at run time brings or takes its entries
with its link); ``env_neighbours`` what one environment adds.  Hyperplane's and the NAT
gateways' own resolution is userspace (``dataplane.arp``): no kernel table involved.
"""

from __future__ import annotations

from hyperplane.fabric.objects import Neighbour
from hyperplane.model import ipam, names
from hyperplane.model.enis import Eni
from hyperplane.model.envs import Env
from hyperplane.model.topology import Host, Topology

HOST_LINK = "eth0"  # a host's (and an environment's) one link


def host_namespaces(topology: Topology) -> dict[str, str]:
    """Host name -> its namespace (``names.host_ns`` by its position among all hosts)."""
    hosts = [h.name for v in topology.vpcs for h in v.hosts]
    return {name: names.host_ns(index, name) for index, name in enumerate(hosts)}


def _hosts_of(topology: Topology, subnet_id: str) -> list[Host]:
    return [h for v in topology.vpcs for h in v.hosts if h.subnet == subnet_id]


def _nat_gateways_of(topology: Topology, subnet_id: str) -> list[tuple[str, str]]:
    """(private address, MAC) of the NAT gateways in a subnet (MAC by file order)."""
    gateways = [n for v in topology.vpcs for n in v.network.nat_gateways]
    return [(n.private_ip, names.mac(names.MAC_NATGW, k)) for k, n in enumerate(gateways)
            if n.subnet == subnet_id]


def _subnet(topology: Topology, vpc_index: int, subnet, host_ns: dict[str, str]) -> list:
    router = names.router_ns(vpc_index)
    bridge = names.bridge(topology.layout.subnet(subnet.id))
    gateway = ipam.gateway(subnet.cidr)
    hosts = _hosts_of(topology, subnet.id)
    members = [(h.ip, names.host_mac(h.ip)) for h in hosts] + \
        _nat_gateways_of(topology, subnet.id)
    objs = [Neighbour(router, bridge, ip, mac) for ip, mac in members]
    for host in hosts:
        ns = host_ns[host.name]
        objs.append(Neighbour(ns, HOST_LINK, gateway, names.router_mac(gateway)))
        objs += [Neighbour(ns, HOST_LINK, ip, mac) for ip, mac in members if ip != host.ip]
    return objs


def _transit(topology: Topology) -> list:
    """Both ends of every internet gateway's /30, and Lambda's egress address."""
    objs: list = []
    with_igw = [v for v in topology.vpcs if v.network.internet_gateway]
    for igw_index, vpc in enumerate(with_igw):
        v_index = topology.layout.vpc(vpc.id)
        inet_ip, router_ip = names.igw_transit(igw_index)
        objs += [Neighbour(names.router_ns(v_index), names.igw_router_link(v_index), inet_ip,
                           names.transit_mac(inet_ip)),
                 Neighbour(names.INET_NS, names.igw_inet_link(v_index), router_ip,
                           names.transit_mac(router_ip))]
    if any(f.vpc_config is None for f in topology.functions):
        objs.append(Neighbour(names.INET_NS, names.EGRESS_INET_LINK, names.EGRESS_IP,
                              names.mac(names.MAC_EGRESS, 0)))
    return objs


def topology_neighbours(topology: Topology) -> list[Neighbour]:
    """Every permanent entry of a topology's hosts, routers and gateways (ENIs apart)."""
    host_ns = host_namespaces(topology)
    objs: list[Neighbour] = []
    for vpc in topology.vpcs:
        v_index = topology.layout.vpc(vpc.id)
        for subnet in vpc.subnets:
            objs += _subnet(topology, v_index, subnet, host_ns)
    return objs + _transit(topology)


def eni_neighbours(topology: Topology, eni: Eni) -> list[Neighbour]:
    """What one ENI adds: its address and MAC in its subnet's hosts and router."""
    subnet = topology.subnet(eni.key.subnet_id)
    router = names.router_ns(topology.layout.vpc(subnet.vpc_id))
    bridge = names.bridge(topology.layout.subnet(subnet.id))
    host_ns = host_namespaces(topology)
    return [Neighbour(router, bridge, eni.ip, eni.mac)] + [
        Neighbour(host_ns[h.name], HOST_LINK, eni.ip, eni.mac)
        for h in _hosts_of(topology, subnet.id)]


def env_neighbours(env: Env) -> list[Neighbour]:
    """An environment's one neighbour: Hyperplane, its gateway on every environment link."""
    return [Neighbour(env.netns, HOST_LINK, names.ENV_GATEWAY, env.gateway_mac)]
