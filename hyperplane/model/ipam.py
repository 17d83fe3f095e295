"""Address management for subnets and execution environments (pure, netaddr).

AWS reserves five addresses in every subnet: the network address, +1 (VPC
router), +2 (DNS), +3 (future use) and the broadcast address.  ``allocate``
hands out the lowest free address of a network that is neither reserved nor
already used; it raises ``AddressExhaustedError`` when none is left (what AWS
reports as ``SubnetOutOfIPAddresses``).
"""

from __future__ import annotations

from collections.abc import Iterable

from netaddr import IPAddress, IPNetwork


class AddressExhaustedError(Exception):
    """No free address is left in the network."""


def aws_reserved(cidr: str) -> set[str]:
    net = IPNetwork(cidr)
    first = net.first
    return {str(IPAddress(first + i)) for i in range(4)} | {str(IPAddress(net.last))}


def allocate(cidr: str, used: Iterable[str], reserved: Iterable[str] = ()) -> str:
    """The lowest address of ``cidr`` not in ``used`` nor ``reserved``."""
    return allocate_many(cidr, used, 1, reserved)[0]


def allocate_many(cidr: str, used: Iterable[str], count: int,
                  reserved: Iterable[str] = ()) -> list[str]:
    """The ``count`` lowest host addresses of ``cidr`` in neither ``used`` nor ``reserved``,
    found in one pass (a burst of environments asks for a thousand at once)."""
    if count <= 0:
        return []
    net = IPNetwork(cidr)
    taken = {int(IPAddress(a)) for a in (*used, *reserved)}
    found: list[str] = []
    for value in _host_values(net):
        if value in taken:
            continue
        found.append(str(IPAddress(value, net.version)))
        if len(found) == count:
            return found
    raise AddressExhaustedError(f"no free address left in {cidr}")


def _host_values(net: IPNetwork) -> Iterable[int]:
    """The host addresses of ``net`` as integers, as ``IPNetwork.iter_hosts`` orders them."""
    if net.version == 4 and net.size > 2:  # neither the network nor the broadcast address
        return range(net.first + 1, net.last)
    return (int(a) for a in net.iter_hosts())


def allocate_in_subnet(cidr: str, used: Iterable[str]) -> str:
    """An address of an AWS subnet, skipping the five reserved ones."""
    return allocate(cidr, used, aws_reserved(cidr))


def gateway(cidr: str) -> str:
    """The VPC router's address in a subnet: the network address + 1."""
    return str(IPAddress(IPNetwork(cidr).first + 1))


def prefixlen(cidr: str) -> int:
    return IPNetwork(cidr).prefixlen


def resolver(vpc_cidr: str) -> str:
    """The VPC's DNS resolver (Route 53 Resolver): the VPC network address + 2."""
    return str(IPAddress(IPNetwork(vpc_cidr).first + 2))
