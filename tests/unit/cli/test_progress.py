"""What ``up`` shows while it waits: nothing while the wait is short, then one line per ENI,
in place on a terminal, a line per change of state otherwise."""

from __future__ import annotations

import io

from hyperplane.cli.progress import UpProgress, block


def status(eni_states: list[str], now: float, pending: bool = True) -> dict:
    """A controller ``status`` reply: two functions, one ENI per state given."""
    state = "Pending" if pending else "Active"
    return {"functions": [{"FunctionName": "orders", "State": state},
                          {"FunctionName": "billing", "State": state}],
            "enis": [{"id": f"eni-{i}", "subnet_id": f"subnet-{i}", "ip": f"10.0.{i}.4",
                      "status": s, "ready_at": 100.0 + i, "functions": ["orders", "billing"]}
                     for i, s in enumerate(eni_states)],
            "clock": {"now": now}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_short_wait_shows_nothing() -> None:
    out, clock = io.StringIO(), Clock()
    progress = UpProgress(out, tty=True, after=2.0, clock=clock)
    clock.now = 60.0  # building took a minute: the wait starts at the first look
    progress(status(["creating"], 30.0))
    clock.now = 61.5
    progress(status(["creating"], 31.5))
    assert out.getvalue() == ""


def test_plain_lines_only_when_a_state_changes() -> None:
    out, clock = io.StringIO(), Clock()
    progress = UpProgress(out, tty=False, after=2.0, clock=clock)
    progress(status(["creating", "creating"], 27.0))
    clock.now = 3.0
    progress(status(["creating", "creating"], 30.0))
    progress(status(["creating", "creating"], 31.0))  # only the countdown moved
    progress(status(["in-use", "creating"], 100.5))
    progress(status(["in-use", "in-use"], 101.5, pending=False))
    lines = out.getvalue().splitlines()
    assert lines == [
        "up: waiting for orders, billing (Pending) while their ENIs are created",
        "up: eni-0                  subnet-0     10.0.0.4        creating 70 s left "
        "(orders, billing)",
        "up: eni-1                  subnet-1     10.0.1.4        creating 71 s left "
        "(orders, billing)",
        "up: eni-0                  subnet-0     10.0.0.4        in-use (orders, billing)",
        "up: eni-1                  subnet-1     10.0.1.4        in-use (orders, billing)"]
    assert "\x1b" not in out.getvalue()


def test_a_terminal_gets_the_block_rewritten_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    progress = UpProgress(out, tty=True, after=0.0, clock=clock)
    progress(status(["creating"], 30.0))
    first = out.getvalue()
    assert first == "".join(f"{line}\n" for line in block(status(["creating"], 30.0)))
    progress(status(["creating"], 30.2))  # same text (70 s left): nothing written
    assert out.getvalue() == first
    progress(status(["in-use"], 101.0, pending=False))
    rewritten = out.getvalue()[len(first):]
    assert rewritten.startswith("\x1b[2A\r\x1b[J")  # up over the two lines, erase below
    assert rewritten.endswith("no function is Pending\n  eni-0                  subnet-0     "
                              "10.0.0.4        in-use (orders, billing)\n")
