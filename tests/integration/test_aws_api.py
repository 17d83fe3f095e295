"""The AWS-compatible endpoint, driven only by real clients: boto3 and the AWS CLI.

One topology (``topologies/aws_api.yaml``: a database host whose group admits sg-fn,
ENIs that take 30 s of the emulated clock to create) is up with the endpoint on a free
port.  Functions are created from zips built here; waiters wait while the test moves
the clock with ``hyperplane clock advance``; what the database saw is compared with
what ``describe_network_interfaces`` says of the Lambda ENI.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.integration import hp

ACCOUNT = "777777777777"
TOPOLOGY = "tests/integration/topologies/aws_api.yaml"
CODE = hp.REPO / "tests" / "integration" / "functions" / "api" / "app.py"
AWS = Path(sys.executable).parent / "aws"  # the AWS CLI of the venv running the tests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = free_port()


@pytest.fixture(scope="module")
def topology(state_dir: Path) -> Iterator[dict]:
    def up() -> Iterator[dict]:
        try:
            yield hp.run_json("up", TOPOLOGY, "--api-port", str(PORT), state_dir=state_dir)
        finally:
            hp.run("down", state_dir=state_dir, check=False)
            hp.run("cleanup", state_dir=state_dir, check=False)
    yield from up()


def client(service: str, **config: object):
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{PORT}",
                        aws_access_key_id=ACCOUNT, aws_secret_access_key="anything",
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, **config))


def zipped(files: dict[str, str | bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


APP = zipped({"app.py": CODE.read_text()})


def advance(state_dir: Path, duration: str, after: float = 0.0) -> threading.Thread:
    """Move the emulated clock, now or ``after`` seconds from now (in the background)."""
    def move() -> None:
        time.sleep(after)
        hp.run("clock", "advance", duration, state_dir=state_dir)
    thread = threading.Thread(target=move)
    thread.start()
    return thread


def create(lam, name: str, group: str, **extra: object) -> dict:  # noqa: ANN001
    return lam.create_function(FunctionName=name, Runtime="python3.12",
                               Role=f"arn:aws:iam::{ACCOUNT}:role/fn", Handler="app.handler",
                               Code={"ZipFile": APP}, Timeout=10,
                               VpcConfig={"SubnetIds": ["subnet-a"],
                                          "SecurityGroupIds": [group]}, **extra)


def wait_active(lam, state_dir: Path, name: str) -> None:  # noqa: ANN001
    mover = advance(state_dir, "31s", after=1.0)
    lam.get_waiter("function_active_v2").wait(FunctionName=name,
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    mover.join()


def available(ec2, subnet: str) -> int:  # noqa: ANN001
    [row] = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"]
    return row["AvailableIpAddressCount"]


def lambda_enis(ec2, **filters: str) -> list[dict]:  # noqa: ANN001
    wanted = [{"Name": "interface-type", "Values": ["lambda"]}] + [
        {"Name": k.replace("_", "-"), "Values": [v]} for k, v in filters.items()]
    return ec2.describe_network_interfaces(Filters=wanted)["NetworkInterfaces"]


# -- boto3, the whole way ---------------------------------------------------------------
def test_boto3_creates_waits_invokes_and_sees_the_eni(topology: dict, state_dir: Path) -> None:
    lam, ec2, sts = client("lambda"), client("ec2"), client("sts")
    assert sts.get_caller_identity()["Account"] == ACCOUNT
    before = available(ec2, "subnet-a")
    group = ec2.create_security_group(GroupName="api-fn", Description="the function's",
                                      VpcId="vpc-api")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId="sg-db", IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
        "UserIdGroupPairs": [{"GroupId": group}]}])
    created = create(lam, "api-fn", group, Environment={"Variables": {"TABLE": "orders"}})
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    with pytest.raises(lam.exceptions.ResourceConflictException, match="Pending"):
        lam.invoke(FunctionName="api-fn", Payload=b"{}")
    wait_active(lam, state_dir, "api-fn")
    lam.get_waiter("function_exists").wait(FunctionName="api-fn")

    out = lam.invoke(FunctionName="api-fn", Payload=json.dumps({"n": 1}), LogType="Tail")
    result = json.loads(out["Payload"].read())
    [eni] = lambda_enis(ec2, group_id=group)
    assert result["seen"]["client"] == eni["PrivateIpAddress"]  # the db saw the ENI
    assert (result["table"], result["region"]) == ("orders", "us-east-1")
    assert (out["StatusCode"], out["ExecutedVersion"]) == (200, "$LATEST")
    log = base64.b64decode(out["LogResult"]).decode()
    assert "START RequestId" in log and "handling" in log and "REPORT RequestId" in log
    assert eni["Description"].startswith("AWS Lambda VPC ENI-api-fn-")
    assert (eni["InterfaceType"], eni["RequesterManaged"], eni["Status"]) == (
        "lambda", True, "in-use")
    assert eni["Attachment"]["InstanceOwnerId"] == "amazon-aws"
    assert eni["Attachment"]["AttachmentId"].startswith("ela-attach-")
    assert [g["GroupId"] for g in eni["Groups"]] == [group]
    assert available(ec2, "subnet-a") == before - 1

    failed = lam.invoke(FunctionName="api-fn", Payload=json.dumps({"fail": True}))
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "ValueError"
    assert lam.invoke(FunctionName="api-fn", InvocationType="Event")["StatusCode"] == 202
    assert lam.invoke(FunctionName="api-fn", InvocationType="DryRun")["StatusCode"] == 204

    updated = lam.update_function_configuration(FunctionName="api-fn", Timeout=9)
    assert updated["LastUpdateStatus"] == "InProgress"
    lam.get_waiter("function_updated_v2").wait(FunctionName="api-fn",
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert lam.get_function(FunctionName="api-fn")["Configuration"]["Timeout"] == 9

    lam.delete_function(FunctionName="api-fn")
    [lingering] = lambda_enis(ec2, group_id=group)
    assert lingering["Status"] == "available"
    with pytest.raises(ClientError) as info:
        ec2.delete_security_group(GroupId=group)
    assert info.value.response["Error"]["Code"] == "DependencyViolation"
    assert "has a dependent object" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        ec2.delete_network_interface(NetworkInterfaceId=lingering["NetworkInterfaceId"])
    assert info.value.response["Error"]["Code"] == "OperationNotPermitted"
    advance(state_dir, "61s").join()
    assert hp.wait_for(lambda: not lambda_enis(ec2, group_id=group), 10)
    assert available(ec2, "subnet-a") == before
    ec2.revoke_security_group_ingress(GroupId="sg-db", IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
        "UserIdGroupPairs": [{"GroupId": group}]}])
    ec2.delete_security_group(GroupId=group)
    assert group not in [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]]


def test_lambdas_errors_are_awss(topology: dict, state_dir: Path) -> None:
    lam = client("lambda")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as info:
        lam.get_function(FunctionName="nobody")
    assert info.value.response["Error"]["Message"] == (
        f"Function not found: arn:aws:lambda:us-east-1:{ACCOUNT}:function:nobody")
    with pytest.raises(lam.exceptions.InvalidParameterValueException,
                       match="InvalidSubnetID.NotFound"):
        lam.create_function(FunctionName="x", Runtime="python3.12", Role="r",
                            Handler="app.handler", Code={"ZipFile": APP},
                            VpcConfig={"SubnetIds": ["subnet-nope"],
                                       "SecurityGroupIds": ["sg-fn"]})
    with pytest.raises(lam.exceptions.InvalidParameterValueException,
                       match="SubnetIds and SecurityIds must coexist"):
        lam.create_function(FunctionName="x", Runtime="python3.12", Role="r",
                            Handler="app.handler", Code={"ZipFile": APP},
                            VpcConfig={"SubnetIds": ["subnet-a"], "SecurityGroupIds": []})
    create(lam, "twice", "sg-fn")
    try:
        with pytest.raises(lam.exceptions.ResourceConflictException):
            create(lam, "twice", "sg-fn")
        wait_active(lam, state_dir, "twice")
        lam.update_function_configuration(FunctionName="twice", MemorySize=256)
        with pytest.raises(lam.exceptions.ResourceConflictException,
                           match="An update is in progress for resource: arn:aws:lambda"):
            lam.update_function_configuration(FunctionName="twice", MemorySize=512)
    finally:
        lam.delete_function(FunctionName="twice")


def test_list_functions_pages_and_concurrency_and_account_settings(topology: dict) -> None:
    lam = client("lambda")
    names = [f"page-{i}" for i in range(3)]
    for name in names:
        lam.create_function(FunctionName=name, Runtime="python3.12", Role="r",
                            Handler="app.handler", Code={"ZipFile": APP})
    try:
        pages = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
        listed = [f["FunctionName"] for page in pages for f in page["Functions"]]
        assert [n for n in listed if n.startswith("page-")] == names
        lam.put_function_concurrency(FunctionName="page-0", ReservedConcurrentExecutions=5)
        assert lam.get_function_concurrency(FunctionName="page-0")[
            "ReservedConcurrentExecutions"] == 5
        settings = lam.get_account_settings()
        assert settings["AccountLimit"]["UnreservedConcurrentExecutions"] == 995
        lam.delete_function_concurrency(FunctionName="page-0")
        assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(
            FunctionName="page-0")
    finally:
        for name in names:
            lam.delete_function(FunctionName=name)


# -- the AWS CLI --------------------------------------------------------------------------
def aws(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCOUNT, AWS_SECRET_ACCESS_KEY="x",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{PORT}",
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    done = subprocess.run([str(AWS), *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 or not check, done.stderr
    return done


def test_the_aws_cli_creates_invokes_and_describes(topology: dict, state_dir: Path,
                                                  tmp_path: Path) -> None:
    package = tmp_path / "app.zip"
    package.write_bytes(APP)
    created = json.loads(aws("lambda", "create-function", "--function-name", "cli-fn",
                             "--runtime", "python3.12", "--role", "arn:aws:iam::1:role/r",
                             "--handler", "app.handler", "--zip-file", f"fileb://{package}",
                             "--vpc-config", "SubnetIds=subnet-a,SecurityGroupIds=sg-fn").stdout)
    try:
        assert created["State"] == "Pending"
        advance(state_dir, "31s").join()
        aws("lambda", "wait", "function-active-v2", "--function-name", "cli-fn")
        out = tmp_path / "out.json"
        answer = json.loads(aws("lambda", "invoke", "--function-name", "cli-fn",
                                str(out)).stdout)
        assert answer["StatusCode"] == 200
        seen = json.loads(out.read_text())["seen"]["client"]
        enis = json.loads(aws("ec2", "describe-network-interfaces", "--filters",
                              "Name=interface-type,Values=lambda",
                              "Name=group-id,Values=sg-fn").stdout)["NetworkInterfaces"]
        assert [e["PrivateIpAddress"] for e in enis] == [seen]
        identity = json.loads(aws("sts", "get-caller-identity").stdout)
        assert identity["Account"] == ACCOUNT
    finally:
        aws("lambda", "delete-function", "--function-name", "cli-fn", check=False)


# -- VPCs made and removed while everything runs --------------------------------------------
def test_a_vpc_made_at_run_time_serves_a_function_and_goes(topology: dict,
                                                            state_dir: Path) -> None:
    lam, ec2 = client("lambda"), client("ec2")

    def routers() -> set[str]:
        return {ns for ns in hp.our_namespaces() if ns.startswith("hp-r")}
    before = routers()
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="late", Description="late",
                                      VpcId=vpc)["GroupId"]
    [router] = routers() - before  # the new VPC's router, built while everything runs
    assert router == "hp-r1"
    lam.create_function(FunctionName="late-fn", Runtime="python3.12", Role="r",
                        Handler="app.handler", Code={"ZipFile": APP},
                        VpcConfig={"SubnetIds": [subnet], "SecurityGroupIds": [group]})
    wait_active(lam, state_dir, "late-fn")
    [eni] = lambda_enis(ec2, vpc_id=vpc)
    assert eni["SubnetId"] == subnet and eni["PrivateIpAddress"].startswith("10.50.1.")
    out = lam.invoke(FunctionName="late-fn", Payload=json.dumps(
        {"url": "http://10.50.1.1:9/nothing"}))  # the new VPC's router: refused, not lost
    assert out["FunctionError"] == "Unhandled"
    with pytest.raises(ClientError) as info:
        ec2.delete_vpc(VpcId=vpc)
    assert info.value.response["Error"]["Code"] == "DependencyViolation"
    lam.delete_function(FunctionName="late-fn")
    advance(state_dir, "61s").join()
    assert hp.wait_for(lambda: not lambda_enis(ec2, vpc_id=vpc), 10)
    ec2.delete_security_group(GroupId=group)
    ec2.delete_subnet(SubnetId=subnet)
    ec2.delete_vpc(VpcId=vpc)
    assert routers() == before
    with pytest.raises(ClientError) as info:
        ec2.describe_vpcs(VpcIds=[vpc])
    assert info.value.response["Error"]["Code"] == "InvalidVpcID.NotFound"


# -- what is not served, and bad input ------------------------------------------------------
def test_unknown_operations_and_missing_signatures_get_clear_errors(topology: dict) -> None:
    with pytest.raises(ClientError) as info:
        client("lambda").list_layers()
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "ListLayers" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        client("ec2").describe_instances()
    assert info.value.response["Error"]["Code"] == "InvalidAction"
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    conn.request("GET", "/2015-03-31/functions/")
    reply = conn.getresponse()
    assert reply.status == 403 and b"Missing Authentication Token" in reply.read()


def test_bad_input_gets_awss_errors_and_the_endpoint_keeps_serving(
        topology: dict, state_dir: Path) -> None:
    lam = client("lambda")
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    conn.request("POST", "/2015-03-31/functions", body=b"{not json", headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda/"
                         "aws4_request, SignedHeaders=host, Signature=" + "0" * 64})
    reply = conn.getresponse()
    assert reply.status == 400 and reply.getheader("x-amzn-ErrorType")
    reply.read()
    conn.request("POST", "/", body=b"Action=DescribeSubnets&Filter.1.Name=vpc-id&Filter.1.Value.x"
                 b"=%%zz&Version=2016-11-15\xff", headers={
                     "Content-Type": "application/x-www-form-urlencoded",
                     "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/ec2/"
                                      "aws4_request, SignedHeaders=host, Signature=" + "0" * 64})
    reply = conn.getresponse()
    body = reply.read()
    assert reply.status == 400 and b"<Response><Errors><Error><Code>" in body, body
    raw = client("lambda", parameter_validation=False)
    with pytest.raises(raw.exceptions.InvalidParameterValueException, match="Role"):
        raw.create_function(FunctionName="norole", Runtime="python3.12",
                            Handler="app.handler", Code={"ZipFile": APP})
    with pytest.raises(ClientError) as info:  # 60 MB: past the request limit
        lam.create_function(FunctionName="huge", Runtime="python3.12", Role="r",
                            Handler="app.handler", Code={"ZipFile": os.urandom(60 << 20)})
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    evil = zipped({"app.py": "x = 1\n", "../../escaped.py": "x = 1\n"})
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="outside"):
        lam.create_function(FunctionName="evil", Runtime="python3.12", Role="r",
                            Handler="app.handler", Code={"ZipFile": evil})
    assert not list(state_dir.parent.rglob("escaped.py"))
    assert not list(state_dir.rglob("escaped.py"))
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _i: client("ec2").describe_subnets()["Subnets"],
                                range(50)))
    assert all(len(a) == 2 for a in answers)
    assert client("sts").get_caller_identity()["Account"] == ACCOUNT  # still serving


def test_api_prints_the_variables_to_paste(topology: dict, state_dir: Path) -> None:
    shown = hp.run_json("api", state_dir=state_dir)
    assert shown["url"] == f"http://127.0.0.1:{PORT}"
    assert shown["environment"]["AWS_ENDPOINT_URL"] == shown["url"]
    assert shown["environment"]["AWS_ACCESS_KEY_ID"] == ACCOUNT
    text = hp.run("api", state_dir=state_dir).stdout
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{PORT}" in text
