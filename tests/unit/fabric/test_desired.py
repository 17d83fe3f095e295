"""The desired kernel objects of a topology and the plans between two sets of them (pure)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hyperplane.fabric import desired as fabric
from hyperplane.fabric.desired import desired
from hyperplane.fabric.objects import (
    Action,
    Address,
    Bridge,
    Master,
    Neighbour,
    Netns,
    Route,
    Sysctl,
    Up,
    Veth,
    plan,
)
from hyperplane.model import names
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis
from hyperplane.model.envs import Env, new_env
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Topology

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
EMPTY: frozenset = frozenset()


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


@pytest.fixture
def topo() -> Topology:
    return load_topology(str(QUICKSTART))


def world(topo: Topology, env_count: int = 2) -> tuple[list, list[Env], frozenset]:
    enis = plan_enis(topo, [])
    envs: list[Env] = []
    for i in range(env_count):
        envs.append(new_env(topo.functions[i % len(topo.functions)], envs, enis))
    return enis, envs, desired(topo, enis, envs)


def interface_names(obj) -> list[str]:
    fields = {Netns: (), Sysctl: (), Bridge: ("name",), Veth: ("name", "peer_name"),
              Master: ("ifname", "bridge"), Up: ("ifname",), Address: ("ifname",),
              Route: ("ifname",), Neighbour: ("ifname",)}[type(obj)]
    return [getattr(obj, f) for f in fields if getattr(obj, f) is not None]


def namespace_names(obj) -> list[str]:
    return [obj.ns] + ([obj.peer_ns] if isinstance(obj, Veth) else [])


def stages(actions: list[Action]) -> list[int]:
    return [a.obj.stage for a in actions]


# -- desired ------------------------------------------------------------------------------


def test_quickstart_has_the_plane_router_and_host_namespaces(topo: Topology) -> None:
    _, _, objs = world(topo, env_count=0)
    assert fabric.namespaces(objs) == ["hp-h-db", "hp-plane", "hp-r0"]
    assert {Bridge("hp-r0", "hpbr0", "02:e6:0a:00:01:01"),
            Bridge("hp-r0", "hpbr1", "02:e6:0a:00:02:01")} <= objs
    assert Address("hp-r0", "hpbr0", "10.0.1.1", 24) in objs
    assert Address("hp-h-db", "eth0", "10.0.1.10", 24) in objs
    assert Route("hp-h-db", None, "10.0.1.1") in objs
    assert Sysctl("hp-r0", "net.ipv4.ip_forward", "1") in objs
    assert Sysctl("hp-plane", "net.ipv4.ip_forward", "1") not in objs


def test_enis_and_envs_are_wired_into_the_plane(topo: Topology) -> None:
    enis, envs, objs = world(topo)
    for eni, bridge in zip(enis, ("hpbr0", "hpbr1"), strict=True):
        assert Veth("hp-plane", eni.plane_link, "hp-r0", eni.vpc_link, mac=eni.mac) in objs
        assert Master("hp-r0", eni.vpc_link, bridge) in objs
        assert not any(isinstance(o, Address) and o.ns == "hp-plane" for o in objs)
    for env in envs:
        assert fabric.env_objects(env)[0] == Netns(env.netns)
        assert Address(env.netns, "eth0", env.ip, 32) in objs
        assert Route(env.netns, None, names.ENV_GATEWAY, "eth0") in objs


def test_every_name_fits_ifnamsiz_and_has_the_prefix(topo: Topology) -> None:
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["vpcs"][0]["hosts"].append({"name": "a-rather-long-hostname", "subnet": "subnet-b",
                                    "ip": "10.0.2.200"})
    big = parse_topology(copy.deepcopy(doc), "t.yaml", str(QUICKSTART.parent))
    _, _, objs = world(big, env_count=12)
    assert "hp-h1" in fabric.namespaces(objs)
    for obj in objs:
        for name in interface_names(obj) + namespace_names(obj):
            assert len(name) <= names.IFNAMSIZ, (name, obj)
            assert name.startswith("hp") or name in ("eth0", "lo"), (name, obj)
    for ns in fabric.namespaces(objs):
        assert ns.startswith(names.NS_PREFIX)


def test_interface_names_are_unique_per_namespace(topo: Topology) -> None:
    _, _, objs = world(topo, env_count=4)
    links = [(o.ns, o.name) for o in objs if isinstance(o, (Veth, Bridge))]
    links += [(o.peer_ns, o.peer_name) for o in objs if isinstance(o, Veth)]
    assert len(links) == len(set(links))


# -- plan ---------------------------------------------------------------------------------


def test_creating_everything_goes_in_stage_order(topo: Topology) -> None:
    _, _, objs = world(topo)
    actions = plan(EMPTY, objs)
    assert {a.verb for a in actions} == {"create"} and {a.obj for a in actions} == objs
    assert stages(actions) == sorted(stages(actions))
    kinds = [type(a.obj) for a in actions]
    last_netns = max(i for i, k in enumerate(kinds) if k is Netns)
    first_veth, last_veth = kinds.index(Veth), max(i for i, k in enumerate(kinds) if k is Veth)
    first_address = kinds.index(Address)
    last_address = max(i for i, k in enumerate(kinds) if k is Address)
    assert last_netns < first_veth and last_veth < first_address < last_address < kinds.index(Route)


def test_tearing_down_deletes_namespaces_only(topo: Topology) -> None:
    _, _, objs = world(topo)
    actions = plan(objs, EMPTY)
    assert {a.verb for a in actions} == {"delete"}
    assert sorted(a.obj.name for a in actions) == fabric.namespaces(objs)


def test_same_sets_need_no_action(topo: Topology) -> None:
    _, _, objs = world(topo)
    assert plan(objs, objs) == []
    assert plan(EMPTY, EMPTY) == []


def test_adding_an_env_creates_only_its_objects(topo: Topology) -> None:
    enis, envs, before = world(topo)
    extra = new_env(topo.function("billing"), envs, enis)
    after = desired(topo, enis, [*envs, extra])
    actions = plan(before, after)
    assert {a.verb for a in actions} == {"create"}
    assert {a.obj for a in actions} == set(fabric.env_objects(extra))
    assert stages(actions) == sorted(stages(actions))


def test_removing_an_env_deletes_its_namespace_and_plane_link(topo: Topology) -> None:
    enis, envs, before = world(topo)
    after = desired(topo, enis, envs[:1])
    gone = envs[1]
    actions = plan(before, after)
    assert {a.verb for a in actions} == {"delete"}
    assert [a.obj for a in actions] == [
        Veth("hp-plane", gone.plane_link, gone.netns, "eth0", mac=gone.gateway_mac,
             peer_mac=gone.mac),
        Netns(gone.netns)]  # Up(hp-plane, hpe1) goes with the veth


def test_removing_an_eni_deletes_its_veth_and_its_neighbour_entries_only(
        topo: Topology) -> None:
    enis, _, before = world(topo, env_count=0)
    after = desired(topo, enis[:1], [])
    actions = plan(before, after)
    gone = enis[1]
    assert actions == [Action("delete", Neighbour("hp-r0", "hpbr1", gone.ip, gone.mac)),
                       Action("delete", Veth("hp-plane", gone.plane_link, "hp-r0",
                                             gone.vpc_link, mac=gone.mac))]


def test_changing_an_address_replaces_it(topo: Topology) -> None:
    enis, envs, before = world(topo)
    moved = Env(envs[1].index, envs[1].function, "169.254.128.77", envs[1].subnet_id,
                envs[1].eni_id)
    actions = plan(before, desired(topo, enis, [envs[0], moved]))
    assert [(a.verb, type(a.obj)) for a in actions] == [("delete", Address),
                                                         ("create", Address)]
    assert actions[1].obj == Address(moved.netns, "eth0", "169.254.128.77", 32)


# -- plans reach their target (a small model of what the kernel does) ----------------------


def simulate(state: frozenset, actions: list[Action]) -> frozenset:
    """Apply a plan the way the kernel would: links take their ports, states, addresses along."""
    objs = set(state)
    for action in actions:
        obj = action.obj
        if action.verb == "create":
            objs.add(obj)
            continue
        objs.discard(obj)
        if isinstance(obj, Netns):
            objs = {o for o in objs if obj.name not in namespace_names(o)}
        elif isinstance(obj, (Veth, Bridge)):
            ends = {(obj.ns, obj.name)}
            if isinstance(obj, Veth):
                ends.add((obj.peer_ns, obj.peer_name))
            objs = {o for o in objs if not (isinstance(o, (Master, Up, Address, Neighbour))
                                            and (o.ns, o.ifname) in ends)}
    return frozenset(objs)


def test_plans_between_env_and_eni_sets_reach_their_target(topo: Topology) -> None:
    enis, envs, full = world(topo, env_count=3)
    variants = [EMPTY, full, desired(topo, enis, envs[:1]), desired(topo, enis[:1], []),
                desired(topo, [], envs[1:])]
    for old in variants:
        for new in variants:
            assert simulate(old, plan(old, new)) == new


def test_plan_reaches_its_target_when_host_indices_shift(topo: Topology) -> None:
    doc = yaml.safe_load(QUICKSTART.read_text())
    _, _, before = world(topo, env_count=0)
    doc["vpcs"][0]["hosts"].insert(0, {"name": "api", "subnet": "subnet-a", "ip": "10.0.1.20"})
    grown = parse_topology(doc, "t.yaml", str(QUICKSTART.parent))
    _, _, after = world(grown, env_count=0)
    # db moves from hph0 to hph1; api takes hph0, so Up/Master of hph0 and db's eth0
    # address exist before and after, and the plan never re-creates them
    assert simulate(before, plan(before, after)) == after
