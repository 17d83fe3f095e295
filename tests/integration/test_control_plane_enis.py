"""ENI limits of the control plane: a full subnet, the ENI quota of a VPC, unknown subnets and
security groups (each a Failed function with AWS's reason code, whose invoke answers AWS's
exception), and a key at its connection limit that gets a second ENI (spill).

One topology (``topologies/control_limits.yaml``): a /28 subnet with room for one ENI,
``quotas.enis_per_vpc: 2``, ``eni_connection_limit: 4``; one VPC per limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up
from tests.integration.test_control_plane import (
    ORDERS,
    create,
    enis,
    functions,
    get,
    holding,
    refused,
    rows_of,
    until,
    vpc,
    wait_state,
)

TOPOLOGY = "tests/integration/topologies/control_limits.yaml"
SDB = "10.3.1.10"
LIMIT = 4  # settings.dataplane.eni_connection_limit


@pytest.fixture(scope="module")
def topology(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, TOPOLOGY)


def failed_with(state_dir: Path, name: str, code: str, invoke_error: str) -> dict:
    """``name`` is Failed for ``code``, made no ENI, and its invoke answers ``invoke_error``."""
    fn = get(state_dir, name)
    assert (fn["State"], fn["StateReasonCode"]) == ("Failed", code), fn
    assert fn["StateReason"], fn
    assert not rows_of(state_dir, name)
    error = refused(state_dir, "invoke", name)
    assert error["errorType"] == invoke_error, error
    return fn


def test_a_full_subnet_fails_the_next_security_group_set_with_subnet_out_of_addresses(
        topology: dict, state_dir: Path) -> None:
    hosts = {h["ip"] for h in topology["hosts"] if h["subnet"] == "subnet-full"}
    with functions(state_dir, "fits", "full"):
        create(state_dir, "fits", *ORDERS, *vpc("subnet-full", "sg-f1"))
        wait_state(state_dir, "fits", "Active")
        [row] = rows_of(state_dir, "fits")
        assert row["ip"] not in hosts and row["ip"].startswith("10.1.0.")
        created = create(state_dir, "full", *ORDERS, *vpc("subnet-full", "sg-f2"))
        assert created["State"] in ("Pending", "Failed")
        failed_with(state_dir, "full", "SubnetOutOfIPAddresses",
                    "SubnetIPAddressLimitReachedException")
        assert [r["id"] for r in enis(state_dir) if r["subnet"] == "subnet-full"] == [row["id"]]


def test_the_vpc_eni_quota_fails_a_new_key_but_not_a_shared_one(topology: dict,
                                                                 state_dir: Path) -> None:
    names = ("q1", "q2", "q3", "q1again")
    with functions(state_dir, *names):
        for name, group in (("q1", "sg-q1"), ("q2", "sg-q2"), ("q3", "sg-q3"),
                            ("q1again", "sg-q1")):
            create(state_dir, name, *ORDERS, *vpc("subnet-q", group))
        for name in ("q1", "q2", "q1again"):  # q1again shares q1's ENI: no new one
            wait_state(state_dir, name, "Active")
        failed_with(state_dir, "q3", "EniLimitExceeded", "ENILimitReachedException")
        rows = [r for r in enis(state_dir) if r["vpc"] == "vpc-quota"]
        assert len(rows) == 2, rows
        assert sorted(r["security_groups"][0] for r in rows) == ["sg-q1", "sg-q2"]


@pytest.mark.parametrize(("subnets", "groups", "words"), [
    ("subnet-nope", "sg-q1", "EC2 Error Code: InvalidSubnetID.NotFound. EC2 Error Message: "
                             "The subnet ID 'subnet-nope' does not exist"),
    ("subnet-q", "sg-nope", "EC2 Error Code: InvalidGroup.NotFound. EC2 Error Message: The "
                            "security group 'sg-nope' does not exist"),
    ("subnet-q", "sg-f1", "The security group 'sg-f1' does not exist"),  # of another VPC
    ("subnet-q", "", "SubnetIds and SecurityIds must coexist or be both empty list."),
], ids=["unknown-subnet", "unknown-group", "group-of-another-vpc", "no-group"])
def test_an_unknown_subnet_or_group_is_refused_at_once(topology: dict, state_dir: Path,
                                                       subnets: str, groups: str,
                                                       words: str) -> None:
    with functions(state_dir, "invalid"):
        error = refused(state_dir, "function", "create", "invalid", *ORDERS,
                        *vpc(subnets, groups))
        assert (error["errorType"], error["statusCode"]) == (
            "InvalidParameterValueException", 400), error
        assert words in error["errorMessage"], error
        gone = refused(state_dir, "function", "get", "invalid")
        assert gone["errorType"] == "ResourceNotFoundException", gone


def test_a_key_at_its_connection_limit_gets_a_second_eni(topology: dict,
                                                         state_dir: Path) -> None:
    with functions(state_dir, "spiller"):
        create(state_dir, "spiller", *ORDERS, *vpc("subnet-s", "sg-s"))
        wait_state(state_dir, "spiller", "Active")
        [primary] = rows_of(state_dir, "spiller")
        assert primary["spill"] == 0

        def others() -> list[dict]:
            return [r for r in enis(state_dir) if r["id"] != primary["id"]
                    and (r["subnet"], r["security_groups"]) == ("subnet-s", ["sg-s"])]
        with holding(state_dir, "spiller", SDB, LIMIT) as held:
            assert [seen["client"] for seen in held.reply()] == [primary["ip"]] * LIMIT
            [second] = until(others, lambda rows: [r["status"] for r in rows] == ["in-use"])
            assert second["spill"] == 1 and second["ip"] != primary["ip"], second
            assert "spiller" in second["functions"]
            extra = until(lambda: held.ask("more"), lambda seen: "error" not in seen, 10)
            assert extra["client"] == second["ip"], extra
            again = held.ask("again")  # every held connection still works, each on its ENI
            assert [s["client"] for s in again] == [primary["ip"]] * LIMIT + [second["ip"]]
            stats = hp.run_json("stats", state_dir=state_dir)["enis"]
            assert stats[primary["id"]]["sessions_active"] == LIMIT
            assert stats[second["id"]]["sessions_active"] == 1
