"""IP address management, ENI planning and environment placement (pure)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from netaddr import IPNetwork

from hyperplane.model import ipam, names
from hyperplane.model.document import load_topology
from hyperplane.model.enis import Eni, EniKey, eni_id, plan_enis, wanted_keys
from hyperplane.model.envs import choose_subnet, eni_for, new_env
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Topology

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
DOC = yaml.safe_load(QUICKSTART.read_text())


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """`code: examples/functions` resolves against the repository root."""
    monkeypatch.chdir(REPO)


def topology_with(*functions: dict, groups: tuple[str, ...] = ()) -> Topology:
    """The quickstart plus extra functions (and extra egress-only security groups)."""
    doc = copy.deepcopy(DOC)
    for group in groups:
        doc["vpcs"][0]["security_groups"].append(
            {"id": group, "egress": [{"protocol": "all", "cidr": "0.0.0.0/0"}]})
    doc["functions"] += list(functions)
    return parse_topology(doc, "test.yaml", str(QUICKSTART.parent))


def function(name: str, subnets: list[str] | None, groups: list[str]) -> dict:
    fn = {"name": name, "code": "examples/functions", "handler": "orders.handler"}
    if subnets is not None:
        fn["vpc_config"] = {"subnet_ids": subnets, "security_group_ids": groups}
    return fn


# -- ipam ---------------------------------------------------------------------------------


def test_allocate_in_subnet_skips_the_reserved_addresses() -> None:
    assert ipam.aws_reserved("10.0.1.0/24") == {"10.0.1.0", "10.0.1.1", "10.0.1.2",
                                                 "10.0.1.3", "10.0.1.255"}
    assert ipam.allocate_in_subnet("10.0.1.0/24", []) == "10.0.1.4"
    assert ipam.allocate_in_subnet("10.0.1.0/24", ["10.0.1.4", "10.0.1.6"]) == "10.0.1.5"


def test_a_28_holds_eleven_addresses_then_is_exhausted() -> None:
    used: list[str] = []
    for _ in range(11):
        used.append(ipam.allocate_in_subnet("10.0.3.16/28", used))
    assert used == [f"10.0.3.{i}" for i in range(20, 31)]
    with pytest.raises(ipam.AddressExhaustedError, match="10.0.3.16/28"):
        ipam.allocate_in_subnet("10.0.3.16/28", used)


def test_allocate_without_reservations_and_gateway() -> None:
    assert ipam.allocate(names.ENV_POOL, []) == "169.254.128.1"
    assert ipam.allocate("10.0.0.0/30", ["10.0.0.1"]) == "10.0.0.2"
    with pytest.raises(ipam.AddressExhaustedError):
        ipam.allocate("10.0.0.0/30", ["10.0.0.1"], reserved=["10.0.0.2"])
    assert (ipam.gateway("10.0.2.0/24"), ipam.prefixlen("10.0.2.0/24")) == ("10.0.2.1", 24)


@pytest.mark.parametrize("cidr", ["10.0.0.0/28", "10.0.0.0/31", "10.0.0.5/32", "fd00::/125"])
def test_allocate_many_takes_the_lowest_free_hosts_in_iter_hosts_order(cidr: str) -> None:
    hosts = [str(a) for a in IPNetwork(cidr).iter_hosts()]
    assert ipam.allocate_many(cidr, [], len(hosts)) == hosts
    used, reserved = hosts[::3], hosts[1:2]
    free = [h for h in hosts if h not in used and h not in reserved]
    assert ipam.allocate_many(cidr, used, len(free), reserved) == free
    if free:
        assert ipam.allocate(cidr, used, reserved) == free[0]
    with pytest.raises(ipam.AddressExhaustedError, match=cidr):
        ipam.allocate_many(cidr, used, len(free) + 1, reserved)


def test_a_burst_of_a_thousand_addresses_is_one_pass() -> None:
    first = ipam.allocate_many(names.ENV_POOL, [], 500)
    second = ipam.allocate_many(names.ENV_POOL, first, 500)
    assert ipam.allocate_many(names.ENV_POOL, [], 1000) == first + second
    assert second[0] == "169.254.129.245"  # 169.254.128.1 + 500


# -- ENIs ---------------------------------------------------------------------------------


def test_quickstart_needs_one_shared_eni_per_subnet() -> None:
    topo = load_topology(str(QUICKSTART))
    enis = plan_enis(topo, [])
    assert [(e.key.subnet_id, e.ip, e.index) for e in enis] == [
        ("subnet-a", "10.0.1.4", 0), ("subnet-b", "10.0.2.4", 1)]
    for eni in enis:
        assert eni.key == EniKey("vpc-app", eni.key.subnet_id, ("sg-lambda",))
        assert eni.functions == ("orders", "billing")
        assert eni.id == eni_id("111111111111", eni.key) and len(eni.id) == len("eni-") + 17
        assert (eni.plane_link, eni.vpc_link) == (f"hpi{eni.index}", f"hpn{eni.index}")
        assert eni.mac == names.mac(names.MAC_ENI, eni.index)
        assert eni.description.startswith("AWS Lambda VPC ENI-orders-")
        assert len(eni.description) == len("AWS Lambda VPC ENI-orders-") + 36  # a uuid
    assert len({e.id for e in enis}) == 2


def test_eni_avoids_host_addresses() -> None:
    doc = copy.deepcopy(DOC)
    doc["vpcs"][0]["hosts"][0]["ip"] = "10.0.1.4"
    enis = plan_enis(parse_topology(doc, "t.yaml", str(QUICKSTART.parent)), [])
    assert enis[0].ip == "10.0.1.5"


def test_a_different_security_group_set_gets_its_own_enis() -> None:
    topo = topology_with(function("reports", ["subnet-a", "subnet-b"], ["sg-lambda", "sg-x"]),
                         groups=("sg-x",))
    enis = plan_enis(topo, [])
    assert len(enis) == 4
    mine = [e for e in enis if e.functions == ("reports",)]
    assert [(e.key.subnet_id, e.key.security_group_ids, e.ip) for e in mine] == [
        ("subnet-a", ("sg-lambda", "sg-x"), "10.0.1.5"),
        ("subnet-b", ("sg-lambda", "sg-x"), "10.0.2.5")]
    assert len({e.id for e in enis}) == len({e.index for e in enis}) == 4


def test_security_group_order_does_not_matter() -> None:
    topo = topology_with(function("reports", ["subnet-a"], ["sg-x", "sg-lambda"]),
                         function("audit", ["subnet-a"], ["sg-lambda", "sg-x"]),
                         groups=("sg-x",))
    keys = wanted_keys(topo)
    assert keys[EniKey("vpc-app", "subnet-a", ("sg-lambda", "sg-x"))] == ("reports", "audit")
    assert len(plan_enis(topo, [])) == 3


def test_existing_enis_are_kept_when_planning_again() -> None:
    topo = load_topology(str(QUICKSTART))
    first = plan_enis(topo, [])
    assert plan_enis(topo, first) == first
    bigger = topology_with(function("reports", ["subnet-b"], ["sg-x"]), groups=("sg-x",))
    second = plan_enis(bigger, first)
    assert second[:2] == first
    assert [(e.index, e.ip, e.functions) for e in second[2:]] == [(2, "10.0.2.5", ("reports",))]


def test_unused_enis_are_left_out_and_functions_updated() -> None:
    bigger = topology_with(function("reports", ["subnet-b"], ["sg-x"]), groups=("sg-x",))
    before = plan_enis(bigger, [])
    doc = copy.deepcopy(DOC)
    doc["functions"][1]["vpc_config"]["subnet_ids"] = ["subnet-a"]
    after = plan_enis(parse_topology(doc, "t.yaml", str(QUICKSTART.parent)), before)
    assert [(e.id, e.functions) for e in after] == [
        (before[0].id, ("orders", "billing")), (before[1].id, ("orders",))]


def test_function_without_vpc_needs_no_eni() -> None:
    topo = topology_with(function("plain", None, []))
    assert len(plan_enis(topo, [])) == 2


def test_eni_dict_round_trip() -> None:
    for eni in plan_enis(load_topology(str(QUICKSTART)), []):
        assert Eni.from_dict(eni.to_dict()) == eni


# -- environments -------------------------------------------------------------------------


def test_new_env_spreads_a_function_over_its_subnets() -> None:
    topo = load_topology(str(QUICKSTART))
    enis = plan_enis(topo, [])
    envs = []
    for _ in range(5):
        envs.append(new_env(topo.function("orders"), envs, enis))
    assert [e.subnet_id for e in envs] == ["subnet-a", "subnet-b"] * 2 + ["subnet-a"]
    assert [e.index for e in envs] == list(range(5))
    assert [e.ip for e in envs] == [f"169.254.128.{i}" for i in range(1, 6)]
    by_subnet = {e.key.subnet_id: e.id for e in enis}
    assert all(env.eni_id == by_subnet[env.subnet_id] for env in envs)
    billing = new_env(topo.function("billing"), envs, enis)  # counted per function
    assert (billing.subnet_id, billing.index, billing.ip) == ("subnet-a", 5, "169.254.128.6")


def test_new_env_fills_the_lightest_subnet_first() -> None:
    topo = load_topology(str(QUICKSTART))
    enis = plan_enis(topo, [])
    orders = topo.function("orders")
    envs = [new_env(orders, [], enis)]
    envs.append(new_env(orders, envs, enis))
    envs.append(new_env(orders, envs, enis))
    del envs[1]  # the subnet-b environment goes away
    assert choose_subnet(orders, envs) == "subnet-b"


def test_env_records_and_names() -> None:
    topo = topology_with(function("plain", None, []))
    env = new_env(topo.function("plain"), [], [])
    assert (env.subnet_id, env.eni_id, env.id) == (None, None, "env-0")
    assert (env.netns, env.plane_link) == ("hp-e0", "hpe0")
    assert env.mac == names.mac(names.MAC_ENV, 0) != env.gateway_mac
    assert type(env).from_dict(env.to_dict()) == env


def test_eni_for_a_missing_eni_raises() -> None:
    topo = load_topology(str(QUICKSTART))
    with pytest.raises(LookupError, match="orders"):
        eni_for(topo.function("orders"), "subnet-a", [])
