"""VPC Flow Logs: their definitions and their records, for the CLI and the AWS endpoint
(side effects: the state directory).

A flow log is defined for a VPC, a subnet or one network interface (``create``: from
``hyperplane flow-logs enable``, ``CreateFlowLogs``, or ``up`` for the topology's
``flow_logs:``); the collector (``emulator.flowlogd``) reads the definitions every poll
and writes the records.  ``interfaces`` is the one view of what can be logged: the
Lambda ENIs the controller recorded and the customer hosts' interfaces (NAT gateways'
interfaces are not logged).  ``show`` reads the log files back, filtered by interface
or VPC, as text or as rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hyperplane.controller.ec2view import host_interface_id
from hyperplane.emulator.running import Running, require
from hyperplane.errors import UsageError
from hyperplane.fabric.desired import host_netns
from hyperplane.kernel import flowfiles
from hyperplane.model import flowlogs as fl
from hyperplane.model.topology import Topology

NUMERIC = frozenset(("version", "srcport", "dstport", "protocol", "packets", "bytes", "start",
                     "end", "tcp-flags", "traffic-path"))


@dataclass(frozen=True)
class Target:
    resource_type: str   # VPC | Subnet | NetworkInterface
    resource_id: str


def _base(topology: Topology, vpc_id: str, subnet_id: str, interface_id: str) -> dict:
    vpc = topology.vpc(vpc_id)
    subnet = topology.subnet(subnet_id)
    internet = any(r.destination == "0.0.0.0/0" and r.target == vpc.network.internet_gateway
                   for r in vpc.network.routes(subnet_id)) if vpc.network.internet_gateway \
        else False
    return {"values": {"account-id": topology.vpc_account(vpc_id),
                       "interface-id": interface_id, "vpc-id": vpc_id,
                       "subnet-id": subnet_id, "instance-id": None, "region": fl.REGION,
                       "az-id": subnet.az, "sublocation-type": None,
                       "sublocation-id": None},
            "vpc_cidr": vpc.cidr, "internet_route": internet}


def interfaces(running: Running) -> dict[str, dict]:
    """Every interface that can be logged: id -> its record values, address, kind."""
    topology = running.topology
    found: dict[str, dict] = {}
    for eni in running.enis:
        if eni.key.vpc_id not in {v.id for v in topology.vpcs}:
            continue
        found[eni.id] = {**_base(topology, eni.key.vpc_id, eni.key.subnet_id, eni.id),
                         "ip": eni.ip, "kind": "lambda"}
    for vpc in topology.vpcs:
        for host in vpc.hosts:
            interface_id = host_interface_id(host.name)
            found[interface_id] = {**_base(topology, vpc.id, host.subnet, interface_id),
                                   "ip": host.ip, "kind": "host", "host": host.name,
                                   "netns": host_netns(topology, host.name)}
    return found


def covered(definition: dict, found: dict[str, dict]) -> set[str]:
    """The interfaces a flow log captures."""
    kind, resource = definition["resource_type"], definition["resource_id"]
    field = {"VPC": "vpc-id", "Subnet": "subnet-id",
             "NetworkInterface": "interface-id"}[kind]
    return {i for i, info in found.items() if info["values"][field] == resource}


def check_target(topology: Topology, target: Target, found: dict[str, dict]) -> None:
    """``UsageError`` when the resource does not exist (the CLI's exit 2)."""
    ids = {"VPC": {v.id for v in topology.vpcs},
           "Subnet": {s.id for v in topology.vpcs for s in v.subnets},
           "NetworkInterface": set(found)}[target.resource_type]
    if target.resource_id not in ids:
        what = {"VPC": "VPC", "Subnet": "subnet", "NetworkInterface": "network interface"}
        raise UsageError(f"no {what[target.resource_type]} {target.resource_id!r} in the "
                         "running topology")


def account_of(topology: Topology, target: Target, found: dict[str, dict]) -> str:
    """The account that owns a flow log's resource (``UsageError`` when it is gone)."""
    check_target(topology, target, found)
    if target.resource_type == "NetworkInterface":
        return found[target.resource_id]["values"]["account-id"]
    vpc_id = target.resource_id if target.resource_type == "VPC" else \
        topology.subnet(target.resource_id).vpc_id
    return topology.vpc_account(vpc_id)


def definition(target: Target, spec: fl.FlowLogSpec, origin: str, seed: str,
               destination: str | None = None, now: float | None = None) -> dict:
    return {"id": fl.flow_log_id(seed), "resource_type": target.resource_type,
            "resource_id": target.resource_id, "traffic_type": spec.traffic_type,
            "log_format": spec.log_format,
            "max_aggregation_interval": spec.max_aggregation_interval,
            "destination": destination, "origin": origin,
            "created": time.time() if now is None else now}


def topology_definitions(topology: Topology) -> list[dict]:
    """The flow logs the topology file asks for (``flow_logs:`` on VPCs and subnets)."""
    rows = []
    for vpc in topology.vpcs:
        subnets = {s.id for s in vpc.subnets}
        for resource, spec in vpc.network.flow_logs:
            kind = "Subnet" if resource in subnets else "VPC"
            rows.append(definition(Target(kind, resource), spec, "topology",
                                   f"{topology.vpc_account(vpc.id)}/{resource}/topology"))
    return rows


def create(targets: list[Target], spec: fl.FlowLogSpec, origin: str,
           destination: str | None = None, extra: dict | None = None) -> list[dict]:
    """New flow logs (one per target), recorded for the collector; a target that does not
    exist is a ``UsageError`` and nothing is recorded.  ``extra``: more fields to keep
    (the endpoint's destination type and log group)."""
    running = require()
    found = interfaces(running)
    for target in targets:
        check_target(running.topology, target, found)
    stamp = time.time_ns()
    made = [{**definition(t, spec, origin, f"{t.resource_id}/{stamp}/{n}", destination),
             **(extra or {})} for n, t in enumerate(targets)]
    flowfiles.update(lambda rows: rows + made)
    return made


def delete(ids: list[str]) -> tuple[list[str], list[str]]:
    """(deleted, unknown) flow log ids."""
    wanted = set(ids)
    gone: list[str] = []

    def change(rows: list[dict]) -> list[dict]:
        gone.extend(r["id"] for r in rows if r["id"] in wanted)
        return [r for r in rows if r["id"] not in wanted]
    flowfiles.update(change)
    return gone, [i for i in ids if i not in gone]


def disable(target: Target) -> list[str]:
    """Delete every flow log of a resource; the ids deleted."""
    ids = [r["id"] for r in flowfiles.load()
           if (r["resource_type"], r["resource_id"]) == (target.resource_type,
                                                         target.resource_id)]
    return delete(ids)[0]


def definitions() -> list[dict]:
    return flowfiles.load()


def roots(rows: list[dict]) -> list:
    """Where the files of these flow logs are (the default root always)."""
    found = {str(flowfiles.logs_dir()): flowfiles.logs_dir()}
    for row in rows:
        root = flowfiles.destination_root(row.get("destination"))
        found[str(root)] = root
    return list(found.values())


def parse_line(fields: tuple[str, ...], line: str) -> dict:
    """A record line as a row of our JSON (field names with ``_`` for ``-``; numbers as
    numbers; ``-`` as null)."""
    row: dict = {}
    for name, value in zip(fields, line.split(" "), strict=False):
        key = name.replace("-", "_")
        row[key] = None if value == "-" else \
            int(value) if name in NUMERIC and value.isdigit() else value
    return row


def matches(row: dict, eni: str | None, vpc: str | None, found: dict[str, dict]) -> bool:
    if eni and row.get("interface_id") != eni:
        return False
    if vpc:
        interface = found.get(row.get("interface_id") or "")
        in_vpc = row.get("vpc_id") == vpc or (interface is not None and
                                              interface["values"]["vpc-id"] == vpc)
        return in_vpc
    return True


def read_file(path) -> tuple[str, list[str]]:  # noqa: ANN001 - a Path
    """(the header line, the record lines) of one log file."""
    lines = flowfiles.read_log(path)
    return (lines[0], lines[1:]) if lines else ("", [])

