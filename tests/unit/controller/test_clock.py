"""The controller's emulated clock: the wall clock plus an offset that only grows (pure)."""

from __future__ import annotations

import time

import pytest

from hyperplane.controller.clock import Clock


class FakeTime:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.value = now

    def __call__(self) -> float:
        return self.value


def test_now_is_the_source_plus_the_offset() -> None:
    source = FakeTime(1000.0)
    clock = Clock(250, source)
    assert (clock.offset, clock.now()) == (250.0, 1250.0)
    source.value = 1010.0
    assert clock.now() == 1260.0


def test_the_default_offset_is_zero() -> None:
    assert Clock(source=FakeTime(42.0)).now() == 42.0


def test_advance_adds_to_the_offset_and_returns_the_new_time() -> None:
    clock = Clock(0.0, FakeTime(1000.0))
    assert clock.advance(14 * 86400) == 1000.0 + 14 * 86400
    assert clock.advance(0) == clock.now()
    assert clock.advance(5.5) == 1000.0 + 14 * 86400 + 5.5
    assert clock.offset == 14 * 86400 + 5.5


def test_the_clock_never_goes_back() -> None:
    clock = Clock(10.0, FakeTime(1000.0))
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    assert clock.now() == 1010.0


def test_the_default_source_is_the_wall_clock() -> None:
    before = time.time()
    now = Clock(100.0).now()
    assert before + 100.0 <= now <= time.time() + 100.0
