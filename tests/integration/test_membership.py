"""Security-group membership follows ENIs as the control plane makes and deletes them.

The quickstart's sg-db admits tcp 8080 from the group sg-lambda, rendered as the
member addresses in db's nftables.  A function created at run time with a new
(subnet, group set) that includes sg-lambda gets a new ENI: db must admit it from
the moment the function is Active (its first invocation reaches db from the new
address), and must stop listing it once the ENI is deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up


@pytest.fixture(scope="module")
def topology(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/quickstart.yaml")


def members(state_dir: Path, group: str) -> set[str]:
    groups = hp.run_json("sg", "list", state_dir=state_dir)
    return set(next(g["members"] for g in groups if g["id"] == group))


def state_of(state_dir: Path, name: str) -> str:
    return hp.run_json("function", "get", name, state_dir=state_dir)["State"]


def test_a_new_eni_is_admitted_by_group_rules_and_dropped_after_deletion(
        topology: dict, state_dir: Path) -> None:
    before = members(state_dir, "sg-lambda")
    hp.run("function", "create", "late", "--handler", "orders.handler", "--code",
           "examples/functions", "--subnet-ids", "subnet-a", "--security-group-ids",
           "sg-lambda,sg-db", state_dir=state_dir)
    assert hp.wait_for(lambda: state_of(state_dir, "late") == "Active", 15)
    rows = hp.run_json("eni", "list", state_dir=state_dir)
    new = next(r for r in rows if r["functions"] == ["late"])
    assert new["ip"] not in before and members(state_dir, "sg-lambda") == before | {new["ip"]}
    reply = json.loads(hp.run("invoke", "late", state_dir=state_dir).stdout)
    assert reply["database_saw"] == new["ip"]  # db's sg-db rule admitted the new member
    hp.run("function", "delete", "late", state_dir=state_dir)
    assert hp.wait_for(lambda: all(r["id"] != new["id"] for r in
                                   hp.run_json("eni", "list", state_dir=state_dir)), 20)
    assert members(state_dir, "sg-lambda") == before
