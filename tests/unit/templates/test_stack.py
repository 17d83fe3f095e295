"""Templates resolved as stacks: order, values, physical ids, conditions and errors.

The good templates are files under ``data/`` in the style of public examples (a
VPC with public and private subnets, NAT and security groups; a PostgreSQL
instance read by a function in the VPC); the bad ones are written inline, each
failing with one ``TopologyError`` whose path names the place and whose reason
says why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperplane.errors import TopologyError
from hyperplane.templates.load import read_template
from hyperplane.templates.physical import generated_name
from hyperplane.templates.stack import Resource, Stack, resolve

DATA = Path(__file__).parent / "data"
ACCOUNT = "123456789012"


def load(name: str) -> dict:
    return read_template(str(DATA / name))


def stack_of(template: dict, overrides: dict | None = None, name: str = "demo",
             callback=None, region: str = "eu-west-1") -> Stack:
    return resolve(template, "t.yaml", name, region, ACCOUNT, overrides or {}, callback)


def failure(tmp_path: Path, text: str, overrides: dict | None = None) -> TopologyError:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        stack_of(read_template(str(path)), overrides)
    assert caught.value.file == "t.yaml"
    return caught.value


def database(resource: Resource) -> dict[str, object]:
    """The mapping layer's part: a database's endpoint once it is placed."""
    if resource.type == "AWS::RDS::DBInstance":
        return {"Endpoint.Address": "10.0.2.10",
                "Endpoint.Port": resource.properties.get("Port", "5432")}
    return {}


# -- a VPC --------------------------------------------------------------------------------
def test_a_vpc_with_two_subnets_per_zone() -> None:
    stack = stack_of(load("vpc.yaml"))
    subnets = {r.logical_id: r.properties for r in stack.of_type("AWS::EC2::Subnet")}
    assert {k: (v["CidrBlock"], v["AvailabilityZone"]) for k, v in subnets.items()} == {
        "PublicSubnet1": ("10.0.0.0/24", "eu-west-1a"),
        "PublicSubnet2": ("10.0.1.0/24", "eu-west-1b"),
        "PrivateSubnet1": ("10.0.2.0/24", "eu-west-1a"),
        "PrivateSubnet2": ("10.0.3.0/24", "eu-west-1b")}
    vpc = stack.resource("VPC")
    assert all(p["VpcId"] == vpc.physical_id for p in subnets.values())
    assert stack.resource("PublicSubnet1").properties["Tags"] == [
        {"Key": "Name", "Value": "demo Public Subnet (AZ1)"}]


def test_resources_come_in_dependency_order() -> None:
    stack = stack_of(load("vpc.yaml"))
    order = [r.logical_id for r in stack.resources]
    for resource in stack.resources:
        for dependency in resource.depends_on:
            assert order.index(dependency) < order.index(resource.logical_id)
    assert order[0] == "VPC"
    assert stack.resource("NatGateway").depends_on == ("PublicSubnet1", "NatGatewayEIP")
    assert stack.resource("NatGatewayEIP").depends_on == ("InternetGatewayAttachment",)
    assert order == [r.logical_id for r in stack_of(load("vpc.yaml")).resources]  # stable


def test_routes_nat_and_security_groups() -> None:
    stack = stack_of(load("vpc.yaml"))
    eip = stack.resource("NatGatewayEIP")
    nat = stack.resource("NatGateway")
    assert re.fullmatch(r"eipalloc-[0-9a-f]{17}", eip.attributes["AllocationId"])
    assert nat.properties == {"AllocationId": eip.attributes["AllocationId"],
                              "SubnetId": stack.resource("PublicSubnet1").physical_id}
    route = stack.resource("DefaultPrivateRoute").properties
    assert route["NatGatewayId"] == nat.physical_id
    assert route["RouteTableId"] == stack.resource("PrivateRouteTable").physical_id
    web, app = stack.resource("WebSecurityGroup"), stack.resource("AppSecurityGroup")
    assert web.properties["SecurityGroupIngress"] == [
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"}]
    assert app.properties["SecurityGroupEgress"][0]["CidrIp"] == "10.0.0.0/16"
    ingress = stack.resource("AppFromWeb").properties
    assert ingress["GroupId"] == app.physical_id
    assert ingress["SourceSecurityGroupId"] == web.attributes["GroupId"] == web.physical_id


def test_outputs_and_vpc_attributes() -> None:
    stack = stack_of(load("vpc.yaml"))
    vpc = stack.resource("VPC")
    assert stack.outputs["VPC"] == vpc.physical_id
    assert stack.outputs["PublicSubnets"] == ",".join(
        stack.resource(n).physical_id for n in ("PublicSubnet1", "PublicSubnet2"))
    assert re.fullmatch(r"sg-[0-9a-f]{17}", stack.outputs["DefaultSecurityGroup"])
    assert stack.outputs["DefaultSecurityGroup"] != vpc.attributes["DefaultNetworkAcl"][3:]
    assert vpc.attributes["CidrBlock"] == "10.0.0.0/16" and vpc.attributes["VpcId"] == \
        vpc.physical_id


def test_a_json_template_resolves_alike() -> None:
    stack = stack_of(load("vpc.json"), name="json-stack")
    assert stack.resource("Subnet").properties["CidrBlock"] == "10.1.0.0/24"
    assert stack.resource("Subnet").properties["AvailabilityZone"] == "eu-west-1b"
    assert stack.outputs == {"SubnetId": stack.resource("Subnet").physical_id}


# -- a database and a function ------------------------------------------------------------
def test_a_database_endpoint_reaches_a_function_through_the_callback() -> None:
    seen: list[str] = []

    def callback(resource: Resource) -> dict[str, object]:
        seen.append(resource.logical_id)
        return database(resource)

    stack = stack_of(load("rds_lambda.yaml"), callback=callback, name="shop")
    assert seen == [r.logical_id for r in stack.resources]      # in dependency order
    assert seen.index("Db") < seen.index("Reader")
    variables = stack.resource("Reader").properties["Environment"]["Variables"]
    assert variables == {
        "DB_HOST": "10.0.2.10", "DB_PORT": "5432",
        "DB_URL": "postgresql://app@10.0.2.10:5432/dev_main", "DEBUG": "1",
        "REGION_AZS": "eu-west-1a,eu-west-1b,eu-west-1c",
        "LITERAL": "${NotReplaced} in eu-west-1"}
    db = stack.resource("Db")
    assert db.attributes["Endpoint.Address"] == "10.0.2.10"
    assert db.properties["DBSubnetGroupName"] == stack.resource("DbSubnetGroup").physical_id
    assert db.properties["DBInstanceClass"] == "db.t3.micro"
    assert "BackupRetentionPeriod" not in db.properties               # AWS::NoValue
    assert stack.resource("Reader").physical_id == "shop-reader"     # its FunctionName
    assert stack.outputs["DbEndpoint"] == "10.0.2.10"
    assert stack.outputs["ReaderArn"] == \
        f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:shop-reader"


def test_conditions_drop_a_resource_and_choose_branches() -> None:
    dev = stack_of(load("rds_lambda.yaml"), callback=database)
    assert dev.conditions == {"IsProd": False, "IsDev": True, "HasBastion": False,
                              "ProdWithBastion": False}
    assert dev.dropped == ("Bastion",)
    assert "BastionId" not in dev.outputs and dev.outputs["BastionOrNone"] == "none"
    prod = stack_of(load("rds_lambda.yaml"), {"Env": "prod", "EnableBastion": "true"},
                    callback=database)
    assert prod.dropped == ()
    bastion = prod.resource("Bastion")
    assert prod.outputs["BastionId"] == prod.outputs["BastionOrNone"] == bastion.physical_id
    assert bastion.properties["SubnetId"] == "subnet-0123456789abcdef0"
    db = prod.resource("Db").properties
    assert db["DBInstanceClass"] == "db.r6g.large" and db["BackupRetentionPeriod"] == 7
    assert db["MultiAZ"] is True
    variables = prod.resource("Reader").properties["Environment"]["Variables"]
    assert "DEBUG" not in variables and variables["DB_URL"].endswith("/main")
    assert prod.no_echo == frozenset({"DbPassword"})


def test_without_a_callback_a_placed_attribute_is_an_error() -> None:
    with pytest.raises(TopologyError) as caught:
        stack_of(load("rds_lambda.yaml"))
    assert caught.value.path == "Resources.Reader.Properties.Environment.Variables.DB_HOST"
    assert "has no attribute 'Endpoint.Address' known here" in caught.value.reason


# -- physical ids -------------------------------------------------------------------------
def test_physical_ids_are_stable_and_differ_across_stack_names() -> None:
    first = stack_of(load("vpc.yaml"), name="blue")
    again = stack_of(load("vpc.yaml"), name="blue")
    other = stack_of(load("vpc.yaml"), name="green")
    ids = [r.physical_id for r in first.resources]
    assert ids == [r.physical_id for r in again.resources]
    assert all(a != b for a, b in zip(ids, [r.physical_id for r in other.resources],
                                      strict=True))
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("logical_id, pattern", [
    ("VPC", r"vpc-[0-9a-f]{17}"), ("PublicSubnet1", r"subnet-[0-9a-f]{17}"),
    ("WebSecurityGroup", r"sg-[0-9a-f]{17}"), ("InternetGateway", r"igw-[0-9a-f]{17}"),
    ("NatGateway", r"nat-[0-9a-f]{17}"), ("PublicRouteTable", r"rtb-[0-9a-f]{17}"),
    ("InternetGatewayAttachment", r"demo-InternetGatewayAttachment-[A-Z0-9]{12}"),
])
def test_physical_ids_have_aws_shapes(logical_id: str, pattern: str) -> None:
    assert re.fullmatch(pattern, stack_of(load("vpc.yaml")).resource(logical_id).physical_id)


def test_generated_names_of_functions_and_databases(tmp_path: Path) -> None:
    template = {"Resources": {
        "Handler": {"Type": "AWS::Lambda::Function", "Properties": {}},
        "Db": {"Type": "AWS::RDS::DBInstance", "Properties": {}},
        "Named": {"Type": "AWS::RDS::DBInstance",
                  "Properties": {"DBInstanceIdentifier": "Orders-DB"}},
        "Files": {"Type": "AWS::EFS::FileSystem"},
        "Point": {"Type": "AWS::EFS::AccessPoint",
                  "Properties": {"FileSystemId": {"Ref": "Files"}}},
        "Mount": {"Type": "AWS::EFS::MountTarget",
                  "Properties": {"FileSystemId": {"Ref": "Files"}}}}}
    stack = stack_of(template, name="My-Stack")
    handler = stack.resource("Handler")
    assert re.fullmatch(r"My-Stack-Handler-[A-Z0-9]{12}", handler.physical_id)
    assert handler.attributes["Arn"] == \
        f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{handler.physical_id}"
    assert re.fullmatch(r"my-stack-db-[a-z0-9]{12}", stack.resource("Db").physical_id)
    assert stack.resource("Named").physical_id == "orders-db"
    assert re.fullmatch(r"fs-[0-9a-f]{17}", stack.resource("Files").physical_id)
    assert re.fullmatch(r"fsap-[0-9a-f]{17}", stack.resource("Point").physical_id)
    assert re.fullmatch(r"fsmt-[0-9a-f]{17}", stack.resource("Mount").physical_id)


def test_a_long_generated_name_is_cut_to_64() -> None:
    long_stack = "a-very-long-stack-name-for-the-integration-environment"      # 54
    long_id = "TheFunctionThatReadsOrdersFromTheDatabaseEveryMinute"          # 52
    name = generated_name(long_stack, long_id, 64)
    assert len(name) == 64
    assert name.startswith("a-very-long-stack-name-fo-TheFunctionThatReadsOrder-")  # 25 + 25
    short = generated_name("app", long_id, 64)
    assert len(short) == 64 and short.startswith(f"app-{long_id[:47]}-")  # 3 + 47
    assert generated_name("app", "Fn", 64).startswith("app-Fn-")


def test_an_eip_ref_is_its_public_address_from_the_callback() -> None:
    template = {"Resources": {
        "Eip": {"Type": "AWS::EC2::EIP", "Properties": {"Domain": "vpc"}},
        "Tagged": {"Type": "AWS::SSM::Parameter",
                   "Properties": {"Type": "String", "Value": {"Ref": "Eip"}}}}}
    placed = stack_of(template, callback=lambda r: {"PublicIp": "198.51.100.7"}
                      if r.type == "AWS::EC2::EIP" else {})
    assert placed.resource("Eip").physical_id == "198.51.100.7"
    assert placed.resource("Tagged").properties["Value"] == "198.51.100.7"
    with pytest.raises(TopologyError, match="an EIP's Ref is its public address"):
        stack_of(template)


# -- bad templates ------------------------------------------------------------------------
def test_an_unresolvable_ref(tmp_path: Path) -> None:
    caught = failure(tmp_path, """\
Resources:
  Db:
    Type: AWS::RDS::DBInstance
    Properties:
      DBSubnetGroupName: !Ref DbSubnetGroop
  DbSubnetGroup:
    Type: AWS::RDS::DBSubnetGroup
    Properties: {DBSubnetGroupDescription: x, SubnetIds: [a, b]}
""")
    assert caught.path == "Resources.Db.Properties.DBSubnetGroupName"
    assert caught.reason.startswith("unresolvable Ref 'DbSubnetGroop'")
    assert "did you mean 'DbSubnetGroup'?" in caught.reason


def test_a_circular_depends_on(tmp_path: Path) -> None:
    caught = failure(tmp_path, """\
Resources:
  A: {Type: AWS::SNS::Topic, DependsOn: C}
  B: {Type: AWS::SNS::Topic, DependsOn: [A]}
  C: {Type: AWS::SNS::Topic, DependsOn: B}
  D: {Type: AWS::SNS::Topic}
""")
    assert caught.path == "Resources.A"
    assert caught.reason == ("circular dependency: A -(DependsOn)-> C -(DependsOn)-> B "
                             "-(DependsOn)-> A")


def test_a_circular_reference(tmp_path: Path) -> None:
    caught = failure(tmp_path, """\
Resources:
  Web:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: web
      SecurityGroupIngress:
        - {IpProtocol: tcp, FromPort: 80, ToPort: 80, SourceSecurityGroupId: !Ref App}
  App:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: !Sub "reached from ${Web.GroupId}"
""")
    assert caught.path == "Resources.Web"
    assert caught.reason == ("circular dependency: Web -(Ref/GetAtt/Sub)-> App "
                             "-(Ref/GetAtt/Sub)-> Web")


def test_a_resource_that_refers_to_itself(tmp_path: Path) -> None:
    caught = failure(tmp_path, "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n"
                     "    Properties: {QueueName: !GetAtt Q.QueueName}\n")
    assert caught.reason == "circular dependency: Q -(Ref/GetAtt/Sub)-> Q"


def test_an_unsupported_intrinsic(tmp_path: Path) -> None:
    caught = failure(tmp_path, """\
Resources:
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Code:
        ZipFile: {"Fn::Template": "def handler(e, c): pass"}
""")
    assert caught.path == "Resources.Fn.Properties.Code.ZipFile"
    assert caught.reason.startswith("unsupported intrinsic function 'Fn::Template'")


def test_a_parameter_without_default_and_override(tmp_path: Path) -> None:
    text = """\
Parameters:
  Env: {Type: String}
  KeyName: {Type: "AWS::EC2::KeyPair::KeyName"}
  Size: {Type: Number, Default: 1}
Resources:
  T: {Type: AWS::SNS::Topic, Properties: {TopicName: !Sub "${Env}-${KeyName}"}}
"""
    caught = failure(tmp_path, text)
    assert caught.path == "Parameters"
    assert caught.reason.startswith("no value for parameters Env, KeyName:")
    caught = failure(tmp_path, text, {"Env": "dev", "Sise": "2"})
    assert caught.path == "Parameters.Sise" and "did you mean 'Size'?" in caught.reason
    path = tmp_path / "bad.yaml"
    stack = stack_of(read_template(str(path)), {"Env": "dev", "KeyName": "ops"})
    assert stack.resource("T").physical_id == \
        f"arn:aws:sns:eu-west-1:{ACCOUNT}:dev-ops"


def test_a_condition_loop(tmp_path: Path) -> None:
    caught = failure(tmp_path, """\
Parameters:
  Env: {Type: String, Default: dev}
Conditions:
  IsProd: !And [!Equals [!Ref Env, prod], !Condition IsLive]
  IsLive: !Or [!Condition IsPublic, !Equals [a, b]]
  IsPublic: !Not [!Condition IsProd]
Resources:
  T: {Type: AWS::SNS::Topic}
""")
    assert caught.path == "Conditions.IsProd"
    assert caught.reason == "condition cycle: IsProd -> IsLive -> IsPublic -> IsProd"


def test_a_ref_to_a_dropped_resource_outside_an_if(tmp_path: Path) -> None:
    text = """\
Conditions:
  Never: !Equals [a, b]
Resources:
  Queue: {Type: AWS::SQS::Queue, Condition: Never}
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      DisplayName: !If [Never, !GetAtt Queue.Arn, none]
      TopicName: %s
"""
    caught = failure(tmp_path, text % "!Ref Queue")
    assert caught.path == "Resources.Topic.Properties.TopicName"
    assert "'Queue', which its condition 'Never' (false) leaves out" in caught.reason
    path = tmp_path / "ok.yaml"
    path.write_text(text % "plain")
    stack = stack_of(read_template(str(path)))
    assert stack.resource("Topic").properties["DisplayName"] == "none"
    assert stack.dropped == ("Queue",)


@pytest.mark.parametrize("text, path, expected", [
    ("Resources:\n  A: {Type: AWS::SNS::Topic, DependsOn: B}\n", "Resources.A.DependsOn",
     "DependsOn 'B': no such resource"),
    ("Resources:\n  A: {Type: AWS::SNS::Topic, Condition: Nope}\n", "Resources.A.Condition",
     "unknown condition 'Nope'"),
    ("Resources:\n  A: {Type: AWS::SNS::Topic, Propertie: {}}\n", "Resources.A.Propertie",
     "did you mean 'Properties'?"),
    ("Resources:\n  A: {Type: Topic}\n", "Resources.A.Type", "expected a resource type"),
    ("Resources:\n  A-1: {Type: AWS::SNS::Topic}\n", "Resources.A-1", "must be alphanumeric"),
    ("Resources: {}\n", "Resources", "expected a non-empty mapping"),
    ("AWSTemplateFormatVersion: '2010-09-09'\nResource:\n  A: {Type: AWS::SNS::Topic}\n",
     "Resource", "did you mean 'Resources'?"),
    ("Transform: AWS::Serverless-2016-10-31\nResources:\n  A: {Type: AWS::SNS::Topic}\n",
     "Transform", "must be expanded first"),
    ("Transform: MyMacro\nResources:\n  A: {Type: AWS::SNS::Topic}\n", "Transform",
     "transform 'MyMacro' is not emulated"),
    ("Resources:\n  A: {Type: AWS::Serverless::Function}\n", "Resources.A.Type",
     "must be expanded first"),
    ("Parameters: {A: {Type: String, Default: x}}\nResources:\n  A: {Type: AWS::SNS::Topic}\n",
     "Resources.A", "both a parameter and a resource"),
    ("Resources:\n  A: {Type: AWS::SNS::Topic, Properties: {X: !GetAtt A.Nope}}\n",
     "Resources.A", "circular dependency"),
    ("Resources:\n  A: {Type: AWS::SNS::Topic}\n  B:\n    Type: AWS::SNS::Topic\n"
     "    Properties: {X: !GetAtt A.Nope}\n", "Resources.B.Properties.X",
     "'AWS::SNS::Topic' has no attribute 'Nope' known here (known: 'TopicArn, TopicName')"),
    ("Conditions:\n  C: !Equals [!Ref A, x]\nResources:\n  A: {Type: AWS::SNS::Topic}\n",
     "Conditions.C.Fn::Equals[0]", "a condition cannot refer to a resource"),
    ("Resources:\n  A: {Type: AWS::SNS::Topic}\nOutputs:\n  O: {Value: !ImportValue X}\n",
     "Outputs.O.Value", "exports of other stacks are not emulated"),
])
def test_bad_templates(tmp_path: Path, text: str, path: str, expected: str) -> None:
    caught = failure(tmp_path, text)
    assert caught.path == path
    assert expected in caught.reason


def test_a_callback_must_answer_a_mapping() -> None:
    with pytest.raises(TopologyError, match="the attributes callback gave a list"):
        stack_of({"Resources": {"A": {"Type": "AWS::SNS::Topic"}}}, callback=lambda r: [1])


def test_a_stack_records_what_it_was_made_of() -> None:
    stack = stack_of(load("vpc.yaml"), {"EnvironmentName": "blue"}, name="net")
    assert (stack.name, stack.region, stack.account, stack.source) == \
        ("net", "eu-west-1", ACCOUNT, "t.yaml")
    assert stack.stack_id.startswith(f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/net/")
    assert stack.parameters == {"VpcCidr": "10.0.0.0/16", "EnvironmentName": "blue"}
    with pytest.raises(KeyError):
        stack.resource("Nope")
