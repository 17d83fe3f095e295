"""Intrinsic functions evaluated in a context, as CloudFormation evaluates them.

The context's callbacks stand in for the stack: two resources (``Vpc`` and
``Db``), two conditions, a few parameters and one mapping.  ``Fn::Cidr`` is
checked against the examples of AWS's documentation.
"""

from __future__ import annotations

import base64

import pytest

from hyperplane.errors import TopologyError
from hyperplane.templates.intrinsics import (
    NO_VALUE,
    Context,
    evaluate,
    evaluate_condition,
    references,
    sub_names,
)

ATTRIBUTES = {("Vpc", "CidrBlock"): "10.0.0.0/16",
              ("Db", "Endpoint.Address"): "10.0.2.10", ("Db", "Endpoint.Port"): "5432"}
CONDITIONS = {"IsProd": False, "IsDev": True}


def attribute(name: str, attr: str, path: str) -> object:
    if (name, attr) not in ATTRIBUTES:
        raise TopologyError("t.yaml", path, f"no attribute {attr}")
    return ATTRIBUTES[(name, attr)]


CONTEXT = Context(
    "t.yaml", "eu-west-1", "123456789012", "demo",
    parameters={"Env": "dev", "Subnets": ["subnet-1", "subnet-2"], "Port": "5432"},
    mappings={"Sizes": {"dev": {"Class": "db.t3.micro", "Zones": ["a", "b"]},
                        "prod": {"Class": "db.r6g.large"}}},
    resources=("Vpc", "Db"),
    condition=lambda name, path: CONDITIONS[name],
    resource_ref=lambda name, path: {"Vpc": "vpc-1", "Db": "demo-db"}[name],
    resource_attr=attribute,
)


def ev(value: object) -> object:
    return evaluate(value, CONTEXT, "Resources.R.Properties.P")


def error(value: object) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        ev(value)
    assert caught.value.file == "t.yaml"
    return caught.value


# -- Ref and pseudo parameters ------------------------------------------------------------
def test_ref_of_parameters_resources_and_pseudo_parameters() -> None:
    assert ev({"Ref": "Env"}) == "dev"
    assert ev({"Ref": "Subnets"}) == ["subnet-1", "subnet-2"]
    assert ev({"Ref": "Vpc"}) == "vpc-1"
    assert ev({"Ref": "AWS::Region"}) == "eu-west-1"
    assert ev({"Ref": "AWS::AccountId"}) == "123456789012"
    assert ev({"Ref": "AWS::StackName"}) == "demo"
    assert ev({"Ref": "AWS::Partition"}) == "aws"
    assert ev({"Ref": "AWS::URLSuffix"}) == "amazonaws.com"
    assert ev({"Ref": "AWS::NotificationARNs"}) == []
    stack_id = ev({"Ref": "AWS::StackId"})
    assert stack_id.startswith("arn:aws:cloudformation:eu-west-1:123456789012:stack/demo/")
    assert stack_id == ev({"Ref": "AWS::StackId"})  # stable


def test_no_value_removes_a_key_or_an_item() -> None:
    assert ev({"Ref": "AWS::NoValue"}) is NO_VALUE
    assert ev({"A": {"Ref": "AWS::NoValue"}, "B": 1}) == {"B": 1}
    assert ev([1, {"Ref": "AWS::NoValue"}, 2]) == [1, 2]
    assert ev({"A": {"Fn::If": ["IsProd", 7, {"Ref": "AWS::NoValue"}]}}) == {}


def test_an_unresolvable_ref_names_it_and_suggests() -> None:
    caught = error({"Tags": [{"Value": {"Ref": "Vcp"}}]})
    assert caught.path == "Resources.R.Properties.P.Tags[0].Value"
    assert caught.reason.startswith("unresolvable Ref 'Vcp'")
    assert "did you mean 'Vpc'?" in caught.reason


# -- GetAtt and Sub -----------------------------------------------------------------------
def test_get_att_in_both_forms() -> None:
    assert ev({"Fn::GetAtt": ["Db", "Endpoint.Address"]}) == "10.0.2.10"
    assert ev({"Fn::GetAtt": "Db.Endpoint.Port"}) == "5432"
    assert ev({"Fn::GetAtt": ["Vpc", {"Fn::Join": ["", ["Cidr", "Block"]]}]}) == "10.0.0.0/16"


def test_get_att_of_no_resource() -> None:
    caught = error({"Fn::GetAtt": ["Dbs", "Endpoint.Address"]})
    assert caught.reason == ("Fn::GetAtt 'Dbs.Endpoint.Address': 'Dbs' is not a resource of "
                             "the template; did you mean 'Db'?")


def test_sub_string_form() -> None:
    text = "${AWS::StackName}-${Env} on ${Vpc} (${Vpc.CidrBlock}) ${!Literal} ${ Env }"
    assert ev({"Fn::Sub": text}) == "demo-dev on vpc-1 (10.0.0.0/16) ${Literal} dev"


def test_sub_list_form_with_variables() -> None:
    value = {"Fn::Sub": ["postgresql://${Host}:${Port}/${Name}-${AWS::Region}", {
        "Host": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "Name": {"Fn::If": ["IsProd", "main", "scratch"]}}]}
    assert ev(value) == "postgresql://10.0.2.10:5432/scratch-eu-west-1"  # Port: a parameter


def test_sub_errors() -> None:
    assert "unresolvable Fn::Sub variable 'Nope'" in error({"Fn::Sub": "${Nope}"}).reason
    assert "must be a string, got a list" in error({"Fn::Sub": "${Subnets}"}).reason
    assert "an empty ${}" in error({"Fn::Sub": "a${}b"}).reason
    assert "variables must be a mapping" in error({"Fn::Sub": ["x", ["y"]]}).reason


def test_sub_names_and_references() -> None:
    assert sub_names("${A}-${B.C}-${!D}-${AWS::Region}") == ["A", "B.C", "AWS::Region"]
    value = {"X": [{"Ref": "A"}, {"Fn::GetAtt": ["B", "Arn"]}, {"Fn::GetAtt": "C.Arn"},
                   {"Fn::Sub": "${D.Endpoint.Address}:${Local}:${!E}"},
                   {"Fn::Sub": ["${Local}", {"Local": {"Ref": "F"}}]},
                   {"Fn::If": ["Cond", {"Ref": "G"}, {"Ref": "AWS::NoValue"}]}]}
    assert references(value) == ["A", "B", "C", "D", "Local", "F", "G", "AWS::NoValue"]


# -- lists and strings --------------------------------------------------------------------
def test_join_select_split() -> None:
    assert ev({"Fn::Join": [",", {"Ref": "Subnets"}]}) == "subnet-1,subnet-2"
    assert ev({"Fn::Join": ["-", ["a", 1, True]]}) == "a-1-true"
    assert ev({"Fn::Select": ["1", {"Ref": "Subnets"}]}) == "subnet-2"
    assert ev({"Fn::Split": ["|", "a|b||c"]}) == ["a", "b", "", "c"]
    assert ev({"Fn::Select": [2, {"Fn::Split": [",", "x,y,z"]}]}) == "z"


def test_select_out_of_range_and_bad_index() -> None:
    assert "index 2 is out of range: the list has 2 items" in \
        error({"Fn::Select": [2, {"Ref": "Subnets"}]}).reason
    assert "Fn::Select's index must be an integer" in \
        error({"Fn::Select": ["one", ["a"]]}).reason


def test_get_azs() -> None:
    assert ev({"Fn::GetAZs": ""}) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    assert ev({"Fn::GetAZs": {"Ref": "AWS::Region"}}) == ["eu-west-1a", "eu-west-1b",
                                                         "eu-west-1c"]
    assert ev({"Fn::GetAZs": "us-east-2"})[0] == "us-east-2a"


def test_find_in_map_with_and_without_default() -> None:
    assert ev({"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Class"]}) == "db.t3.micro"
    assert ev({"Fn::FindInMap": ["Sizes", "dev", "Zones"]}) == ["a", "b"]
    assert ev({"Fn::FindInMap": ["Sizes", "test", "Class", {"DefaultValue": "x"}]}) == "x"
    caught = error({"Fn::FindInMap": ["Sizes", "prod", "Zones"]})
    assert "mapping 'Sizes' has no key 'Zones' under 'prod'" in caught.reason
    assert "no mapping 'Size'" in error({"Fn::FindInMap": ["Size", "dev", "Class"]}).reason


def test_base64_length_to_json_string() -> None:
    encoded = ev({"Fn::Base64": {"Fn::Sub": "#!/bin/sh\necho ${Env}\n"}})
    assert base64.b64decode(encoded).decode() == "#!/bin/sh\necho dev\n"
    assert ev({"Fn::Length": {"Ref": "Subnets"}}) == 2
    assert ev({"Fn::ToJsonString": {"a": [1, {"Ref": "Env"}]}}) == '{"a":[1,"dev"]}'


# -- Fn::Cidr -----------------------------------------------------------------------------
def test_cidr_as_in_aws_documentation() -> None:
    # "This example creates 6 CIDRs with a subnet mask "/27" inside from a CIDR with a
    # mask of "/24"": { "Fn::Cidr" : [ "192.168.0.0/24", "6", "5"] }
    assert ev({"Fn::Cidr": ["192.168.0.0/24", "6", "5"]}) == [
        "192.168.0.0/27", "192.168.0.32/27", "192.168.0.64/27", "192.168.0.96/27",
        "192.168.0.128/27", "192.168.0.160/27"]
    # "specifying a value "8" for this parameter will create a CIDR with a mask of "/24""
    assert ev({"Fn::Cidr": ["10.0.0.0/16", 2, 8]}) == ["10.0.0.0/24", "10.0.1.0/24"]
    # the IPv6 example: a /64 of the VPC's /56 (cidrBits 64: 128 - 64)
    blocks = ev({"Fn::Cidr": ["2001:db8:1234:1a00::/56", 256, 64]})
    assert len(blocks) == 256
    assert blocks[0] == "2001:db8:1234:1a00::/64" and blocks[-1] == "2001:db8:1234:1aff::/64"


def test_cidr_of_an_attribute_selected() -> None:
    value = {"Fn::Select": [3, {"Fn::Cidr": [{"Fn::GetAtt": ["Vpc", "CidrBlock"]}, 4, 12]}]}
    assert ev(value) == "10.0.48.0/20"


@pytest.mark.parametrize("args, expected", [
    (["10.0.0.0/24", 9, 5], "asks for 9 networks of /27 but only 8 fit in 10.0.0.0/24"),
    (["10.0.0.0/24", 1, 9], "cidrBits 9 do not fit in 10.0.0.0/24"),
    (["10.0.0.0/24", 0, 4], "count must be 1..256"),
    (["10.0.0.0/8", 257, 4], "count must be 1..256"),
    (["10.0.0.256/24", 1, 4], "is not a CIDR block"),
    (["10.0.0.0", 1, 4], "is not a CIDR block"),
    (["10.0.0.0/33", 1, 4], "prefix longer than /32"),
    (["10.0.0.0/24", "x", 4], "count must be an integer"),
])
def test_cidr_errors(args: list, expected: str) -> None:
    assert expected in error({"Fn::Cidr": args}).reason


# -- conditions ---------------------------------------------------------------------------
def test_if_evaluates_only_the_branch_taken() -> None:
    assert ev({"Fn::If": ["IsDev", "yes", {"Ref": "Nowhere"}]}) == "yes"
    assert ev({"Fn::If": ["IsProd", {"Fn::ImportValue": "x"}, {"Ref": "Env"}]}) == "dev"


def test_condition_functions() -> None:
    def cond(value: object) -> bool:
        return evaluate_condition(value, CONTEXT, "Conditions.C")

    assert cond({"Fn::Equals": [{"Ref": "Env"}, "dev"]})
    assert cond({"Fn::Equals": [{"Ref": "Port"}, 5432]})        # a number compares as text
    assert not cond({"Fn::Not": [{"Condition": "IsDev"}]})
    assert cond({"Fn::And": [{"Condition": "IsDev"}, {"Fn::Equals": ["a", "a"]}]})
    assert cond({"Fn::Or": [{"Condition": "IsProd"}, {"Condition": "IsDev"}]})
    with pytest.raises(TopologyError, match="a condition must be one of"):
        cond({"Ref": "Env"})
    with pytest.raises(TopologyError, match="takes a list of 2..10 items"):
        cond({"Fn::And": [{"Condition": "IsDev"}]})


# -- what is not supported ----------------------------------------------------------------
def test_an_unsupported_intrinsic_is_named() -> None:
    caught = error({"Name": {"Fn::Mystery": ["a"]}})
    assert caught.path == "Resources.R.Properties.P.Name"
    assert caught.reason.startswith("unsupported intrinsic function 'Fn::Mystery'")
    assert "Fn::Cidr" in caught.reason


def test_import_value_is_a_clear_error() -> None:
    assert "exports of other stacks are not emulated" in \
        error({"Fn::ImportValue": "Shared-VpcId"}).reason


def test_an_intrinsic_among_other_keys_is_an_error() -> None:
    assert "'Ref' must be the only key of its mapping" in \
        error({"Ref": "Env", "Extra": 1}).reason


def test_a_mapping_named_condition_in_properties_is_data() -> None:
    statement = {"Condition": {"StringEquals": {"aws:SourceVpc": {"Ref": "Vpc"}}}}
    assert ev(statement) == {"Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}


def test_messages_stay_short_whatever_the_value() -> None:
    caught = error({"Fn::Select": ["x" * 10_000, ["a"]]})
    assert len(str(caught)) < 300
