"""Parameters: defaults, overrides, types and constraints, as CloudFormation checks them."""

from __future__ import annotations

import pytest

from hyperplane.errors import TopologyError
from hyperplane.templates.parameters import resolve_parameters

PARAMETERS = {
    "Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"],
            "ConstraintDescription": "dev or prod"},
    "Port": {"Type": "Number", "Default": 5432, "MinValue": 1150, "MaxValue": 65535},
    "Sizes": {"Type": "List<Number>", "Default": "1, 2,3"},
    "Zones": {"Type": "CommaDelimitedList", "Default": "a, b ,c"},
    "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Default": "subnet-1,subnet-2"},
    "Vpc": {"Type": "AWS::EC2::VPC::Id", "Default": "vpc-1"},
    "Password": {"Type": "String", "NoEcho": True, "MinLength": 8, "MaxLength": 41,
                 "Default": "secret-enough"},
    "Bucket": {"Type": "String", "AllowedPattern": "[a-z0-9-]+", "Default": "my-bucket"},
}


def resolve(overrides: dict | None = None, parameters: dict | None = None):
    return resolve_parameters(PARAMETERS if parameters is None else parameters,
                              overrides or {}, "t.yaml")


def error(overrides: dict | None = None, parameters: dict | None = None) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        resolve(overrides, parameters)
    assert caught.value.file == "t.yaml"
    return caught.value


def test_defaults_give_the_values_ref_returns() -> None:
    params = resolve()
    assert params.values == {
        "Env": "dev", "Port": "5432", "Sizes": ["1", "2", "3"], "Zones": ["a", "b", "c"],
        "Subnets": ["subnet-1", "subnet-2"], "Vpc": "vpc-1", "Password": "secret-enough",
        "Bucket": "my-bucket"}
    assert params.no_echo == frozenset({"Password"})


def test_overrides_win_over_defaults() -> None:
    params = resolve({"Env": "prod", "Port": "3306", "Subnets": "subnet-9"})
    assert params.values["Env"] == "prod"
    assert params.values["Port"] == "3306"
    assert params.values["Subnets"] == ["subnet-9"]


@pytest.mark.parametrize("overrides, path, expected", [
    ({"Env": "test"}, "Parameters.Env",
     "'test' is not one of the AllowedValues ['dev', 'prod'] ('dev or prod')"),
    ({"Port": "80"}, "Parameters.Port", "'80' is below MinValue 1150"),
    ({"Port": "70000"}, "Parameters.Port", "'70000' is above MaxValue 65535"),
    ({"Port": "five"}, "Parameters.Port", "'five' is not a number (the type is Number)"),
    ({"Sizes": "1,x"}, "Parameters.Sizes[1]", "'x' is not a number (the type is List<Number>)"),
    ({"Password": "short"}, "Parameters.Password", "'short' is shorter than MinLength 8"),
    ({"Password": "p" * 50}, "Parameters.Password",
     "a value of 50 characters is longer than MaxLength 41"),
    ({"Bucket": "My_Bucket"}, "Parameters.Bucket",
     "'My_Bucket' does not match the AllowedPattern '[a-z0-9-]+'"),
])
def test_constraints(overrides: dict, path: str, expected: str) -> None:
    caught = error(overrides)
    assert (caught.path, caught.reason) == (path, expected)


def test_every_parameter_without_a_value_is_named_in_one_error() -> None:
    caught = error(parameters={"A": {"Type": "String"}, "B": {"Type": "Number"},
                               "C": {"Type": "String", "Default": "c"}})
    assert caught.path == "Parameters"
    assert caught.reason.startswith("no value for parameters A, B: no Default and no override")
    one = error(parameters={"KeyName": {"Type": "AWS::EC2::KeyPair::KeyName"}})
    assert one.path == "Parameters.KeyName"
    assert one.reason.startswith("no value for parameter KeyName")
    assert resolve({"A": "a", "B": "1"}, {"A": {"Type": "String"},
                                         "B": {"Type": "Number"}}).values == {"A": "a", "B": "1"}


def test_an_override_of_an_unknown_parameter_is_an_error() -> None:
    caught = error({"Evn": "prod"})
    assert caught.path == "Parameters.Evn"
    assert "does not declare" in caught.reason and "did you mean 'Env'?" in caught.reason


def test_ssm_parameters_the_choice_documented() -> None:
    spec = {"Ami": {"Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
                    "Default": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default"
                               "-x86_64"}}
    with_default = resolve({}, spec)
    assert with_default.values["Ami"].startswith("/aws/service/")   # the SSM name, as given
    assert with_default.ssm_unresolved == frozenset({"Ami"})
    overridden = resolve({"Ami": "ami-0abc"}, spec)                 # the value SSM would give
    assert overridden.values["Ami"] == "ami-0abc" and not overridden.ssm_unresolved
    caught = error({}, {"Ami": {"Type": "AWS::SSM::Parameter::Value<String>"}})
    assert "SSM is not emulated" in caught.reason


@pytest.mark.parametrize("spec, path, expected", [
    ({"P": {"Type": "Strin"}}, "Parameters.P.Type", "unsupported parameter type 'Strin'"),
    ({"P": {"Type": "List<String>"}}, "Parameters.P.Type", "unsupported parameter type"),
    ({"P": {"Default": "x"}}, "Parameters.P.Type", "missing or not a string"),
    ({"P": {"Type": "String", "Defualt": "x"}}, "Parameters.P.Defualt",
     "unknown key 'Defualt'; did you mean 'Default'?"),
    ({"P-1": {"Type": "String"}}, "Parameters.P-1", "must be alphanumeric"),
    ({"P": "String"}, "Parameters.P", "expected a mapping, got a string"),
    ({"P": {"Type": "String", "Default": {"a": 1}}}, "Parameters.P.Default",
     "expected a string, got a mapping"),
])
def test_malformed_parameters(spec: dict, path: str, expected: str) -> None:
    caught = error({}, spec)
    assert caught.path == path and expected in caught.reason


def test_yaml_scalars_become_the_text_cloudformation_sees() -> None:
    params = resolve({}, {"On": {"Type": "String", "Default": True},
                          "N": {"Type": "Number", "Default": 2.5},
                          "L": {"Type": "CommaDelimitedList", "Default": ["x", "y"]},
                          "E": {"Type": "CommaDelimitedList", "Default": ""}})
    assert params.values == {"On": "true", "N": "2.5", "L": ["x", "y"], "E": []}
