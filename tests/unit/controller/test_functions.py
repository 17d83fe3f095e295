"""Function records as AWS shows them: describe, API checks, the invoke gate's errors (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from hyperplane.controller.functions import (
    INVOKE_ERRORS,
    REASONS,
    FunctionRecord,
    VpcSpec,
    check_vpc_request,
    describe,
)
from hyperplane.controller.lifecycle import Limits, Model
from hyperplane.errors import ApiError
from hyperplane.model.parser import parse_topology
from hyperplane.model.timing import timing

T0 = 1000.0
ACCOUNT = "111111111111"
NOT_READY = ("The operation cannot be performed at this time. The function is currently in "
             "the following state: {}")
AWS_FIELDS = {"FunctionName", "FunctionArn", "State", "StateReason", "StateReasonCode",
              "LastUpdateStatus", "LastUpdateStatusReason", "LastUpdateStatusReasonCode",
              "VpcConfig"}
VPC_FIELDS = {"SubnetIds", "SecurityGroupIds", "VpcId", "Ipv6AllowedForDualStack"}


def model(*records: FunctionRecord) -> Model:
    doc = {"account": ACCOUNT, "vpcs": [{
        "id": "vpc-app", "cidr": "10.0.0.0/16",
        "subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24", "az": "az1"},
                    {"id": "subnet-b", "cidr": "10.0.2.0/24", "az": "az2"}],
        "security_groups": [{"id": "sg-lambda"}, {"id": "sg-extra"}]}]}
    return Model(parse_topology(doc, "t.yaml"), list(records), [], [],
                 timing({"timing": {"eni_create": "2s"}}), Limits())


def spec(subnets: int = 1, groups: int = 1) -> VpcSpec:
    return VpcSpec(tuple(f"subnet-{i}" for i in range(subnets)),
                   tuple(f"sg-{i}" for i in range(groups)))


def record(name: str = "orders", vpc: VpcSpec | None = None) -> FunctionRecord:
    return FunctionRecord(name, "orders.handler", "/code", vpc=vpc)


def failed(name: str, code: str) -> FunctionRecord:
    fn = record(name)
    fn.set_state("Failed", code, ids="'x'")
    return fn


def api_error(call: Callable[..., object], *args: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value


# -- describe -------------------------------------------------------------------------------


def test_describe_has_every_aws_field_of_an_active_vpc_function() -> None:
    m = model()
    fn = m.create(record(vpc=VpcSpec(("subnet-a", "subnet-b"), ("sg-lambda",), True)), T0)
    m.tick(T0 + 2, set(), {})
    view = describe(fn, ACCOUNT, "eu-west-1")
    assert AWS_FIELDS <= view.keys() and set(view["VpcConfig"]) == VPC_FIELDS
    assert view["FunctionArn"] == f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:orders"
    assert (view["FunctionName"], view["State"], view["StateReason"],
            view["StateReasonCode"]) == ("orders", "Active", None, None)
    assert (view["LastUpdateStatus"], view["LastUpdateStatusReason"],
            view["LastUpdateStatusReasonCode"]) == ("Successful", None, None)
    assert view["VpcConfig"] == {"SubnetIds": ["subnet-a", "subnet-b"],
                                 "SecurityGroupIds": ["sg-lambda"], "VpcId": "vpc-app",
                                 "Ipv6AllowedForDualStack": True}


def test_describe_a_function_without_vpc() -> None:
    m = model()
    view = describe(m.create(record(), T0), ACCOUNT)
    assert view["State"] == "Active" and view["FunctionArn"].startswith("arn:aws:lambda:us-east-1")
    assert view["VpcConfig"] == {"SubnetIds": [], "SecurityGroupIds": [], "VpcId": "",
                                 "Ipv6AllowedForDualStack": False}


def test_describe_a_pending_function_shows_the_configuration_being_applied() -> None:
    m = model()
    view = describe(m.create(record(vpc=VpcSpec(("subnet-b",), ("sg-lambda",))), T0), ACCOUNT)
    assert (view["State"], view["StateReasonCode"]) == ("Pending", "Creating")
    assert view["StateReason"] == REASONS["Creating"]
    assert (view["VpcConfig"]["SubnetIds"], view["VpcConfig"]["VpcId"]) == (
        ["subnet-b"], "vpc-app")


def test_record_round_trips_through_a_dict_and_json() -> None:
    fn = FunctionRecord("orders", "orders.handler", "/code", 256, 30, 5, "legacy", seq=3,
                        vpc=VpcSpec(("subnet-a",), ("sg-b", "sg-a"), True), vpc_id="vpc-app",
                        target=VpcSpec(("subnet-b",), ("sg-a",)), provisioning=True,
                        last_invoked=12.5, revision=2, extra={"not_before": 14.0})
    fn.set_update("InProgress", "Creating")
    data = fn.to_dict()
    assert data["vpc"] == {"subnet_ids": ["subnet-a"], "security_group_ids": ["sg-b", "sg-a"],
                           "ipv6_allowed_for_dual_stack": True}
    assert FunctionRecord.from_dict(data) == fn
    assert FunctionRecord.from_dict(json.loads(json.dumps(data))) == fn
    plain = record()
    assert plain.to_dict()["vpc"] is None and FunctionRecord.from_dict(plain.to_dict()) == plain


def test_vpc_spec_groups_are_a_sorted_set() -> None:
    assert VpcSpec(("s",), ("sg-b", "sg-a", "sg-b")).groups == ("sg-a", "sg-b")
    assert VpcSpec.of(None) is None and VpcSpec.of({}) is None


def test_api_error_to_dict() -> None:
    error = ApiError("ResourceNotFoundException", "Function not found: x", 404, requestId="r")
    assert error.to_dict() == {"errorType": "ResourceNotFoundException",
                               "errorMessage": "Function not found: x", "statusCode": 404,
                               "requestId": "r"}
    assert str(error) == "ResourceNotFoundException: Function not found: x"


# -- API checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("vpc", [spec(subnets=17), spec(groups=6), spec(groups=0),
                                 spec(subnets=0)])
def test_a_bad_vpc_config_is_refused_at_the_api(vpc: VpcSpec) -> None:
    m = model()
    error = api_error(m.create, record(vpc=vpc), T0)
    assert (error.kind, error.status) == ("InvalidParameterValueException", 400)
    assert m.functions == {}


def test_the_largest_vpc_config_and_an_empty_one_pass() -> None:
    assert check_vpc_request(spec(subnets=16, groups=5)) == spec(subnets=16, groups=5)
    assert check_vpc_request(VpcSpec((), ())) is None and check_vpc_request(None) is None


def test_creating_a_function_twice_is_a_conflict() -> None:
    m = model()
    m.create(record(), T0)
    error = api_error(m.create, record(), T0 + 1)
    assert (error.kind, error.status, error.message) == (
        "ResourceConflictException", 409, "Function already exist: orders")


def test_functions_are_numbered_in_creation_order() -> None:
    m = model()
    assert [m.create(record(n), T0).seq for n in ("a", "b", "c")] == [1, 2, 3]


# -- the invoke gate ------------------------------------------------------------------------


def test_admit_a_pending_function_is_a_conflict() -> None:
    m = model()
    m.create(record(vpc=VpcSpec(("subnet-a",), ("sg-lambda",))), T0)
    error = api_error(m.admit, "orders", T0 + 1)
    assert (error.kind, error.status, error.message) == (
        "ResourceConflictException", 409, NOT_READY.format("Pending"))


def test_admit_an_active_function() -> None:
    m = model()
    fn = m.create(record(), T0)
    assert m.admit("orders", T0 + 1) is fn


@pytest.mark.parametrize(("code", "kind"), sorted(INVOKE_ERRORS.items()))
def test_admit_a_failed_function_answers_its_invoke_error(code: str, kind: str) -> None:
    m = model(failed("orders", code))
    error = api_error(m.admit, "orders", T0)
    assert (error.kind, error.status) == (kind, 502)
    assert error.message == REASONS[code].format(ids="'x'")


def test_the_invoke_errors_are_awss() -> None:
    assert INVOKE_ERRORS == {
        "SubnetOutOfIPAddresses": "SubnetIPAddressLimitReachedException",
        "EniLimitExceeded": "ENILimitReachedException",
        "InvalidSubnet": "InvalidSubnetIDException",
        "InvalidSecurityGroup": "InvalidSecurityGroupIDException"}


def test_admit_a_failed_function_without_an_invoke_error_is_not_ready() -> None:
    m = model(failed("orders", "InvalidConfiguration"))
    error = api_error(m.admit, "orders", T0)
    assert (error.kind, error.message) == ("ResourceNotReadyException",
                                           NOT_READY.format("Failed"))


def test_admit_an_unknown_function_is_not_found() -> None:
    error = api_error(model().admit, "nobody", T0)
    assert (error.kind, error.status, error.message) == (
        "ResourceNotFoundException", 404,
        "Function not found: arn:aws:lambda:us-east-1:111111111111:function:nobody")
