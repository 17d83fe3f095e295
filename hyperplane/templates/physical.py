"""Physical ids and default attributes of resources, shaped as AWS shapes them (pure).

A physical id is what ``Ref`` returns.  It is derived from a SHA-256 of the stack
name and the logical id (never from randomness), so the same template resolved
for the same stack name gets the same ids, and another stack name other ids:

    AWS::EC2::VPC ``vpc-`` + 17 hex, Subnet ``subnet-``, SecurityGroup ``sg-``,
    InternetGateway ``igw-``, NatGateway ``nat-``, RouteTable ``rtb-`` (and the
    other EC2 ids in ``HEX_IDS``); AWS::EFS::FileSystem ``fs-``, AccessPoint
    ``fsap-``, MountTarget ``fsmt-``;
    AWS::EC2::EIP: its ``AllocationId`` attribute is ``eipalloc-`` + 17 hex; its Ref
    (in CloudFormation the public address) is left to the caller's ``attributes``
    callback, which gives ``PublicIp`` (``stack`` then uses it as the physical id);
    named types (``NAMED``): the name property when the template gives one (a
    Lambda function's ``FunctionName``, an RDS instance's ``DBInstanceIdentifier``),
    else a generated name (an SNS topic's Ref is its ARN, an SQS queue's its URL);
    AWS::Lambda::Version and Alias: the function's ARN with ``:1`` or ``:<Name>``;
    any other type: a generated name.

A generated name is CloudFormation's ``STACK-LogicalId-SUFFIX``: SUFFIX is 12
upper-case letters and digits; when the name would pass the type's limit (64 for
a Lambda function or an IAM role), the stack name and the logical id are cut so
that it fits: each keeps 25 characters at least, the shorter part is kept whole
and the longer one takes the rest (names seen from CloudFormation, such as
``amplify-d1x2y3-main-sandb-amplifyDataAmplifyCodegen-AbCdEfGhIjKl``, have this
shape).  RDS names (instances, clusters, subnet groups) are the same, lower-case
(RDS keeps identifiers in lower case), within 63 characters.

``default_attributes`` gives the well-known ``Fn::GetAtt`` attributes of a type
(``Arn`` of a function, ``GroupId`` of a security group, ``CidrBlock``,
``DefaultSecurityGroup`` and ``VpcId`` of a VPC...); what only a placement can
know (a database's ``Endpoint.Address``) is the caller's callback's to give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

HEX_IDS = {
    "AWS::EC2::VPC": "vpc", "AWS::EC2::Subnet": "subnet", "AWS::EC2::SecurityGroup": "sg",
    "AWS::EC2::InternetGateway": "igw", "AWS::EC2::NatGateway": "nat",
    "AWS::EC2::RouteTable": "rtb", "AWS::EC2::NetworkAcl": "acl",
    "AWS::EC2::NetworkInterface": "eni", "AWS::EC2::Instance": "i",
    "AWS::EC2::VPCEndpoint": "vpce", "AWS::EC2::SubnetRouteTableAssociation": "rtbassoc",
    "AWS::EC2::EgressOnlyInternetGateway": "eigw", "AWS::EC2::DHCPOptions": "dopt",
    "AWS::EC2::VPCPeeringConnection": "pcx", "AWS::EC2::TransitGateway": "tgw",
    "AWS::EC2::SecurityGroupIngress": "sgr", "AWS::EC2::SecurityGroupEgress": "sgr",
    "AWS::EC2::LaunchTemplate": "lt", "AWS::EC2::PrefixList": "pl",
    "AWS::EFS::FileSystem": "fs", "AWS::EFS::AccessPoint": "fsap",
    "AWS::EFS::MountTarget": "fsmt", "AWS::EC2::EIP": "eipalloc",
}
# type -> (name property, length limit, lower-case)
NAMED: dict[str, tuple[str, int, bool]] = {
    "AWS::Lambda::Function": ("FunctionName", 64, False),
    "AWS::IAM::Role": ("RoleName", 64, False),
    "AWS::RDS::DBInstance": ("DBInstanceIdentifier", 63, True),
    "AWS::RDS::DBCluster": ("DBClusterIdentifier", 63, True),
    "AWS::RDS::DBSubnetGroup": ("DBSubnetGroupName", 255, True),
    "AWS::S3::Bucket": ("BucketName", 63, True),
    "AWS::Logs::LogGroup": ("LogGroupName", 512, False),
    "AWS::DynamoDB::Table": ("TableName", 255, False),
    "AWS::SQS::Queue": ("QueueName", 80, False),
    "AWS::SNS::Topic": ("TopicName", 256, False),
}
SUFFIX_LENGTH = 12
MIN_PART = 25
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def digest(stack_name: str, logical_id: str, salt: str = "") -> str:
    return hashlib.sha256(f"{stack_name}\0{logical_id}\0{salt}".encode()).hexdigest()


def hex_id(prefix: str, stack_name: str, logical_id: str, salt: str = "") -> str:
    """``prefix-`` + 17 hex digits, stable for the stack name and logical id."""
    return f"{prefix}-{digest(stack_name, logical_id, f'{prefix}/{salt}')[:17]}"


def suffix(stack_name: str, logical_id: str, length: int = SUFFIX_LENGTH) -> str:
    """``length`` upper-case letters and digits, stable for the stack name and logical id."""
    number = int(digest(stack_name, logical_id, "suffix"), 16)
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def generated_name(stack_name: str, logical_id: str, limit: int = 0,
                   lower: bool = False) -> str:
    """CloudFormation's ``STACK-LogicalId-SUFFIX``, cut to ``limit`` (0: no limit)."""
    tail = suffix(stack_name, logical_id)
    stack, logical = stack_name, logical_id
    budget = limit - len(tail) - 2
    if limit and len(stack) + len(logical) > budget:
        half = max(MIN_PART, budget // 2)
        if len(stack) <= half:
            logical = logical[:budget - len(stack)]
        elif len(logical) <= half:
            stack = stack[:budget - len(logical)]
        else:
            stack, logical = stack[:half], logical[:budget - half]
    name = f"{stack}-{logical}-{tail}"
    if lower:
        name = name.lower()
        while "--" in name:
            name = name.replace("--", "-")
    return name


def _arn(where: tuple[str, str, str, str], service: str, resource: str) -> str:
    _, region, account, partition = where
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"


def _function_arn(function: object, where: tuple[str, str, str, str]) -> str:
    name = str(function)
    return name if name.startswith("arn:") else _arn(where, "lambda", f"function:{name}")


def physical_id(type_: str, logical_id: str, properties: Mapping[str, object],
                where: tuple[str, str, str, str]) -> str:
    """What ``Ref`` of the resource returns (an EIP's is its AllocationId until placed);
    ``where``: (stack name, region, account, partition)."""
    stack_name, region, account, _ = where
    if type_ in HEX_IDS:
        return hex_id(HEX_IDS[type_], stack_name, logical_id)
    if type_ == "AWS::Lambda::Version":
        return f"{_function_arn(properties.get('FunctionName'), where)}:1"
    if type_ == "AWS::Lambda::Alias":
        return f"{_function_arn(properties.get('FunctionName'), where)}:{properties.get('Name')}"
    if type_ not in NAMED:
        return generated_name(stack_name, logical_id)
    prop, limit, lower = NAMED[type_]
    given = properties.get(prop)
    if isinstance(given, str) and given:
        name = given.lower() if lower else given
    else:
        name = generated_name(stack_name, logical_id, limit, lower)
    if type_ == "AWS::SNS::Topic":
        return _arn(where, "sns", name)
    if type_ == "AWS::SQS::Queue":
        return f"https://sqs.{region}.amazonaws.com/{account}/{name}"
    return name


def default_attributes(type_: str, logical_id: str, properties: Mapping[str, object],
                       physical: str, where: tuple[str, str, str, str]) -> dict[str, object]:
    """The well-known attributes of a type; ``where``: (stack, region, account, partition)."""
    stack, region, account, partition = where
    props = properties

    def arn(service: str, resource: str, in_region: bool = True, own: bool = True) -> str:
        return (f"arn:{partition}:{service}:{region if in_region else ''}:"
                f"{account if own else ''}:{resource}")

    if type_ == "AWS::EC2::VPC":
        return {"VpcId": physical, "CidrBlock": props.get("CidrBlock"),
                "CidrBlockAssociations": [hex_id("vpc-cidr-assoc", stack, logical_id)],
                "DefaultSecurityGroup": hex_id("sg", stack, logical_id, "default"),
                "DefaultNetworkAcl": hex_id("acl", stack, logical_id, "default"),
                "Ipv6CidrBlocks": []}
    if type_ == "AWS::EC2::Subnet":
        return {"SubnetId": physical, "VpcId": props.get("VpcId"),
                "CidrBlock": props.get("CidrBlock"),
                "AvailabilityZone": props.get("AvailabilityZone") or f"{region}a",
                "Ipv6CidrBlocks": [],
                "NetworkAclAssociationId": hex_id("aclassoc", stack, logical_id)}
    if type_ == "AWS::EC2::SecurityGroup":
        return {"GroupId": physical, "VpcId": props.get("VpcId")}
    if type_ == "AWS::EC2::EIP":
        return {"AllocationId": hex_id("eipalloc", stack, logical_id)}
    if type_ in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::RouteTable"):
        kind = type_.rsplit("::", 1)[1]
        return {f"{kind}Id": physical}
    return _service_attributes(type_, logical_id, props, physical, arn)


def _service_attributes(type_: str, logical_id: str, props: Mapping[str, object],
                        physical: str, arn) -> dict[str, object]:
    if type_ == "AWS::Lambda::Function":
        return {"Arn": arn("lambda", f"function:{physical}")}
    if type_ == "AWS::Lambda::Version":
        return {"Version": "1"}
    if type_ == "AWS::IAM::Role":
        path = props.get("Path") if isinstance(props.get("Path"), str) else "/"
        return {"Arn": arn("iam", f"role{path}{physical}", in_region=False),
                "RoleId": "AROA" + suffix(physical, logical_id, 17)}
    if type_ == "AWS::EFS::FileSystem":
        return {"FileSystemId": physical, "Arn": arn("elasticfilesystem",
                                                     f"file-system/{physical}")}
    if type_ == "AWS::EFS::AccessPoint":
        return {"AccessPointId": physical, "Arn": arn("elasticfilesystem",
                                                      f"access-point/{physical}")}
    if type_ == "AWS::RDS::DBInstance":
        attributes: dict[str, object] = {"DBInstanceArn": arn("rds", f"db:{physical}"),
                                         "DbiResourceId": "db-" + suffix(physical, "dbi", 26)}
        if props.get("Port") is not None:
            attributes["Endpoint.Port"] = str(props["Port"])
        return attributes
    if type_ == "AWS::RDS::DBCluster":
        return {"DBClusterArn": arn("rds", f"cluster:{physical}")}
    if type_ == "AWS::S3::Bucket":
        return {"Arn": arn("s3", physical, in_region=False, own=False),
                "DomainName": f"{physical}.s3.amazonaws.com"}
    if type_ in ("AWS::Logs::LogGroup", "AWS::DynamoDB::Table"):
        service, kind = ("logs", "log-group:") if "Logs" in type_ else ("dynamodb", "table/")
        return {"Arn": arn(service, f"{kind}{physical}")}
    if type_ == "AWS::SQS::Queue":
        name = physical.rsplit("/", 1)[-1]
        return {"Arn": arn("sqs", name), "QueueName": name, "QueueUrl": physical}
    if type_ == "AWS::SNS::Topic":
        return {"TopicArn": physical, "TopicName": physical.rsplit(":", 1)[-1]}
    return {}
