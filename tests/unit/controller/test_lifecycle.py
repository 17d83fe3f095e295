"""The control plane's model over explicit time: provisioning, updates, ENIs, idleness (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from hyperplane.controller.functions import REASONS, FunctionRecord, VpcSpec
from hyperplane.controller.lifecycle import CREATING, DELETING, IN_USE, Limits, Model
from hyperplane.errors import ApiError
from hyperplane.model.envs import Env
from hyperplane.model.parser import parse_topology
from hyperplane.model.timing import timing

T0 = 1000.0
ENI_CREATE, ENI_DELETE, ENV_IDLE, ATTACH = 2.0, 5.0, 300.0, 10.0
IDLE = 14 * 86400.0
SETTINGS = {"timing": {"eni_create": "2s", "eni_delete": "5s", "function_idle": "14d",
                       "env_idle": "5m", "legacy_eni_attach": "10s"}}
GROUPS = ["sg-lambda", "sg-extra", "sg-db", *(f"sg-{i}" for i in range(12))]


def document() -> dict:
    """vpc-app (a host at 10.0.1.4, a NAT gateway at 10.0.1.6, a /28) and vpc-other."""
    app = {"id": "vpc-app", "cidr": "10.0.0.0/16", "internet_gateway": "igw-app",
           "nat_gateways": [{"id": "nat-a", "subnet": "subnet-a",
                             "elastic_ip": "198.51.100.10", "private_ip": "10.0.1.6"}],
           "subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24", "az": "az1"},
                       {"id": "subnet-b", "cidr": "10.0.2.0/24", "az": "az2"},
                       {"id": "subnet-small", "cidr": "10.0.3.16/28", "az": "az1"}],
           "security_groups": [{"id": g} for g in GROUPS],
           "hosts": [{"name": "db", "subnet": "subnet-a", "ip": "10.0.1.4",
                      "security_groups": ["sg-db"]}]}
    other = {"id": "vpc-other", "cidr": "10.1.0.0/16",
             "subnets": [{"id": "subnet-x", "cidr": "10.1.1.0/24", "az": "az1"}],
             "security_groups": [{"id": "sg-x"}]}
    return {"account": "111111111111", "vpcs": [app, other]}


def model(limits: Limits | None = None) -> Model:
    return Model(parse_topology(document(), "t.yaml"), [], [], [], timing(SETTINGS),
                 limits or Limits())


def spec(subnets: list[str], groups: list[str] | None = None) -> VpcSpec:
    return VpcSpec(tuple(subnets), tuple(groups or ["sg-lambda"]))


def create(m: Model, name: str, subnets: list[str] | None = None,
           groups: list[str] | None = None, now: float = T0,
           networking: str = "") -> FunctionRecord:
    vpc = spec(subnets, groups) if subnets is not None else None
    return m.create(FunctionRecord(name, "orders.handler", "/code", networking=networking,
                                   vpc=vpc), now)


def active(m: Model, name: str, subnets: list[str], groups: list[str] | None = None,
           now: float = T0) -> FunctionRecord:
    fn = create(m, name, subnets, groups, now)
    m.tick(now + ENI_CREATE, set(), {})
    assert fn.state == "Active", fn.state_reason
    return fn


def add_env(m: Model, index: int, function: str, last_used: float = T0) -> Env:
    env = Env(index, function, f"169.254.128.{index + 1}", None, None, last_used)
    m.envs.append(env)
    return env


def raises(kind: str, status: int, call: Callable[..., object], *args: object,
           **kw: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kw)
    assert (info.value.kind, info.value.status) == (kind, status), info.value
    return info.value


# -- create ---------------------------------------------------------------------------------


def test_create_is_pending_with_one_creating_eni_per_subnet() -> None:
    m = model()
    fn = create(m, "orders", ["subnet-a", "subnet-b"])
    assert (fn.state, fn.state_reason_code) == ("Pending", "Creating")
    assert fn.state_reason == REASONS["Creating"] == "The function is being created."
    assert (fn.vpc, fn.target, fn.provisioning) == (None, spec(["subnet-a", "subnet-b"]), True)
    assert [(e.key.subnet_id, e.status, e.ready_at, e.functions) for e in m.enis] == [
        ("subnet-a", CREATING, T0 + ENI_CREATE, ("orders",)),
        ("subnet-b", CREATING, T0 + ENI_CREATE, ("orders",))]


def test_tick_activates_the_function_when_its_enis_are_ready() -> None:
    m = model()
    fn = create(m, "orders", ["subnet-a", "subnet-b"])
    assert not m.tick(T0 + ENI_CREATE - 0.1, set(), {}).changed
    assert fn.state == "Pending" and {e.status for e in m.enis} == {CREATING}
    effects = m.tick(T0 + ENI_CREATE, set(), {})
    assert effects.changed and "orders Active" in effects.events
    assert {e.status for e in m.enis} == {IN_USE}
    assert (fn.state, fn.state_reason, fn.state_reason_code) == ("Active", None, None)
    assert (fn.vpc, fn.vpc_id) == (spec(["subnet-a", "subnet-b"]), "vpc-app")


def test_same_subnets_and_group_set_in_any_order_share_the_enis() -> None:
    m = model()
    create(m, "orders", ["subnet-a", "subnet-b"], ["sg-lambda", "sg-extra"])
    billing = create(m, "billing", ["subnet-b", "subnet-a", "subnet-b"],
                     ["sg-extra", "sg-lambda", "sg-extra"], now=T0 + 1)
    assert len(m.enis) == 2
    m.tick(T0 + ENI_CREATE, set(), {})
    assert billing.state == "Active"
    assert [e.functions for e in m.enis] == [("orders", "billing")] * 2
    assert {e.key.security_group_ids for e in m.enis} == {("sg-extra", "sg-lambda")}


def test_another_group_set_gets_new_enis_at_the_lowest_free_addresses() -> None:
    m = model()
    create(m, "orders", ["subnet-a", "subnet-b"])
    create(m, "admin", ["subnet-a"], ["sg-extra"])
    # 10.0.1.0-3 reserved by AWS, .4 the db host, .6 the NAT gateway
    assert [(e.key.subnet_id, e.ip, e.index) for e in m.enis] == [
        ("subnet-a", "10.0.1.5", 0), ("subnet-b", "10.0.2.4", 1), ("subnet-a", "10.0.1.7", 2)]
    assert len({e.id for e in m.enis}) == 3 and m.enis[2].functions == ("admin",)


# -- failures -------------------------------------------------------------------------------


SUBNET_NOT_FOUND = ("Error occurred while DescribeSubnets. EC2 Error Code: "
                    "InvalidSubnetID.NotFound. EC2 Error Message: The subnet ID '{}' does not "
                    "exist")
GROUP_NOT_FOUND = ("Error occurred while DescribeSecurityGroups. EC2 Error Code: "
                   "InvalidGroup.NotFound. EC2 Error Message: The security group '{}' does not "
                   "exist")


@pytest.mark.parametrize(("subnets", "groups", "message"), [
    (["subnet-zzz"], ["sg-lambda"], SUBNET_NOT_FOUND.format("subnet-zzz")),
    (["subnet-a"], ["sg-zzz"], GROUP_NOT_FOUND.format("sg-zzz")),
    (["subnet-a"], ["sg-x"], GROUP_NOT_FOUND.format("sg-x")),  # a group of another VPC
    (["subnet-a", "subnet-x"], ["sg-lambda"], "Subnets must be in the same VPC"),
    (["subnet-a"], [], "SubnetIds and SecurityIds must coexist or be both empty list."),
])
def test_a_configuration_naming_nothing_is_refused_at_once(subnets: list[str],
                                                           groups: list[str],
                                                           message: str) -> None:
    m = model()
    vpc = VpcSpec(tuple(subnets), tuple(groups))
    error = raises("InvalidParameterValueException", 400, m.create,
                   FunctionRecord("orders", "orders.handler", "/code", vpc=vpc), T0)
    assert error.message.startswith(message)
    assert m.functions == {} and m.enis == []


def test_an_update_naming_nothing_is_refused_and_changes_nothing() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    error = raises("InvalidParameterValueException", 400, m.update, "orders", T0 + 5,
                   vpc=spec(["subnet-zzz"]), timeout=9)
    assert error.message == SUBNET_NOT_FOUND.format("subnet-zzz")
    assert (fn.timeout, fn.last_update_status, fn.vpc) == (3, "Successful", spec(["subnet-a"]))


def test_a_full_subnet_fails_and_leaves_no_partial_eni_set() -> None:
    m = model()
    for i in range(11):  # a /28 holds 16 - 5 addresses
        create(m, f"f{i}", ["subnet-small"], [f"sg-{i}"])
    fn = create(m, "big", ["subnet-a", "subnet-small"], ["sg-11"])
    assert (fn.state, fn.state_reason_code) == ("Failed", "SubnetOutOfIPAddresses")
    assert fn.state_reason == REASONS["SubnetOutOfIPAddresses"]
    assert len(m.enis) == 11 and not any(e.key.subnet_id == "subnet-a" for e in m.enis)


def test_the_eni_quota_is_per_vpc() -> None:
    m = model(Limits(enis_per_vpc=2))
    create(m, "f1", ["subnet-a"])
    create(m, "f2", ["subnet-b"])
    third = create(m, "f3", ["subnet-a"], ["sg-extra"])
    assert (third.state, third.state_reason_code) == ("Failed", "EniLimitExceeded")
    assert create(m, "f4", ["subnet-x"], ["sg-x"]).state == "Pending" and len(m.enis) == 3


# -- update ---------------------------------------------------------------------------------


def test_a_vpc_update_serves_the_old_configuration_until_the_new_one_is_ready() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    env = add_env(m, 0, "orders")
    revision = fn.revision
    m.update("orders", T0 + 10, vpc=spec(["subnet-b"]))
    assert (fn.state, fn.last_update_status, fn.last_update_status_reason_code) == (
        "Active", "InProgress", "Creating")
    assert fn.vpc == spec(["subnet-a"]) and not m.outdated(m.envs[0])
    m.tick(T0 + 10 + ENI_CREATE - 0.1, set(), {})
    assert fn.last_update_status == "InProgress" and fn.vpc == spec(["subnet-a"])
    m.tick(T0 + 10 + ENI_CREATE, set(), {})
    assert (fn.last_update_status, fn.last_update_status_reason) == ("Successful", None)
    assert fn.vpc == spec(["subnet-b"]) and fn.revision == revision + 1
    assert m.envs[0] == replace(env, stale=True)
    assert m.outdated(m.envs[0])
    assert {e.key.subnet_id: e.status for e in m.enis} == {"subnet-a": DELETING,
                                                          "subnet-b": IN_USE}


def test_update_while_pending_or_in_progress_is_refused() -> None:
    m = model()
    create(m, "orders", ["subnet-a"])
    error = raises("ResourceConflictException", 409, m.update, "orders", T0, handler="x.y")
    assert error.message == ("The operation cannot be performed at this time. The function "
                             "is currently in the following state: Pending")
    m.tick(T0 + ENI_CREATE, set(), {})
    m.update("orders", T0 + 3, vpc=spec(["subnet-b"]))
    error = raises("ResourceConflictException", 409, m.update, "orders", T0 + 4, timeout=9)
    assert error.message == ("The operation cannot be performed at this time. An update is in "
                             "progress for resource: arn:aws:lambda:us-east-1:111111111111:"
                             "function:orders")


def test_every_update_is_in_progress_for_a_moment() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    before = fn.revision_id
    m.update("orders", T0 + 5, timeout=9)
    assert (fn.timeout, fn.last_update_status, fn.last_update_status_reason_code) == (
        9, "InProgress", None)
    assert fn.revision_id != before and fn.last_modified == T0 + 5
    raises("ResourceConflictException", 409, m.update, "orders", T0 + 5.1, memory=256)
    m.tick(T0 + 5.2, set(), {})
    assert fn.last_update_status == "Successful"


def test_a_failing_update_keeps_the_old_configuration() -> None:
    m = model(Limits(enis_per_vpc=1))
    fn = active(m, "orders", ["subnet-a"])
    m.update("orders", T0 + 5, vpc=spec(["subnet-b"]))
    assert (fn.state, fn.last_update_status, fn.last_update_status_reason_code) == (
        "Active", "Failed", "EniLimitExceeded")
    assert (fn.vpc, fn.vpc_id, fn.provisioning) == (spec(["subnet-a"]), "vpc-app", False)
    m.update("orders", T0 + 6, timeout=9)  # not stuck
    m.tick(T0 + 7, set(), {})
    assert fn.last_update_status == "Successful"


def test_a_code_change_retires_the_environments_at_once() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    add_env(m, 0, "orders")
    revision = fn.revision
    m.update("orders", T0 + 5, handler="billing.handler")
    assert (fn.handler, fn.last_update_status, fn.revision) == (
        "billing.handler", "InProgress", revision + 1)
    assert m.envs[0].stale and m.outdated(m.envs[0])


def test_an_invalid_vpc_update_changes_nothing() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    raises("InvalidParameterValueException", 400, m.update, "orders", T0 + 5,
           vpc=spec([f"s{i}" for i in range(17)]), handler="billing.handler")
    assert (fn.last_update_status, fn.handler) == ("Successful", "orders.handler")


def test_an_update_fixing_a_failed_function_completes() -> None:
    m = model(Limits(enis_per_vpc=0))
    fn = create(m, "orders", ["subnet-b"])
    assert (fn.state, fn.state_reason_code) == ("Failed", "EniLimitExceeded")
    m.limits.enis_per_vpc = 250
    m.update("orders", T0 + 5, vpc=spec(["subnet-a"]))
    m.tick(T0 + 5 + ENI_CREATE, set(), {})
    assert (fn.state, fn.last_update_status) == ("Active", "Successful")


# -- ENIs nobody uses -------------------------------------------------------------------------


def test_an_unused_eni_is_deleted_after_eni_delete() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    eni_id = m.enis[0].id
    assert m.delete("orders").changed
    m.tick(T0 + 10, set(), {})
    assert [(e.status, e.delete_at) for e in m.enis] == [(DELETING, T0 + 10 + ENI_DELETE)]
    assert not m.tick(T0 + 10 + ENI_DELETE - 0.1, set(), {}).changed and len(m.enis) == 1
    effects = m.tick(T0 + 10 + ENI_DELETE, set(), {})
    assert effects.changed and m.enis == [] and f"{eni_id} deleted" in effects.events


def test_a_deleting_eni_is_reused_by_a_function_with_its_key() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    old = m.enis[0]
    m.delete("orders")
    m.tick(T0 + 10, set(), {})
    fn = create(m, "billing", ["subnet-a"], now=T0 + 12)
    assert [e.id for e in m.enis] == [old.id]
    m.tick(T0 + 20, set(), {})  # past the old delete_at
    assert [(e.id, e.status, e.delete_at, e.functions) for e in m.enis] == [
        (old.id, IN_USE, None, ("billing",))]
    m.tick(T0 + 21, set(), {})
    assert fn.state == "Active"


def test_a_shared_eni_stays_while_another_function_uses_it() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    create(m, "billing", ["subnet-a"], now=T0 + 3)
    m.delete("orders")
    m.tick(T0 + 100, set(), {})
    assert [(e.status, e.functions) for e in m.enis] == [(IN_USE, ("billing",))]


# -- idle functions ---------------------------------------------------------------------------


def test_an_idle_function_goes_inactive_and_its_enis_are_deleted() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    add_env(m, 3, "orders", last_used=T0 + IDLE)  # recently used: reaped for the function
    assert not m.tick(T0 + IDLE - 1, set(), {}).reap and fn.state == "Active"
    effects = m.tick(T0 + IDLE, set(), {})
    assert (fn.state, fn.state_reason_code) == ("Inactive", "Idle") and 3 in effects.reap
    assert [(e.status, e.delete_at) for e in m.enis] == [(DELETING, T0 + IDLE + ENI_DELETE)]


def test_an_idle_function_keeps_enis_an_active_one_shares() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    billing = create(m, "billing", ["subnet-a"], now=T0 + 100)
    m.tick(T0 + IDLE, set(), {})
    assert (m.functions["orders"].state, billing.state) == ("Inactive", "Active")
    assert [(e.status, e.functions) for e in m.enis] == [(IN_USE, ("billing",))]


def test_invoking_an_inactive_function_restores_it_in_eni_create() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    m.tick(T0 + IDLE, set(), {})
    now = T0 + IDLE + 1
    error = raises("ResourceNotReadyException", 502, m.admit, "orders", now)
    assert error.message.endswith("the following state: Inactive")
    assert (fn.state, fn.state_reason_code) == ("Pending", "Restoring")
    m.tick(now + 1, set(), {})  # the deleting ENI is taken back at once
    assert m.enis[0].status == IN_USE and fn.state == "Pending"
    m.tick(now + ENI_CREATE, set(), {})
    assert (fn.state, fn.last_invoked, fn.vpc_id) == ("Active", now + ENI_CREATE, "vpc-app")


def test_a_restore_after_the_enis_are_gone_makes_new_ones() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    m.tick(T0 + IDLE, set(), {})
    now = T0 + IDLE + ENI_DELETE
    m.tick(now, set(), {})
    assert m.enis == []
    raises("ResourceNotReadyException", 502, m.admit, "orders", now)
    assert [(e.status, e.ready_at) for e in m.enis] == [(CREATING, now + ENI_CREATE)]
    m.tick(now + ENI_CREATE, set(), {})
    assert fn.state == "Active"


def test_a_failing_restore_goes_back_to_inactive_with_the_code() -> None:
    m = model()
    fn = active(m, "orders", ["subnet-a"])
    m.tick(T0 + IDLE, set(), {})
    doc = document()  # subnet-b deleted meanwhile (nothing of the function was in it)
    doc["vpcs"][0]["subnets"] = [s for s in doc["vpcs"][0]["subnets"] if s["id"] != "subnet-a"]
    doc["vpcs"][0]["hosts"], doc["vpcs"][0]["nat_gateways"] = [], []
    del doc["vpcs"][0]["internet_gateway"]
    m.topology = parse_topology(doc, "t.yaml")
    raises("ResourceNotReadyException", 502, m.admit, "orders", T0 + IDLE + 1)
    assert (fn.state, fn.state_reason_code, fn.provisioning) == (
        "Inactive", "InvalidSubnet", False)


# -- environments -----------------------------------------------------------------------------


def test_idle_environments_are_reaped_unless_busy() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    add_env(m, 0, "orders", last_used=T0)
    add_env(m, 1, "orders", last_used=T0)
    assert m.tick(T0 + ENV_IDLE - 1, set(), {}).reap == set()
    assert m.tick(T0 + ENV_IDLE, {1}, {}).reap == {0}


def test_stale_environments_are_reaped_when_not_busy() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    add_env(m, 0, "orders", last_used=T0 + 10)
    add_env(m, 1, "orders", last_used=T0 + 10)
    m.update("orders", T0 + 10, memory=256)
    assert m.tick(T0 + 11, {1}, {}).reap == {0}
    m.forget_envs({0})
    assert m.tick(T0 + 12, set(), {}).reap == {1}


# -- the connection limit ---------------------------------------------------------------------


def test_a_key_at_the_connection_limit_gets_one_spill_eni_at_a_time() -> None:
    m = model(Limits(connection_limit=4))
    active(m, "orders", ["subnet-a"])
    primary = m.enis[0]
    m.tick(T0 + 10, set(), {primary.id: 3})
    assert len(m.enis) == 1
    m.tick(T0 + 11, set(), {primary.id: 4})
    spill = m.enis[1]
    assert (spill.key, spill.spill, spill.status) == (primary.key, 1, CREATING)
    assert spill.id != primary.id and spill.ip != primary.ip
    m.tick(T0 + 12, set(), {primary.id: 4})
    assert len(m.enis) == 2
    m.tick(T0 + 11 + ENI_CREATE, set(), {primary.id: 4, spill.id: 1})
    assert len(m.enis) == 2 and m.enis[1].status == IN_USE


# -- legacy networking ------------------------------------------------------------------------


def test_a_legacy_function_is_active_at_once_and_gets_an_eni_per_environment() -> None:
    m = model(Limits(default_networking="legacy"))
    fn = create(m, "old", ["subnet-a"])
    assert (fn.networking, fn.state, fn.vpc_id, m.enis) == ("legacy", "Active", "vpc-app", [])
    eni = m.legacy_eni(fn, "subnet-a", 0, T0 + 1)
    assert (eni.legacy_env, eni.status, eni.ready_at, eni.ip) == (
        0, CREATING, T0 + 1 + ATTACH, "10.0.1.5")
    m.envs.append(Env(0, "old", "169.254.128.1", "subnet-a", eni.id, T0 + 1))
    m.tick(T0 + 1 + ATTACH, set(), {})
    assert m.enis[0].status == IN_USE
    m.forget_envs({0})
    m.tick(T0 + 20, set(), {})
    assert [(e.status, e.delete_at) for e in m.enis] == [(DELETING, T0 + 20 + ENI_DELETE)]


def test_a_legacy_cold_start_in_a_full_subnet_fails() -> None:
    m = model()
    fn = create(m, "old", ["subnet-small"], networking="legacy")
    for index in range(11):
        m.legacy_eni(fn, "subnet-small", index, T0)
    error = raises("SubnetIPAddressLimitReachedException", 502, m.legacy_eni, fn,
                   "subnet-small", 11, T0)
    assert "ran out of IP addresses" in error.message and len(m.enis) == 11


def test_a_legacy_eni_goes_when_its_env_does_even_if_the_index_is_reused() -> None:
    m = model()
    fn = create(m, "old", ["subnet-a"], networking="legacy")
    first = m.legacy_eni(fn, "subnet-a", 0, T0)
    m.envs.append(Env(0, "old", "169.254.128.1", "subnet-a", first.id, T0))
    m.forget_envs({0})  # reaped ...
    second = m.legacy_eni(fn, "subnet-a", 0, T0 + 1)  # ... and index 0 made again
    m.envs.append(Env(0, "old", "169.254.128.1", "subnet-a", second.id, T0 + 1))
    m.tick(T0 + 2, set(), {})
    assert {e.id: e.status for e in m.enis}[first.id] == DELETING


# -- issue 16: environments are recycled after env_max_lifetime, even when busy -------------
def test_an_environment_is_recycled_after_its_maximum_lifetime_even_when_used() -> None:
    m = model()
    active(m, "orders", ["subnet-a"])
    lifetime = m.timing.pick("env_max_lifetime", "x")
    m.envs.append(Env(4, "orders", "169.254.128.5", "subnet-a", None, last_used=T0,
                      created=T0))
    for hour in range(1, int(lifetime // 3600)):  # used every few minutes meanwhile
        now = T0 + hour * 3600
        m.envs = [replace(e, last_used=now) for e in m.envs]
        assert not m.tick(now, set(), {}).reap and not m.outdated(m.envs[0], now)
    end = T0 + lifetime
    m.envs = [replace(e, last_used=end - 1) for e in m.envs]
    assert m.tick(end, {4}, {}).reap == set()  # busy: it finishes its invocation first
    assert m.outdated(m.envs[0], end)  # and is reaped when it is given back
    assert m.tick(end, set(), {}).reap == {4}
