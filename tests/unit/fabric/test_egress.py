"""Kernel objects for VPC routing and egress (pure): route tables, gateways, hp-inet."""

from __future__ import annotations

from pathlib import Path

from hyperplane.fabric import desired as fabric
from hyperplane.fabric.objects import Address, Master, Netns, PolicyRule, Route, Sysctl, Veth
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def objects(name: str) -> frozenset:
    topology = load_topology(str(EXAMPLES / name))
    return fabric.desired(topology, plan_enis(topology, []), [])


def test_quickstart_gets_a_resolver_and_a_blackhole_default_and_no_internet() -> None:
    objs = objects("quickstart.yaml")
    assert Address("hp-r0", "lo", "10.0.0.2", 32) in objs
    assert Route("hp-r0", None, None, None, None, "blackhole") in objs
    assert fabric.namespaces(objs) == ["hp-h-db", "hp-plane", "hp-r0"]
    assert not any(isinstance(o, PolicyRule) for o in objs)


def test_route_tables_nat_and_internet_gateways() -> None:
    objs = objects("nat-gateway.yaml")
    router = "hp-r0"
    # subnet-public (hpbr0) -> igw, subnet-private (hpbr1) -> nat-a; isolated: main table
    assert PolicyRule(router, "hpbr0", 100, 100) in objs
    assert PolicyRule(router, "hpbr1", 101, 101) in objs
    assert not any(isinstance(o, PolicyRule) and o.iif == "hpbr2" for o in objs)
    assert Route(router, "0.0.0.0/0", "192.0.2.129", "hpx0", 100) in objs
    assert Route(router, "0.0.0.0/0", "10.0.0.4", "hpbr0", 101) in objs  # NAT's private ip
    for table in (100, 101):  # local: every subnet on its bridge; the rest of the VPC: none
        assert {Route(router, c, None, f"hpbr{i}", table) for i, c in
                enumerate(("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"))} <= objs
        assert Route(router, "10.0.0.0/16", None, None, table, "blackhole") in objs
    # the internet gateway: a /30 into hp-inet; the Elastic IP routed back both sides
    assert Veth(router, "hpx0", "hp-inet", "hpy0", mac="02:e7:c0:00:02:82",
                peer_mac="02:e7:c0:00:02:81") in objs
    assert Address(router, "hpx0", "192.0.2.130", 30) in objs
    assert Address("hp-inet", "hpy0", "192.0.2.129", 30) in objs
    assert Route(router, "198.51.100.10/32", "10.0.0.4", "hpbr0") in objs
    assert Route("hp-inet", "198.51.100.10/32", "192.0.2.130", "hpy0") in objs
    # the NAT gateway's link on the public subnet's bridge, served from hp-plane
    assert Veth("hp-plane", "hpz0", router, "hpm0", mac="02:e3:00:00:00:00") in objs
    assert Master(router, "hpm0", "hpbr0") in objs
    # the emulated internet: forwarding, strict reverse path, the server, nothing beyond
    assert Netns("hp-inet") in objs
    assert Sysctl("hp-inet", "net.ipv4.conf.all.rp_filter", "1") in objs
    assert Address("hp-inet", "lo", "203.0.113.10", 32) in objs
    assert Route("hp-inet", None, None, None, None, "blackhole") in objs
    assert not any(isinstance(o, Veth) and o.name == "hpw0" for o in objs)  # all in VPCs


def test_functions_without_vpc_get_lambdas_egress_link() -> None:
    objs = objects("no-vpc.yaml")
    assert Veth("hp-plane", "hpw0", "hp-inet", "hpw1", mac="02:e4:00:00:00:00") in objs
    assert Address("hp-inet", "hpw1", "192.0.2.9", 29) in objs
    assert not any(isinstance(o, Veth) and o.name.startswith("hpx") for o in objs)


def test_every_name_fits_and_two_tenants_do_not_collide() -> None:
    objs = objects("two-tenants.yaml")
    names = [getattr(o, "name", "") for o in objs] + [getattr(o, "peer_name", "") for o in objs]
    assert all(len(n) <= 15 for n in names)
    assert Address("hp-r0", "lo", "10.0.0.2", 32) in objs
    assert Address("hp-r1", "lo", "10.0.0.2", 32) in objs  # same address, own namespace
    hosts = sorted(n for n in fabric.namespaces(objs) if n.startswith("hp-h"))
    assert hosts == ["hp-h-blue-cache", "hp-h-blue-db", "hp-h-green-db"]
