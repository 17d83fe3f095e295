"""The VPC's own services around the fabric (side effects): firewalls, DNS, NAT, internet.

Called by ``emulator.run.up`` once the fabric is built (``start``), and by
``controller.sgchange`` after a rule change (``apply_firewalls``).  Each piece is rendered
by a pure module and applied or started here; every process is recorded in the state
database under ``procs`` before it is waited for, so ``down`` and ``cleanup`` find it:

* host security groups: ``policy.hostfw.render_host`` for every host, applied with
  ``nftables.apply`` (inside the host's namespace).  Group membership follows the
  topology and the ENIs: every configuration push of the controller calls
  ``follow_membership``, which renders again when the members changed.
* the VPC resolver in each router namespace on VPC base + 2, answering
  ``<host>.<zone>``, and the public test server of the emulated internet (``www`` in
  ``hp-inet`` on ``names.PUBLIC_SERVER:PUBLIC_PORT``): listeners of the one services
  process (``kernel.servicehub``), with the hosts' HTTP services;
  ``STATE_DIR/resolv/<vpc>.conf`` points environments, hosts and ``exec`` commands at
  the resolver (``resolv_file``).
* NAT gateways: one ``python -m hyperplane.dataplane --role natgw`` process in
  ``hp-plane`` (``natgw``) serving every gateway's link, configured with
  ``natgw_snapshot`` (a ``dataplane.config.NatSnapshot``) and ready once each gateway has
  resolved its subnet router.
"""

from __future__ import annotations

from hyperplane import jsonline
from hyperplane.dataplane.config import NatGatewayConfig, NatSnapshot
from hyperplane.fabric import egress
from hyperplane.fabric.desired import host_netns
from hyperplane.kernel import nftables, procs, servicehub, state, supervision
from hyperplane.model import ipam, names, settings
from hyperplane.model.enis import Eni
from hyperplane.model.topology import Topology, Vpc
from hyperplane.policy import hostfw, secgroups

READY_TIMEOUT = 15.0


def apply_firewalls(topology: Topology, enis: list[Eni], fresh: bool = False) -> None:
    """Render and apply every host's security groups for the current membership.

    The drop counters are carried over from the tables being replaced (``fresh``: there
    are none yet).
    """
    membership = secgroups.members(topology, enis)
    with nftables.batch():  # a context per host, freed together (``libnft.batch``)
        for vpc in topology.vpcs:
            resolver = ipam.resolver(vpc.cidr)
            for host in vpc.hosts:
                ns = host_netns(topology, host.name)
                start = {} if fresh else nftables.counters(ns, hostfw.TABLE)
                nftables.apply(ns, hostfw.render_host(topology, host, membership, resolver,
                                                      start))


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


def natgw_snapshot(topology: Topology) -> NatSnapshot:
    config = settings.nat_gateway(topology.settings)
    gateways = []
    for k, nat in enumerate(egress.nat_gateways(topology)):
        subnet = topology.subnet(nat.subnet)
        gateways.append(NatGatewayConfig(
            nat.id, names.natgw_plane_link(k), nat.private_ip, names.mac(names.MAC_NATGW, k),
            subnet.cidr, ipam.gateway(subnet.cidr), nat.elastic_ip,
            topology.vpc(nat.vpc_id).cidr, config["connections_per_destination"],
            tuple(config["port_range"]), float(config["idle_timeout"])))
    return NatSnapshot(tuple(gateways))


def natgw_request(message: dict) -> dict:
    return jsonline.request(state.natgw_socket(), message)


def start(data: dict, topology: Topology, enis: list[Eni]) -> None:
    """Everything a freshly built topology needs before its functions become Active."""
    data.pop("membership", None)
    follow_membership(data, topology, enis)  # every host's firewall, fresh
    sync(data, topology)
    if egress.nat_gateways(topology):
        _start_natgw(data, topology)


def _resolver_files(vpc: Vpc) -> None:
    """The resolv.conf pointing at the VPC's resolver."""
    path = state.path("resolv", f"{vpc.id}.conf")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# hyperplane: the resolver of {vpc.id}\n"
                    f"nameserver {ipam.resolver(vpc.cidr)}\n"
                    f"search {vpc.network.dns_zone}\noptions timeout:1 attempts:2\n")


def stop_gone(data: dict, topology: Topology) -> None:
    """Close the listeners of namespaces about to go (resolvers of VPCs, hosts the
    topology no longer has) before their namespaces are removed."""
    servicehub.sync(data, topology, partial=True)
    for vpc_id in {p.stem for p in state.path("resolv").glob("*.conf")} - \
            {v.id for v in topology.vpcs}:
        state.path("resolv", f"{vpc_id}.conf").unlink(missing_ok=True)


def sync(data: dict, topology: Topology) -> None:
    """What the topology's VPC services lack: a resolver per VPC, the public server when
    there is an internet, every host's HTTP service (the services process's listeners;
    idempotent: what is served is left alone)."""
    for vpc in topology.vpcs:
        _resolver_files(vpc)
    servicehub.sync(data, topology)


def _start_natgw(data: dict, topology: Topology) -> None:
    sock = state.natgw_socket()
    entry = supervision.spec(names.PLANE_NS, procs.python_module(
        "hyperplane.dataplane", "--role", "natgw", "--control", sock, "--table",
        state.shm_path("natgw"), "--capacity", str(_natgw_capacity(topology))),
        state.log("natgw"), {"ping": sock}, after="natgw")
    pid = supervision.spawn(entry)
    data["procs"]["natgw"] = pid
    data.setdefault("supervise", {})["natgw"] = entry
    state.save(data)
    supervision.wait_ready(entry, pid, "the NAT gateway dataplane")
    configure_natgw(topology)


def _natgw_capacity(topology: Topology) -> int:
    """Sessions the NAT gateways' table holds: as the dataplane's (a sparse file)."""
    return int(settings.dataplane(topology.settings)["max_sessions"])


def configure_natgw(topology: Topology) -> None:
    """The NAT gateways' configuration, once their process answers (at ``up``, and again
    after the supervisor restarted it), then until each resolved its subnet's router."""
    reply = natgw_request({"op": "config", "config": natgw_snapshot(topology).to_dict()})
    if not reply.get("ok"):
        raise RuntimeError(f"the NAT gateways refused their configuration: {reply.get('error')}")

    def resolved() -> bool:
        gateways = natgw_request({"op": "stats"})["stats"]["enis"]
        return all(g.get("arp_resolved", 0) > 0 for g in gateways.values())
    if not procs.wait_until(resolved, READY_TIMEOUT, 0.02):
        raise RuntimeError("the NAT gateways could not reach their subnets' routers")
