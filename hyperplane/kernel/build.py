"""Builder: performs a fabric plan against the kernel (side effects).

``apply(actions)`` walks the ordered actions from ``fabric.plan`` and makes
or removes each kernel object through ``netlink`` (permanent neighbour entries in
batches per namespace: a topology has tens of thousands).  Each step is idempotent,
so a build interrupted half-way is finished by running it again, and
``cleanup`` can always remove what is left.
"""

from __future__ import annotations

from hyperplane.fabric import objects as fabric
from hyperplane.fabric.objects import Action
from hyperplane.kernel import netlink


def _create(obj: fabric.KernelObject) -> None:
    if isinstance(obj, fabric.Netns):
        netlink.ensure_netns(obj.name)
    elif isinstance(obj, fabric.Sysctl):
        netlink.set_sysctl(obj.ns, obj.key, obj.value)
    elif isinstance(obj, fabric.Bridge):
        netlink.add_bridge(obj.ns, obj.name, obj.mac)
    elif isinstance(obj, fabric.Veth):
        netlink.add_veth(obj.ns, obj.name, obj.peer_ns, obj.peer_name, obj.mac, obj.peer_mac)
    elif isinstance(obj, fabric.Master):
        netlink.set_master(obj.ns, obj.ifname, obj.bridge)
    elif isinstance(obj, fabric.Up):
        netlink.link_up(obj.ns, obj.ifname)
    elif isinstance(obj, fabric.Address):
        netlink.add_address(obj.ns, obj.ifname, obj.ip, obj.prefixlen)
    elif isinstance(obj, fabric.Route):
        netlink.add_route(obj.ns, obj.dst, obj.gateway, obj.ifname, obj.table, obj.kind)
    elif isinstance(obj, fabric.PolicyRule):
        netlink.add_rule(obj.ns, obj.iif, obj.table, obj.priority)
    elif isinstance(obj, fabric.Neighbour):
        netlink.set_neighbours(obj.ns, [(obj.ifname, obj.ip, obj.mac)])
    else:  # pragma: no cover - the union is closed
        raise TypeError(obj)


def _delete(obj: fabric.KernelObject) -> None:
    if isinstance(obj, fabric.Netns):
        netlink.remove_netns(obj.name)
    elif isinstance(obj, (fabric.Veth, fabric.Bridge)):
        netlink.delete_link(obj.ns, obj.name)
        if isinstance(obj, fabric.Veth):  # the peer goes with it: forget its cached index
            netlink.forget_link(obj.peer_ns, obj.peer_name)
    elif isinstance(obj, fabric.Neighbour):  # an ENI, host or NAT gateway that went
        netlink.delete_neighbour(obj.ns, obj.ifname, obj.ip)
    # addresses, routes, ports and sysctls of surviving links are not retracted yet


def apply(actions: list[Action]) -> None:
    """Perform ``actions`` in order; a run of neighbour entries to make goes to the kernel
    in batches, a namespace at a time (``netlink.set_neighbours``)."""
    entries: list[fabric.Neighbour] = []
    for action in actions:
        if action.verb == "create" and isinstance(action.obj, fabric.Neighbour):
            entries.append(action.obj)
            continue
        _set_neighbours(entries)
        (_create if action.verb == "create" else _delete)(action.obj)
    _set_neighbours(entries)


def _set_neighbours(entries: list[fabric.Neighbour]) -> None:
    by_ns: dict[str, list[tuple[str, str, str]]] = {}
    for n in entries:
        by_ns.setdefault(n.ns, []).append((n.ifname, n.ip, n.mac))
    for ns, wanted in by_ns.items():
        netlink.set_neighbours(ns, wanted)
    entries.clear()
