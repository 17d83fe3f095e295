"""What ``up`` waits for, shown while it waits (click: writes to stderr).

``UpProgress`` is the callable ``up`` gives ``emulator.run.wait_settled``: it is called with
the controller's ``status`` reply at every look (functions with their ``State``, ENIs with
``status`` and ``ready_at``, the emulated clock's ``now``).  Nothing is shown while the
wait is short (``AFTER`` seconds from the first look, so the ``fast`` profile's one second
prints nothing);
then one line per ENI with its state:

* on a terminal, the block of lines is rewritten in place (cursor up, erase below) when
  its text changes, the seconds left on the emulated clock counting down;
* otherwise (a pipe, a log), a plain line per ENI when its state changes, and a first
  line naming the functions waited for.

``up --json`` passes no progress at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

import click

AFTER = 2.0  # seconds of waiting before anything is shown


def pending(view: dict) -> list[str]:
    return [f["FunctionName"] for f in view.get("functions", []) if f.get("State") == "Pending"]


def eni_line(eni: dict, now: float) -> str:
    """``eni-... subnet-a 10.0.1.4 creating 62 s left (orders, billing)``."""
    detail = ""
    if eni.get("status") == "creating" and eni.get("ready_at") is not None:
        detail = f" {max(0.0, eni['ready_at'] - now):.0f} s left"
    functions = ", ".join(eni.get("functions") or []) or "-"
    return (f"{eni['id']:<22} {eni['subnet_id']:<12} {eni['ip']:<15} "
            f"{eni['status']}{detail} ({functions})")


def block(view: dict) -> list[str]:
    """The lines shown on a terminal: what is Pending, then each ENI."""
    now = (view.get("clock") or {}).get("now", 0.0)
    waiting = pending(view)
    head = (f"waiting for {', '.join(waiting)} (Pending) while their ENIs are created"
            if waiting else "no function is Pending")
    return [head, *(f"  {eni_line(e, now)}" for e in view.get("enis", []))]


class UpProgress:
    """The progress callback of ``up`` (see the module's docstring)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 after: float = AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or click.get_text_stream("stderr")
        self.tty = self.stream.isatty() if tty is None else tty
        self.after, self.clock = after, clock
        self.start: float | None = None  # the first look: building took its own time
        self.shown: list[str] = []       # the block on the terminal
        self.states: dict[str, str] = {}  # ENI id -> the state last printed
        self.began = False

    def __call__(self, view: dict) -> None:
        if self.start is None:
            self.start = self.clock()
        if self.clock() - self.start < self.after:
            return
        if self.tty:
            self._redraw(block(view))
        else:
            self._changes(view)
        self.began = True

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _redraw(self, lines: list[str]) -> None:
        if lines == self.shown:
            return
        up = f"\x1b[{len(self.shown)}A\r\x1b[J" if self.shown else ""
        self._write(up + "".join(f"{line}\n" for line in lines))
        self.shown = lines

    def _changes(self, view: dict) -> None:
        if not self.began:
            self._write(f"up: waiting for {', '.join(pending(view)) or 'no function'} "
                        "(Pending) while their ENIs are created\n")
        now = (view.get("clock") or {}).get("now", 0.0)
        for eni in view.get("enis", []):
            if self.states.get(eni["id"]) != eni["status"]:
                self.states[eni["id"]] = eni["status"]
                self._write(f"up: {eni_line(eni, now)}\n")
