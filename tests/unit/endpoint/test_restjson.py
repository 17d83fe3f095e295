"""rest-json (Lambda) against botocore's own serializer and parser: both ways round."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel

from hyperplane.endpoint import models, restjson
from hyperplane.endpoint.wire import ProtocolError
from hyperplane.errors import ApiError
from tests.unit.endpoint.botowire import query_of, request_of, response_of

LAMBDA = models.service("lambda")
ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"
VPC = {"SubnetIds": ["subnet-0a1", "subnet-0b2"], "SecurityGroupIds": ["sg-0c3"]}

REQUESTS = [
    ("CreateFunction", {
        "FunctionName": "f", "Runtime": "python3.12", "Handler": "app.handler",
        "Role": "arn:aws:iam::123456789012:role/lambda-role",
        "Code": {"ZipFile": b"PK\x03\x04\x00\xff binary zip"}, "VpcConfig": VPC,
        "Environment": {"Variables": {"MODE": "test", "EMPTY": "", "URL": "http://x/?a=1&b"}},
        "Timeout": 30, "MemorySize": 256, "Publish": True, "Architectures": ["x86_64"],
        "Tags": {"team": "net"}}),
    ("GetFunction", {"FunctionName": ARN, "Qualifier": "$LATEST"}),
    ("GetFunction", {"FunctionName": "name with spaces/and%percent"}),
    ("ListFunctions", {"Marker": "bWFya2Vy+/=", "MaxItems": 10, "FunctionVersion": "ALL"}),
    ("ListFunctions", {}),
    ("UpdateFunctionConfiguration", {
        "FunctionName": "f", "Timeout": 60, "MemorySize": 1024, "VpcConfig": VPC,
        "Environment": {"Variables": {"A": "1"}}, "Description": "d\u00e9j\u00e0 vu"}),
    ("Invoke", {"FunctionName": "f", "Payload": b'{"key": "value"}', "Qualifier": "1",
                "InvocationType": "RequestResponse", "LogType": "Tail",
                "ClientContext": base64.b64encode(b'{"custom": {}}').decode()}),
    ("Invoke", {"FunctionName": "f", "InvocationType": "Event"}),
    ("PutFunctionConcurrency", {"FunctionName": "f", "ReservedConcurrentExecutions": 5}),
    ("DeleteFunction", {"FunctionName": ARN, "Qualifier": "2"}),
    ("GetLayerVersionByArn", {"Arn": "arn:aws:lambda:us-east-1:123456789012:layer:l:1"}),
    ("ListProvisionedConcurrencyConfigs", {"FunctionName": "f", "MaxItems": 5}),
    ("GetProvisionedConcurrencyConfig", {"FunctionName": "f", "Qualifier": "live"}),
    ("UntagResource", {"Resource": ARN, "TagKeys": ["a", "b"]}),
]


@pytest.mark.parametrize("operation, params", REQUESTS,
                         ids=[f"{op}-{i}" for i, (op, _) in enumerate(REQUESTS)])
def test_botocore_requests_route_and_parse_back_to_their_params(operation: str,
                                                                 params: dict) -> None:
    method, target, headers, body = request_of(LAMBDA, operation, params)
    found = restjson.route(LAMBDA, method, target)
    assert found is not None
    op, labels = found
    assert op.name == operation
    assert restjson.parse(op, labels, query_of(target), headers, body) == params


def test_labels_come_back_url_decoded() -> None:
    method, target, _, _ = request_of(LAMBDA, "GetFunction", {"FunctionName": ARN})
    assert "%3A" in target
    assert restjson.route(LAMBDA, method, target)[1] == {"FunctionName": ARN}


def test_the_fixed_query_of_a_template_decides_between_two_routes() -> None:
    get = restjson.route(LAMBDA, "GET", "/2019-09-30/functions/f/provisioned-concurrency")
    listed = restjson.route(LAMBDA, "GET",
                            "/2019-09-30/functions/f/provisioned-concurrency?List=ALL")
    assert get[0].name == "GetProvisionedConcurrencyConfig"
    assert listed[0].name == "ListProvisionedConcurrencyConfigs"
    assert restjson.route(LAMBDA, "GET", "/2018-10-31/layers")[0].name == "ListLayers"


def test_no_route_for_an_unknown_path_or_method() -> None:
    assert restjson.route(LAMBDA, "GET", "/2015-03-31/nothing-here") is None
    assert restjson.route(LAMBDA, "PATCH", "/2015-03-31/functions/f") is None
    assert restjson.route(LAMBDA, "GET", "/2015-03-31/functions/a/b/c/d/e") is None


def test_greedy_labels_take_the_rest_of_the_path() -> None:
    s3 = ServiceModel(Loader().load_service_model("s3", "service-2"), "s3")
    op, labels = restjson.route(s3, "GET", "/bucket/dir/sub/file%20name.txt")
    assert (op.name, labels) == ("GetObject", {"Bucket": "bucket",
                                               "Key": "dir/sub/file name.txt"})
    assert restjson.route(s3, "GET", "/bucket/a/b?tagging")[0].name == "GetObjectTagging"
    assert restjson.route(s3, "GET", "/bucket?acl")[0].name == "GetBucketAcl"


def test_a_malformed_json_body_is_a_protocol_error() -> None:
    op = LAMBDA.operation_model("CreateFunction")
    for body in (b"{not json", b"[1, 2]", b'{"Timeout": "thirty"}', b'{"Code": []}',
                 b'{"Code": {"ZipFile": "not base64!"}}', b"\xff\xfe"):
        with pytest.raises(ProtocolError):
            restjson.parse(op, {}, {}, {}, body)


def test_keys_unknown_to_the_shape_are_dropped_and_nulls_ignored() -> None:
    op = LAMBDA.operation_model("UpdateFunctionConfiguration")
    body = json.dumps({"Timeout": 3, "Bogus": 1, "Description": None}).encode()
    assert restjson.parse(op, {"FunctionName": "f"}, {}, {}, body) == \
        {"FunctionName": "f", "Timeout": 3}


def test_a_bad_number_in_the_query_string_is_a_protocol_error() -> None:
    op = LAMBDA.operation_model("ListFunctions")
    with pytest.raises(ProtocolError):
        restjson.parse(op, {}, {"MaxItems": ["ten"]}, {}, b"")


# -- outputs ------------------------------------------------------------------------------
CONFIGURATION = {
    "FunctionName": "f", "FunctionArn": ARN, "Runtime": "python3.12",
    "Role": "arn:aws:iam::123456789012:role/lambda-role", "Handler": "app.handler",
    "CodeSize": 1234, "Description": "<&> \"quoted\"", "Timeout": 3, "MemorySize": 128,
    "LastModified": "2026-12-05T10:00:00.000+0000", "CodeSha256": "abc=", "Version": "$LATEST",
    "VpcConfig": {**VPC, "VpcId": "vpc-0d4"},
    "Environment": {"Variables": {"MODE": "test"}}, "State": "Active",
    "LastUpdateStatus": "Successful", "PackageType": "Zip", "Architectures": ["x86_64"],
    "EphemeralStorage": {"Size": 512},
}
OUTPUTS = [
    ("GetFunction", {"Configuration": CONFIGURATION, "Tags": {"team": "net"},
                     "Code": {"RepositoryType": "S3", "Location": "https://example/code.zip"},
                     "Concurrency": {"ReservedConcurrentExecutions": 5}}),
    ("CreateFunction", CONFIGURATION),
    ("ListFunctions", {"Functions": [CONFIGURATION, {**CONFIGURATION, "FunctionName": "g"}],
                       "NextMarker": "next"}),
    ("ListFunctions", {"Functions": []}),
    ("Invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                "LogResult": base64.b64encode(b"START RequestId: 1\nEND\n").decode(),
                "ExecutedVersion": "$LATEST",
                "Payload": b'{"errorMessage": "boom", "errorType": "Exception"}'}),
    ("Invoke", {"StatusCode": 202, "Payload": b""}),
    ("PutFunctionConcurrency", {"ReservedConcurrentExecutions": 5}),
    ("GetEventSourceMapping", {"UUID": "u-1", "BatchSize": 10,
                               "LastModified": dt.datetime(2026, 12, 5, 10, 0, 1, 500000,
                                                           tzinfo=dt.timezone.utc)}),
]


@pytest.mark.parametrize("operation, output", OUTPUTS,
                         ids=[f"{op}-{i}" for i, (op, _) in enumerate(OUTPUTS)])
def test_outputs_parse_back_with_botocore(operation: str, output: dict) -> None:
    op = LAMBDA.operation_model(operation)
    status, headers, body = restjson.serialize(op, output)
    assert status == output.get("StatusCode", op.http.get("responseCode", 200))
    assert response_of(LAMBDA, operation, status, headers, body) == output


def test_invoke_sends_its_payload_raw_and_its_members_in_headers() -> None:
    op = LAMBDA.operation_model("Invoke")
    status, headers, body = restjson.serialize(op, {"StatusCode": 200, "Payload": b"\x00raw",
                                                    "FunctionError": "Handled"})
    assert (status, body, headers["X-Amz-Function-Error"]) == (200, b"\x00raw", "Handled")


def test_the_status_key_overrides_and_is_never_sent() -> None:
    op = LAMBDA.operation_model("Invoke")
    status, _, body = restjson.serialize(op, {"__status__": 204, "Payload": b"x"})
    assert (status, body) == (204, b"")
    op = LAMBDA.operation_model("GetFunction")
    status, _, body = restjson.serialize(op, {"__status__": 299})
    assert (status, json.loads(body)) == (299, {})


def test_the_operations_response_code_is_the_default_status() -> None:
    status, _, _ = restjson.serialize(LAMBDA.operation_model("CreateFunction"), CONFIGURATION)
    assert status == 201


def test_keys_unknown_to_the_output_shape_and_nones_are_left_out() -> None:
    op = LAMBDA.operation_model("PutFunctionConcurrency")
    _, _, body = restjson.serialize(op, {"ReservedConcurrentExecutions": None, "Extra": 1})
    assert json.loads(body) == {}


# -- errors -------------------------------------------------------------------------------
def _parsed_error(error: ApiError, shape: object = "output") -> dict:
    status, headers, body = restjson.serialize_error(LAMBDA, error)
    assert status == error.status
    return response_of(LAMBDA, "GetFunction", status, headers, body, shape)


@pytest.mark.parametrize("kind, status, kind_of_fault", [
    ("ResourceNotFoundException", 404, "User"), ("ResourceConflictException", 409, "User"),
    ("ServiceException", 500, "Service"), ("NotModelledAtAll", 400, "User"),
])
def test_errors_parse_back_with_botocore(kind: str, status: int, kind_of_fault: str) -> None:
    message = f"Function not found: {ARN} <&>"
    parsed = _parsed_error(ApiError(kind, message, status))
    assert parsed["Error"] == {"Code": kind, "Message": message}
    _, headers, body = restjson.serialize_error(LAMBDA, ApiError(kind, message, status))
    assert json.loads(body)["Type"] == kind_of_fault
    assert headers["x-amzn-ErrorType"] == kind


def test_a_modelled_error_carries_its_members_where_the_shape_puts_them() -> None:
    error = ApiError("TooManyRequestsException", "Rate exceeded", 429,
                     retryAfterSeconds="3", Reason="ReservedFunctionConcurrentInvocationLimit")
    _, headers, body = restjson.serialize_error(LAMBDA, error)
    assert headers["Retry-After"] == "3"
    assert "retryAfterSeconds" not in json.loads(body)
    shape = LAMBDA.shape_for("TooManyRequestsException")
    parsed = _parsed_error(error, shape)
    assert parsed == {"retryAfterSeconds": "3", "Type": "User", "message": "Rate exceeded",
                      "Reason": "ReservedFunctionConcurrentInvocationLimit"}


def test_the_message_key_is_spelled_as_the_error_shape_spells_it() -> None:
    shape = LAMBDA.shape_for("ResourceNotFoundException")
    parsed = _parsed_error(ApiError("ResourceNotFoundException", "gone", 404), shape)
    assert parsed == {"Type": "User", "Message": "gone"}
