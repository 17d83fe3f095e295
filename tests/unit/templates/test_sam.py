"""SAM templates expanded offline: Globals honoured, local CodeUri kept, errors named.

No test may reach the network: ``offline`` makes every socket connection and every
boto3 client an error, so an expansion that tried either would fail.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import boto3
import pytest

from hyperplane.errors import TopologyError
from hyperplane.templates.load import read_template
from hyperplane.templates.sam import CODE_URI_KEY, LOCAL_CODE_BUCKET, expand, is_sam
from hyperplane.templates.stack import resolve

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the SAM expansion tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(boto3, "client", refuse)
    monkeypatch.setattr(boto3.session.Session, "client", refuse)


def sam_app() -> dict:
    return read_template(str(DATA / "sam_app.yaml"))


def test_globals_are_honoured() -> None:
    template = expand(sam_app(), "sam_app.yaml")
    assert "Transform" not in template and "Globals" not in template
    reader = template["Resources"]["ReaderFunction"]
    writer = template["Resources"]["WriterFunction"]
    assert reader["Type"] == writer["Type"] == "AWS::Lambda::Function"
    for function in (reader, writer):
        props = function["Properties"]
        assert props["Runtime"] == "python3.12" and props["Handler"] == "app.handler"
        assert props["MemorySize"] == 256
        assert props["VpcConfig"] == {"SubnetIds": {"Ref": "SubnetIds"},
                                      "SecurityGroupIds": [{"Ref": "SecurityGroupId"}]}
    assert reader["Properties"]["Timeout"] == 10
    assert writer["Properties"]["Timeout"] == 30                  # its own wins
    assert reader["Properties"]["Environment"]["Variables"] == {
        "STAGE": {"Ref": "Stage"}, "DB_HOST": "db.internal", "TABLE": "items"}  # merged
    role = template["Resources"]["ReaderFunctionRole"]["Properties"]
    assert "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole" in \
        role["ManagedPolicyArns"]


def test_local_code_uri_is_kept_in_metadata() -> None:
    template = expand(sam_app(), "sam_app.yaml")
    reader = template["Resources"]["ReaderFunction"]
    writer = template["Resources"]["WriterFunction"]
    assert reader["Metadata"][CODE_URI_KEY] == "src/reader/"     # exactly as written
    assert writer["Metadata"][CODE_URI_KEY] == "./src/writer"
    assert reader["Properties"]["Code"] == {"S3Bucket": LOCAL_CODE_BUCKET,
                                            "S3Key": "ReaderFunction"}


def test_code_uri_from_globals_inline_code_and_s3() -> None:
    template = {
        "Transform": ["AWS::Serverless-2016-10-31"],
        "Globals": {"Function": {"CodeUri": "shared/", "Runtime": "nodejs20.x",
                                 "Handler": "index.handler"}},
        "Resources": {
            "Inherits": {"Type": "AWS::Serverless::Function"},
            "Inline": {"Type": "AWS::Serverless::Function",
                       "Properties": {"InlineCode": "exports.handler = async () => 1;"}},
            "FromS3": {"Type": "AWS::Serverless::Function",
                       "Properties": {"CodeUri": "s3://bucket/code.zip"}},
            "Layer": {"Type": "AWS::Serverless::LayerVersion",
                      "Properties": {"ContentUri": "layers/common"}}}}
    original = copy.deepcopy(template)
    resources = expand(template, "t.yaml")["Resources"]
    assert template == original                                   # the input is unchanged
    assert resources["Inherits"]["Metadata"] == {CODE_URI_KEY: "shared/"}
    assert resources["Inline"]["Properties"]["Code"] == {
        "ZipFile": "exports.handler = async () => 1;"}
    assert "Metadata" not in resources["Inline"]
    assert resources["FromS3"]["Properties"]["Code"] == {"S3Bucket": "bucket",
                                                         "S3Key": "code.zip"}
    layer = next(r for r in resources.values() if r["Type"] == "AWS::Lambda::LayerVersion")
    assert layer["Metadata"] == {"HyperplaneContentUri": "layers/common"}


def test_an_api_event_expands_offline() -> None:
    template = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {
        "Hello": {"Type": "AWS::Serverless::Function", "Properties": {
            "CodeUri": "hello/", "Runtime": "python3.12", "Handler": "app.handler",
            "Events": {"Get": {"Type": "Api", "Properties": {"Path": "/", "Method": "get"}}}}}}}
    types = {r["Type"] for r in expand(template, "t.yaml")["Resources"].values()}
    assert {"AWS::Lambda::Function", "AWS::ApiGateway::RestApi",
            "AWS::Lambda::Permission"} <= types


def test_the_expanded_template_resolves_as_a_stack() -> None:
    stack = resolve(expand(sam_app(), "sam_app.yaml"), "sam_app.yaml", "app", "us-east-1",
                    "123456789012", {"Stage": "prod"})
    reader = stack.resource("ReaderFunction")
    assert reader.metadata[CODE_URI_KEY] == "src/reader/"
    assert reader.properties["VpcConfig"]["SubnetIds"] == ["subnet-0aaaaaaaaaaaaaaa1",
                                                           "subnet-0aaaaaaaaaaaaaaa2"]
    assert reader.properties["Environment"]["Variables"]["STAGE"] == "prod"
    assert reader.properties["Role"] == stack.resource("ReaderFunctionRole").attributes["Arn"]
    assert stack.outputs["WriterName"] == stack.resource("WriterFunction").physical_id
    assert stack.resource("ReaderFunction").depends_on == ("ReaderFunctionRole",)


def test_a_translator_error_names_the_resource() -> None:
    template = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {
        "Broken": {"Type": "AWS::Serverless::Function",
                   "Properties": {"Runtime": "python3.12", "Handler": "app.handler"}}}}
    with pytest.raises(TopologyError) as caught:
        expand(template, "t.yaml")
    assert caught.value.file == "t.yaml"
    assert caught.value.path == "Resources.Broken"
    assert caught.value.reason.startswith("SAM: Resource with id [Broken] is invalid.")


def test_an_event_error_names_the_event() -> None:
    template = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {
        "Fn": {"Type": "AWS::Serverless::Function", "Properties": {
            "CodeUri": "fn/", "Runtime": "python3.12", "Handler": "app.handler",
            "Events": {"Tick": {"Type": "Schedule", "Properties": {"Schedule": 5}}}}}}}
    with pytest.raises(TopologyError) as caught:
        expand(template, "t.yaml")
    assert caught.value.path == "Resources.Fn.Properties.Events.Tick"   # not FnTick
    assert "Property 'Schedule' should be a string" in caught.value.reason
    template["Resources"]["Fn"]["Properties"]["Events"] = {"Tick": {"Type": "Bogus"}}
    with pytest.raises(TopologyError) as caught:
        expand(template, "t.yaml")
    assert caught.value.path == "Resources.Fn.Properties.Events.Tick"
    assert "Event Type is: Bogus" in caught.value.reason


def test_a_globals_error_names_globals() -> None:
    template = {"Transform": "AWS::Serverless-2016-10-31",
                "Globals": {"Function": {"Timeuot": 3}},
                "Resources": {"Fn": {"Type": "AWS::Serverless::Function", "Properties": {
                    "CodeUri": "fn/", "Runtime": "python3.12", "Handler": "app.handler"}}}}
    with pytest.raises(TopologyError) as caught:
        expand(template, "t.yaml")
    assert caught.value.path == "Globals"
    assert "'Timeuot' is not a supported property of 'Function'" in caught.value.reason
    assert len(caught.value.reason) <= 310


def test_nested_applications_are_refused() -> None:
    template = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {
        "App": {"Type": "AWS::Serverless::Application", "Properties": {"Location": {
            "ApplicationId": "arn:aws:serverlessrepo:us-east-1:123456789012:applications/x",
            "SemanticVersion": "1.0.0"}}}}}
    with pytest.raises(TopologyError) as caught:
        expand(template, "t.yaml")
    assert caught.value.path == "Resources.App.Type"
    assert "not emulated" in caught.value.reason


def test_a_template_without_the_sam_transform_is_returned_as_is() -> None:
    template = {"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}
    assert expand(template, "t.yaml") is template
    assert not is_sam(template)
    assert is_sam({"Transform": ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]})
