"""HYPERPLANE_FAST_PATH and HYPERPLANE_WORKERS over a topology's dataplane settings."""

from __future__ import annotations

import pytest

from hyperplane.emulator import run
from hyperplane.errors import UsageError


def test_the_environment_sets_the_walk_and_the_workers(monkeypatch) -> None:
    monkeypatch.setenv("HYPERPLANE_FAST_PATH", "compiled")
    monkeypatch.setenv("HYPERPLANE_WORKERS", "2")
    assert run.dataplane_overrides() == {"fast_path": "compiled", "workers": 2}
    monkeypatch.setenv("HYPERPLANE_WORKERS", "auto")
    assert run.dataplane_overrides()["workers"] == "auto"


def test_no_variable_no_override(monkeypatch) -> None:
    monkeypatch.delenv("HYPERPLANE_FAST_PATH", raising=False)
    monkeypatch.setenv("HYPERPLANE_WORKERS", "")
    assert run.dataplane_overrides() == {}


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("HYPERPLANE_FAST_PATH", "fast", "expected one of sockets"),
    ("HYPERPLANE_WORKERS", "0", "expected auto or an integer"),
    ("HYPERPLANE_WORKERS", "two", "expected auto or an integer"),
])
def test_a_bad_value_names_the_variable(monkeypatch, variable: str, value: str,
                                        reason: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(UsageError) as err:
        run.dataplane_overrides()
    assert str(err.value).startswith(f"{variable}: ") and reason in str(err.value)
