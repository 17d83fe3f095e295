"""ec2 and query (EC2, STS) against botocore's own serializer and parser."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from botocore.model import ServiceModel

from hyperplane.endpoint import models, query
from hyperplane.endpoint.wire import ProtocolError
from hyperplane.errors import ApiError
from tests.unit.endpoint.botowire import form_of, request_of, response_of

EC2 = models.service("ec2")
STS = models.service("sts")
UTC = dt.timezone.utc
PERMISSIONS = [{
    "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
    "IpRanges": [{"CidrIp": "10.0.0.0/16", "Description": "vpc <&>"},
                 {"CidrIp": "192.168.0.0/24"}],
    "UserIdGroupPairs": [{"GroupId": "sg-0aa", "UserId": "123456789012"}],
}, {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-0bb"}]}]

REQUESTS = [
    (EC2, "DescribeNetworkInterfaces", {
        "Filters": [{"Name": "vpc-id", "Values": ["vpc-1", "vpc-2"]},
                    {"Name": "description", "Values": ["AWS Lambda VPC ENI-f*"]},
                    {"Name": "requester-managed", "Values": ["true"]}],
        "NetworkInterfaceIds": ["eni-01", "eni-02", "eni-03"], "MaxResults": 50,
        "DryRun": False}),
    (EC2, "DescribeNetworkInterfaces", {}),
    (EC2, "AuthorizeSecurityGroupIngress", {"GroupId": "sg-0cc",
                                            "IpPermissions": PERMISSIONS}),
    (EC2, "CreateSecurityGroup", {
        "GroupName": "lambda-sg", "Description": "for lambdas & friends", "VpcId": "vpc-1",
        "TagSpecifications": [{"ResourceType": "security-group",
                               "Tags": [{"Key": "Name", "Value": "x"}]}]}),
    (EC2, "DescribeSubnets", {"SubnetIds": ["subnet-1"], "Filters": [
        {"Name": "availability-zone", "Values": ["us-east-1a"]}]}),
    (EC2, "DeleteSecurityGroup", {"GroupId": "sg-0cc", "DryRun": True}),
    (STS, "GetCallerIdentity", {}),
    (STS, "AssumeRole", {
        "RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "session-1",
        "DurationSeconds": 900, "Tags": [{"Key": "k", "Value": "v"}],
        "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
        "TransitiveTagKeys": ["k"]}),
]


@pytest.mark.parametrize("model, operation, params", REQUESTS,
                         ids=[f"{op}-{i}" for i, (_, op, _) in enumerate(REQUESTS)])
def test_botocore_forms_parse_back_to_their_params(model: object, operation: str,
                                                   params: dict) -> None:
    _, _, _, body = request_of(model, operation, params)
    form = form_of(body)
    assert form["Action"] == [operation]
    assert query.parse(model.operation_model(operation), form) == params


def test_ec2_reads_the_flattened_names_the_cli_sends() -> None:
    _, _, _, body = request_of(EC2, "AuthorizeSecurityGroupIngress",
                               {"GroupId": "sg-1", "IpPermissions": PERMISSIONS})
    form = form_of(body)
    assert form["IpPermissions.1.IpRanges.1.CidrIp"] == ["10.0.0.0/16"]
    assert form["IpPermissions.1.Groups.1.GroupId"] == ["sg-0aa"]      # botocore's own name


def test_ec2_accepts_the_member_name_beside_the_location_name() -> None:
    op = EC2.operation_model("AuthorizeSecurityGroupIngress")
    form = {"Action": ["AuthorizeSecurityGroupIngress"], "GroupId": ["sg-1"],
            "IpPermissions.1.IpProtocol": ["tcp"], "IpPermissions.1.FromPort": ["22"],
            "IpPermissions.1.UserIdGroupPairs.1.GroupId": ["sg-2"]}
    assert query.parse(op, form) == {"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 22, "UserIdGroupPairs": [{"GroupId": "sg-2"}]}]}


def test_list_items_come_in_index_order_not_text_order() -> None:
    op = EC2.operation_model("DescribeNetworkInterfaces")
    form = {f"NetworkInterfaceId.{i}": [f"eni-{i}"] for i in (10, 2, 1)}
    assert query.parse(op, form)["NetworkInterfaceIds"] == ["eni-1", "eni-2", "eni-10"]


@pytest.mark.parametrize("form", [{"MaxResults": ["many"]}, {"DryRun": ["maybe"]},
                                  {"Filter.1.Name.1": ["a list where a string is"]}])
def test_a_value_not_of_its_type_is_a_protocol_error(form: dict) -> None:
    op = EC2.operation_model("DescribeNetworkInterfaces")
    with pytest.raises(ProtocolError):
        query.parse(op, form)


# -- outputs ------------------------------------------------------------------------------
ENI = {
    "NetworkInterfaceId": "eni-0f1", "SubnetId": "subnet-1", "VpcId": "vpc-1",
    "AvailabilityZone": "us-east-1a", "Description": "AWS Lambda VPC ENI-f <&> \"x\"",
    "InterfaceType": "lambda", "Status": "in-use", "MacAddress": "02:00:00:00:00:01",
    "OwnerId": "123456789012", "RequesterId": "AROAEXAMPLE:lambda", "RequesterManaged": True,
    "SourceDestCheck": True, "PrivateIpAddress": "10.0.1.5",
    "Groups": [{"GroupId": "sg-1", "GroupName": "default"}, {"GroupId": "sg-2",
                                                             "GroupName": "lambda"}],
    "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": "10.0.1.5",
                            "PrivateDnsName": "ip-10-0-1-5.ec2.internal"}],
    "Attachment": {"AttachmentId": "ela-attach-1", "InstanceOwnerId": "amazon-aws",
                   "AttachTime": dt.datetime(2026, 12, 5, 10, 0, 0, 123000, tzinfo=UTC),
                   "DeleteOnTermination": False, "DeviceIndex": 1, "Status": "attached"},
    "TagSet": [], "Ipv6Addresses": [],
}
OUTPUTS = [
    (EC2, "DescribeNetworkInterfaces", {"NetworkInterfaces": [ENI, {**ENI, "TagSet": [
        {"Key": "Name", "Value": "second"}]}], "NextToken": "token"}),
    (EC2, "DescribeNetworkInterfaces", {"NetworkInterfaces": []}),
    (EC2, "DescribeSubnets", {"Subnets": [{
        "SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/24",
        "AvailableIpAddressCount": 251, "AvailabilityZone": "us-east-1a", "State": "available",
        "DefaultForAz": False, "MapPublicIpOnLaunch": False,
        "Tags": [{"Key": "Name", "Value": "private-a"}]}]}),
    (EC2, "CreateSecurityGroup", {"GroupId": "sg-0cc", "Tags": [{"Key": "a", "Value": "b"}]}),
    (EC2, "AuthorizeSecurityGroupIngress", {"Return": True, "SecurityGroupRules": [{
        "SecurityGroupRuleId": "sgr-1", "GroupId": "sg-0cc", "IsEgress": False,
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIpv4": "10.0.0.0/16"}]}),
    (STS, "GetCallerIdentity", {"UserId": "AKIDEXAMPLE", "Account": "123456789012",
                                "Arn": "arn:aws:iam::123456789012:root"}),
    (STS, "AssumeRole", {"Credentials": {
        "AccessKeyId": "ASIA1", "SecretAccessKey": "s", "SessionToken": "t",
        "Expiration": dt.datetime(2026, 12, 5, 11, 0, tzinfo=UTC)},
        "AssumedRoleUser": {"AssumedRoleId": "AROA1:s", "Arn": "arn:aws:sts::1:assumed-role/r/s"},
        "PackedPolicySize": 6}),
]


@pytest.mark.parametrize("model, operation, output", OUTPUTS,
                         ids=[f"{op}-{i}" for i, (_, op, _) in enumerate(OUTPUTS)])
def test_outputs_parse_back_with_botocore(model: object, operation: str,
                                          output: dict) -> None:
    body = query.serialize(model, model.operation_model(operation), output, "req-1")
    parsed = response_of(model, operation, 200, {}, body)
    assert parsed == output


def test_the_ec2_document_names_its_request_and_namespace() -> None:
    body = query.serialize(EC2, EC2.operation_model("DescribeSubnets"), {"Subnets": []}, "r-1")
    root = ET.fromstring(body)
    assert root.tag == "{http://ec2.amazonaws.com/doc/2016-11-15/}DescribeSubnetsResponse"
    assert root[0].tag.endswith("requestId") and root[0].text == "r-1"


def test_the_sts_document_wraps_its_result_and_metadata() -> None:
    output = {"UserId": "u", "Account": "1", "Arn": "a", "Unknown": "left out"}
    body = query.serialize(STS, STS.operation_model("GetCallerIdentity"), output, "r-2")
    root = ET.fromstring(body)
    ns = "{https://sts.amazonaws.com/doc/2011-06-15/}"
    assert root.tag == f"{ns}GetCallerIdentityResponse"
    assert [child.tag for child in root] == [f"{ns}GetCallerIdentityResult",
                                             f"{ns}ResponseMetadata"]
    assert root.find(f"{ns}ResponseMetadata/{ns}RequestId").text == "r-2"
    assert b"Unknown" not in body


def test_text_that_xml_cannot_carry_is_replaced_not_sent() -> None:
    body = query.serialize(STS, STS.operation_model("GetCallerIdentity"),
                           {"UserId": "a\x00b"}, "r")
    assert ET.fromstring(body)[0][0].text == "a\ufffdb"


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("model, error, code", [
    (EC2, ApiError("DependencyViolation", "resource sg-1 has a dependent object <&>", 400),
     "DependencyViolation"),
    (EC2, ApiError("InternalError", "oops", 500), "InternalError"),
    (STS, ApiError("InvalidAction", "The action X is not valid for this web service.", 400),
     "InvalidAction"),
    (STS, ApiError("MalformedPolicyDocumentException", "bad policy", 400),
     "MalformedPolicyDocument"),
    (STS, ApiError("InternalFailure", "oops", 500), "InternalFailure"),
])
def test_errors_parse_back_with_botocore(model: object, error: ApiError, code: str) -> None:
    operation = "DescribeSubnets" if model is EC2 else "GetCallerIdentity"
    status, headers, body = query.serialize_error(model, error, "req-9")
    assert status == error.status
    assert headers["Content-Type"].startswith("text/xml")
    parsed = response_of(model, operation, status, headers, body)
    assert parsed["Error"] == {"Code": code, "Message": error.message,
                               **({"Type": "Sender" if status < 500 else "Receiver"}
                                  if model is STS else {})}


def test_the_sts_error_says_who_is_at_fault() -> None:
    _, _, body = query.serialize_error(STS, ApiError("X", "m", 400), "r")
    assert b"<Type>Sender</Type>" in body
    _, _, body = query.serialize_error(STS, ApiError("X", "m", 503), "r")
    assert b"<Type>Receiver</Type>" in body


def test_the_ec2_error_carries_its_request_id() -> None:
    _, _, body = query.serialize_error(EC2, ApiError("X", "m", 400), "req-7")
    assert ET.fromstring(body).find("RequestID").text == "req-7"


def _synthetic(protocol: str) -> ServiceModel:
    """A small model with what EC2 and STS lack today: maps, flattened lists, blobs."""
    shapes = {
        "In": {"type": "structure", "members": {
            "Attributes": {"shape": "Attrs"}, "Flat": {"shape": "FlatList"},
            "Data": {"shape": "Bytes"}, "When": {"shape": "Time"}, "Ratio": {"shape": "Num"},
            "Nested": {"shape": "In2"}}},
        "In2": {"type": "structure", "members": {"Names": {"shape": "Names"}}},
        "Out": {"type": "structure", "members": {
            "Attributes": {"shape": "Attrs"}, "Flat": {"shape": "FlatList"},
            "Data": {"shape": "Bytes"}, "When": {"shape": "Time"}, "Ratio": {"shape": "Num"},
            "Nested": {"shape": "In2"}}},
        "Attrs": {"type": "map", "key": {"shape": "Str"}, "value": {"shape": "Str"}},
        "FlatList": {"type": "list", "member": {"shape": "Str"}, "flattened": True},
        "Names": {"type": "list", "member": {"shape": "Str"}},
        "Bytes": {"type": "blob"}, "Time": {"type": "timestamp"}, "Num": {"type": "double"},
        "Str": {"type": "string"},
    }
    return ServiceModel({
        "metadata": {"protocol": protocol, "apiVersion": "2020-01-01", "endpointPrefix": "x",
                     "xmlNamespace": "https://x.example/doc/", "signatureVersion": "v4"},
        "operations": {"Op": {"name": "Op", "http": {"method": "POST", "requestUri": "/"},
                              "input": {"shape": "In"},
                              "output": {"shape": "Out", "resultWrapper": "OpResult"}}},
        "shapes": shapes}, "synthetic")


@pytest.mark.parametrize("protocol", ["query", "ec2"])
def test_maps_flattened_lists_blobs_and_timestamps_round_trip(protocol: str) -> None:
    model = _synthetic(protocol)
    value = {"Attributes": {"a": "1", "b c": "2 & 3"}, "Flat": ["x", "y"],
             "Data": b"\x00\xffbytes", "When": dt.datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC),
             "Ratio": 0.25, "Nested": {"Names": ["n1", "n2"]}}
    _, _, _, body = request_of(model, "Op", value)
    assert query.parse(model.operation_model("Op"), form_of(body)) == value
    answer = query.serialize(model, model.operation_model("Op"), value, "r")
    assert response_of(model, "Op", 200, {}, answer) == value
