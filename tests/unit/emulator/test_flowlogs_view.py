"""Flow logs' view of a running topology: interfaces, coverage, definitions, lines read back."""

from __future__ import annotations

from pathlib import Path

from hyperplane.controller.ec2view import host_interface_id
from hyperplane.emulator import flowlogs
from hyperplane.emulator.running import Running
from hyperplane.model import flowlogs as fl
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis

TOPOLOGY = Path(__file__).resolve().parents[2] / "integration" / "topologies" / "flowlogs.yaml"


def running() -> Running:
    topology = load_topology(str(TOPOLOGY))
    enis = [e.to_dict() for e in plan_enis(topology, [])]
    return Running({"enis": enis, "envs": [], "functions": []}, topology)


def test_interfaces_are_the_lambda_enis_and_the_hosts() -> None:
    found = flowlogs.interfaces(running())
    kinds = sorted((info["kind"], info.get("host")) for info in found.values())
    assert kinds == [("host", "cache"), ("host", "db"), ("lambda", None)]
    db = found[host_interface_id("db")]
    assert db["ip"] == "10.0.1.10" and db["netns"].startswith("hp-")
    assert db["values"] | {"interface-id": None} == {
        "account-id": "111111111111", "interface-id": None, "vpc-id": "vpc-app",
        "subnet-id": "subnet-a", "instance-id": None, "region": "us-east-1", "az-id": "az1",
        "sublocation-type": None, "sublocation-id": None}


def test_the_topology_flow_log_covers_its_vpc() -> None:
    r = running()
    (definition,) = flowlogs.topology_definitions(r.topology)
    assert (definition["resource_type"], definition["resource_id"],
            definition["max_aggregation_interval"], definition["origin"]) == \
        ("VPC", "vpc-app", 60, "topology")
    assert definition["id"] == flowlogs.topology_definitions(r.topology)[0]["id"]  # stable
    found = flowlogs.interfaces(r)
    assert flowlogs.covered(definition, found) == set(found)
    one = {**definition, "resource_type": "NetworkInterface",
           "resource_id": host_interface_id("db")}
    assert flowlogs.covered(one, found) == {host_interface_id("db")}


def test_lines_read_back_as_rows() -> None:
    fields = fl.parse_format("${version} ${account-id} ${srcaddr} ${srcport} ${action} "
                             "${log-status} ${tcp-flags}")
    row = flowlogs.parse_line(fields, "5 011111111111 10.0.1.4 1030 ACCEPT OK 19")
    assert row == {"version": 5, "account_id": "011111111111", "srcaddr": "10.0.1.4",
                   "srcport": 1030, "action": "ACCEPT", "log_status": "OK", "tcp_flags": 19}
    nodata = flowlogs.parse_line(fields, "5 011111111111 - - - NODATA -")
    assert nodata["srcaddr"] is None and nodata["log_status"] == "NODATA"
