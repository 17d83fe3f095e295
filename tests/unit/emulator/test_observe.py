"""``capture`` and ``graph`` without namespaces: which namespace and link a name means, the
tcpdump command line, the running view, the output format (a recorded run made up here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.controller.functions import FunctionRecord, VpcSpec
from hyperplane.emulator import capture, graphs
from hyperplane.emulator.running import Running
from hyperplane.errors import UsageError
from hyperplane.fabric import picture
from hyperplane.model.document import load_topology
from hyperplane.model.envs import Env

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Running:
    """The quickstart as if up: its two ENIs, orders with two environments, billing none."""
    monkeypatch.chdir(REPO)
    topology = load_topology("examples/quickstart.yaml")
    enis = picture.file_view(topology).enis
    vpc = VpcSpec(("subnet-a", "subnet-b"), ("sg-lambda",))
    functions = [FunctionRecord(name, "h.handler", "/code", vpc=vpc, vpc_id="vpc-app",
                                state="Active", account="111111111111")
                 for name in ("orders", "billing")]
    envs = [Env(0, "orders", "169.254.128.1", "subnet-a", enis[0].id, last_used=5.0),
            Env(1, "orders", "169.254.128.2", "subnet-b", enis[1].id, last_used=9.0),
            Env(2, "orders", "169.254.128.3", "subnet-a", enis[0].id, last_used=20.0,
                stale=True)]
    data = {"source": str(REPO / "examples/quickstart.yaml"),
            "enis": [e.to_dict() for e in enis], "envs": [e.to_dict() for e in envs],
            "functions": [f.to_dict() for f in functions],
            "stack": {"functions": {"Orders": "orders"}}}
    return Running(data, topology)


def ends(where: capture.Target) -> tuple[str, str]:
    return where.netns, where.link


def test_an_eni_is_captured_on_its_vpc_side(recorded: Running) -> None:
    where = capture.target(recorded, eni="eni-3934a7c976ff616dd")
    assert (where.netns, where.link) == ("hp-r0", "hpn1")
    assert "10.0.2.4" in where.what


def test_a_host_is_captured_on_its_eth0(recorded: Running) -> None:
    assert ends(capture.target(recorded, host="db")) == ("hp-h-db", "eth0")


def test_an_environment_by_id_or_index(recorded: Running) -> None:
    assert ends(capture.target(recorded, env="env-1")) == ("hp-e1", "eth0")
    assert ends(capture.target(recorded, env="0")) == ("hp-e0", "eth0")


def test_a_function_is_its_environment_used_last_not_a_stale_one(recorded: Running) -> None:
    assert ends(capture.target(recorded, function="orders")) == ("hp-e1", "eth0")
    assert ends(capture.target(recorded, function="Orders")) == ("hp-e1", "eth0")  # logical id


@pytest.mark.parametrize("kwargs", [{"eni": "eni-nope"}, {"host": "nope"},
                                    {"function": "nope"}, {"env": "env-9"}, {"env": "x"},
                                    {}, {"eni": "eni-3934a7c976ff616dd", "host": "db"}])
def test_unknown_names_and_not_exactly_one_choice_are_usage_errors(
        recorded: Running, kwargs: dict) -> None:
    with pytest.raises(UsageError):
        capture.target(recorded, **kwargs)


def test_the_tcpdump_command_line() -> None:
    assert capture.tcpdump_argv("hpn0") == ["tcpdump", "-i", "hpn0", "-U", "-n", "-Z", "root"]
    assert capture.tcpdump_argv("eth0", "/tmp/x.pcap", 5, None, ("tcp", "port", "80")) == [
        "tcpdump", "-i", "eth0", "-U", "-n", "-Z", "root", "-w", "/tmp/x.pcap", "-c", "5",
        "tcp", "port", "80"]
    assert capture.tcpdump_argv("eth0", duration=2.5)[:8] == [
        "timeout", "--foreground", "--preserve-status", "-s", "INT", "-k", "5", "2.5"]


def test_the_running_view_has_states_environments_and_every_eni(recorded: Running) -> None:
    view = graphs.running_view(recorded)
    assert [(f.name, f.state, f.environments, f.in_vpc) for f in view.functions] == [
        ("orders", "Active", 3, True), ("billing", "Active", 0, True)]
    assert {e.id for e in view.enis} == {"eni-b07b0294055dfe722", "eni-3934a7c976ff616dd"}
    assert view.title.endswith("examples/quickstart.yaml")


def test_the_format_comes_from_the_option_then_the_suffix() -> None:
    assert graphs.format_for("mermaid", "x.svg") == "mermaid"
    assert graphs.format_for(None, "out/Picture.SVG") == "svg"
    assert graphs.format_for(None, "x.mmd") == "mermaid"
    assert graphs.format_for(None, "x.txt") == graphs.format_for(None, None) == "dot"
