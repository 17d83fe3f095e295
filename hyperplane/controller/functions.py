"""Function records and their AWS view (pure).

A ``FunctionRecord`` is what the control plane knows of one Lambda function:
its code and handler, the VPC configuration invocations use (``vpc``), the
one being applied (``target``, while ``provisioning``), its state with
reason and code, and its last update's status, with AWS's names and values
(``Pending``/``Active``/``Inactive``/``Failed``; ``Creating``, ``Restoring``,
``Idle``, ``SubnetOutOfIPAddresses``...).  ``describe`` renders it with the
field names of Lambda's GetFunctionConfiguration.  Errors are ``errors.ApiError``,
named as AWS names them, with AWS's messages (``not_found``, ``not_ready``,
``update_in_progress``, ``check_vpc_request``, ``check_vpc_exists``).

A VPC configuration here is ``VpcSpec``: subnet ids and security-group ids as
given.  The API checks that they exist when a function is created or updated
(``check_vpc_exists``); a restore from Inactive finds it out when its ENIs are
made again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field

from hyperplane.errors import ApiError
from hyperplane.model import timing
from hyperplane.model.topology import Function, Topology

PENDING, ACTIVE, INACTIVE, FAILED = "Pending", "Active", "Inactive", "Failed"
SUCCESSFUL, IN_PROGRESS = "Successful", "InProgress"
HYPERPLANE, LEGACY = "hyperplane", "legacy"
MAX_SUBNETS, MAX_GROUPS = 16, 5
DEFAULT_RUNTIME = "python3.12"
UPDATE_SETTLE = 0.2  # emulated seconds a configuration update stays InProgress (no VPC change)

REASONS = {
    "Creating": "The function is being created.",
    "Restoring": "The function is being restored after being idle.",
    "Idle": "The function is inactive because it was not invoked for a long time; its "
            "network interfaces were reclaimed. The next invocation restores it.",
    "SubnetOutOfIPAddresses": "Lambda was unable to create an ENI in the VPC of the Lambda "
                              "function because the subnet(s) ran out of IP addresses.",
    "EniLimitExceeded": "Lambda was unable to create an ENI in the VPC of the Lambda function "
                        "because the limit for Network Interfaces has been reached.",
    "InvalidSubnet": "Lambda was unable to create an ENI: the subnet {ids} does not exist.",
    "InvalidSecurityGroup": "Lambda was unable to create an ENI: the security group {ids} does "
                            "not exist in the VPC of the function's subnets.",
    "InvalidConfiguration": "The function's subnets are not all in one VPC.",
}
# the invoke error a function failed for this reason answers with (HTTP 502)
INVOKE_ERRORS = {
    "SubnetOutOfIPAddresses": "SubnetIPAddressLimitReachedException",
    "EniLimitExceeded": "ENILimitReachedException",
    "InvalidSubnet": "InvalidSubnetIDException",
    "InvalidSecurityGroup": "InvalidSecurityGroupIDException",
}


@dataclass(frozen=True)
class VpcSpec:
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    ipv6_allowed_for_dual_stack: bool = False

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.security_group_ids)))

    @classmethod
    def of(cls, data: dict | None) -> VpcSpec | None:
        if not data:
            return None
        return cls(tuple(data.get("subnet_ids", ())), tuple(data.get("security_group_ids", ())),
                   bool(data.get("ipv6_allowed_for_dual_stack", False)))


def arn(account: str, name: str, region: str = "us-east-1") -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def not_found(account: str, name: str, region: str = "us-east-1") -> ApiError:
    return ApiError("ResourceNotFoundException",
                    f"Function not found: {arn(account, name, region)}", 404)


def not_ready(state: str) -> str:
    return ("The operation cannot be performed at this time. The function is currently in "
            f"the following state: {state}")


def update_in_progress(function_arn: str) -> ApiError:
    return ApiError("ResourceConflictException", "The operation cannot be performed at this "
                    f"time. An update is in progress for resource: {function_arn}", 409)


def check_vpc_request(spec: VpcSpec | None) -> VpcSpec | None:
    """API-time checks (InvalidParameterValueException); empty lists mean no VPC."""
    if spec is None or (not spec.subnet_ids and not spec.security_group_ids):
        return None
    if not spec.subnet_ids or not spec.security_group_ids:
        raise ApiError("InvalidParameterValueException",
                       "SubnetIds and SecurityIds must coexist or be both empty list.")
    if len(spec.subnet_ids) > MAX_SUBNETS:
        raise ApiError("InvalidParameterValueException",
                       f"at most {MAX_SUBNETS} subnets, got {len(spec.subnet_ids)}")
    if len(spec.security_group_ids) > MAX_GROUPS:
        raise ApiError("InvalidParameterValueException",
                       f"at most {MAX_GROUPS} security groups, got "
                       f"{len(spec.security_group_ids)}")
    return spec


def check_vpc_exists(topology: Topology, spec: VpcSpec | None) -> None:
    """The subnets and groups exist, in one VPC (AWS's messages, as EC2 words them)."""
    if spec is None:
        return
    vpc_ids = []
    for subnet_id in spec.subnet_ids:
        try:
            vpc_ids.append(topology.subnet(subnet_id).vpc_id)
        except KeyError:
            raise ApiError("InvalidParameterValueException", "Error occurred while "
                           "DescribeSubnets. EC2 Error Code: InvalidSubnetID.NotFound. EC2 "
                           f"Error Message: The subnet ID '{subnet_id}' does not exist"
                           ) from None
    if len(set(vpc_ids)) > 1:
        raise ApiError("InvalidParameterValueException",
                       "Subnets must be in the same VPC: " + ", ".join(spec.subnet_ids))
    known = {g.id for g in topology.vpc(vpc_ids[0]).security_groups}
    for group_id in spec.security_group_ids:
        if group_id not in known:
            raise ApiError("InvalidParameterValueException", "Error occurred while "
                           "DescribeSecurityGroups. EC2 Error Code: InvalidGroup.NotFound. "
                           f"EC2 Error Message: The security group '{group_id}' does not "
                           "exist")


@dataclass
class FunctionRecord:
    name: str
    handler: str
    code: str
    memory: int = 128
    timeout: int = 3
    reserved_concurrency: int | None = None
    networking: str = HYPERPLANE
    seq: int = 0
    vpc: VpcSpec | None = None          # what invocations use
    vpc_id: str | None = None           # the VPC of ``vpc``
    target: VpcSpec | None = None       # being applied (while ``provisioning``)
    provisioning: bool = False
    state: str = PENDING
    state_reason: str | None = REASONS["Creating"]
    state_reason_code: str | None = "Creating"
    last_update_status: str = SUCCESSFUL
    last_update_status_reason: str | None = None
    last_update_status_reason_code: str | None = None
    last_invoked: float = 0.0
    revision: int = 0                   # bumped by every completed change: old envs retire
    extra: dict = field(default_factory=dict)
    # what the API keeps and shows (GetFunctionConfiguration), beyond the above
    runtime: str = DEFAULT_RUNTIME
    environment: dict = field(default_factory=dict)   # variables given to the runtime
    account: str = ""                   # the owner; "" before the controller sets it
    region: str = "us-east-1"           # where it was created (its environments' AWS_REGION)
    role: str = ""
    description: str = ""
    code_sha256: str = ""
    code_size: int = 0
    last_modified: float = 0.0          # emulated clock
    revision_id: str = ""
    file_systems: list = field(default_factory=list)  # [{access_point, local_mount_path}]

    def touch(self, now: float) -> None:
        """A change was made: a new revision id and modification time."""
        self.last_modified = now
        self.revision_id = str(uuid.uuid5(uuid.NAMESPACE_URL,
                                          f"{self.name}/{self.seq}/{now!r}/{self.revision}"))

    def set_state(self, state: str, code: str | None, **fmt: str) -> None:
        self.state, self.state_reason_code = state, code
        self.state_reason = REASONS[code].format(**fmt) if code else None

    def set_update(self, status: str, code: str | None, **fmt: str) -> None:
        self.last_update_status, self.last_update_status_reason_code = status, code
        self.last_update_status_reason = REASONS[code].format(**fmt) if code else None

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("vpc", "target"):
            spec = getattr(self, key)
            data[key] = None if spec is None else {
                "subnet_ids": list(spec.subnet_ids),
                "security_group_ids": list(spec.security_group_ids),
                "ipv6_allowed_for_dual_stack": spec.ipv6_allowed_for_dual_stack}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FunctionRecord:
        fields = dict(data)
        fields["vpc"] = VpcSpec.of(data.get("vpc"))
        fields["target"] = VpcSpec.of(data.get("target"))
        return cls(**fields)


def aws_time(seconds: float) -> str:
    """Lambda's timestamp format: ``2026-12-05T08:00:00.000+0000``."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}+0000"


def describe(fn: FunctionRecord, account: str, region: str = "us-east-1") -> dict:
    """GetFunctionConfiguration's fields (plus a few of the emulator's, documented)."""
    spec = fn.target if fn.provisioning else fn.vpc
    vpc_id = fn.vpc_id if spec is not None else ""
    if fn.provisioning and fn.target is not None:
        vpc_id = fn.extra.get("target_vpc_id") or ""
    owner = fn.account or account
    return {
        "FunctionName": fn.name,
        "FunctionArn": arn(owner, fn.name, region),
        "Runtime": fn.runtime, "Role": fn.role or f"arn:aws:iam::{owner}:role/hyperplane",
        "Handler": fn.handler, "CodeSize": fn.code_size, "Description": fn.description,
        "Timeout": fn.timeout, "MemorySize": fn.memory,
        "LastModified": aws_time(fn.last_modified), "CodeSha256": fn.code_sha256,
        "Version": "$LATEST", "RevisionId": fn.revision_id, "PackageType": "Zip",
        "Architectures": ["x86_64"], "EphemeralStorage": {"Size": 512},
        "TracingConfig": {"Mode": "PassThrough"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{fn.name}"},
        "Environment": {"Variables": dict(fn.environment)},
        "State": fn.state, "StateReason": fn.state_reason,
        "StateReasonCode": fn.state_reason_code,
        "LastUpdateStatus": fn.last_update_status,
        "LastUpdateStatusReason": fn.last_update_status_reason,
        "LastUpdateStatusReasonCode": fn.last_update_status_reason_code,
        "VpcConfig": {"SubnetIds": list(spec.subnet_ids) if spec else [],
                      "SecurityGroupIds": list(spec.security_group_ids) if spec else [],
                      "VpcId": vpc_id or "",
                      "Ipv6AllowedForDualStack": bool(spec and
                                                      spec.ipv6_allowed_for_dual_stack)},
        "ReservedConcurrentExecutions": fn.reserved_concurrency,
        "Networking": fn.networking,
        "CodeDirectory": fn.code,
        **({"FileSystemConfigs": [
            {"Arn": f"arn:aws:elasticfilesystem:{region}:{owner}:access-point/"
                    f"{c['access_point']}", "LocalMountPath": c["local_mount_path"]}
            for c in fn.file_systems]} if fn.file_systems else {}),
    }


def file_record(function: Function, cfg: dict) -> FunctionRecord:
    """The file's function as a create request."""
    vpc = None
    if function.vpc_config is not None:
        vpc = VpcSpec(function.vpc_config.subnet_ids, function.vpc_config.security_group_ids,
                      function.vpc_config.ipv6_allowed_for_dual_stack)
    return FunctionRecord(function.name, function.handler, function.code, function.memory,
                          function.timeout, function.reserved_concurrency,
                          timing.networking(function.networking, cfg),
                          vpc=vpc, runtime=function.runtime or DEFAULT_RUNTIME,
                          environment=dict(function.environment),
                          file_systems=[{"access_point": c.access_point,
                                         "local_mount_path": c.local_mount_path}
                                        for c in function.file_systems])
