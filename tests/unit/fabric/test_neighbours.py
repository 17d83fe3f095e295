"""Permanent neighbour entries (``fabric.neighbours``), the machine-limit check (``limits``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.fabric import limits
from hyperplane.fabric.desired import desired
from hyperplane.fabric.neighbours import host_namespaces
from hyperplane.fabric.objects import Action, Bridge, Neighbour, Veth, plan
from hyperplane.model import names
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis
from hyperplane.model.envs import new_env
from hyperplane.model.generate import generate
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Topology

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


@pytest.fixture
def big() -> Topology:
    """2 VPCs x 3 subnets x 4 hosts, one function per VPC (an ENI per subnet)."""
    return parse_topology(generate(2, 3, 4, 2), "big.yaml", str(REPO))


def macs_on_links(objs: frozenset) -> set[str]:
    """Every MAC the fabric sets on a link (bridges, veth ends)."""
    found = {o.mac for o in objs if isinstance(o, Bridge) and o.mac}
    for o in objs:
        if isinstance(o, Veth):
            found |= {m for m in (o.mac, o.peer_mac) if m}
    return found


def test_every_host_knows_its_gateway_and_every_member_of_its_subnet(big: Topology) -> None:
    enis = plan_enis(big, [])
    objs = desired(big, enis, [])
    spaces = host_namespaces(big)
    for vpc in big.vpcs:
        router = names.router_ns(big.layout.vpc(vpc.id))
        for subnet in vpc.subnets:
            bridge = names.bridge(big.layout.subnet(subnet.id))
            members = {h.ip for h in vpc.hosts if h.subnet == subnet.id} | \
                {e.ip for e in enis if e.key.subnet_id == subnet.id}
            gateway = f"{subnet.cidr.rsplit('.', 1)[0]}.1"
            assert {o.ip for o in objs if isinstance(o, Neighbour) and o.ns == router
                    and o.ifname == bridge} == members
            for host in (h for h in vpc.hosts if h.subnet == subnet.id):
                held = {o.ip for o in objs if isinstance(o, Neighbour)
                        and o.ns == spaces[host.name]}
                assert held == (members - {host.ip}) | {gateway}


def test_every_entry_names_a_mac_the_fabric_sets_on_a_link(big: Topology) -> None:
    enis = plan_enis(big, [])
    envs = [new_env(big.functions[0], [], enis)]
    objs = desired(big, enis, envs)
    on_links = macs_on_links(objs)
    entries = [o for o in objs if isinstance(o, Neighbour)]
    assert entries and {o.mac for o in entries} <= on_links
    # one address, one MAC, within a namespace
    seen: dict[tuple[str, str], str] = {}
    for o in entries:
        assert seen.setdefault((o.ns, o.ip), o.mac) == o.mac
    assert Neighbour(envs[0].netns, "eth0", names.ENV_GATEWAY, envs[0].gateway_mac) in objs


def test_host_and_router_macs_depend_on_the_address_only() -> None:
    assert names.host_mac("10.1.2.10") == "02:e5:0a:01:02:0a"
    assert names.router_mac("10.1.2.1") == "02:e6:0a:01:02:01"
    assert len({names.host_mac(f"10.0.0.{i}") for i in range(256)}) == 256


def test_nat_gateways_and_internet_gateways_are_known() -> None:
    topo = load_topology(str(REPO / "examples" / "nat-gateway.yaml"))
    objs = desired(topo, [], [])
    nat_macs = {o.mac for o in objs if isinstance(o, Veth) and o.name.startswith("hpz")}
    assert nat_macs and nat_macs <= {o.mac for o in objs if isinstance(o, Neighbour)}
    assert any(o.ns == names.INET_NS for o in objs if isinstance(o, Neighbour))


def test_an_eni_made_at_run_time_brings_its_entries_and_takes_them_when_it_goes(
        big: Topology) -> None:
    enis = plan_enis(big, [])
    first, rest = enis[0], enis[1:]
    before, after = desired(big, rest, []), desired(big, enis, [])
    made = [a.obj for a in plan(before, after) if isinstance(a.obj, Neighbour)]
    hosts = [h for v in big.vpcs for h in v.hosts if h.subnet == first.key.subnet_id]
    assert len(made) == len(hosts) + 1  # each host of its subnet, and the router
    assert all((o.ip, o.mac) == (first.ip, first.mac) for o in made)
    gone = plan(after, before)
    assert sorted(a.verb for a in gone if isinstance(a.obj, Neighbour)) == \
        ["delete"] * len(made)
    # entries are deleted before the link, and made after it
    verbs = [(a.verb, type(a.obj)) for a in gone]
    assert verbs.index(("delete", Neighbour)) < verbs.index(("delete", Veth))


def test_a_removed_subnet_takes_its_entries_with_its_bridge(big: Topology) -> None:
    doc = generate(2, 3, 0, 0)
    small = parse_topology(doc, "s.yaml", str(REPO))
    doc["vpcs"][0]["subnets"].pop()
    smaller = parse_topology(doc, "s.yaml", str(REPO))
    actions = plan(desired(small, [], []), desired(smaller, [], []))
    assert actions == [Action("delete", Bridge("hp-r0", "hpbr2", names.router_mac("10.1.2.1")))]


# -- the machine-limit check ----------------------------------------------------------------


def test_permanent_entries_leave_nothing_to_arp_and_without_them_the_count_is_quadratic(
        big: Topology) -> None:
    objs = desired(big, [], [])
    assert limits.arp_pairs(objs) == 0
    bare = frozenset(o for o in objs if not isinstance(o, Neighbour))
    # per subnet: 4 hosts and the router, each resolving the 4 others
    assert limits.arp_pairs(bare) == 2 * 3 * 5 * 4


def test_needs_count_namespaces_entries_ports_and_files(big: Topology) -> None:
    objs = desired(big, [], [])
    needed = limits.needs(big, objs)
    assert needed.namespaces == 1 + 2 + 24  # hp-plane, routers, hosts
    assert needed.mounts == needed.namespaces
    assert needed.neighbours == 0
    assert needed.permanent == sum(1 for o in objs if isinstance(o, Neighbour))
    assert needed.bridge_ports == 4 + 1  # 4 hosts and the VPC's function ENI
    assert needed.open_files >= limits.COSTS["build_files"]


def test_check_names_each_limit_exceeded_with_the_number_needed(big: Topology) -> None:
    needed = limits.needs(big, desired(big, [], []))
    machine = {"user.max_net_namespaces": limits.Limit("user.max_net_namespaces", 20, 3),
               "RLIMIT_NOFILE": limits.Limit("RLIMIT_NOFILE", 100),
               "fs.file-max": limits.Limit("fs.file-max", 10**6, 2000),
               "net.ipv4.neigh.default.gc_thresh3":
                   limits.Limit("net.ipv4.neigh.default.gc_thresh3", 1024)}
    short = limits.check(needed, machine)
    assert [s.name for s in short] == ["user.max_net_namespaces", "RLIMIT_NOFILE"]
    assert short[0].needed == 3 + 27 and short[0].value == 20
    assert "RLIMIT_NOFILE is 100, and this topology needs 160" in short[1].message()
    roomy = {k: limits.Limit(k, 10**9) for k in machine}
    assert limits.check(needed, roomy) == []


def test_a_subnet_past_the_bridge_port_limit_is_refused() -> None:
    doc = generate(1, 1, 0, 0)
    doc["vpcs"][0]["subnets"][0]["cidr"] = "10.1.0.0/20"
    doc["vpcs"][0]["hosts"] = [{"name": f"h{i}", "subnet": "subnet-1-0",
                                "ip": f"10.1.{i // 200}.{10 + i % 200}"} for i in range(1030)]
    topo = parse_topology(doc, "ports.yaml", str(REPO))
    needed = limits.needs(topo, frozenset())  # ports come from the topology itself
    short = limits.check(needed, {"bridge ports (BR_MAX_PORTS)": limits.Limit(
        "bridge ports (BR_MAX_PORTS)", limits.BR_MAX_PORTS, tunable=False)})
    assert [(s.name, s.needed) for s in short] == [("bridge ports (BR_MAX_PORTS)", 1030)]
