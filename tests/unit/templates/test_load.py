"""Reading template files: short-form tags in long form, JSON alike, within bounds.

Every problem is one ``TopologyError`` at ``<file>`` whose reason says what is
wrong and where (a malformed tag names its line).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model.document import MAX_BYTES
from hyperplane.model.fields import FILE_PATH
from hyperplane.templates.load import is_template, read_template

DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def props(tmp_path: Path, body: str) -> dict:
    text = "Resources:\n  R:\n    Type: AWS::X::Y\n    Properties:\n" + "".join(
        f"      {line}\n" for line in body.splitlines())
    return read_template(write(tmp_path, text))["Resources"]["R"]["Properties"]


def test_each_short_form_becomes_its_long_form(tmp_path: Path) -> None:
    got = props(tmp_path, """\
A: !Ref Vpc
B: !GetAtt Db.Endpoint.Address
C: !GetAtt [Db, Endpoint.Port]
D: !Sub "${AWS::StackName}-x"
E: !Join [",", [a, b]]
F: !Select [0, !GetAZs ""]
G: !Split [",", "a,b"]
H: !Cidr [10.0.0.0/16, 2, 8]
I: !If [IsProd, 1, 2]
J: !Equals [a, b]
K: !And [!Condition X, !Not [!Condition Y]]
L: !Or [!Condition X, !Condition Y]
M: !FindInMap [Map, !Ref AWS::Region, Key]
N: !ImportValue Shared
O: !Base64 hello
P: !Transform {Name: AWS::Include, Parameters: {Location: s3://b/k}}
Q: !Length [1, 2]
S: !ToJsonString {a: 1}""")
    assert got["A"] == {"Ref": "Vpc"}
    assert got["B"] == {"Fn::GetAtt": ["Db", "Endpoint.Address"]}  # split at the first dot
    assert got["C"] == {"Fn::GetAtt": ["Db", "Endpoint.Port"]}
    assert got["D"] == {"Fn::Sub": "${AWS::StackName}-x"}
    assert got["E"] == {"Fn::Join": [",", ["a", "b"]]}
    assert got["F"] == {"Fn::Select": [0, {"Fn::GetAZs": ""}]}
    assert got["G"] == {"Fn::Split": [",", "a,b"]}
    assert got["H"] == {"Fn::Cidr": ["10.0.0.0/16", 2, 8]}
    assert got["I"] == {"Fn::If": ["IsProd", 1, 2]}
    assert got["J"] == {"Fn::Equals": ["a", "b"]}
    assert got["K"] == {"Fn::And": [{"Condition": "X"}, {"Fn::Not": [{"Condition": "Y"}]}]}
    assert got["L"] == {"Fn::Or": [{"Condition": "X"}, {"Condition": "Y"}]}
    assert got["M"] == {"Fn::FindInMap": ["Map", {"Ref": "AWS::Region"}, "Key"]}
    assert got["N"] == {"Fn::ImportValue": "Shared"}
    assert got["O"] == {"Fn::Base64": "hello"}
    assert got["P"] == {"Fn::Transform": {"Name": "AWS::Include",
                                          "Parameters": {"Location": "s3://b/k"}}}
    assert got["Q"] == {"Fn::Length": [1, 2]}
    assert got["S"] == {"Fn::ToJsonString": {"a": 1}}


def test_a_tag_over_a_block_sequence_and_a_nested_sub(tmp_path: Path) -> None:
    got = props(tmp_path, """\
Url: !Sub
  - "https://${Host}:${Port}/"
  - Host: !GetAtt Db.Endpoint.Address
    Port: !Select
      - 0
      - !Split [",", "5432,5433"]
Script: !Base64
  Fn::Sub: |
    #!/bin/bash
    echo ${AWS::Region}""")
    assert got["Url"] == {"Fn::Sub": ["https://${Host}:${Port}/", {
        "Host": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "Port": {"Fn::Select": [0, {"Fn::Split": [",", "5432,5433"]}]}}]}
    assert got["Script"] == {"Fn::Base64": {"Fn::Sub": "#!/bin/bash\necho ${AWS::Region}\n"}}


def test_an_unquoted_date_stays_the_text_written(tmp_path: Path) -> None:
    text = "AWSTemplateFormatVersion: 2010-09-09\nResources: {R: {Type: AWS::X::Y}}\n"
    assert read_template(write(tmp_path, text))["AWSTemplateFormatVersion"] == "2010-09-09"


def test_a_json_template_indented_with_tabs_reads_through_the_same_loader() -> None:
    template = read_template(str(DATA / "vpc.json"))
    subnet = template["Resources"]["Subnet"]["Properties"]
    assert subnet["VpcId"] == {"Ref": "Vpc"}
    assert subnet["Tags"][0]["Value"] == {"Fn::Sub": "${AWS::StackName}-subnet\twith a tab"}


@pytest.mark.parametrize("body, expected", [
    ("A: !Ref [a, b]", "!Ref takes a name (a non-empty scalar), not a sequence"),
    ("A: !Ref ''", "!Ref takes a name"),
    ("A: !Condition {a: 1}", "!Condition takes a name"),
    ("A: !GetAtt Database", "!GetAtt 'Database' is not Resource.Attribute"),
    ("A: !GetAtt {a: b}", "!GetAtt takes Resource.Attribute or [Resource, Attribute]"),
    ("A: !Reff Vpc", "could not determine a constructor for the tag '!Reff'"),
])
def test_a_malformed_tag_is_an_error_naming_its_line(tmp_path: Path, body: str,
                                                       expected: str) -> None:
    text = f"Resources:\n  R:\n    Type: AWS::X::Y\n    Properties:\n      {body}\n"
    with pytest.raises(TopologyError) as caught:
        read_template(write(tmp_path, text))
    assert caught.value.path == FILE_PATH
    assert expected in caught.value.reason
    assert "line 5" in caught.value.reason


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    text = "Resources:\n  R: {Type: AWS::X::Y}\n  R: {Type: AWS::X::Z}\n"
    with pytest.raises(TopologyError, match="duplicate key 'R'"):
        read_template(write(tmp_path, text))


def test_what_is_not_a_template_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="not a CloudFormation template"):
        read_template(write(tmp_path, "vpcs: []\n"))
    with pytest.raises(TopologyError, match="expected a template \\(a mapping\\), got a list"):
        read_template(write(tmp_path, "- Resources\n"))


def test_the_bounds_of_a_topology_file_apply(tmp_path: Path) -> None:
    bomb = ["Resources: {R: {Type: AWS::X::Y}}", 'x0: &a0 ["lol", "lol", "lol", "lol"]']
    bomb += [f"x{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    with pytest.raises(TopologyError, match="aliases are expanded"):
        read_template(write(tmp_path, "\n".join(bomb) + "\n"))
    with pytest.raises(TopologyError, match="nesting deeper than 64"):
        read_template(write(tmp_path, "Resources: " + "[" * 70 + "]" * 70 + "\n"))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(TopologyError, match=f"at most {MAX_BYTES}"):
        read_template(str(big))
    with pytest.raises(TopologyError, match="file not found"):
        read_template(str(tmp_path / "missing.yaml"))


def test_a_yaml_error_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="invalid YAML at line 2, column 14"):
        read_template(write(tmp_path, "Resources:\n  R: {Type: [}\n"))


def test_is_template() -> None:
    assert is_template({"Resources": {}})
    assert is_template({"AWSTemplateFormatVersion": "2010-09-09"})
    assert is_template({"Transform": "AWS::Serverless-2016-10-31"})
    assert not is_template({"vpcs": []})
    assert not is_template(["Resources"])
