"""The VPC's own services around the fabric (side effects): firewalls, DNS, NAT, internet.

Called by ``engine.up`` once the fabric is built (``start``), and by ``security`` after a
rule change (``apply_firewalls``).  Each piece is rendered by a pure module and applied
or started here; every process is recorded in ``state.json`` under ``procs`` before it is
waited for, so ``down`` and ``cleanup`` find it:

* host security groups: ``hostfw.render_host`` for every host, applied with
  ``firewall.apply`` (nftables inside the host's namespace).  Group membership follows
  the topology and the ENIs: ``engine.push_config`` calls ``follow_membership``, which
  renders again when the members changed, and ``security`` after a rule change.
* the VPC resolver: ``services.dns`` in each router namespace on VPC base + 2
  (``dns:<vpc>``), answering ``<host>.<zone>``; ``STATE_DIR/resolv/<vpc>.conf`` points
  environments, hosts and ``exec`` commands at it (``resolv_file``).
* the public test server of the emulated internet: ``services.httpd`` named ``www`` in
  ``hp-inet`` on ``names.PUBLIC_SERVER:PUBLIC_PORT`` (``inet:www``).
* NAT gateways: one ``natgw_dataplane`` process in ``hp-plane`` (``natgw``) serving every
  gateway's link, configured with ``natgw_snapshot`` and ready once each gateway has
  resolved its subnet router.
"""

from __future__ import annotations

import json

from hyperplane import (
    client,
    dnsmsg,
    fabric,
    fabric_egress,
    firewall,
    hostfw,
    names,
    procs,
    secgroups,
    settings,
    state,
)
from hyperplane.controller import ipam
from hyperplane.controller.enis import Eni
from hyperplane.topology import Topology

READY_TIMEOUT = 15.0


def apply_firewalls(topology: Topology, enis: list[Eni], fresh: bool = False) -> None:
    """Render and apply every host's security groups for the current membership.

    The drop counters are carried over from the tables being replaced (``fresh``: there
    are none yet).
    """
    membership = secgroups.members(topology, enis)
    for vpc in topology.vpcs:
        resolver = ipam.resolver(vpc.cidr)
        for host in vpc.hosts:
            ns = fabric.host_netns(topology, host.name)
            start = {} if fresh else firewall.counters(ns, hostfw.TABLE)
            firewall.apply(ns, hostfw.render_host(topology, host, membership, resolver, start))


def follow_membership(data: dict, topology: Topology, enis: list[Eni]) -> bool:
    """Re-render the hosts' firewalls if group membership changed since the last render.

    The membership rendered last is kept in the state (``data["membership"]``; the caller
    saves it).  Cheap when nothing changed (no nft runs), so every configuration push can
    call it: ENIs that come or go change the members of their groups, and the hosts' rules
    that name those groups follow.  Returns whether anything was applied.
    """
    membership = {g: list(ips) for g, ips in secgroups.members(topology, enis).items()}
    if data.get("membership") == membership:
        return False
    apply_firewalls(topology, enis, fresh="membership" not in data)
    data["membership"] = membership
    return True


def resolv_file(vpc_id: str | None) -> str | None:
    """The resolv.conf of a VPC (None for no VPC, or before ``start`` wrote it)."""
    if vpc_id is None:
        return None
    path = state.path("resolv", f"{vpc_id}.conf")
    return str(path) if path.exists() else None


def natgw_socket() -> str:
    return str(state.path("natgw.sock"))


def natgw_snapshot(topology: Topology) -> dict:
    config = settings.nat_gateway(topology.settings)
    gateways = []
    for k, nat in enumerate(fabric_egress.nat_gateways(topology)):
        vpc = topology.vpc(nat.vpc_id)
        subnet = topology.subnet(nat.subnet)
        gateways.append({
            "id": nat.id, "ifname": names.natgw_plane_link(k), "ip": nat.private_ip,
            "mac": names.mac(names.MAC_NATGW, k), "cidr": subnet.cidr,
            "gateway": ipam.gateway(subnet.cidr), "elastic_ip": nat.elastic_ip,
            "vpc_cidr": vpc.cidr, "per_destination": config["connections_per_destination"],
            "port_range": config["port_range"], "idle_timeout": config["idle_timeout"]})
    return {"nat_gateways": gateways}


def natgw_request(message: dict) -> dict:
    return client.request(natgw_socket(), message)


def start(data: dict, topology: Topology, enis: list[Eni]) -> None:
    """Everything a freshly built topology needs before its functions become Active."""
    data.pop("membership", None)
    follow_membership(data, topology, enis)  # every host's firewall, fresh
    waiting = []
    for v_index, vpc in enumerate(topology.vpcs):
        resolver = ipam.resolver(vpc.cidr)
        records = state.path("resolv", f"{vpc.id}.json")
        records.parent.mkdir(parents=True, exist_ok=True)
        records.write_text(json.dumps(dnsmsg.vpc_records(vpc)))
        state.path("resolv", f"{vpc.id}.conf").write_text(
            f"# hyperplane: the resolver of {vpc.id}\nnameserver {resolver}\n"
            f"search {vpc.network.dns_zone}\noptions timeout:1 attempts:2\n")
        waiting.append(_spawn(data, f"dns:{vpc.id}", names.router_ns(v_index),
                              "hyperplane.services.dns", "--address", resolver,
                              "--records", str(records)))
    if fabric_egress.needs_internet(topology):
        waiting.append(_spawn(data, "inet:www", names.INET_NS,
                              "hyperplane.services.httpd", "--port", str(names.PUBLIC_PORT),
                              "--name", "www"))
    for name, ready, pid in waiting:
        if not client.wait_until(lambda r=ready, p=pid: r.exists() or not procs.alive(p),
                                 READY_TIMEOUT) or not ready.exists():
            raise RuntimeError(f"{name} did not start; see {state.log(name.replace(':', '-'))}")
    if fabric_egress.nat_gateways(topology):
        _start_natgw(data, topology)


def _spawn(data: dict, name: str, ns: str, module: str, *args: str) -> tuple:
    ready = state.ready_file(name.replace(":", "-"))
    ready.unlink(missing_ok=True)
    pid = procs.spawn(ns, procs.python_module(module, *args, "--ready", str(ready)),
                      state.log(name.replace(":", "-")))
    data["procs"][name] = pid
    state.save(data)
    return name, ready, pid


def _start_natgw(data: dict, topology: Topology) -> None:
    sock = natgw_socket()
    pid = procs.spawn(names.PLANE_NS, procs.python_module(
        "hyperplane.natgw_dataplane", "--control", sock), state.log("natgw"))
    data["procs"]["natgw"] = pid
    state.save(data)

    def answering() -> bool:
        try:
            return natgw_request({"op": "ping"}).get("ok", False)
        except (client.UnreachableError, OSError):
            return False
    if not client.wait_until(lambda: answering() or not procs.alive(pid), READY_TIMEOUT) \
            or not procs.alive(pid):
        raise RuntimeError(f"the NAT gateway dataplane did not start; see {state.log('natgw')}")
    reply = natgw_request({"op": "config", "config": natgw_snapshot(topology)})
    if not reply.get("ok"):
        raise RuntimeError(f"the NAT gateways refused their configuration: {reply.get('error')}")

    def resolved() -> bool:
        gateways = natgw_request({"op": "stats"})["stats"]["enis"]
        return all(g.get("arp_resolved", 0) > 0 for g in gateways.values())
    if not client.wait_until(resolved, READY_TIMEOUT, 0.02):
        raise RuntimeError("the NAT gateways could not reach their subnets' routers")
