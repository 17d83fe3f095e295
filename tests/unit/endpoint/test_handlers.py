"""Every handler's output against botocore's output shape (``shapes.problems``).

The controller is replaced by answers built from the same pure code it uses
(``controller.functions.describe``, ``controller.ec2view`` over a parsed topology with
its ENIs), so what is checked is what the endpoint would send: every required
member present, every type right, no member the model does not know.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import pytest

from hyperplane.controller import ec2view
from hyperplane.controller.functions import FunctionRecord, VpcSpec, describe
from hyperplane.endpoint import ec2_ops, lambda_ops, models
from hyperplane.endpoint.server import STATUS_KEY, Call
from hyperplane.endpoint.shapes import problems
from hyperplane.errors import ApiError
from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis

ROOT = Path(__file__).resolve().parents[3]
TOPOLOGY = load_topology(str(ROOT / "examples" / "quickstart.yaml"))
ENIS = plan_enis(TOPOLOGY, [])
ACCOUNT = TOPOLOGY.account
RECORD = FunctionRecord("orders", "orders.handler", "/code", vpc=VpcSpec(
    ("subnet-a",), ("sg-lambda",)), vpc_id="vpc-app", state="Active", account=ACCOUNT,
    code_sha256="abc=", code_size=10, environment={"TABLE": "orders"})
VIEW = {**describe(RECORD, ACCOUNT), "Enis": [], "Environments": 0, "LastInvoked": 0.0}


def answer(message: dict, timeout: float = 60.0) -> dict:
    """What the controller answers, from the pure views it is made of."""
    op = message["op"]
    if op in ("function.get", "function.create", "function.update"):
        return VIEW
    if op == "function.list":
        return {"Functions": [dict(VIEW, FunctionName=f"f{i}") for i in range(5)]}
    if op == "function.concurrency":
        return {"ReservedConcurrentExecutions": message["reserved"]}
    if op == "account.settings":
        return {"AccountLimit": {"TotalCodeSize": 1, "CodeSizeUnzipped": 1,
                                 "CodeSizeZipped": 1, "ConcurrentExecutions": 1000,
                                 "UnreservedConcurrentExecutions": 1000},
                "AccountUsage": {"TotalCodeSize": 1, "FunctionCount": 1}}
    if op == "invoke":
        return {"status": 202} if message["mode"] != "RequestResponse" else {
            "result": {"ok": True}, "log_tail": "START\nEND\n"}
    if op == "ec2.describe_vpcs":
        return {"Vpcs": ec2view.vpcs(TOPOLOGY, ACCOUNT, "us-east-1")}
    if op == "ec2.describe_subnets":
        return {"Subnets": ec2view.subnets(TOPOLOGY, ENIS, ACCOUNT, "us-east-1")}
    if op == "ec2.describe_security_groups":
        return {"SecurityGroups": ec2view.groups(TOPOLOGY, ACCOUNT, "us-east-1")}
    if op == "ec2.describe_network_interfaces":
        return {"NetworkInterfaces": ec2view.interfaces(TOPOLOGY, ENIS, ACCOUNT,
                                                        "2026-12-05T08:00:00.000Z")}
    if op == "ec2.create_vpc":
        return {"Vpc": ec2view.vpcs(TOPOLOGY, ACCOUNT, "us-east-1")[0]}
    if op == "ec2.create_subnet":
        return {"Subnet": ec2view.subnets(TOPOLOGY, ENIS, ACCOUNT, "us-east-1")[0]}
    if op == "ec2.create_security_group":
        return {"GroupId": "sg-1", "SecurityGroupArn": "arn:aws:ec2:::security-group/sg-1"}
    return {"Return": True, "deleted": "x"}


@pytest.fixture(autouse=True)
def controller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lambda_ops, "controller_request", answer)
    monkeypatch.setattr(ec2_ops, "controller_request", answer)
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path))


def zipped(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


CODE = {"ZipFile": zipped({"app.py": "def handler(event, context):\n    return event\n"})}
PERMISSION = [{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
               "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}]
CALLS = [
    ("lambda", "CreateFunction", {"FunctionName": "orders", "Runtime": "python3.12",
                                  "Role": "arn:aws:iam::1:role/r", "Handler": "app.handler",
                                  "Code": CODE}),
    ("lambda", "GetFunction", {"FunctionName": "orders"}),
    ("lambda", "GetFunctionConfiguration", {"FunctionName": "orders"}),
    ("lambda", "ListFunctions", {"MaxItems": 2}),
    ("lambda", "UpdateFunctionConfiguration", {"FunctionName": "orders", "Timeout": 9,
                                               "Environment": {"Variables": {"A": "b"}}}),
    ("lambda", "UpdateFunctionCode", {"FunctionName": "orders", "ZipFile": CODE["ZipFile"]}),
    ("lambda", "DeleteFunction", {"FunctionName": "orders"}),
    ("lambda", "Invoke", {"FunctionName": "orders", "Payload": b'{"a": 1}', "LogType": "Tail"}),
    ("lambda", "Invoke", {"FunctionName": "orders", "InvocationType": "Event"}),
    ("lambda", "InvokeWithResponseStream", {"FunctionName": "orders",
                                            "InvocationType": "DryRun"}),
    ("lambda", "PutFunctionConcurrency", {"FunctionName": "orders",
                                          "ReservedConcurrentExecutions": 3}),
    ("lambda", "GetFunctionConcurrency", {"FunctionName": "orders"}),
    ("lambda", "DeleteFunctionConcurrency", {"FunctionName": "orders"}),
    ("lambda", "GetAccountSettings", {}),
    ("ec2", "DescribeVpcs", {}),
    ("ec2", "DescribeSubnets", {"Filters": [{"Name": "vpc-id", "Values": ["vpc-app"]}]}),
    ("ec2", "DescribeSecurityGroups", {}),
    ("ec2", "DescribeNetworkInterfaces", {}),
    ("ec2", "CreateVpc", {"CidrBlock": "10.9.0.0/16"}),
    ("ec2", "DeleteVpc", {"VpcId": "vpc-1"}),
    ("ec2", "CreateSubnet", {"VpcId": "vpc-app", "CidrBlock": "10.0.9.0/24"}),
    ("ec2", "DeleteSubnet", {"SubnetId": "subnet-a"}),
    ("ec2", "CreateSecurityGroup", {"GroupName": "g", "Description": "d", "VpcId": "vpc-app"}),
    ("ec2", "DeleteSecurityGroup", {"GroupId": "sg-db"}),
    ("ec2", "AuthorizeSecurityGroupIngress", {"GroupId": "sg-db", "IpPermissions": PERMISSION}),
    ("ec2", "AuthorizeSecurityGroupEgress", {"GroupId": "sg-db", "IpPermissions": PERMISSION}),
    ("ec2", "RevokeSecurityGroupIngress", {"GroupId": "sg-db", "IpPermissions": PERMISSION}),
    ("ec2", "RevokeSecurityGroupEgress", {"GroupId": "sg-db", "IpPermissions": PERMISSION}),
    ("ec2", "DeleteNetworkInterface", {"NetworkInterfaceId": "eni-1"}),
    ("sts", "GetCallerIdentity", {}),
]
HANDLERS = {**lambda_ops.HANDLERS, **ec2_ops.HANDLERS}


def call(service: str, operation: str, params: dict) -> dict:
    return HANDLERS[(service, operation)](Call(service, operation, params, "us-east-1",
                                               ACCOUNT, "req-1"))


@pytest.mark.parametrize(("service", "operation", "params"), CALLS,
                         ids=[f"{s}-{o}" for s, o, _p in CALLS])
def test_the_output_fits_the_operations_shape(service: str, operation: str,
                                              params: dict) -> None:
    out = call(service, operation, params)
    out.pop(STATUS_KEY, None)
    shape = models.service(service).operation_model(operation).output_shape
    assert shape is None and out == {} or problems(shape, out) == []


def test_every_operation_of_the_issue_has_a_handler() -> None:
    assert {(s, o) for s, o, _p in CALLS} == set(HANDLERS)


def test_the_configuration_keeps_only_lambdas_members() -> None:
    config = lambda_ops.configuration(VIEW)
    assert "Networking" not in config and "Enis" not in config
    assert config["Environment"] == {"Variables": {"TABLE": "orders"}}
    assert config["VpcConfig"]["SubnetIds"] == ["subnet-a"]


def test_function_names_may_be_arns() -> None:
    for given in ("orders", f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders",
                  f"{ACCOUNT}:function:orders", f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:"
                  "orders:$LATEST"):
        assert lambda_ops.function_name({"FunctionName": given}) == "orders"


def test_list_functions_pages_with_a_marker() -> None:
    first = call("lambda", "ListFunctions", {"MaxItems": 2})
    second = call("lambda", "ListFunctions", {"MaxItems": 2, "Marker": first["NextMarker"]})
    last = call("lambda", "ListFunctions", {"MaxItems": 2, "Marker": second["NextMarker"]})
    names = [f["FunctionName"] for page in (first, second, last) for f in page["Functions"]]
    assert names == ["f0", "f1", "f2", "f3", "f4"] and "NextMarker" not in last


def test_invoke_answers_with_the_payload_the_status_and_the_log() -> None:
    out = call("lambda", "Invoke", {"FunctionName": "orders", "LogType": "Tail"})
    assert (out["StatusCode"], json.loads(out["Payload"])) == (200, {"ok": True})
    assert base64.b64decode(out["LogResult"]) == b"START\nEND\n"
    assert call("lambda", "Invoke", {"FunctionName": "orders",
                                     "InvocationType": "DryRun"})["StatusCode"] == 202


def test_invoke_passes_the_client_context_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr(lambda_ops, "controller_request",
                        lambda message, timeout=60.0: asked.append(message) or answer(message))
    context = json.dumps({"custom": {"tenant": "t-1"}, "env": {"locale": "fr"}})
    call("lambda", "Invoke", {"FunctionName": "orders",
                              "ClientContext": base64.b64encode(context.encode()).decode()})
    assert asked[-1]["client_context"] == context
    for bad in ("not base64!", base64.b64encode(b"[1, 2]").decode()):
        with pytest.raises(ApiError) as info:
            call("lambda", "Invoke", {"FunctionName": "orders", "ClientContext": bad})
        assert info.value.kind == "InvalidRequestContentException"


def test_an_oversized_payload_is_refused_before_the_controller() -> None:
    with pytest.raises(ApiError) as info:
        call("lambda", "Invoke", {"FunctionName": "orders", "Payload": b"[" + b"1," * 3_200_000
                                  + b"1]"})
    assert (info.value.kind, info.value.status) == ("RequestTooLargeException", 413)


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil", "a/../../evil"])
def test_a_zip_escaping_its_directory_is_refused_and_writes_nothing(name: str,
                                                                  tmp_path: Path) -> None:
    code = {"ZipFile": zipped({name: "x"})}
    with pytest.raises(ApiError) as info:
        call("lambda", "CreateFunction", {"FunctionName": "evil", "Runtime": "python3.12",
                                          "Role": "r", "Handler": "a.b", "Code": code})
    assert info.value.kind == "InvalidParameterValueException"
    assert "outside" in info.value.message
    assert not (tmp_path / "code" / "evil").exists() or not any(
        p.is_file() for p in (tmp_path / "code").rglob("*"))


def test_a_zip_is_unzipped_with_its_modes(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, "#!/bin/sh\n")
    call("lambda", "CreateFunction", {"FunctionName": "custom", "Runtime": "provided.al2023",
                                      "Role": "r", "Handler": "x", "Code": {
                                          "ZipFile": out.getvalue()}})
    [bootstrap] = (tmp_path / "code" / "custom").rglob("bootstrap")
    assert bootstrap.stat().st_mode & 0o111


def test_not_a_zip_is_refused() -> None:
    with pytest.raises(ApiError, match="Could not unzip"):
        call("lambda", "CreateFunction", {"FunctionName": "x", "Runtime": "python3.12",
                                          "Role": "r", "Handler": "a.b",
                                          "Code": {"ZipFile": b"not a zip"}})


def test_ec2_errors_keep_code_and_message_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(message: dict, timeout: float = 60.0) -> dict:
        raise ApiError("DependencyViolation", "resource sg-db has a dependent object", 400,
                       eni="eni-1")
    monkeypatch.setattr(ec2_ops, "controller_request", refuse)
    with pytest.raises(ApiError) as info:
        call("ec2", "DeleteSecurityGroup", {"GroupId": "sg-db"})
    assert info.value.extra == {} and info.value.kind == "DependencyViolation"
