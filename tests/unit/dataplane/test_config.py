"""The controller-to-dataplane snapshot: one schema both sides use, and its diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperplane.controller.snapshot import snapshot
from hyperplane.dataplane.config import (
    EniConfig,
    EnvConfig,
    Existing,
    NatSnapshot,
    Snapshot,
    plan,
    plan_gateways,
)
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis
from hyperplane.model.envs import new_env

ROOT = Path(__file__).resolve().parents[3]


def eni(ident: str, ip: str = "10.0.1.5", ifname: str = "hpi0") -> EniConfig:
    return EniConfig(ident, ifname, ip, "02:e1:00:00:00:00", "10.0.1.0/24", "10.0.1.1")


def env(ifname: str, eni_id: str | None, spill: tuple[str, ...] = (),
        ip: str = "169.254.128.1") -> EnvConfig:
    return EnvConfig(ifname, ip, "02:e0:00:00:00:00", "169.254.0.1", "02:e2:00:00:00:00",
                     eni_id, spill)


def test_the_controllers_snapshot_survives_the_wire() -> None:
    topology = load_topology(str(ROOT / "examples" / "quickstart.yaml"))
    enis = plan_enis(topology, [])
    envs = [new_env(topology.function("orders"), [], enis)]
    sent = snapshot(topology, enis, envs)
    received = Snapshot.from_dict(json.loads(json.dumps(sent.to_dict())))
    assert received == sent
    assert [e.id for e in received.enis] == [e.id for e in enis]
    assert received.envs[0].eni == envs[0].eni_id
    assert received.enis[0].egress and received.enis[0].egress[-1]["rule"] == "VPC resolver"


@pytest.mark.parametrize("data, field", [
    ({"enis": [{"id": "e"}]}, "enis[0]"),
    ({"envs": ["x"]}, "envs[0]"),
    ({"enis": [], "envs": [{"ifname": "hpe0"}]}, "envs[0]"),
])
def test_a_malformed_snapshot_is_refused_naming_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field.replace('[', '.').replace(']', '.')}"):
        Snapshot.from_dict(data)


def test_from_nothing_everything_opens() -> None:
    new = Snapshot((eni("a"),), (env("hpe0", "a"),))
    diff = plan(Existing(), new)
    assert [e.id for e in diff.open_enis] == ["a"] and diff.close_enis == ()
    assert [e.ifname for e in diff.open_envs] == ["hpe0"] and diff.close_envs == ()


def test_an_unchanged_snapshot_opens_and_closes_nothing() -> None:
    same = Snapshot((eni("a"),), (env("hpe0", "a"),))
    diff = plan(Existing.of(same), same)
    assert (diff.open_enis, diff.close_enis, diff.open_envs, diff.close_envs) == ((),) * 4
    assert [e.id for e in diff.enis] == ["a"]  # settings are set again every time


def test_a_moved_eni_is_closed_and_opened_again() -> None:
    old = Snapshot((eni("a"), eni("b", "10.0.1.6", "hpi1")))
    new = Snapshot((eni("a", "10.0.1.9"), eni("b", "10.0.1.6", "hpi1")))
    diff = plan(Existing.of(old), new)
    assert diff.close_enis == ("a",) and [e.id for e in diff.open_enis] == ["a"]


def test_gone_ports_close() -> None:
    old = Snapshot((eni("a"), eni("b", "10.0.1.6", "hpi1")), (env("hpe0", "a"), env("hpe1", "b")))
    new = Snapshot((eni("a"),), (env("hpe0", "a"),))
    diff = plan(Existing.of(old), new)
    assert diff.close_enis == ("b",) and diff.close_envs == ("hpe1",)


def test_a_readdressed_environment_link_is_reopened() -> None:
    old = Snapshot((eni("a"),), (env("hpe0", "a"),))
    new = Snapshot((eni("a"),), (env("hpe0", "a", ip="169.254.128.9"),))
    diff = plan(Existing.of(old), new)
    assert diff.close_envs == ("hpe0",) and [e.ip for e in diff.open_envs] == ["169.254.128.9"]


def test_spill_lists_keep_known_ids_once_in_order() -> None:
    new = Snapshot((eni("a"), eni("b", "10.0.1.6", "hpi1"), eni("c", "10.0.1.7", "hpi2")),
                   (env("hpe0", "a", ("c", "a", "zzz", "b", "c")), env("hpe1", None, ("a",)),
                    env("hpe2", "gone", ("a",))))
    envs = {e.ifname: e for e in plan(Existing(), new).envs}
    assert envs["hpe0"].spill == ("c", "b")
    assert (envs["hpe1"].eni, envs["hpe1"].spill) == (None, ())
    assert (envs["hpe2"].eni, envs["hpe2"].spill) == (None, ())


def test_nat_gateway_snapshots_diff_the_same_way() -> None:
    gw = {"id": "nat-a", "ifname": "hpz0", "ip": "10.0.0.5", "mac": "02:e3:00:00:00:00",
          "cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "elastic_ip": "198.51.100.10",
          "vpc_cidr": "10.0.0.0/16"}
    old = NatSnapshot.from_dict({"nat_gateways": [gw]})
    assert old.nat_gateways[0].port_range == (1024, 65535)
    assert plan_gateways(Existing.of(old), old) == ((), ())
    moved = NatSnapshot.from_dict({"nat_gateways": [dict(gw, ip="10.0.0.6")]})
    close, opened = plan_gateways(Existing.of(old), moved)
    assert close == ("nat-a",) and [g.ip for g in opened] == ["10.0.0.6"]
    assert NatSnapshot.from_dict(json.loads(json.dumps(old.to_dict()))) == old
