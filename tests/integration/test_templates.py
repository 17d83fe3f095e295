"""CloudFormation and SAM templates as topologies, end to end: up, invoke, the database
sees the ENI's address, ENI counts, ``reach`` verdicts, down; bad templates refused.

The templates are ``examples/templates``, written in the style of the public examples.
Each test brings one stack up and down (one topology at a time on the machine).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.integration import hp

T = "examples/templates"


@contextmanager
def stack(state_dir: Path, template: str, *args: str) -> Iterator[dict]:
    try:
        yield hp.run_json("up", template, *args, state_dir=state_dir)
    finally:
        hp.run("down", state_dir=state_dir, check=False)
        hp.run("cleanup", state_dir=state_dir, check=False)


def invoke(state_dir: Path, name: str, payload: dict | None = None) -> dict:
    """The whole reply of a successful invocation (``--json``)."""
    return hp.run_json("invoke", name, "--payload", json.dumps(payload or {}),
                       state_dir=state_dir)


def physical(status: dict, logical_id: str) -> str:
    return next(r["physical_id"] for r in status["stack"]["resources"]
                if r["logical_id"] == logical_id)


def eni_ips(status: dict) -> set[str]:
    return {e["ip"] for e in status["eni_sets"]}


def verdicts(state_dir: Path) -> dict[tuple[str, str], str]:
    return {(r["source"], r["target"]): r["verdict"]
            for r in hp.run_json("reach", state_dir=state_dir)["results"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sam_app_globals_vpcconfig_and_mysql(state_dir: Path) -> None:
    port = free_port()
    with stack(state_dir, f"{T}/sam-app/template.yaml", "--stack-name", "orders",
               "--api-port", str(port)) as status:
        create, listing = physical(status, "CreateOrder"), physical(status, "ListOrders")
        assert create.startswith("orders-CreateOrder-") and len(create) == 31
        # both functions share both subnets and the group: one ENI per subnet, shared
        assert len(status["eni_sets"]) == 2
        assert all(sorted(e["functions"]) == sorted([create, listing])
                   for e in status["eni_sets"])
        db = next(h for h in status["hosts"] if h["name"] == "database")
        assert (db["service"], db["port"]) == ("mysql", 3306)
        skipped = status["stack"]["skipped"]
        assert "skipped AWS::ApiGateway::RestApi ServerlessRestApi (not emulated)" in skipped
        reply = invoke(state_dir, "CreateOrder", {"item": "book"})["result"]
        assert "MariaDB" in reply["server"]
        user, _, client = reply["seen_as"].partition("@")
        assert user == "orders" and client in eni_ips(status)
        assert invoke(state_dir, "ListOrders")["result"]["items"] == ["book"]
        lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}",
                           region_name="us-east-1", aws_access_key_id="123456789012",
                           aws_secret_access_key="x", config=Config(retries={"max_attempts": 0}))
        config = lam.get_function_configuration(FunctionName="ListOrders")
        assert config["FunctionName"] == listing and config["Environment"]["Variables"][
            "DB_HOST"] == db["ip"]
        cells = verdicts(state_dir)
        assert cells[create, "database:3306"] == "allowed"


def test_cloudformation_vpc_rds_postgres_and_inline_python(state_dir: Path) -> None:
    with stack(state_dir, f"{T}/rds-postgres.yaml") as status:
        fn = physical(status, "Inventory")
        assert fn.startswith("rds-postgres-Inventory-")
        db = next(h for h in status["hosts"] if h["name"] == "db")
        assert db["subnet"] == physical(status, "DataSubnet")
        assert status["stack"]["outputs"]["Endpoint"] == f"{db['ip']}:5432"
        assert status["stack"]["parameters"]["DbPassword"] == "****"
        reply = invoke(state_dir, "Inventory")["result"]
        assert reply["server"].startswith("PostgreSQL")
        assert reply["seen_as"] in eni_ips(status)
        assert len(status["eni_sets"]) == 1
        assert verdicts(state_dir)[fn, "db:5432"] == "allowed"


def test_parameters_conditions_cidr_and_azs(state_dir: Path) -> None:
    with stack(state_dir, f"{T}/parameters.yaml", "--parameter-overrides",
               "Environment=prod", "--stack-name", "reports") as status:
        subnets = [physical(status, s) for s in ("SubnetA", "SubnetB", "SubnetC")]
        assert len(status["eni_sets"]) == 3 and \
            {e["subnet"] for e in status["eni_sets"]} == set(subnets)
        got = hp.run_json("function", "get", "Report", state_dir=state_dir)
        assert got["FunctionName"] == "report-prod" and got["MemorySize"] == 1024
        reply = invoke(state_dir, "report-prod")["result"]
        assert reply == {"STAGE": "prod", "DEBUG": None, "REGION": "us-east-1.amazonaws.com"}
        cidrs = {s["logical_id"]: s for s in status["stack"]["resources"]}
        assert cidrs["SubnetC"]["type"] == "AWS::EC2::Subnet"


def test_functions_sharing_subnets_and_a_group_share_enis(state_dir: Path) -> None:
    with stack(state_dir, f"{T}/shared-enis.yaml") as status:
        orders, billing, audit = (physical(status, n) for n in ("Orders", "Billing", "Audit"))
        assert len(status["eni_sets"]) == 4
        by_functions = sorted(tuple(sorted(e["functions"])) for e in status["eni_sets"])
        assert by_functions == sorted([tuple(sorted([orders, billing]))] * 2 + [(audit,)] * 2)
        assert invoke(state_dir, "Orders")["result"] == {"ledger": "+PONG"}
        assert invoke(state_dir, "Billing")["result"] == {"ledger": "+PONG"}
        denied = hp.run("invoke", "Audit", "--json", state_dir=state_dir, check=False)
        assert denied.returncode == 1  # its group may not reach the ledger: a timeout
        assert json.loads(denied.stdout)["errorType"] == "TimeoutError"
        cells = verdicts(state_dir)
        assert cells[orders, "ledger:6379"] == "allowed"
        assert cells[audit, "ledger:6379"] == "denied"


def test_private_subnet_reaches_the_internet_through_the_nat_gateway(state_dir: Path) -> None:
    with stack(state_dir, f"{T}/nat-gateway.yaml") as status:
        assert status["stack"]["outputs"]["PublicIp"] == "198.51.100.10"
        reply = invoke(state_dir, "Fetch")["result"]
        assert reply["client"] == "198.51.100.10"  # the NAT gateway's Elastic IP
        assert verdicts(state_dir)[physical(status, "Fetch"), "internet:80"] == "allowed"


def test_nodejs_functions_built_and_inline(state_dir: Path) -> None:
    with stack(state_dir, f"{T}/nodejs-app/template.yaml", "--stack-name", "web") as status:
        reply = invoke(state_dir, "Greeter", {"name": "vpc"})["result"]
        assert reply["message"] == "hello, vpc"  # ``greeting``, installed by npm
        assert reply["redis"] == "+PONG" and 0 < reply["remainingMs"] <= 5000
        assert invoke(state_dir, "Counter")["result"]["hits"] == 1
        second = invoke(state_dir, "Counter")["result"]
        assert second == {"hits": 2, "fn": physical(status, "Counter")}
        ran = hp.run("exec", "--function", "Greeter", "--", "sh", "-c", "echo $LAMBDA_TASK_ROOT",
                     state_dir=state_dir, check=False)
        assert ran.returncode == 0, ran.stderr


def test_a_server_that_is_not_installed_is_a_listener_and_one_warning(
        state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERPLANE_SERVER_PATH", str(tmp_path))  # no server programs here
    with stack(state_dir, f"{T}/rds-postgres.yaml") as status:
        assert len(status["warnings"]) == 1
        assert "host db: postgres needs PostgreSQL" in status["warnings"][0]
        db = next(h for h in status["hosts"] if h["name"] == "db")
        assert db["service"] == "postgres"  # as declared; a TCP listener answers the port
        assert verdicts(state_dir)[physical(status, "Inventory"), "db:5432"] == "allowed"


def test_efs_is_shared_and_needs_the_mount_targets(state_dir: Path) -> None:
    with stack(state_dir, f"{T}/efs.yaml"):
        assert invoke(state_dir, "Writer", {"note": "hello"})["result"] == {"wrote": "hello"}
        assert invoke(state_dir, "Reader")["result"] == {"read": "hello"}
        started = time.monotonic()
        refused = hp.run("invoke", "Isolated", state_dir=state_dir, check=False)
        assert refused.returncode == 1
        assert "EFSMountConnectivityException" in refused.stderr
        assert "access-point/fsap-" in refused.stderr
        assert time.monotonic() - started < 30


BAD = {
    "unresolvable_ref": ("Resources:\n  Vpc:\n    Type: AWS::EC2::VPC\n    Properties:\n"
                         "      CidrBlock: !Ref Cidr\n", "Resources.Vpc.Properties.CidrBlock",
                         "unresolvable Ref 'Cidr'"),
    "circular": ("Resources:\n  A:\n    Type: AWS::EC2::VPC\n    DependsOn: B\n"
                 "    Properties: {CidrBlock: 10.0.0.0/16}\n  B:\n    Type: AWS::EC2::VPC\n"
                 "    DependsOn: A\n    Properties: {CidrBlock: 10.1.0.0/16}\n", "Resources",
                 "circular"),
    "subnet_outside": ("Resources:\n  Vpc:\n    Type: AWS::EC2::VPC\n"
                       "    Properties: {CidrBlock: 10.0.0.0/16}\n  Sub:\n"
                       "    Type: AWS::EC2::Subnet\n    Properties:\n      VpcId: !Ref Vpc\n"
                       "      CidrBlock: 10.9.0.0/24\n", "Resources.Sub", "10.9.0.0/24"),
    "unsupported_intrinsic": ("Resources:\n  Vpc:\n    Type: AWS::EC2::VPC\n    Properties:\n"
                              "      CidrBlock: !ImportValue shared-cidr\n",
                              "Resources.Vpc.Properties.CidrBlock", "Fn::ImportValue"),
    "missing_parameter": ("Parameters:\n  Cidr: {Type: String}\nResources:\n  Vpc:\n"
                          "    Type: AWS::EC2::VPC\n    Properties: {CidrBlock: !Ref Cidr}\n",
                          "Parameters", "Cidr"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_templates_exit_2_with_one_line_and_build_nothing(case: str, state_dir: Path,
                                                             tmp_path: Path) -> None:
    text, where, reason = BAD[case]
    template = tmp_path / f"{case}.yaml"
    template.write_text('AWSTemplateFormatVersion: "2010-09-09"\n' + text)
    result = hp.run("up", str(template), "--no-api", state_dir=state_dir, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"hyperplane: {template}: {where}") and reason in lines[0]
    assert hp.our_namespaces() == [] and not (state_dir / "state.db").exists()
