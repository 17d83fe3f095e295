"""Durations: parsing numbers and unit strings, formatting back, and every refusal."""

from __future__ import annotations

import math

import pytest

from hyperplane.model import durations


@pytest.mark.parametrize(("given", "seconds"), [
    (0, 0.0),
    (3, 3.0),
    (0.5, 0.5),
    ("0s", 0.0),
    ("250ms", 0.25),
    ("1s", 1.0),
    ("1.5s", 1.5),
    ("90s", 90.0),
    ("20m", 1200.0),
    ("2h", 7200.0),
    ("14d", 14 * 86400.0),
    ("1h30m", 5400.0),
    ("1d2h3m4s5ms", 86400 + 7200 + 180 + 4 + 0.005),
    ("1m30s", 90.0),
    ("0.5m", 30.0),
])
def test_parse(given: object, seconds: float) -> None:
    assert durations.parse(given) == pytest.approx(seconds)
    assert isinstance(durations.parse(given), float)


@pytest.mark.parametrize(("given", "detail"), [
    ("x", ""),
    ("", ""),
    ("90", ""),            # a bare number as a string: say the unit
    ("1.5", ""),
    ("s", ""),
    ("1 s", ""),           # whitespace-free
    (" 1s", ""),
    ("1s ", ""),
    ("1S", ""),
    ("1sec", ""),
    ("1w", ""),
    ("-1s", ""),
    ("+1s", ""),
    ("1e3s", ""),
    (".5s", ""),
    ("1.s", ""),
    ("30m1h", "largest first"),
    ("1m1m", "largest first"),
    ("1s1m", "largest first"),
    (None, ""),
    ([1, 2], ""),
    ({"s": 1}, ""),
    (True, ""),
    (False, ""),
    (-1, "negative"),
    (-0.5, "negative"),
    (math.nan, "finite"),
    (math.inf, "finite"),
    (-math.inf, "finite"),
    (10**400, "too large"),
    ("9" * 400 + "d", "finite"),
])
def test_parse_refuses(given: object, detail: str) -> None:
    with pytest.raises(ValueError) as err:
        durations.parse(given)
    message = str(err.value)
    assert message.startswith(f"expected a duration like 90s, 20m, 14d; got {given!r}")
    assert detail in message


def test_parse_error_message_is_the_documented_one() -> None:
    with pytest.raises(ValueError, match=r"^expected a duration like 90s, 20m, 14d; got 'x'$"):
        durations.parse("x")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"),
    (0.25, "250ms"),
    (0.0005, "0.5ms"),
    (1, "1s"),
    (1.5, "1.5s"),
    (90, "90s"),
    (60, "1m"),
    (1200, "20m"),
    (5400, "90m"),
    (3600, "1h"),
    (86400 * 14, "14d"),
    (90000, "25h"),
    (61.25, "61.25s"),
])
def test_text(seconds: float, text: str) -> None:
    assert durations.text(seconds) == text


@pytest.mark.parametrize("given", ["250ms", "1.5s", "90s", "20m", "14d", "1h30m", "3s", 0, 7,
                                   0.125, 86399, 123.456])
def test_text_round_trips(given: object) -> None:
    seconds = durations.parse(given)
    assert durations.parse(durations.text(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("given", [-1, math.nan, math.inf, True])
def test_text_refuses_what_parse_refuses(given: float) -> None:
    with pytest.raises(ValueError):
        durations.text(given)
