"""The supervisor's rounds on real (harmless) processes, with a state in a temporary
directory: a dead process is started again from its spec, five deaths in a minute leave
it down with the reason, a process not yet recorded is left to whoever starts it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from hyperplane.emulator.supervisor import Supervisor
from hyperplane.kernel import procs, state, supervision

SLEEPER = ("import sys, time, pathlib; pathlib.Path(sys.argv[1]).touch(); "
           "time.sleep(60)  # hyperplane")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path))
    yield tmp_path
    state.forget()


def sleeper_spec(tmp_path: Path) -> dict:
    ready = tmp_path / "ready-sleeper"
    return supervision.spec(None, [sys.executable, "-c", SLEEPER, str(ready)],
                            tmp_path / "sleeper.log", {"file": str(ready)})


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    assert procs.wait_until(lambda: not procs.alive(pid), 5)


def test_policy_allows_four_deaths_a_minute_not_five() -> None:
    deaths: list[float] = []
    for n in range(4):
        again, deaths = supervision.policy(deaths, 100.0 + n)
        assert again
    again, deaths = supervision.policy(deaths, 104.0)
    assert not again and len(deaths) == 5
    again, recent = supervision.policy(deaths, 200.0)  # a minute later: counted afresh
    assert again and recent == [200.0]


def test_a_dead_process_is_started_again_and_five_deaths_leave_it_down(
        state_dir: Path) -> None:
    entry = sleeper_spec(state_dir)
    pid = supervision.start(entry, "sleeper")
    state.save({"source": "t", "procs": {"sleeper": pid}, "supervise": {"sleeper": entry}})
    supervisor = Supervisor()
    started = [pid]
    try:
        for n in range(1, 5):
            kill(started[-1])
            began = time.monotonic()
            supervisor.once()
            record = state.load_row("services")["sleeper"]
            assert record["restarts"] == n and record["pid"] not in started
            assert procs.alive(record["pid"]) and time.monotonic() - began < 1.0
            started.append(record["pid"])
        kill(started[-1])
        supervisor.once()
        record = state.load_row("services")["sleeper"]
        assert record["down"].startswith("died 5 times within 60 s; left down")
        assert record["restarts"] == 4
        supervisor.once()  # down stays down
        assert state.load_row("services")["sleeper"]["restarts"] == 4
    finally:
        for p in started:
            if procs.alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_spec_without_a_pid_yet_is_left_alone(state_dir: Path) -> None:
    entry = sleeper_spec(state_dir)
    state.save({"source": "t", "procs": {}, "supervise": {"sleeper": entry}})
    Supervisor().once()
    assert state.load_row("services") is None
    assert not Path(entry["ready"]["file"]).exists()


def test_a_paused_process_stays_stopped_and_one_started_by_hand_is_adopted(
        state_dir: Path) -> None:
    """`controller stop` pauses (no restart); `controller start` records a new pid, which
    the supervisor adopts (its record and `status`'s pid follow it) and supervises."""
    from hyperplane.emulator.running import pid_of
    entry = sleeper_spec(state_dir)
    first = supervision.start(entry, "sleeper")
    state.save({"source": "t", "procs": {"sleeper": first}, "supervise": {"sleeper": entry}})
    supervisor = Supervisor()
    started = [first]
    try:
        kill(first)
        supervisor.once()  # restarted: the supervisor's pid
        restarted = state.load_row("services")["sleeper"]["pid"]
        started.append(restarted)
        state.save_row("paused", ["sleeper"])
        kill(restarted)
        supervisor.once()
        assert state.load_row("services")["sleeper"]["pid"] == restarted  # left stopped
        by_hand = supervision.start(entry, "sleeper")
        started.append(by_hand)
        data = state.load()
        data["procs"]["sleeper"] = by_hand
        state.save(data)
        state.save_row("paused", [])
        assert pid_of(state.load(), "sleeper") == by_hand
        supervisor.once()
        record = state.load_row("services")["sleeper"]
        assert record["pid"] == by_hand and record["restarts"] == 1 and record["down"] is None
        kill(by_hand)
        supervisor.once()  # and supervised again
        record = state.load_row("services")["sleeper"]
        started.append(record["pid"])
        assert record["restarts"] == 2 and procs.alive(record["pid"])
    finally:
        for p in started:
            if procs.alive(p):
                os.kill(p, signal.SIGKILL)
