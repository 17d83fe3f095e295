"""The control plane on AWS's timings, driven by the emulated clock.

``topologies/control_aws.yaml`` uses the ``aws`` profile: an ENI takes 60-90 s to create
and up to 20 minutes to delete, an idle environment is reaped after 5-15 minutes.  The
tests move the controller's clock with ``hyperplane clock advance`` instead of waiting,
and check each state against AWS's numbers: still Pending just before a minute, Active
after 90 s; an ENI of a deleted function still there after a minute, gone after 20; an
environment reused while warm and reaped (its namespace removed) once idle long enough.
A VPC update that fails leaves the function Active on its old configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/topologies/control_aws.yaml"
ORDERS = ("--code", "examples/functions", "--handler", "orders.handler")


@pytest.fixture(scope="module")
def topology(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, TOPOLOGY)


def get(state_dir: Path, name: str) -> dict:
    return hp.run_json("function", "get", name, state_dir=state_dir)


def advance(state_dir: Path, duration: str) -> dict:
    return hp.run_json("clock", "advance", duration, state_dir=state_dir)


def enis(state_dir: Path) -> list[dict]:
    return hp.run_json("eni", "list", state_dir=state_dir)


def active(state_dir: Path, name: str, groups: str = "sg-fn", subnets: str = "subnet-a") -> None:
    """Create ``name`` and bring it to Active across AWS's 60-90 s of ENI creation."""
    created = hp.run_json("function", "create", name, *ORDERS, "--subnet-ids", subnets,
                          "--security-group-ids", groups, state_dir=state_dir)
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    advance(state_dir, "59s")
    assert get(state_dir, name)["State"] == "Pending"  # no ENI is made in under a minute
    advance(state_dir, "31s")
    assert hp.wait_for(lambda: get(state_dir, name)["State"] == "Active", 5)


def test_aws_profile_eni_creation_and_deletion_times(topology: dict, state_dir: Path) -> None:
    assert hp.run_json("clock", "show", state_dir=state_dir)["timing"]["profile"] == "aws"
    active(state_dir, "slow")
    [row] = [r for r in enis(state_dir) if r["functions"] == ["slow"]]
    assert row["status"] == "in-use"
    hp.run("function", "delete", "slow", state_dir=state_dir)
    assert hp.wait_for(lambda: [r["status"] for r in enis(state_dir)
                                if r["id"] == row["id"]] == ["deleting"], 5)
    advance(state_dir, "59s")  # AWS deletes within 1 to 20 minutes: still there
    assert any(r["id"] == row["id"] for r in enis(state_dir))
    result = hp.run("vpc", "delete-security-group", "sg-fn", "--json", state_dir=state_dir,
                    check=False)
    error = json.loads(result.stdout)
    assert result.returncode == 1 and error["errorType"] == "DependencyViolation"
    assert row["id"] in error["errorMessage"]  # the lingering ENI is named
    advance(state_dir, "20m")
    assert hp.wait_for(lambda: all(r["id"] != row["id"] for r in enis(state_dir)), 5)


def test_idle_environments_are_reused_then_reaped(topology: dict, state_dir: Path) -> None:
    active(state_dir, "warm", groups="sg-fn,sg-db")
    first = hp.run_json("invoke", "warm", state_dir=state_dir)
    advance(state_dir, "4m")  # under env_idle (5-15 minutes): reused
    second = hp.run_json("invoke", "warm", state_dir=state_dir)
    assert first["cold"] and not second["cold"]
    assert second["environment"] == first["environment"]
    index = int(first["environment"].split("-")[1])
    assert f"hp-e{index}" in hp.our_namespaces()
    advance(state_dir, "16m")  # past every env_idle of the profile: reaped
    assert hp.wait_for(lambda: f"hp-e{index}" not in hp.our_namespaces(), 5)
    assert hp.run_json("function", "get", "warm", state_dir=state_dir)["Environments"] == 0
    third = hp.run_json("invoke", "warm", state_dir=state_dir)
    assert third["cold"]
    hp.run("function", "delete", "warm", state_dir=state_dir)


def test_a_failed_vpc_update_keeps_the_old_configuration(topology: dict,
                                                         state_dir: Path) -> None:
    active(state_dir, "steady", groups="sg-fn,sg-db", subnets="subnet-b")
    before = hp.run_json("invoke", "steady", state_dir=state_dir)["result"]["database_saw"]
    updated = hp.run_json("function", "update", "steady", "--subnet-ids", "subnet-tiny",
                          "--security-group-ids", "sg-fn", state_dir=state_dir)
    assert (updated["State"], updated["LastUpdateStatus"],
            updated["LastUpdateStatusReasonCode"]) == ("Active", "Failed",
                                                       "SubnetOutOfIPAddresses")
    fn = get(state_dir, "steady")
    assert fn["VpcConfig"]["SubnetIds"] == ["subnet-b"]  # the old configuration serves
    after = hp.run_json("invoke", "steady", state_dir=state_dir)["result"]["database_saw"]
    assert after == before and after.startswith("10.0.2.")
    hp.run("function", "delete", "steady", state_dir=state_dir)
