"""VPC Flow Logs' pure parts: formats, records, windows, increments, file names."""

from __future__ import annotations

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model import flowlogs as fl
from hyperplane.model import flowwindow as fw
from hyperplane.model.parser import parse_topology

ENI = "eni-0123456789abcdef0"
INTERFACE = {"values": {"account-id": "111111111111", "interface-id": ENI,
                        "vpc-id": "vpc-app", "subnet-id": "subnet-a", "instance-id": None,
                        "region": "us-east-1", "az-id": "az1"},
             "ip": "10.0.1.4", "vpc_cidr": "10.0.0.0/16", "internet_route": False}


def test_the_default_format_is_version_2s_fourteen_fields() -> None:
    assert fl.DEFAULT_FIELDS == ("version", "account-id", "interface-id", "srcaddr",
                                 "dstaddr", "srcport", "dstport", "protocol", "packets",
                                 "bytes", "start", "end", "action", "log-status")
    assert fl.parse_format(fl.DEFAULT_FORMAT) == fl.DEFAULT_FIELDS
    assert fl.version(fl.DEFAULT_FIELDS) == 2


def test_a_custom_format_has_the_highest_version_of_its_fields() -> None:
    assert fl.version(fl.parse_format("${srcaddr} ${tcp-flags}")) == 3
    assert fl.version(fl.parse_format("${version} ${az-id}")) == 4
    assert fl.version(fl.parse_format("srcaddr flow-direction traffic-path")) == 5
    assert fl.version(fl.parse_format("${srcaddr} ${dstaddr}")) == 2


@pytest.mark.parametrize(("text", "reason"), [
    ("${srcaddr} ${nope}", "unknown field 'nope'"),
    ("${srcaddr} ${srcaddr}", "appears twice"),
    ("   ", "at least one field"),
])
def test_bad_formats_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        fl.parse_format(text)


def test_check_spec_names_the_field() -> None:
    assert fl.check_spec(None, None, None) == fl.FlowLogSpec("ALL", fl.DEFAULT_FORMAT, 600)
    for args, field in (((None, None, 30), "max_aggregation_interval"),
                        (("DENY", None, 60), "traffic_type"),
                        ((None, "${x}", 60), "format"),
                        ((None, None, True), "max_aggregation_interval")):
        with pytest.raises(ValueError) as caught:
            fl.check_spec(*args)
        assert caught.value.args[0] == field


def test_a_line_writes_dash_for_what_is_unknown() -> None:
    fields = fl.parse_format("${version} ${instance-id} ${srcaddr} ${packets}")
    assert fl.line(fields, {"version": 3, "srcaddr": "10.0.1.4", "packets": 0}) == \
        "3 - 10.0.1.4 0"


def test_s3_key_follows_the_s3_layout() -> None:
    key = fl.s3_key("111111111111", "us-east-1", "fl-0123456789abcdef0", 1_700_000_000,
                    b"body")
    head, name = key.rsplit("/", 1)
    assert head == "AWSLogs/111111111111/vpcflowlogs/us-east-1/2023/11/14"
    prefix = "111111111111_vpcflowlogs_us-east-1_fl-0123456789abcdef0_20231114T2213Z_"
    assert name.startswith(prefix) and name.endswith(".log.gz")
    assert len(name.removeprefix(prefix).removesuffix(".log.gz")) == 8


def test_windows_are_aligned_to_the_interval() -> None:
    assert fl.window_start(125.5, 60) == 120
    assert fl.window_start(1199, 600) == 600


def reading(packets: int, count: int, **kw: object) -> fw.Reading:
    values = {"interface_id": ENI, "src": "10.0.1.4", "dst": "10.0.1.10", "sport": 40000,
              "dport": 8080, "proto": 6, "action": "ACCEPT", "packets": packets,
              "bytes": count, **kw}
    return fw.Reading(**values)  # type: ignore[arg-type]


def test_counters_turn_cumulative_readings_into_increments() -> None:
    c = fw.Counters()
    assert c.step([reading(5, 500)], {ENI}) == []  # first read: the baseline only
    assert c.step([reading(8, 740, flags=fl.SYN)], {ENI}) == [
        reading(3, 240, flags=0, increment=True)]  # seen before: no opening flag
    assert c.step([reading(8, 740)], {ENI}) == []
    assert c.step([reading(2, 120)], {ENI}) == [reading(2, 120, increment=True)]  # anew
    new = reading(1, 60, sport=40001, flags=fl.SYN)
    assert c.step([reading(2, 120), new], {ENI}) == [
        reading(1, 60, sport=40001, flags=fl.SYN, increment=True)]


def test_unread_interfaces_keep_their_last_readings() -> None:
    c = fw.Counters()
    c.step([], {ENI})
    c.step([reading(4, 400)], {ENI})
    assert c.step([], {ENI}, frozenset({ENI})) == []  # its source failed this time
    assert c.step([reading(6, 600)], {ENI}) == [reading(2, 200, increment=True)]


def test_increments_pass_for_covered_interfaces_only() -> None:
    c = fw.Counters()
    rejected = reading(1, 60, action="REJECT", increment=True)
    assert c.step([rejected], {ENI}) == [rejected]
    assert c.step([rejected], set()) == []


def test_a_window_closes_with_its_flows_and_the_idle_span_as_one() -> None:
    w = fw.Window(60, 130)
    assert w.start == 120
    w.add([reading(3, 180, increment=True, flags=fl.SYN)], 131)
    w.add([reading(2, 120, increment=True, flags=fl.FIN)], 150)
    assert w.close(179) == []
    closed = w.close(185)
    assert [(c.start, c.end) for c in closed] == [(120, 180)]
    flow = closed[0].flows[reading(0, 0).key]
    assert (flow.packets, flow.bytes, flow.first, flow.last, flow.flags) == \
        (5, 300, 131, 150, fl.SYN | fl.FIN)
    jumped = w.close(185 + 14 * 86400)  # clock advance 14d
    assert [(c.start, c.end, c.flows) for c in jumped] == [
        (180, 240, {}), (240, fl.window_start(185 + 14 * 86400, 60), {})]


def test_records_write_flows_then_nodata_per_idle_interface() -> None:
    other = {**INTERFACE, "values": {**INTERFACE["values"], "interface-id": "eni-idle"},
             "ip": "10.0.1.5"}
    closed = fw.Closed(120, 180, {
        reading(0, 0).key: fw.Flow(3, 180, 131, 150, fl.SYN),
        reading(0, 0, src="10.0.1.10", dst="10.0.1.4", sport=8080, dport=40000).key:
            fw.Flow(2, 112, 131, 150, fl.SYN_ACK)})
    fields = fl.parse_format("${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} "
                             "${dstport} ${packets} ${bytes} ${start} ${end} ${action} "
                             "${log-status} ${tcp-flags} ${flow-direction} "
                             "${traffic-path} ${instance-id}")
    lines = [fl.line(fields, r) for r in
             fw.records(closed, {ENI: INTERFACE, "eni-idle": other}, fields)]
    assert lines == [
        f"5 {ENI} 10.0.1.4 10.0.1.10 40000 8080 3 180 131 150 ACCEPT OK 2 egress 1 -",
        f"5 {ENI} 10.0.1.10 10.0.1.4 8080 40000 2 112 131 150 ACCEPT OK 18 ingress - -",
        "5 eni-idle - - - - - - 120 180 - NODATA - - - -"]


def test_a_session_is_two_records_as_the_eni_sees_it() -> None:
    row = {"protocol": "tcp", "state": "ESTABLISHED", "replied": True, "eni": ENI,
           "original": {"src": "169.254.128.1", "sport": 43512, "dst": "10.0.1.10",
                        "dport": 8080},
           "reply": {"src": "10.0.1.10", "sport": 8080, "dst": "10.0.1.4", "dport": 1030},
           "packets": {"original": 5, "reply": 4}, "bytes": {"original": 470, "reply": 400}}
    out, back = fw.session_readings(row)
    assert (out.src, out.sport, out.dst, out.dport, out.packets, out.bytes, out.flags) == \
        ("10.0.1.4", 1030, "10.0.1.10", 8080, 5, 470 - 5 * 14, fl.SYN)
    assert (back.src, back.dst, back.dport, back.bytes, back.flags) == \
        ("10.0.1.10", "10.0.1.4", 1030, 400 - 4 * 14, fl.SYN_ACK)
    icmp = {**row, "protocol": "icmp", "state": None, "packets": {"original": 3, "reply": 0}}
    (only,) = fw.session_readings(icmp)
    assert (only.sport, only.dport, only.proto, only.flags) == (0, 0, 1, 0)


def document(flow_logs: object, where: str = "vpc") -> dict:
    vpc: dict = {"id": "vpc-app", "cidr": "10.0.0.0/16",
                 "subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24", "az": "az1"}],
                 "security_groups": [], "hosts": []}
    if where == "vpc":
        vpc["flow_logs"] = flow_logs
    else:
        vpc["subnets"][0]["flow_logs"] = flow_logs
    return {"account": "111111111111", "vpcs": [vpc], "functions": []}


def test_the_topology_names_flow_logs_on_vpcs_and_subnets() -> None:
    t = parse_topology(document(True), "t.yaml")
    assert t.vpcs[0].network.flow_logs == (("vpc-app", fl.FlowLogSpec()),)
    t = parse_topology(document({"format": "${srcaddr} ${flow-direction}",
                                 "max_aggregation_interval": 60,
                                 "traffic_type": "REJECT"}, "subnet"), "t.yaml")
    assert t.vpcs[0].network.flow_logs == (
        ("subnet-a", fl.FlowLogSpec("REJECT", "${srcaddr} ${flow-direction}", 60)),)
    assert parse_topology(document(False), "t.yaml").vpcs[0].network.flow_logs == ()


@pytest.mark.parametrize(("value", "where", "path", "reason"), [
    ({"max_aggregation_interval": 30}, "vpc", "vpcs[0].flow_logs.max_aggregation_interval",
     "must be 60 or 600"),
    ({"format": "${srcaddr} ${bogus}"}, "subnet", "vpcs[0].subnets[0].flow_logs.format",
     "unknown field 'bogus'"),
    ({"traffic": "ALL"}, "vpc", "vpcs[0].flow_logs.traffic", "unknown key"),
    ("yes", "vpc", "vpcs[0].flow_logs", "expected a mapping"),
])
def test_bad_flow_logs_name_file_field_and_reason(value: object, where: str, path: str,
                                                  reason: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(document(value, where), "t.yaml")
    assert f"t.yaml: {path}: " in str(caught.value) and reason in str(caught.value)
