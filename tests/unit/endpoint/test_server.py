"""The endpoint against real boto3 clients (and plain HTTP) on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hyperplane.endpoint.server import MAX_BODY, Call, Endpoint
from hyperplane.errors import ApiError

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "123456789012"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:missing"
CALLS: list[Call] = []


def _auth(service: str, key: str = "AKIDTEST") -> str:
    return (f"AWS4-HMAC-SHA256 Credential={key}/20261205/us-east-1/{service}/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}")


def _configuration(name: str) -> dict:
    return {"FunctionName": name, "FunctionArn": ARN.replace("missing", name),
            "Runtime": "python3.12", "Timeout": 3, "MemorySize": 128, "State": "Active",
            "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}}


def get_function(call: Call) -> dict:
    CALLS.append(call)
    name = call.params["FunctionName"]
    if name == "missing":
        raise ApiError("ResourceNotFoundException", f"Function not found: {ARN}", 404)
    if name == "busy":
        raise ApiError("ResourceConflictException",
                       "The operation cannot be performed at this time.", 409)
    if name == "boom":
        return {}["no such key"]
    if name.startswith("slow"):
        time.sleep(0.05)
    return {"Configuration": _configuration(name), "Tags": {"account": call.account}}


def create_function(call: Call) -> dict:
    CALLS.append(call)
    if "Role" not in call.params:
        raise ApiError("InvalidParameterValueException", "Role is required", 400)
    return _configuration(call.params["FunctionName"])


def invoke(call: Call) -> dict:
    kind = call.params.get("InvocationType", "RequestResponse")
    if kind == "Event":
        return {"StatusCode": 202}
    if kind == "DryRun":
        return {"__status__": 204}
    return {"StatusCode": 200, "Payload": b'{"echo": ' + call.params["Payload"] + b"}",
            "ExecutedVersion": "$LATEST", "LogResult": "U1RBUlQK"}


GATES: dict[str, threading.Event] = {}


def invoke_with_response_stream(call: Call) -> dict:
    """A stream whose events after the first wait for the test's gate."""
    gate = GATES.setdefault(call.params["FunctionName"], threading.Event())

    def events() -> Iterator[dict]:
        yield {"PayloadChunk": {"Payload": b"first"}}
        if not gate.wait(10):
            raise RuntimeError("the gate was never opened")
        yield {"PayloadChunk": {"Payload": bytes(range(256))}}
        yield {"InvokeComplete": {"ErrorCode": "Boom", "ErrorDetails": "late"}}
    return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "EventStream": events()}


HANDLERS = {
    ("lambda", "InvokeWithResponseStream"): invoke_with_response_stream,
    ("lambda", "GetFunction"): get_function,
    ("lambda", "CreateFunction"): create_function,
    ("lambda", "Invoke"): invoke,
    ("lambda", "PutFunctionConcurrency"): lambda call: {
        "ReservedConcurrentExecutions": call.params["ReservedConcurrentExecutions"]},
    ("ec2", "DeleteSecurityGroup"): lambda call: (_ for _ in ()).throw(ApiError(
        "DependencyViolation", f"resource {call.params['GroupId']} has a dependent object",
        400)),
    ("ec2", "DescribeNetworkInterfaces"): lambda call: {"NetworkInterfaces": [
        {"NetworkInterfaceId": eni, "Status": "in-use", "RequesterManaged": True}
        for eni in call.params.get("NetworkInterfaceIds", [])]},
    ("sts", "GetCallerIdentity"): lambda call: {
        "UserId": call.access_key, "Account": call.account,
        "Arn": f"arn:aws:iam::{call.account}:user/{call.region}"},
}


def account_of(access_key: str) -> str:
    if access_key == "AKIDREVOKED":
        raise ApiError("UnrecognizedClientException",
                       "The security token included in the request is invalid.", 403)
    return ACCOUNT


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint(0, HANDLERS, account_of)
    server.start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_local_aws_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def client(endpoint: Endpoint, service: str, key: str = "AKIDTEST",
           session: boto3.session.Session | None = None, **config: object):
    """A boto3 client of ``endpoint`` (no retries: each call is one request)."""
    session = session or boto3.session.Session(
        aws_access_key_id=key, aws_secret_access_key="secret", region_name="us-east-1")
    return session.client(service, endpoint_url=endpoint.url,
                          config=Config(retries={"total_max_attempts": 1}, **config))


def raw(endpoint: Endpoint, method: str, path: str, body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        conn.close()


# -- boto3 --------------------------------------------------------------------------------
def test_get_function_works(endpoint: Endpoint) -> None:
    answer = client(endpoint, "lambda").get_function(FunctionName="f", Qualifier="$LATEST")
    assert answer["Configuration"]["FunctionName"] == "f"
    assert answer["Configuration"]["VpcConfig"]["SubnetIds"] == ["subnet-1"]
    assert answer["Tags"] == {"account": ACCOUNT}
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ResponseMetadata"]["RequestId"]
    call = CALLS[-1]
    assert (call.service, call.operation, call.region, call.account) == \
        ("lambda", "GetFunction", "us-east-1", ACCOUNT)
    assert call.params == {"FunctionName": "f", "Qualifier": "$LATEST"}
    assert call.request_id == answer["ResponseMetadata"]["RequestId"]
    assert "authorization" in call.headers


def test_modelled_errors_arrive_as_their_exceptions(endpoint: Endpoint) -> None:
    lam = client(endpoint, "lambda")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as missing:
        lam.get_function(FunctionName="missing")
    assert missing.value.response["Error"]["Message"] == f"Function not found: {ARN}"
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(lam.exceptions.ResourceConflictException) as busy:
        lam.get_function(FunctionName="busy")
    assert busy.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_an_ec2_error_arrives_with_its_code(endpoint: Endpoint) -> None:
    with pytest.raises(ClientError) as caught:
        client(endpoint, "ec2").delete_security_group(GroupId="sg-0cc")
    assert caught.value.response["Error"]["Code"] == "DependencyViolation"
    assert caught.value.response["Error"]["Message"] == \
        "resource sg-0cc has a dependent object"


def test_ec2_and_sts_calls_work(endpoint: Endpoint) -> None:
    enis = client(endpoint, "ec2").describe_network_interfaces(
        NetworkInterfaceIds=["eni-1", "eni-2"],
        Filters=[{"Name": "vpc-id", "Values": ["vpc-1"]}])
    assert [e["NetworkInterfaceId"] for e in enis["NetworkInterfaces"]] == ["eni-1", "eni-2"]
    assert enis["NetworkInterfaces"][0]["RequesterManaged"] is True
    me = client(endpoint, "sts").get_caller_identity()
    assert (me["Account"], me["UserId"], me["Arn"]) == \
        (ACCOUNT, "AKIDTEST", f"arn:aws:iam::{ACCOUNT}:user/us-east-1")


def test_invoke_carries_payload_status_and_headers(endpoint: Endpoint) -> None:
    lam = client(endpoint, "lambda")
    answer = lam.invoke(FunctionName="f", Payload=b'{"a": 1}', LogType="Tail")
    assert answer["StatusCode"] == 200
    assert answer["Payload"].read() == b'{"echo": {"a": 1}}'
    assert (answer["ExecutedVersion"], answer["LogResult"]) == ("$LATEST", "U1RBUlQK")
    assert lam.invoke(FunctionName="f", InvocationType="Event")["StatusCode"] == 202
    assert lam.invoke(FunctionName="f", InvocationType="DryRun")["StatusCode"] == 204


def test_unknown_operations_get_the_unknown_operation_errors(endpoint: Endpoint) -> None:
    with pytest.raises(ClientError) as layers:
        client(endpoint, "lambda").list_layers()
    assert layers.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "ListLayers" in layers.value.response["Error"]["Message"]
    assert layers.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as instances:
        client(endpoint, "ec2").describe_instances()
    assert instances.value.response["Error"]["Code"] == "InvalidAction"
    assert "DescribeInstances" in instances.value.response["Error"]["Message"]
    status, headers, body = raw(endpoint, "GET", "/2015-03-31/no-such-thing",
                                headers={"Authorization": _auth("lambda")})
    assert (status, headers["x-amzn-errortype"]) == (404, "UnknownOperationException")
    assert json.loads(body)["message"] == \
        "Unknown operation: GET /2015-03-31/no-such-thing (lambda)"
    status, _, body = raw(endpoint, "POST", "/", b"Action=Nope&Version=2011-06-15",
                          {"Authorization": _auth("sts"),
                           "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400
    assert b"<Code>InvalidAction</Code>" in body
    assert b"The action Nope is not valid for this web service." in body


def test_without_validation_the_handler_decides(endpoint: Endpoint) -> None:
    lam = client(endpoint, "lambda", parameter_validation=False)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.create_function(FunctionName="f")
    assert caught.value.response["Error"]["Message"] == "Role is required"
    assert CALLS[-1].params == {"FunctionName": "f"}


def test_account_of_may_refuse_a_key(endpoint: Endpoint) -> None:
    with pytest.raises(ClientError) as caught:
        client(endpoint, "sts", key="AKIDREVOKED").get_caller_identity()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_unexpected_exception_is_a_500_and_the_server_serves_on(
        endpoint: Endpoint, capfd: pytest.CaptureFixture[str]) -> None:
    lam = client(endpoint, "lambda")
    with pytest.raises(ClientError) as caught:
        lam.get_function(FunctionName="boom")
    error = caught.value.response
    assert error["Error"]["Code"] == "ServiceException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "KeyError" not in error["Error"]["Message"]
    assert error["ResponseMetadata"]["RequestId"] in error["Error"]["Message"]
    assert lam.get_function(FunctionName="after")["Configuration"]["FunctionName"] == "after"
    err = capfd.readouterr().err
    assert "Traceback" in err and "KeyError: 'no such key'" in err


def test_fifty_concurrent_clients_all_get_their_answers(endpoint: Endpoint) -> None:
    session = boto3.session.Session(aws_access_key_id="AKIDTEST",
                                    aws_secret_access_key="secret", region_name="us-east-1")
    clients = [client(endpoint, "lambda", session=session) for _ in range(50)]
    answers: dict[int, str] = {}
    barrier = threading.Barrier(50)

    def run(i: int) -> None:
        barrier.wait()
        for _ in range(2):
            answers[i] = clients[i].get_function(
                FunctionName=f"slow-{i}")["Configuration"]["FunctionName"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {i: f"slow-{i}" for i in range(50)}


# -- plain HTTP ---------------------------------------------------------------------------
def test_a_request_without_authorization_gets_the_missing_token_error(
        endpoint: Endpoint) -> None:
    status, headers, body = raw(endpoint, "GET", "/2015-03-31/functions/f")
    assert (status, headers["x-amzn-errortype"]) == (403, "MissingAuthenticationTokenException")
    assert json.loads(body)["message"] == "Missing Authentication Token"
    assert headers["x-amzn-requestid"] and headers["content-length"] == str(len(body))
    for version, root in (("2016-11-15", b"<Response>"), ("2011-06-15", b"<ErrorResponse")):
        status, _, body = raw(endpoint, "POST", "/",
                              f"Action=DescribeSubnets&Version={version}".encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 403
        assert b"<Code>MissingAuthenticationToken</Code>" in body and root in body


def test_a_malformed_json_body_is_a_400(endpoint: Endpoint) -> None:
    status, headers, body = raw(endpoint, "PUT", "/2017-10-31/functions/f/concurrency",
                                b'{"ReservedConcurrentExecutions": ',
                                {"Authorization": _auth("lambda")})
    assert (status, headers["x-amzn-errortype"]) == (400, "InvalidRequestContentException")
    assert json.loads(body)["Type"] == "User"


def test_a_malformed_form_value_is_a_400(endpoint: Endpoint) -> None:
    status, _, body = raw(endpoint, "POST", "/",
                          b"Action=DescribeNetworkInterfaces&Version=2016-11-15&MaxResults=x",
                          {"Authorization": _auth("ec2"),
                           "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and b"<Code>InvalidParameterValue</Code>" in body


def test_an_oversized_body_is_refused_unread_and_the_connection_closed(
        endpoint: Endpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    conn.putrequest("POST", "/2015-03-31/functions")
    conn.putheader("Authorization", _auth("lambda"))
    conn.putheader("Content-Length", str(80 * 1024 * 1024))
    conn.endheaders()                                   # the headers only: no body follows
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 413
    assert response.getheader("x-amzn-ErrorType") == "RequestEntityTooLargeException"
    assert body["message"] == \
        f"Request must be smaller than {MAX_BODY} bytes for the CreateFunction operation"
    assert response.getheader("Connection") == "close"
    assert conn.sock is None or conn.sock.recv(1) == b""
    conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(endpoint: Endpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    for name in ("a", "b", "c"):
        conn.request("GET", f"/2015-03-31/functions/{name}",
                     headers={"Authorization": _auth("lambda")})
        response = conn.getresponse()
        assert json.loads(response.read())["Configuration"]["FunctionName"] == name
        assert not response.will_close
    conn.close()


def test_a_chunked_body_is_read(endpoint: Endpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    conn.request("PUT", "/2017-10-31/functions/f/concurrency",
                 body=iter([b'{"ReservedConcurrent', b'Executions": 7}']),
                 headers={"Authorization": _auth("lambda")}, encode_chunked=True)
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == \
        (200, {"ReservedConcurrentExecutions": 7})
    conn.close()


def test_a_service_the_endpoint_does_not_serve(endpoint: Endpoint) -> None:
    status, headers, body = raw(endpoint, "GET", "/bucket/key",
                                headers={"Authorization": _auth("s3")})
    assert (status, headers["x-amzn-errortype"]) == (404, "UnknownOperationException")
    assert b"(s3)" in body


def test_it_listens_on_loopback_only(endpoint: Endpoint) -> None:
    assert endpoint.server_address[0] == "127.0.0.1"


def test_serve_runs_until_sigterm_and_stops_cleanly() -> None:
    code = ("from hyperplane.endpoint.server import Endpoint, serve\n"
            "e = Endpoint(0, {('sts', 'GetCallerIdentity'): lambda c: {'Account': c.account}},"
            " lambda key: '210987654321')\n"
            "print(e.port, flush=True)\nserve(e)\nprint('stopped', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/", body="Action=GetCallerIdentity&Version=2011-06-15",
                     headers={"Authorization": _auth("sts"),
                              "Content-Type": "application/x-www-form-urlencoded"})
        assert b"<Account>210987654321</Account>" in conn.getresponse().read()
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_presigned_url_is_a_signed_request(endpoint: Endpoint) -> None:
    url = client(endpoint, "sts").generate_presigned_url("get_caller_identity", ExpiresIn=60)
    assert "X-Amz-Credential=" in url and "Authorization" not in url
    status, _, body = raw(endpoint, "GET", url.removeprefix(endpoint.url))
    assert status == 200 and f"<Account>{ACCOUNT}</Account>".encode() in body


def test_the_aws_cli_calls_the_endpoint(endpoint: Endpoint, tmp_path: Path) -> None:
    aws = Path(sys.executable).parent / "aws"
    if not aws.exists():
        pytest.skip("the AWS CLI is not installed beside this Python")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "AWS_ACCESS_KEY_ID": "AKIDCLI", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": endpoint.url,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_MAX_ATTEMPTS": "1", "NO_PROXY": "127.0.0.1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(aws), *args, "--output", "json"], env=env, text=True,
                              capture_output=True, timeout=60)

    me = run("sts", "get-caller-identity")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/eu-west-1"
    out = tmp_path / "out.json"
    invoked = run("lambda", "invoke", "--function-name", "f", "--payload", '{"a": 2}',
                  str(out))
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["StatusCode"] == 200
    assert out.read_bytes() == b'{"echo": {"a": 2}}'
    enis = run("ec2", "describe-network-interfaces", "--network-interface-ids", "eni-9",
               "--filters", "Name=vpc-id,Values=vpc-1,vpc-2")
    assert json.loads(enis.stdout)["NetworkInterfaces"][0]["NetworkInterfaceId"] == "eni-9"
    missing = run("lambda", "get-function", "--function-name", "missing")
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


def test_an_event_stream_reaches_boto3_event_by_event(endpoint: Endpoint) -> None:
    lam = client(endpoint, "lambda")
    for name in ("streamed", "again"):  # the second on the same kept-alive connection
        answer = lam.invoke_with_response_stream(FunctionName=name, Payload=b"{}")
        assert answer["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
        assert answer["StatusCode"] == 200 and answer["ExecutedVersion"] == "$LATEST"
        events = iter(answer["EventStream"])
        assert next(events) == {"PayloadChunk": {"Payload": b"first"}}  # the gate is shut
        GATES[name].set()
        assert list(events) == [{"PayloadChunk": {"Payload": bytes(range(256))}},
                                {"InvokeComplete": {"ErrorCode": "Boom",
                                                    "ErrorDetails": "late"}}]
