"""Bad input builds nothing; a killed run is fully removed by `hyperplane cleanup`."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from tests.integration import hp

INVALID = sorted((hp.REPO / "examples" / "invalid").glob("*.yaml"))


def expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    field, reason = first.removeprefix("# expect:").split("|", 1)
    return field.strip(), reason.strip()


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_topology_names_file_field_reason_and_builds_nothing(path: Path,
                                                                     tmp_path: Path) -> None:
    before = hp.our_namespaces()
    relative = str(path.relative_to(hp.REPO))
    result = hp.run("up", relative, state_dir=tmp_path, check=False)
    field, reason = expectation(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert relative in lines[0] and field in lines[0] and reason in lines[0]
    assert hp.our_namespaces() == before
    assert not (tmp_path / "state.db").exists()


def test_kill_9_of_the_dataplane_then_cleanup_leaves_nothing(tmp_path: Path) -> None:
    try:
        hp.run("up", "examples/quickstart.yaml", state_dir=tmp_path)
        hp.run_json("invoke", "orders", state_dir=tmp_path)  # an environment and its agent too
        pid = hp.run_json("status", state_dir=tmp_path)["dataplane"]["pid"]
        assert hp.our_processes() and hp.our_namespaces()
        os.kill(pid, signal.SIGKILL)
        result = hp.run_json("cleanup", state_dir=tmp_path)
        assert "hp-plane" in result["namespaces"]
        assert hp.our_namespaces() == []
        assert hp.our_processes() == []
        assert not (tmp_path / "state.db").exists()
        assert hp.run_json("status", state_dir=tmp_path)["up"] is False
    finally:
        hp.run("cleanup", state_dir=tmp_path, check=False)


def test_cleanup_leaves_other_namespaces_alone(tmp_path: Path) -> None:
    from pyroute2 import netns
    netns.create("other-ns-test")
    try:
        hp.run("cleanup", state_dir=tmp_path)
        assert "other-ns-test" in netns.listnetns()
    finally:
        netns.remove("other-ns-test")


def test_without_root_one_line_and_exit_code_2(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    result = hp.run("status", state_dir=tmp_path, check=False, user=65534)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "sudo" in result.stderr


def test_a_second_up_is_refused_while_one_is_running(tmp_path: Path) -> None:
    try:
        hp.run("up", "examples/quickstart.yaml", state_dir=tmp_path)
        result = hp.run("up", "examples/quickstart.yaml", state_dir=tmp_path, check=False)
        assert result.returncode == 2 and "already up" in result.stderr
    finally:
        hp.run("down", state_dir=tmp_path, check=False)
    assert hp.our_namespaces() == []


def test_up_refuses_a_port_in_use_before_building_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        before = hp.our_namespaces()
        result = hp.run("up", "examples/quickstart.yaml", "--api-port", str(port),
                        state_dir=tmp_path, check=False)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert str(port) in line and "--api-port" in line
    assert hp.our_namespaces() == before and not (tmp_path / "state.db").exists()
