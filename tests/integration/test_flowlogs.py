"""VPC Flow Logs from real packets: ACCEPT and REJECT records on the Lambda ENI and on the
hosts' interfaces, their packets and bytes, NODATA, the S3 layout, the CLI and boto3.

One ``up`` of ``topologies/flowlogs.yaml`` for the module (its VPC has a flow log with
60 s windows).  Traffic is made from an environment of ``orders`` with ``exec``; the test
waits until the collector's open window (``flow-logs --pending``) shows it, with the
ENI's counts (the dataplane's sessions) equal to the hosts' (their nftables sets), then
moves the emulated clock past the window and reads the log files back.
"""

from __future__ import annotations

import gzip
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from hyperplane.controller.ec2view import host_interface_id
from tests.integration import hp

pytestmark = pytest.mark.integration

TOPOLOGY = "tests/integration/topologies/flowlogs.yaml"
DB, CACHE = "10.0.1.10", "10.0.1.11"
PING_BYTES = 84  # ping's default: 56 bytes of data, 8 of ICMP, 20 of IP
CUSTOM = ("${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} "
          "${protocol} ${packets} ${bytes} ${action} ${log-status} ${tcp-flags} "
          "${flow-direction} ${traffic-path} ${vpc-id} ${subnet-id} ${instance-id} ${type}")
HTTP = r"""
import socket
s = socket.create_connection(("10.0.1.10", 8080), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
s.settimeout(2)
try:
    while s.recv(65536):
        pass
except OSError:
    pass  # a server that keeps the connection open: the client closes it
s.close()
"""
DENIED = r"""
import socket
try:
    socket.create_connection(("10.0.1.10", 5432), timeout=1.5)
except OSError as exc:
    print("refused:", exc)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


@pytest.fixture(scope="module")
def flowlogs_up(state_dir: Path) -> Iterator[dict]:
    try:
        hp.run_json("up", TOPOLOGY, "--api-port", str(PORT), state_dir=state_dir)
        (eni,) = hp.run_json("eni", "list", state_dir=state_dir)
        yield {"eni": eni["id"], "eni_ip": eni["ip"], "db": host_interface_id("db"),
               "cache": host_interface_id("cache")}
    finally:
        hp.run("down", state_dir=state_dir, check=False)
        hp.run("cleanup", state_dir=state_dir, check=False)


def json_lines(*args: str, state_dir: Path) -> list[dict]:
    out = hp.run("flow-logs", *args, "--json", state_dir=state_dir).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


KEY = ("flow_log_id", "interface_id", "srcaddr", "dstaddr", "srcport", "dstport",
       "protocol", "action", "version", "log_status")


def merged(rows: list[dict]) -> list[dict]:
    """Records of one flow in several windows (the traffic may straddle a window's end on
    the clock) as one, packets and bytes summed; NODATA records as they are."""
    out: dict[tuple, dict] = {}
    for n, row in enumerate(rows):
        key = (n,) if row.get("log_status") == "NODATA" else tuple(row.get(k) for k in KEY)
        if key in out:
            out[key] = {**out[key], "packets": out[key]["packets"] + row["packets"],
                        "bytes": out[key]["bytes"] + row["bytes"],
                        "tcp_flags": (out[key].get("tcp_flags") or 0) |
                        (row.get("tcp_flags") or 0)}
        else:
            out[key] = row
    return list(out.values())


def find(rows: list[dict], **match: object) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def one(rows: list[dict], **match: object) -> dict | None:
    found = find(rows, **match)
    return found[0] if len(found) == 1 else None


def function(*argv: str, state_dir: Path, check: bool = True) -> str:
    return hp.run("exec", "--function", "orders", "--", *argv, state_dir=state_dir,
                  check=check).stdout


def expected_seen(rows: list[dict], ids: dict) -> bool:
    """The traffic of the ``traffic`` fixture is all in ``rows`` (the VPC's flow log, in
    the default format), the ENI's counts equal to the hosts' for the same packets."""
    rows = find(rows, version=2)
    eni, eni_ip = ids["eni"], ids["eni_ip"]
    tcp_out = one(rows, interface_id=eni, srcaddr=eni_ip, dstaddr=DB, dstport=8080,
                  action="ACCEPT")
    if tcp_out is None:
        return False
    port = tcp_out["srcport"]
    tcp_back = one(rows, interface_id=eni, srcaddr=DB, dstport=port, action="ACCEPT")
    db_in = one(rows, interface_id=ids["db"], srcaddr=eni_ip, srcport=port, dstport=8080)
    db_out = one(rows, interface_id=ids["db"], dstaddr=eni_ip, dstport=port)
    if None in (tcp_back, db_in, db_out):
        return False
    same = (tcp_out["packets"], tcp_out["bytes"]) == (db_in["packets"], db_in["bytes"]) \
        and (tcp_back["packets"], tcp_back["bytes"]) == (db_out["packets"], db_out["bytes"])
    icmp = [one(rows, interface_id=i, srcaddr=s, dstaddr=d, protocol=1, action=a,
                packets=3, bytes=3 * PING_BYTES)
            for i, s, d, a in ((eni, eni_ip, DB, "ACCEPT"), (eni, DB, eni_ip, "ACCEPT"),
                               (ids["db"], eni_ip, DB, "ACCEPT"),
                               (ids["db"], DB, eni_ip, "ACCEPT"),
                               (eni, eni_ip, CACHE, "ACCEPT"),
                               (ids["cache"], eni_ip, CACHE, "REJECT"))]
    denied = one(rows, interface_id=eni, srcaddr=eni_ip, dstaddr=DB, dstport=5432,
                 action="REJECT")
    return same and None not in icmp and denied is not None


@pytest.fixture(scope="module")
def traffic(state_dir: Path, flowlogs_up: dict) -> dict:
    """The traffic made in one window, seen by the collector, then the window closed."""
    ids = flowlogs_up
    made = hp.run_json("flow-logs", "enable", "--eni", ids["eni"], "--format", CUSTOM,
                       "--max-aggregation-interval", "60", state_dir=state_dir)
    custom = made[0]["id"]
    assert hp.wait_for(lambda: custom in pending_ids(state_dir), 20)
    function(sys_python(), "-c", HTTP, state_dir=state_dir)
    function("ping", "-c", "3", "-i", "0.2", "-W", "1", DB, state_dir=state_dir)
    function("ping", "-c", "3", "-i", "0.2", "-W", "1", CACHE, state_dir=state_dir,
             check=False)
    assert "refused" in function(sys_python(), "-c", DENIED, state_dir=state_dir)
    seen: list[dict] = []

    def ready() -> bool:  # what was written meanwhile (a window ended), and the open one
        seen[:] = merged(json_lines(state_dir=state_dir) +
                         json_lines("--pending", state_dir=state_dir))
        return expected_seen(seen, ids)
    assert hp.wait_for(ready, 30), json.dumps(seen, indent=1)
    hp.run("clock", "advance", "60s", state_dir=state_dir)
    written: list[dict] = []

    def files() -> bool:
        written[:] = merged(json_lines(state_dir=state_dir))
        return expected_seen(written, ids)
    assert hp.wait_for(files, 20), json.dumps(written, indent=1)
    return {**ids, "rows": written, "custom": custom, "pending": seen}


def pending_ids(state_dir: Path) -> set[str]:
    """The flow logs the collector has an open window for (it has read their sources)."""
    try:
        view = json.loads((state_dir / "flow-logs" / "pending.json").read_text())
    except (OSError, ValueError):
        return set()
    return set(view.get("flow_logs") or {})


def sys_python() -> str:
    import sys
    return sys.executable


def test_the_topology_flow_log_is_listed(state_dir: Path, flowlogs_up: dict) -> None:
    rows = hp.run_json("flow-logs", "list", state_dir=state_dir)
    topo = find(rows, origin="topology")
    assert len(topo) == 1 and topo[0]["resource_type"] == "VPC"
    assert topo[0]["resource_id"] == "vpc-app" and topo[0]["max_aggregation_interval"] == 60
    assert topo[0]["id"].startswith("fl-") and len(topo[0]["id"]) == 20


def test_an_allowed_tcp_flow_is_accepted_on_the_eni_and_on_the_database(
        traffic: dict) -> None:
    rows, eni_ip = traffic["rows"], traffic["eni_ip"]
    out = one(rows, interface_id=traffic["eni"], srcaddr=eni_ip, dstaddr=DB, dstport=8080,
              version=2)
    assert out is not None and out["action"] == "ACCEPT" and out["log_status"] == "OK"
    assert out["protocol"] == 6 and out["account_id"] == "111111111111"
    assert out["packets"] >= 4 and out["bytes"] > out["packets"] * 40  # headers and request
    assert out["start"] <= out["end"]
    db = one(rows, interface_id=traffic["db"], srcaddr=eni_ip, srcport=out["srcport"],
             version=2)
    assert db is not None and db["action"] == "ACCEPT" and db["dstport"] == 8080
    assert (db["packets"], db["bytes"]) == (out["packets"], out["bytes"])


def test_pings_count_exactly_and_a_denied_one_is_rejected_by_its_host(traffic: dict) -> None:
    rows, eni_ip = traffic["rows"], traffic["eni_ip"]
    for interface, src, dst, action in (
            (traffic["eni"], eni_ip, DB, "ACCEPT"), (traffic["eni"], DB, eni_ip, "ACCEPT"),
            (traffic["db"], eni_ip, DB, "ACCEPT"), (traffic["eni"], eni_ip, CACHE, "ACCEPT"),
            (traffic["cache"], eni_ip, CACHE, "REJECT")):
        record = one(rows, interface_id=interface, srcaddr=src, dstaddr=dst, protocol=1,
                     version=2)
        assert record is not None, (interface, src, dst)
        assert (record["packets"], record["bytes"], record["action"]) == \
            (3, 3 * PING_BYTES, action)
        assert (record["srcport"], record["dstport"]) == (0, 0)
    assert not find(rows, interface_id=traffic["cache"], srcaddr=CACHE, protocol=1)


def test_an_egress_deny_is_rejected_at_the_eni(traffic: dict) -> None:
    record = one(traffic["rows"], interface_id=traffic["eni"], dstport=5432, version=2)
    assert record is not None
    assert (record["srcaddr"], record["dstaddr"], record["action"]) == \
        (traffic["eni_ip"], DB, "REJECT")
    assert record["packets"] >= 1 and record["bytes"] == record["packets"] * 60  # SYNs


def test_the_custom_format_has_the_v3_to_v5_fields(traffic: dict) -> None:
    rows = find(traffic["rows"], flow_log_id=traffic["custom"])
    assert rows and all(r["version"] == 5 and r["interface_id"] == traffic["eni"]
                        for r in rows)
    out = one(rows, srcaddr=traffic["eni_ip"], dstport=8080)
    back = one(rows, dstaddr=traffic["eni_ip"], srcport=8080)
    assert out["flow_direction"] == "egress" and out["traffic_path"] == 1
    assert back["flow_direction"] == "ingress" and back["traffic_path"] is None
    assert out["tcp_flags"] & 2 and back["tcp_flags"] & 18 == 18  # SYN, SYN-ACK
    assert (out["vpc_id"], out["subnet_id"], out["instance_id"], out["type"]) == \
        ("vpc-app", "subnet-a", None, "IPv4")


def test_files_follow_the_s3_layout(state_dir: Path, traffic: dict) -> None:
    root = state_dir / "flow-logs" / "AWSLogs" / "111111111111" / "vpcflowlogs" / "us-east-1"
    files = sorted(root.glob("*/*/*/*.log.gz"))
    assert files
    for path in files:
        account, service, region, flow_log, stamp, digest = \
            path.name.removesuffix(".log.gz").split("_")
        assert (account, service, region) == ("111111111111", "vpcflowlogs", "us-east-1")
        assert flow_log.startswith("fl-") and stamp.endswith("Z") and len(digest) == 8
        assert path.parent.relative_to(root).parts == (stamp[:4], stamp[4:6], stamp[6:8])
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        assert lines[0].split()[0] == "version" and len(lines) > 1


def test_text_output_filters_and_projects(state_dir: Path, traffic: dict) -> None:
    out = hp.run("flow-logs", "--eni", traffic["cache"], "--format",
                 "${srcaddr} ${dstaddr} ${protocol} ${action} ${vpc-id}",
                 state_dir=state_dir).stdout.splitlines()
    assert out[0] == "srcaddr dstaddr protocol action vpc-id"
    assert f"{traffic['eni_ip']} {CACHE} 1 REJECT -" in out[1:]  # no vpc-id in v2
    bad = hp.run("flow-logs", "--format", "${nope}", state_dir=state_dir, check=False)
    assert bad.returncode == 2 and "unknown field 'nope'" in bad.stderr


def test_an_idle_window_is_nodata(state_dir: Path, traffic: dict) -> None:
    before = len(json_lines(state_dir=state_dir))
    hp.run("clock", "advance", "60s", state_dir=state_dir)
    rows: list[dict] = []

    def nodata() -> bool:
        rows[:] = json_lines(state_dir=state_dir)[before:]  # the files of later windows
        return len(find(rows, log_status="NODATA", version=2)) >= 3
    assert hp.wait_for(nodata, 20), rows
    idle = find(rows, log_status="NODATA", version=2)
    assert {r["interface_id"] for r in idle} == {traffic["eni"], traffic["db"],
                                                 traffic["cache"]}
    for r in idle:
        assert r["end"] - r["start"] == 60 and r["srcaddr"] is None and r["action"] is None


def test_follow_prints_the_records_of_each_new_file(state_dir: Path, traffic: dict) -> None:
    shown = len(json_lines("--eni", traffic["cache"], state_dir=state_dir))
    proc = hp.start_capture("flow-logs", "--follow", "--json", "--eni", traffic["cache"],
                            state_dir=state_dir)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert hp.wait_for(lambda: len(lines) >= shown, 20)  # what was written before
        hp.run("clock", "advance", "60s", state_dir=state_dir)
        assert hp.wait_for(lambda: len(lines) > shown, 20), lines  # the new window's file
        record = json.loads(lines[shown])
        assert (record["interface_id"], record["log_status"]) == (traffic["cache"], "NODATA")
        proc.send_signal(signal.SIGINT)  # as Ctrl-C: it stops quietly
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_enable_and_disable_check_their_input(state_dir: Path, flowlogs_up: dict) -> None:
    bad = hp.run("flow-logs", "enable", "--vpc", "vpc-nope", state_dir=state_dir,
                 check=False)
    assert bad.returncode == 2 and "no VPC 'vpc-nope'" in bad.stderr
    bad = hp.run("flow-logs", "enable", "--subnet", "subnet-a", "--format", "${srcaddr} ${x}",
                 state_dir=state_dir, check=False)
    assert bad.returncode == 2 and "--format" in bad.stderr
    made = hp.run_json("flow-logs", "enable", "--subnet", "subnet-a", "--traffic-type",
                       "REJECT", state_dir=state_dir)
    assert made[0]["resource_type"] == "Subnet" and made[0]["traffic_type"] == "REJECT"
    gone = hp.run_json("flow-logs", "disable", "--subnet", "subnet-a", state_dir=state_dir)
    assert gone == [made[0]["id"]]
    again = hp.run("flow-logs", "disable", "--subnet", "subnet-a", state_dir=state_dir,
                   check=False)
    assert again.returncode == 2


def test_boto3_creates_describes_and_deletes_flow_logs(state_dir: Path,
                                                       flowlogs_up: dict) -> None:
    ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{PORT}",
                       region_name="us-east-1", aws_access_key_id="111111111111",
                       aws_secret_access_key="hyperplane")
    made = ec2.create_flow_logs(ResourceIds=[flowlogs_up["eni"], "eni-00000000000000000"],
                                ResourceType="NetworkInterface", TrafficType="REJECT",
                                LogDestinationType="s3",
                                LogDestination="arn:aws:s3:::audit/lambda",
                                LogFormat="${version} ${srcaddr} ${dstaddr} ${action}",
                                MaxAggregationInterval=60)
    (flow_log,) = made["FlowLogIds"]
    (missing,) = made["Unsuccessful"]
    assert missing["ResourceId"] == "eni-00000000000000000"
    assert missing["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"
    described = ec2.describe_flow_logs(FlowLogIds=[flow_log])["FlowLogs"]
    assert len(described) == 1
    row = described[0]
    assert (row["ResourceId"], row["TrafficType"], row["LogDestinationType"],
            row["LogDestination"], row["MaxAggregationInterval"], row["FlowLogStatus"]) == \
        (flowlogs_up["eni"], "REJECT", "s3", "arn:aws:s3:::audit/lambda", 60, "ACTIVE")
    assert row["LogFormat"] == "${version} ${srcaddr} ${dstaddr} ${action}"
    by_filter = ec2.describe_flow_logs(Filter=[{"Name": "resource-id",
                                                 "Values": ["vpc-app"]}])["FlowLogs"]
    assert [r["ResourceId"] for r in by_filter] == ["vpc-app"]
    with pytest.raises(ClientError) as caught:
        ec2.create_flow_logs(ResourceIds=["vpc-app"], ResourceType="VPC",
                             MaxAggregationInterval=30)
    assert caught.value.response["Error"]["Code"] == "InvalidParameter"
    assert ec2.delete_flow_logs(FlowLogIds=[flow_log])["Unsuccessful"] == []
    gone = ec2.delete_flow_logs(FlowLogIds=[flow_log])["Unsuccessful"]
    assert gone[0]["Error"]["Code"] == "InvalidFlowLogId.NotFound"
    assert not ec2.describe_flow_logs(FlowLogIds=[flow_log])["FlowLogs"]
