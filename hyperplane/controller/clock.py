"""The controller's one clock: emulated time that can be moved forward (pure).

Every timer of the control plane (ENI creation and deletion, idle functions,
idle environments, legacy ENI attachment) compares records' times with
``Clock.now()``: the machine's wall clock plus an ``offset``.  ``advance``
adds to the offset (``hyperplane clock advance 14d``), so two weeks of idleness
pass in an instant; the offset is recorded with the state, so the clock keeps
its time across a controller restart.  It never goes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    def __init__(self, offset: float = 0.0, source: Callable[[], float] = time.time) -> None:
        self.offset, self.source = float(offset), source

    def now(self) -> float:
        return self.source() + self.offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        return self.now()
