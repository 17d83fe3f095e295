"""Integration fixtures: real namespaces, real processes, always removed.

Every test module that needs a running topology uses ``quickstart`` (one
``hyperplane up`` per module, with a private state directory).  Whatever a
test does, the fixture ends with ``hyperplane down`` and then ``cleanup``,
and the session checks at the end that no ``hp-`` namespace or project
process is left on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (namespaces): sudo make test")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def clean_machine() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    leftovers = hp.our_namespaces()
    assert not leftovers, (f"hp- namespaces exist before the tests: {leftovers}; "
                           "run `hyperplane cleanup` (or `hyperplane down`) first")
    yield
    assert hp.our_namespaces() == [], "namespaces left after the suite"
    assert hp.our_processes() == [], "project processes left after the suite"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def bring_up(state_dir: Path, topology: str) -> Iterator[dict]:
    try:
        yield hp.run_json("up", topology, state_dir=state_dir)
    finally:
        hp.run("down", state_dir=state_dir, check=False)
        hp.run("cleanup", state_dir=state_dir, check=False)


@pytest.fixture(scope="module")
def quickstart(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/quickstart.yaml")
