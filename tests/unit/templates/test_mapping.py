"""A resolved stack mapped onto the topology document, and the document parsed (pure)."""

from __future__ import annotations

import copy

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model.parser import parse_topology
from hyperplane.templates.mapping import Mapper, point_error
from hyperplane.templates.stack import resolve

SOURCE = "t.yaml"


def vpc_template() -> dict:
    ref = lambda name: {"Ref": name}  # noqa: E731
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
        "SubnetA": {"Type": "AWS::EC2::Subnet", "Properties": {
            "VpcId": ref("Vpc"), "CidrBlock": "10.0.1.0/24", "AvailabilityZone": "us-east-1a"}},
        "SubnetB": {"Type": "AWS::EC2::Subnet", "Properties": {
            "VpcId": ref("Vpc"), "CidrBlock": "10.0.2.0/24"}},
        "FnSg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupDescription": "fn", "VpcId": ref("Vpc")}},
        "DbSg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupDescription": "db", "VpcId": ref("Vpc"), "SecurityGroupIngress": [
                {"IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
                 "SourceSecurityGroupId": ref("FnSg")}]}},
        "DbSubnets": {"Type": "AWS::RDS::DBSubnetGroup", "Properties": {
            "DBSubnetGroupDescription": "db", "SubnetIds": [ref("SubnetB"), ref("SubnetA")]}},
        "Secret": {"Type": "AWS::SecretsManager::Secret", "Properties": {
            "GenerateSecretString": {"SecretStringTemplate": '{"username": "app"}',
                                     "GenerateStringKey": "password"}}},
        "Db": {"Type": "AWS::RDS::DBInstance", "Properties": {
            "Engine": "mysql", "DBName": "orders", "MasterUsername": "app",
            "MasterUserPassword": {"Fn::Sub": "{{resolve:secretsmanager:${Secret}:"
                                              "SecretString:password}}"},
            "DBSubnetGroupName": ref("DbSubnets"), "VPCSecurityGroups": [ref("DbSg")]}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {
            "Runtime": "python3.12", "Handler": "index.handler",
            "Code": {"ZipFile": "def handler(e, c):\n    return 1\n"},
            "MemorySize": 256, "Environment": {"Variables": {
                "DB_HOST": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
                "DB_PORT": {"Fn::GetAtt": ["Db", "Endpoint.Port"]}, "DEBUG": True,
                "DB_PASSWORD": {"Fn::Sub": "{{resolve:secretsmanager:${Secret}:SecretString:"
                                           "password}}"}}},
            "VpcConfig": {"SubnetIds": [ref("SubnetA"), ref("SubnetB")],
                          "SecurityGroupIds": [ref("FnSg")]}}},
    }}


def mapped_of(template: dict, stack_name: str = "app", code: dict | None = None):
    mapper = Mapper(SOURCE, "/tmp", "123456789012", code)
    stack = resolve(template, SOURCE, stack_name, "us-east-1", "123456789012", {},
                    mapper.attributes)
    return stack, mapper.map(stack)


def topology_of(mapped, tmp_path):
    document = copy.deepcopy(mapped.document)
    for function in document["functions"]:
        function["code"] = function["code"] or str(tmp_path)
    return parse_topology(document, SOURCE)


def test_a_vpc_with_a_database_and_a_function(tmp_path) -> None:
    stack, mapped = mapped_of(vpc_template())
    topo = topology_of(mapped, tmp_path)
    vpc = topo.vpcs[0]
    assert vpc.id == stack.resource("Vpc").physical_id and vpc.id.startswith("vpc-")
    db = topo.host("db")
    assert db.subnet == stack.resource("SubnetB").physical_id  # the group's first subnet
    assert db.ip == "10.0.2.4" and db.security_groups == (stack.resource("DbSg").physical_id,)
    assert (db.service.kind, db.service.port, db.service.user, db.service.database) == \
        ("mysql", 3306, "app", "orders")
    assert len(db.service.password) >= 20 and db.service.password.isalnum()
    fn = topo.functions[0]
    assert fn.name.startswith("app-Fn-") and len(fn.name) == len("app-Fn-") + 12
    assert dict(fn.environment) == {"DB_HOST": "10.0.2.4", "DB_PORT": "3306", "DEBUG": "true",
                                    "DB_PASSWORD": db.service.password}
    assert fn.memory == 256 and fn.vpc_config.security_group_ids == (
        stack.resource("FnSg").physical_id,)
    assert mapped.inline_code["Fn"] == ("index.py", "def handler(e, c):\n    return 1\n")
    assert mapped.functions == {"Fn": fn.name}
    groups = {g.id: g for g in vpc.security_groups}
    default = stack.resource("Vpc").attributes["DefaultSecurityGroup"]
    assert groups[default].name == "default"
    assert groups[stack.resource("FnSg").physical_id].egress[0].cidr == "0.0.0.0/0"
    assert mapped.skipped == ["skipped AWS::IAM::Role Role (not emulated)"]
    rows = {r["logical_id"]: r for r in mapped.resources}
    assert rows["Db"]["as"] == "host db 10.0.2.4" and rows["Fn"]["as"] == f"function {fn.name}"


def test_ids_are_stable_for_a_stack_name_and_differ_for_another() -> None:
    first = mapped_of(vpc_template())[1].document
    again = mapped_of(vpc_template())[1].document
    other = mapped_of(vpc_template(), "other")[1].document
    assert first == again
    assert first["vpcs"][0]["id"] != other["vpcs"][0]["id"]


def test_separate_rule_resources_and_egress_replacing_the_default(tmp_path) -> None:
    template = vpc_template()
    template["Resources"]["Out"] = {"Type": "AWS::EC2::SecurityGroupEgress", "Properties": {
        "GroupId": {"Ref": "FnSg"}, "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
        "DestinationSecurityGroupId": {"Ref": "DbSg"}}}
    template["Resources"]["In"] = {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
        "GroupId": {"Ref": "DbSg"}, "IpProtocol": "-1", "CidrIp": "10.0.0.0/16"}}
    template["Resources"]["V6"] = {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
        "GroupId": {"Ref": "DbSg"}, "IpProtocol": "tcp", "FromPort": 1, "ToPort": 2,
        "CidrIpv6": "::/0"}}
    stack, mapped = mapped_of(template)
    topo = topology_of(mapped, tmp_path)
    fn_sg = topo.security_group(stack.resource("FnSg").physical_id)
    db_sg = topo.security_group(stack.resource("DbSg").physical_id)
    assert [(r.protocol, r.ports, r.security_group) for r in fn_sg.egress] == \
        [("tcp", (3306, 3306), db_sg.id)]
    assert [(r.protocol, r.cidr) for r in db_sg.ingress][1] == ("all", "10.0.0.0/16")
    assert any("V6" in n and "CidrIpv6" in n for n in mapped.notes)


def test_nat_gateway_eip_and_route_tables(tmp_path) -> None:
    template = vpc_template()
    r = template["Resources"]
    r["Igw"] = {"Type": "AWS::EC2::InternetGateway"}
    r["Attach"] = {"Type": "AWS::EC2::VPCGatewayAttachment", "Properties": {
        "VpcId": {"Ref": "Vpc"}, "InternetGatewayId": {"Ref": "Igw"}}}
    r["Eip"] = {"Type": "AWS::EC2::EIP", "Properties": {"Domain": "vpc"}}
    r["Nat"] = {"Type": "AWS::EC2::NatGateway", "Properties": {
        "SubnetId": {"Ref": "SubnetA"}, "AllocationId": {"Fn::GetAtt": ["Eip", "AllocationId"]}}}
    for name, target in (("Public", {"GatewayId": {"Ref": "Igw"}}),
                         ("Private", {"NatGatewayId": {"Ref": "Nat"}})):
        r[f"{name}Rt"] = {"Type": "AWS::EC2::RouteTable", "Properties": {"VpcId": {"Ref": "Vpc"}}}
        r[f"{name}Route"] = {"Type": "AWS::EC2::Route", "Properties": {
            "RouteTableId": {"Ref": f"{name}Rt"}, "DestinationCidrBlock": "0.0.0.0/0",
            **target}}
    r["PublicAssoc"] = {"Type": "AWS::EC2::SubnetRouteTableAssociation", "Properties": {
        "SubnetId": {"Ref": "SubnetA"}, "RouteTableId": {"Ref": "PublicRt"}}}
    r["PrivateAssoc"] = {"Type": "AWS::EC2::SubnetRouteTableAssociation", "Properties": {
        "SubnetId": {"Ref": "SubnetB"}, "RouteTableId": {"Ref": "PrivateRt"}}}
    stack, mapped = mapped_of(template)
    network = topology_of(mapped, tmp_path).vpcs[0].network
    nat_id = stack.resource("Nat").physical_id
    assert network.internet_gateway == stack.resource("Igw").physical_id
    assert network.nat_gateways[0].elastic_ip == "198.51.100.10"
    assert network.nat_gateways[0].id == nat_id
    assert network.routes(stack.resource("SubnetB").physical_id)[0].target == nat_id
    assert network.routes(stack.resource("SubnetA").physical_id)[0].target == \
        network.internet_gateway


def test_efs_mount_targets_and_access_points(tmp_path) -> None:
    template = vpc_template()
    r = template["Resources"]
    r["Fs"] = {"Type": "AWS::EFS::FileSystem", "Properties": {}}
    r["Mt"] = {"Type": "AWS::EFS::MountTarget", "Properties": {
        "FileSystemId": {"Ref": "Fs"}, "SubnetId": {"Ref": "SubnetA"},
        "SecurityGroups": [{"Ref": "DbSg"}]}}
    r["Ap"] = {"Type": "AWS::EFS::AccessPoint", "Properties": {
        "FileSystemId": {"Ref": "Fs"}, "RootDirectory": {"Path": "/lambda"}}}
    r["Fn"]["Properties"]["FileSystemConfigs"] = [
        {"Arn": {"Fn::GetAtt": ["Ap", "Arn"]}, "LocalMountPath": "/mnt/shared"}]
    r["Fn"]["DependsOn"] = "Mt"
    stack, mapped = mapped_of(template)
    topo = topology_of(mapped, tmp_path)
    fs = topo.vpcs[0].file_systems[0]
    assert fs.id == stack.resource("Fs").physical_id and fs.mount_targets == ("mt",)
    assert topo.host("mt").service.port == 2049
    assert fs.access_points[0].path == "/lambda"
    assert topo.functions[0].file_systems[0].access_point == stack.resource("Ap").physical_id


@pytest.mark.parametrize(("edit", "path", "reason"), [
    (lambda r: r["SubnetA"]["Properties"].update(VpcId="vpc-0123"),
     "Resources.SubnetA.Properties.VpcId", "needs a VPC of this template"),
    (lambda r: r["FnSg"]["Properties"].pop("VpcId"),
     "Resources.FnSg.Properties.VpcId", "default and existing VPCs are not emulated"),
    (lambda r: r["Fn"]["Properties"].update(Code={"S3Bucket": "b", "S3Key": "k"}),
     "Resources.Fn.Properties.Code", "--code Fn=DIR"),
    (lambda r: r["Db"]["Properties"].update(Engine="oracle-ee"),
     "Resources.Db.Properties.Engine", "not emulated"),
    (lambda r: r["Db"]["Properties"].update(MasterUserPassword=""),
     "Resources.Db.Properties.MasterUserPassword", "needs a master password"),
])
def test_mapping_errors_name_the_template_property(edit, path, reason) -> None:
    template = vpc_template()
    edit(template["Resources"])
    with pytest.raises(TopologyError) as info:
        mapped_of(template)
    assert info.value.path == path and reason in info.value.reason


def test_parser_errors_point_into_the_template(tmp_path) -> None:
    template = vpc_template()
    template["Resources"]["Fn"]["Properties"]["MemorySize"] = 64
    _, mapped = mapped_of(template)
    with pytest.raises(TopologyError) as info:
        topology_of(mapped, tmp_path)
    pointed = point_error(info.value, mapped, "t.yaml")
    assert pointed.path == "Resources.Fn" and "(as functions[0].memory)" in pointed.reason


def test_code_overrides_must_name_functions() -> None:
    with pytest.raises(TopologyError) as info:
        mapped_of(vpc_template(), code={"Nope": "/tmp"})
    assert info.value.path == "--code" and "'Nope'" in info.value.reason
