"""Names of every kernel object the project makes (pure).

One place decides how namespaces and interfaces are called, so that the
builder, the dataplane, ``cleanup`` and the tests agree.  All names start with
the project prefix ``hp`` and fit IFNAMSIZ (15 characters); namespaces use
``hp-``.  Indices are small integers recorded in the state file.

    hp-plane        the Hyperplane namespace (userspace dataplane runs here)
    hp-r<V>         router namespace of VPC number V; bridges hpbr<S> per subnet
    hp-h-<name>     a customer host (hp-h<N> when the name is too long)
    hp-e<N>         execution environment N; its eth0 pairs with hpe<N> in hp-plane
    hpi<N>/hpn<N>   ENI N: hpi<N> in hp-plane, hpn<N> on the subnet bridge
    hph<N>          host N's link on the subnet bridge (eth0 inside the host)

MACs are deterministic too (``mac``: ``02:<kind>:<4 octets>``), so that the fabric knows
every address and MAC of a subnet and installs them as permanent neighbour entries
(``fabric.neighbours``): an ENI, an environment, a NAT gateway by its number; a host's
eth0 and a subnet's router (its bridge) by their IPv4 address, unique on their subnet
and unchanged when other hosts come and go.
"""

from __future__ import annotations

import ipaddress

PREFIX = "hp"
NS_PREFIX = "hp-"
PLANE_NS = "hp-plane"
IFNAMSIZ = 15

ENV_GATEWAY = "169.254.0.1"      # the address Hyperplane answers for on every env link
ENV_NETWORK = "169.254.0.0/16"   # execution environments' private addresses
ENV_POOL = "169.254.128.0/17"    # addresses handed to environments
LINK_MTU = 1500                  # every link the fabric makes


def router_ns(vpc_index: int) -> str:
    return f"hp-r{vpc_index}"


def bridge(subnet_index: int) -> str:
    return f"hpbr{subnet_index}"


def host_ns(host_index: int, name: str) -> str:
    candidate = f"hp-h-{name}"
    return candidate if len(candidate) <= IFNAMSIZ else f"hp-h{host_index}"


def host_link(host_index: int) -> str:
    return f"hph{host_index}"


def env_ns(env_index: int) -> str:
    return f"hp-e{env_index}"


def env_link(env_index: int) -> str:
    return f"hpe{env_index}"


def eni_plane_link(eni_index: int) -> str:
    return f"hpi{eni_index}"


def eni_vpc_link(eni_index: int) -> str:
    return f"hpn{eni_index}"


def mac(kind: int, index: int) -> str:
    """A locally administered unicast MAC, unique per (kind, index)."""
    octets = [kind & 0xFF] + [(index >> shift) & 0xFF for shift in (24, 16, 8, 0)]
    return "02:" + ":".join(f"{octet:02x}" for octet in octets)


MAC_ENI = 0xE1          # ENI address as the VPC sees it (hpi<N>)
MAC_ENV = 0xE0          # the environment's eth0
MAC_ENV_GATEWAY = 0xE2  # Hyperplane's side of an environment link (hpe<N>)
MAC_HOST = 0xE5         # a host's eth0, by its address
MAC_ROUTER = 0xE6       # a subnet's router (its bridge hpbr<S>), by the gateway's address
MAC_TRANSIT = 0xE7      # an internet gateway's /30 (hpx<V>, hpy<V>), by the address


def host_mac(ip: str) -> str:
    """The MAC of a host's eth0 with address ``ip`` (unique on its subnet)."""
    return mac(MAC_HOST, int(ipaddress.IPv4Address(ip)))


def router_mac(gateway_ip: str) -> str:
    """The MAC of a subnet's router: its bridge, holding the gateway address (base + 1)."""
    return mac(MAC_ROUTER, int(ipaddress.IPv4Address(gateway_ip)))


def transit_mac(ip: str) -> str:
    """The MAC of one end of an internet gateway's /30, by that end's address."""
    return mac(MAC_TRANSIT, int(ipaddress.IPv4Address(ip)))


# -- VPC egress: the emulated internet, internet gateways, NAT gateways (documentation ranges
# only: nothing here is ever routed out of the project's namespaces) --------------------------
INET_NS = "hp-inet"              # the emulated internet: a router and the public test server
PUBLIC_SERVER = "203.0.113.10"   # on hp-inet's lo; HTTP on PUBLIC_PORT (/whoami)
PUBLIC_PORT = 80
EGRESS_ID = "lambda-egress"      # Lambda's own internet egress (functions without VpcConfig)
EGRESS_PLANE_LINK = "hpw0"       # in hp-plane; its address EGRESS_IP is Lambda-owned
EGRESS_INET_LINK = "hpw1"        # in hp-inet, EGRESS_GATEWAY/29
EGRESS_NET = "192.0.2.8/29"
EGRESS_GATEWAY = "192.0.2.9"
EGRESS_IP = "192.0.2.10"
IGW_TRANSIT = "192.0.2.128/25"   # one /30 per internet gateway: .1 hp-inet, .2 the VPC router
MAC_NATGW = 0xE3                 # a NAT gateway's link on its subnet (hpz<K>)
MAC_EGRESS = 0xE4                # Lambda's egress link (hpw0)


def igw_router_link(vpc_index: int) -> str:
    return f"hpx{vpc_index}"


def igw_inet_link(vpc_index: int) -> str:
    return f"hpy{vpc_index}"


def igw_transit(igw_index: int) -> tuple[str, str]:
    """(hp-inet's address, the VPC router's address) on internet gateway N's /30."""
    base = 128 + 4 * igw_index
    return f"192.0.2.{base + 1}", f"192.0.2.{base + 2}"


def natgw_plane_link(index: int) -> str:
    return f"hpz{index}"


def natgw_vpc_link(index: int) -> str:
    return f"hpm{index}"
