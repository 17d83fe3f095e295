"""The machine's limits read, and raised only when asked (``kernel.hostlimits``,
``emulator.machine``).  Nothing here changes the machine: the open files limit is lowered
and raised in a child process only, and no sysctl is ever written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hyperplane.fabric.limits import Shortfall
from hyperplane.kernel import hostlimits

REPO = Path(__file__).resolve().parents[3]


def test_read_reports_each_limit_with_what_is_in_use() -> None:
    limits = hostlimits.read()
    for key in hostlimits.SYSCTLS:
        if not hostlimits.sysctl_path(key).exists():  # the neighbour table's limits are
            assert key not in limits, key  # shown in the first network namespace only
            continue
        assert limits[key].value > 0, key
        assert limits[key].in_use >= 0
    assert limits["kernel.pid_max"].in_use > 0  # this process at least
    assert limits["fs.mount-max"].in_use > 0
    assert limits[hostlimits.BRIDGE_PORTS].value == 1023
    assert not limits[hostlimits.BRIDGE_PORTS].tunable


def test_tune_leaves_a_sysctl_alone_when_it_is_high_enough() -> None:
    limits = hostlimits.read()
    value = limits["fs.file-max"].value
    # a shortfall that asks for no more than the value: nothing is written
    assert hostlimits.tune([Shortfall("fs.file-max", value, value, "test")], limits) == []
    assert hostlimits.read()["fs.file-max"].value == value


def child(code: str) -> subprocess.CompletedProcess:
    prologue = ("import resource\n"
                "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
                "resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))\n")
    return subprocess.run([sys.executable, "-c", prologue + code], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_up_refuses_past_the_open_files_limit_and_tune_raises_it_for_itself() -> None:
    code = (
        "from hyperplane.emulator import machine\n"
        "from hyperplane.errors import UsageError\n"
        "from hyperplane.fabric.desired import desired\n"
        "from hyperplane.model.document import load_topology\n"
        "topo = load_topology('examples/quickstart.yaml')\n"
        "objs = desired(topo, [], [])\n"
        "try:\n"
        "    machine.check(topo, objs)\n"
        "except UsageError as exc:\n"
        "    print('refused:', exc)\n"
        "print('tuned:', machine.check(topo, objs, tune=True))\n"
        "print('now:', resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n")
    result = child(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused: up refused, nothing built: the machine's "
                               "RLIMIT_NOFILE is 100, and this topology needs 160")
    assert "--tune-host" in lines[0]
    assert lines[1].startswith("tuned: ") and \
        "changed RLIMIT_NOFILE from 100 to 160 (undo: nothing" in lines[1]
    assert lines[2] == "now: 160"
