"""shapes.problems: what a handler's output gets wrong, by botocore's own shapes."""

from __future__ import annotations

import datetime as dt

from hyperplane.endpoint import models
from hyperplane.endpoint.shapes import problems

LAMBDA = models.service("lambda")
EC2 = models.service("ec2")
GET_FUNCTION = LAMBDA.operation_model("GetFunction").output_shape
OUTPUT = {
    "Configuration": {
        "FunctionName": "f", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f",
        "Runtime": "python3.12", "Timeout": 3, "MemorySize": 128,
        "LastModified": "2026-12-05T10:00:00.000+0000",
        "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1"], "VpcId": "v"},
        "Environment": {"Variables": {"A": "1"}}, "State": "Active",
        "Architectures": ["x86_64"], "EphemeralStorage": {"Size": 512},
    },
    "Code": {"RepositoryType": "S3", "Location": "https://x"},
    "Tags": {"a": "b"}, "Concurrency": {"ReservedConcurrentExecutions": 2},
}


def test_a_correct_get_function_output_has_no_problem() -> None:
    assert problems(GET_FUNCTION, OUTPUT) == []
    assert problems(GET_FUNCTION, {}) == []


def test_a_missing_required_member_is_caught() -> None:
    output = {"Configuration": {**OUTPUT["Configuration"], "EphemeralStorage": {}}}
    assert problems(GET_FUNCTION, output) == [
        "Configuration.EphemeralStorage.Size: required by EphemeralStorage, missing"]


def test_a_wrong_type_is_caught() -> None:
    config = {**OUTPUT["Configuration"], "Timeout": "3", "MemorySize": True,
              "VpcConfig": {"SubnetIds": "subnet-1"}}
    found = problems(GET_FUNCTION, {"Configuration": config, "Tags": []})
    assert len(found) == 4
    assert any(p.startswith("Configuration.Timeout: expected a integer") for p in found)
    assert any(p.startswith("Configuration.MemorySize: expected a integer") for p in found)
    assert any(p.startswith("Configuration.VpcConfig.SubnetIds: expected a list")
               for p in found)
    assert any(p.startswith("Tags: expected a map") for p in found)


def test_an_unknown_key_is_caught_at_any_depth() -> None:
    output = {**OUTPUT, "Extra": 1,
              "Code": {"RepositoryType": "S3", "Location": "x", "Bogus": 2}}
    assert problems(GET_FUNCTION, output) == ["Extra: not a member of GetFunctionResponse",
                                              "Code.Bogus: not a member of FunctionCodeLocation"]


def test_list_items_timestamps_blobs_and_the_status_key() -> None:
    invoke = LAMBDA.operation_model("Invoke").output_shape
    assert problems(invoke, {"__status__": 202, "StatusCode": 202, "Payload": b""}) == []
    assert problems(invoke, {"Payload": "not bytes"}) == \
        ["Payload: expected a blob, got str 'not bytes'"]
    enis = EC2.operation_model("DescribeNetworkInterfaces").output_shape
    eni = {"NetworkInterfaceId": "eni-1", "Attachment": {
        "AttachTime": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "DeviceIndex": 1}}
    assert problems(enis, {"NetworkInterfaces": [eni, {"Attachment": {"AttachTime": 5}}]}) \
        == ["NetworkInterfaces[1].Attachment.AttachTime: expected a timestamp, got int 5"]
