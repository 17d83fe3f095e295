"""What a topology needs of the machine, against what the machine allows (pure).

``up`` checks these before it builds anything (``emulator.machine``): a topology that
would run into a limit of the machine half way (a namespace that cannot be made, a
descriptor that cannot be opened, a neighbour that cannot be resolved) is refused with
the limit named and the number needed, and nothing is built.

``needs(topology, objs)`` counts, from the topology and the kernel objects ``desired``
gives for it:

    namespaces      one network namespace per router, host, environment, hp-plane,
                    hp-inet (``user.max_net_namespaces``)
    mounts          one bind mount per named namespace under /run/netns
                    (``fs.mount-max``, per mount namespace)
    neighbours      entries the kernel would resolve by ARP between our own objects
                    (pairs of kernel addresses on one link not covered by a permanent
                    entry): counted against ``net.ipv4.neigh.default.gc_thresh3``, which
                    caps the machine's non-permanent entries, all namespaces together;
                    ``fabric.neighbours`` makes it 0 (permanent entries are exempt)
    bridge_ports    the most ports on one subnet's bridge (the kernel's BR_MAX_PORTS:
                    1023 usable, not a setting)
    processes       tasks (processes and their threads) of the daemons and of the hosts'
                    own servers (an ``http`` service is a listener of the one services
                    process) (``kernel.pid_max``, ``kernel.threads-max``)
    open_files      descriptors the busiest process holds: ``up`` (netlink sockets), the
                    dataplane (a socket per ENI) or the services process (each host's
                    listeners) (``RLIMIT_NOFILE``, inherited by every process ``up``
                    starts), and all of them together (``fs.file-max``)

The costs per object are measured (docs/design-decisions.md): ``COSTS`` holds them.
``check(needs, machine)`` compares with the machine's ``Limit`` records (read by
``kernel.hostlimits``: each limit's value and what the machine uses already) and returns
a ``Shortfall`` per limit exceeded, in a fixed order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hyperplane.fabric.objects import Address, Bridge, Master, Neighbour, Netns, Veth
from hyperplane.model.enis import wanted_keys
from hyperplane.model.topology import Topology

BR_MAX_PORTS = 1023  # the kernel's BR_MAX_PORTS (1024) less port 0, which it never gives

# measured on a running topology (docs/design-decisions.md, "Machine limits")
COSTS = {
    "daemon_tasks": 8,          # tasks of one of our daemons (its threads included)
    "daemons": 6,               # dataplane, zygote, controller, supervisor, endpoint, up
    "host_service_tasks": 2,    # a host's own server process (not http) and its thread
    "vpc_tasks": 2,             # a VPC's resolver
    "daemon_files": 64,         # descriptors of a daemon before it serves anything
    "build_files": 160,         # ``up`` and the controller: netlink sockets (a cache of 128)
    "files_per_eni": 2,         # the dataplane: an ENI's packet socket and its ring's fd
    "files_per_service": 4,     # the services process: a host's listeners and a client
}


@dataclass(frozen=True)
class Needs:
    namespaces: int
    mounts: int
    neighbours: int       # non-permanent entries between our objects
    permanent: int        # permanent entries (exempt from gc_thresh3; reported)
    bridge_ports: int
    processes: int
    open_files: int       # the busiest process
    open_files_total: int


@dataclass(frozen=True)
class Limit:
    """A limit of the machine: its value and what is in use already (0: not counted)."""

    name: str      # the setting: a sysctl key, or RLIMIT_NOFILE
    value: int
    in_use: int = 0
    tunable: bool = True


@dataclass(frozen=True)
class Shortfall:
    name: str
    needed: int    # in use + what the topology needs
    value: int
    what: str      # what the topology needs it for

    def message(self) -> str:
        return (f"the machine's {self.name} is {self.value}, and this topology needs "
                f"{self.needed} ({self.what})")


def _segments(objs: frozenset) -> dict[tuple[str, str], tuple[str, str]]:
    """(namespace, link) -> its L2 segment: a bridge, or a veth pair not on one."""
    segment: dict[tuple[str, str], tuple[str, str]] = {}
    masters = {(o.ns, o.ifname): (o.ns, o.bridge) for o in objs if isinstance(o, Master)}
    for o in objs:
        if isinstance(o, Bridge):
            segment[(o.ns, o.name)] = (o.ns, o.name)
        elif isinstance(o, Veth):
            seg = masters.get((o.ns, o.name)) or masters.get((o.peer_ns, o.peer_name)) \
                or (o.ns, o.name)
            segment[(o.ns, o.name)] = segment[(o.peer_ns, o.peer_name)] = seg
    return segment


def arp_pairs(objs: frozenset) -> int:
    """Neighbour entries ARP could make between our kernel addresses: for each pair of
    namespaces with an address on one segment, the entries no permanent one covers."""
    segment = _segments(objs)
    on: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for o in objs:
        if isinstance(o, Address) and (o.ns, o.ifname) in segment:
            on.setdefault(segment[(o.ns, o.ifname)], []).append((o.ns, o.ifname, o.ip))
    covered = {(o.ns, o.ifname, o.ip) for o in objs if isinstance(o, Neighbour)}
    count = 0
    for members in on.values():
        for ns, ifname, _ in members:
            count += sum(1 for other_ns, _, ip in members
                         if other_ns != ns and (ns, ifname, ip) not in covered)
    return count


def needs(topology: Topology, objs: frozenset) -> Needs:
    """What ``topology`` (built as ``objs``, before any function runs) needs."""
    namespaces = sum(1 for o in objs if isinstance(o, Netns))
    # a subnet's bridge: its hosts, the file's ENIs and its NAT gateways
    enis_per_subnet = Counter(k.subnet_id for k in wanted_keys(topology))
    hosts_per_subnet = Counter(h.subnet for v in topology.vpcs for h in v.hosts)
    bridge_ports = max([hosts_per_subnet[s] + enis_per_subnet[s] + _natgws(topology, s)
                        for s in hosts_per_subnet.keys() | enis_per_subnet.keys()] or [0])
    hosts = [h for v in topology.vpcs for h in v.hosts]
    services = sum(1 for h in hosts if h.service is not None)
    own = sum(1 for h in hosts if h.service is not None and h.service.kind != "http")
    processes = (COSTS["daemons"] * COSTS["daemon_tasks"] + own * COSTS["host_service_tasks"] +
                 len(topology.vpcs) * COSTS["vpc_tasks"])
    enis = len(wanted_keys(topology))
    dataplane = COSTS["daemon_files"] + enis * COSTS["files_per_eni"]
    hub = COSTS["daemon_files"] + services * COSTS["files_per_service"]  # one services process
    open_files = max(COSTS["build_files"], dataplane, hub)
    total = (COSTS["daemons"] * COSTS["daemon_files"] + COSTS["build_files"] +
             enis * COSTS["files_per_eni"] + services * COSTS["files_per_service"])
    return Needs(namespaces, namespaces, arp_pairs(objs),
                 sum(1 for o in objs if isinstance(o, Neighbour)), bridge_ports,
                 processes, open_files, total)


def _natgws(topology: Topology, subnet_id: str) -> int:
    return sum(1 for v in topology.vpcs for n in v.network.nat_gateways if n.subnet == subnet_id)


# (limit name, Needs field, what it is for)
CHECKS = (
    ("user.max_net_namespaces", "namespaces", "network namespaces"),
    ("fs.mount-max", "mounts", "a bind mount per namespace"),
    ("net.ipv4.neigh.default.gc_thresh3", "neighbours",
     "neighbour entries resolved by ARP between its hosts, ENIs and routers"),
    ("bridge ports (BR_MAX_PORTS)", "bridge_ports", "hosts, ENIs and NAT gateways on one subnet"),
    ("kernel.pid_max", "processes", "processes and threads"),
    ("kernel.threads-max", "processes", "processes and threads"),
    ("RLIMIT_NOFILE", "open_files", "open files of one process"),
    ("fs.file-max", "open_files_total", "open files of all its processes"),
)


def check(needed: Needs, machine: dict[str, Limit]) -> list[Shortfall]:
    """Every limit ``needed`` exceeds (a limit the machine did not report is not checked)."""
    short: list[Shortfall] = []
    for name, field, what in CHECKS:
        limit = machine.get(name)
        if limit is None:
            continue
        total = limit.in_use + getattr(needed, field)
        if total > limit.value:
            short.append(Shortfall(name, total, limit.value, what))
    return short
