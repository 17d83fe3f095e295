"""The topology file's VPC networking keys: accounts, DNS zones, gateways, route tables."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import NatGateway, Route, function_account

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
CODE = str(EXAMPLES / "functions")


def doc() -> dict:
    return {
        "account": "111111111111",
        "vpcs": [{
            "id": "vpc-app", "cidr": "10.0.0.0/16", "account": "222222222222",
            "dns_zone": "corp.example", "internet_gateway": "igw-1",
            "nat_gateways": [{"id": "nat-1", "subnet": "subnet-pub",
                              "elastic_ip": "198.51.100.10"}],
            "subnets": [
                {"id": "subnet-pub", "cidr": "10.0.0.0/24", "az": "az1",
                 "route_table": {"routes": [{"destination": "0.0.0.0/0", "target": "igw-1"}]}},
                {"id": "subnet-priv", "cidr": "10.0.1.0/24", "az": "az1",
                 "route_table": {"routes": [{"destination": "0.0.0.0/0", "target": "nat-1"},
                                            {"destination": "10.0.0.0/16", "target": "local"}]}},
                {"id": "subnet-iso", "cidr": "10.0.2.0/24", "az": "az1"},
            ],
            "security_groups": [{"id": "sg-fn"}],
            "hosts": [{"name": "bastion", "subnet": "subnet-pub", "ip": "10.0.0.4"}],
        }, {"id": "vpc-plain", "cidr": "10.0.0.0/16",
            "subnets": [{"id": "subnet-x", "cidr": "10.0.1.0/24", "az": "az1"}],
            "security_groups": [{"id": "sg-x"}]}],
        "functions": [
            {"name": "f", "code": CODE, "handler": "orders.handler",
             "vpc_config": {"subnet_ids": ["subnet-pub"], "security_group_ids": ["sg-fn"]}},
            {"name": "g", "code": CODE, "handler": "orders.handler",
             "vpc_config": {"subnet_ids": ["subnet-x"], "security_group_ids": ["sg-x"]}},
            {"name": "h", "code": CODE, "handler": "orders.handler"},
        ],
    }


def test_networking_keys_parse() -> None:
    topology = parse_topology(doc(), "t.yaml")
    network = topology.vpc("vpc-app").network
    assert (network.account, network.dns_zone, network.internet_gateway) == \
        ("222222222222", "corp.example", "igw-1")
    # the NAT gateway takes the lowest free address after the reserved ones and the hosts
    assert network.nat_gateways == (NatGateway("nat-1", "subnet-pub", "198.51.100.10",
                                               "10.0.0.5", "vpc-app"),)
    assert network.routes("subnet-pub") == (Route("0.0.0.0/0", "igw-1"),)
    assert network.routes("subnet-priv") == (Route("0.0.0.0/0", "nat-1"),)  # local implicit
    assert network.routes("subnet-iso") == ()
    plain = topology.vpc("vpc-plain").network
    assert (plain.account, plain.dns_zone, plain.internet_gateway) == \
        ("111111111111", "vpc-plain.internal", None)
    assert [function_account(topology, f) for f in topology.functions] == \
        ["222222222222", "111111111111", "111111111111"]


def test_enis_use_their_vpc_account_and_skip_the_nat_gateway_address() -> None:
    topology = parse_topology(doc(), "t.yaml")
    enis = {e.key.subnet_id: e for e in plan_enis(topology, [])}
    assert enis["subnet-pub"].ip == "10.0.0.6"  # .4 bastion, .5 the NAT gateway
    same_key_other_account = copy.deepcopy(doc())
    del same_key_other_account["vpcs"][0]["account"]
    other = {e.key.subnet_id: e for e in plan_enis(
        parse_topology(same_key_other_account, "t.yaml"), [])}
    assert other["subnet-pub"].id != enis["subnet-pub"].id
    assert other["subnet-x"].id == enis["subnet-x"].id


def test_quickstart_is_unchanged() -> None:
    topology = load_topology(str(EXAMPLES / "quickstart.yaml"))
    network = topology.vpc("vpc-app").network
    assert network.account == "111111111111" and network.internet_gateway is None
    assert network.dns_zone == "vpc-app.internal"
    assert [e.id for e in plan_enis(topology, [])] == ["eni-b07b0294055dfe722",
                                                       "eni-3934a7c976ff616dd"]


V0 = "vpcs[0]"
RT = "vpcs[0].subnets[1].route_table.routes[0]"


def with_change(path: str, value: object) -> dict:
    data = doc()
    node = data
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    (f"{V0}.account", 22, f"{V0}.account", "quoted 12-digit string"),
    (f"{V0}.dns_zone", "Bad Zone", f"{V0}.dns_zone", "lower-case DNS name"),
    (f"{RT}.target", "nat-9", f"{RT}.target", "unknown route target 'nat-9'"),
    (f"{RT}.destination", "10.0.5.0/24", f"{RT}.destination", "overlaps the VPC CIDR"),
    (f"{RT}.destination", "0.0.0.1/0", f"{RT}.destination", "host bits set"),
    ("vpcs[0].subnets[1].route_table.routes[1].destination", "0.0.0.0/0",
     "vpcs[0].subnets[1].route_table.routes[1].destination", "duplicate route destination"),
    ("vpcs[0].subnets[1].route_table.routes[1].destination", "10.0.0.0/8",
     "vpcs[0].subnets[1].route_table.routes[1].target", "local routes only the VPC CIDR"),
    (f"{V0}.nat_gateways[0].subnet", "subnet-x", f"{V0}.nat_gateways[0].subnet",
     "unknown subnet 'subnet-x' in vpc-app"),
    (f"{V0}.nat_gateways[0].elastic_ip", "203.0.113.5", f"{V0}.nat_gateways[0].elastic_ip",
     "outside 198.51.100.0/24"),
    (f"{V0}.nat_gateways[0].elastic_ip", "198.51.100.010",
     f"{V0}.nat_gateways[0].elastic_ip", "not a valid IPv4"),
    (f"{V0}.nat_gateways[0].private_ip", "10.0.0.4", f"{V0}.nat_gateways[0].private_ip",
     "already used"),
    (f"{V0}.nat_gateways[0].private_ip", "10.0.0.1", f"{V0}.nat_gateways[0].private_ip",
     "not a usable address"),
    (f"{V0}.nat_gateways[0].id", "igw-1", f"{V0}.nat_gateways[0].id", "duplicate gateway id"),
    (f"{V0}.nat_gateways[0].colour", "red", f"{V0}.nat_gateways[0].colour", "unknown key"),
    ("vpcs[0].subnets[0].route_tables", {}, "vpcs[0].subnets[0].route_tables",
     "did you mean 'route_table'"),
])
def test_errors(path: str, value: object, field: str, reason: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(with_change(path, value), "t.yaml")
    assert caught.value.path == field
    assert reason in caught.value.reason


def test_duplicate_elastic_ip_across_vpcs() -> None:
    data = doc()
    data["vpcs"][1]["internet_gateway"] = "igw-2"
    data["vpcs"][1]["nat_gateways"] = [{"id": "nat-2", "subnet": "subnet-x",
                                        "elastic_ip": "198.51.100.10"}]
    with pytest.raises(TopologyError, match="duplicate Elastic IP"):
        parse_topology(data, "t.yaml")
