"""EC2's VPC Flow Logs operations on the endpoint: CreateFlowLogs, DescribeFlowLogs,
DeleteFlowLogs (boto3 params in, EC2's output fields out).

Flow logs are not the controller's: their definitions live in the state directory
(``kernel.flowfiles``) and the collector (``emulator.flowlogd``) writes their records,
so these handlers call ``emulator.flowlogs`` directly, as ``hyperplane flow-logs`` does.
Resources are a VPC, a subnet or a network interface (a Lambda ENI or a host's) of the
caller's account; one that does not exist is an ``Unsuccessful`` item with EC2's
``Invalid*ID.NotFound`` code, as AWS answers.  Every ``LogDestinationType`` is
accepted; the files are written under the state directory (``s3/<bucket>/<prefix>/``
for an ``s3`` destination's ARN, else ``flow-logs/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hyperplane.emulator import flowlogs, running
from hyperplane.endpoint.server import Call
from hyperplane.errors import ApiError, UsageError
from hyperplane.model import flowlogs as fl

NOT_FOUND = {"VPC": ("InvalidVpcID.NotFound", "The vpc ID '{}' does not exist"),
             "Subnet": ("InvalidSubnetID.NotFound", "The subnet ID '{}' does not exist"),
             "NetworkInterface": ("InvalidNetworkInterfaceID.NotFound",
                                  "The networkInterface ID '{}' does not exist")}
DESTINATIONS = ("cloud-watch-logs", "s3", "kinesis-data-firehose")
FILTERS = {"flow-log-id": "id", "resource-id": "resource_id", "traffic-type": "traffic_type",
           "log-destination-type": "destination_type"}


def _dry_run(call: Call) -> None:
    if call.params.get("DryRun"):
        raise ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag "
                       "is set.", 412)


def _invalid(message: str) -> ApiError:
    return ApiError("InvalidParameter", message)


def _spec(params: dict) -> fl.FlowLogSpec:
    try:
        return fl.check_spec(params.get("TrafficType") or "ALL", params.get("LogFormat"),
                             params.get("MaxAggregationInterval"))
    except ValueError as exc:
        field, reason = exc.args
        name = {"traffic_type": "TrafficType", "format": "LogFormat",
                "max_aggregation_interval": "MaxAggregationInterval"}[field]
        raise _invalid(f"{name}: {reason}") from None


def _destination(params: dict) -> tuple[str, str | None]:
    kind = params.get("LogDestinationType") or "cloud-watch-logs"
    if kind not in DESTINATIONS:
        raise ApiError("InvalidParameterValue", f"LogDestinationType '{kind}' is not one "
                       f"of {', '.join(DESTINATIONS)}")
    target = params.get("LogDestination")
    if kind == "s3" and not (target or "").startswith("arn:aws:s3:::"):
        raise _invalid("LogDestination must be an S3 bucket's ARN (arn:aws:s3:::bucket)")
    return kind, target if kind == "s3" else None


def create_flow_logs(call: Call) -> dict:
    _dry_run(call)
    params = call.params
    kind = params.get("ResourceType")
    if kind not in fl.RESOURCE_TYPES:
        raise ApiError("InvalidParameterValue", f"ResourceType '{kind}' is not one of "
                       f"{', '.join(fl.RESOURCE_TYPES)}")
    ids = list(params.get("ResourceIds") or [])
    if not ids:
        raise ApiError("MissingParameter", "The request must contain the parameter "
                       "ResourceId")
    spec = _spec(params)
    destination_type, destination = _destination(params)
    recorded = running.require()
    found = flowlogs.interfaces(recorded)
    good, unsuccessful = [], []
    for resource in ids:
        target = flowlogs.Target(kind, resource)
        try:
            flowlogs.check_target(recorded.topology, target, found)
            account = flowlogs.account_of(recorded.topology, target, found)
            if account != call.account:
                raise UsageError("another account's")
            good.append(target)
        except UsageError:
            code, message = NOT_FOUND[kind]
            unsuccessful.append({"Error": {"Code": code, "Message": message.format(resource)},
                                 "ResourceId": resource})
    made = flowlogs.create(good, spec, "api", destination,
                           {"destination_type": destination_type,
                            "log_group": params.get("LogGroupName")}) if good else []
    return {"ClientToken": params.get("ClientToken"), "FlowLogIds": [m["id"] for m in made],
            "Unsuccessful": unsuccessful}


def _row(d: dict) -> dict:
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(d["created"]))
    row = {"CreationTime": created, "DeliverLogsStatus": "SUCCESS",
           "FlowLogId": d["id"], "FlowLogStatus": "ACTIVE", "ResourceId": d["resource_id"],
           "TrafficType": d["traffic_type"],
           "LogDestinationType": d.get("destination_type") or "s3",
           "LogFormat": d["log_format"],
           "MaxAggregationInterval": d["max_aggregation_interval"], "Tags": []}
    if d.get("destination"):
        row["LogDestination"] = d["destination"]
    if d.get("log_group"):
        row["LogGroupName"] = d["log_group"]
    return row


def describe_flow_logs(call: Call) -> dict:
    _dry_run(call)
    recorded = running.require()
    found = flowlogs.interfaces(recorded)
    wanted = set(call.params.get("FlowLogIds") or [])
    rows = []
    for d in flowlogs.definitions():
        target = flowlogs.Target(d["resource_type"], d["resource_id"])
        try:
            if flowlogs.account_of(recorded.topology, target, found) != call.account:
                continue
        except UsageError:
            continue  # its resource is gone
        if wanted and d["id"] not in wanted:
            continue
        if all(_passes(d, f) for f in call.params.get("Filter") or []):
            rows.append(_row(d))
    return {"FlowLogs": rows}


def _passes(d: dict, flt: dict) -> bool:
    name = flt.get("Name")
    if name not in FILTERS:
        raise ApiError("InvalidParameterValue", f"The filter '{name}' is invalid")
    value = d.get(FILTERS[name]) or ("s3" if name == "log-destination-type" else None)
    return value in (flt.get("Values") or [])


def delete_flow_logs(call: Call) -> dict:
    _dry_run(call)
    ids = list(call.params.get("FlowLogIds") or [])
    if not ids:
        raise ApiError("MissingParameter", "The request must contain the parameter "
                       "FlowLogId")
    recorded = running.require()
    found = flowlogs.interfaces(recorded)
    mine = set()
    for d in flowlogs.definitions():
        try:
            if flowlogs.account_of(recorded.topology, flowlogs.Target(
                    d["resource_type"], d["resource_id"]), found) == call.account:
                mine.add(d["id"])
        except UsageError:
            mine.add(d["id"])  # its resource is gone: anyone may remove it
    _gone, unknown = flowlogs.delete([i for i in ids if i in mine])
    unknown += [i for i in ids if i not in mine]
    return {"Unsuccessful": [
        {"Error": {"Code": "InvalidFlowLogId.NotFound",
                   "Message": "These flow log ids in the input list are not found: "
                              f"[TotalCount: 1] {i}"},
         "ResourceId": i} for i in unknown]}


HANDLERS: dict[tuple[str, str], Callable[[Call], dict]] = {
    ("ec2", "CreateFlowLogs"): create_flow_logs,
    ("ec2", "DescribeFlowLogs"): describe_flow_logs,
    ("ec2", "DeleteFlowLogs"): delete_flow_logs,
}
