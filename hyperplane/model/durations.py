"""Durations as a topology file writes them: ``90s``, ``20m``, ``14d``, ``1h30m`` (pure).

The model: a duration is a non-negative, finite number of seconds (a ``float``).  A file
may give it as a plain number (seconds: ``3``, ``0.5``) or as a string without spaces made
of one or more ``NUMBER UNIT`` parts, units largest first and each at most once:

    ms  milliseconds      250ms
    s   seconds           1s, 1.5s, 90s
    m   minutes           20m
    h   hours             1h30m
    d   days              14d

Division of labour: ``parse`` turns a value into seconds and raises ``ValueError`` with a
reason fit for a ``TopologyError`` (the caller adds the file and the field path);
``text`` formats seconds back compactly, so that ``parse(text(x)) == x`` for values with
at most millisecond precision.  Nothing here knows which settings use durations
(``timing`` does).
"""

from __future__ import annotations

import math
import re

UNITS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
EXAMPLE = "expected a duration like 90s, 20m, 14d"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+")
_ORDER = tuple(UNITS)  # largest first: d, h, m, s, ms


def parse(value: object) -> float:
    """Seconds of a duration: a non-negative number, or a string like ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError(f"{EXAMPLE}; got {value!r}")
    if isinstance(value, (int, float)):
        try:
            return _checked(float(value), value)
        except OverflowError:  # an int too large for a float
            raise ValueError(f"{EXAMPLE}; got {value!r} (too large)") from None
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        return _checked(_sum_parts(value), value)
    raise ValueError(f"{EXAMPLE}; got {value!r}")


def _sum_parts(text: str) -> float:
    total = 0.0
    last = -1
    for number, unit in _PART.findall(text):
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"{EXAMPLE}; got {text!r} (give units largest first, "
                             "each at most once, as in 1h30m)")
        last = rank
        total += float(number) * UNITS[unit]
    return total


def _checked(seconds: float, given: object) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{EXAMPLE}; got {given!r} (not a finite number)")
    if seconds < 0:
        raise ValueError(f"{EXAMPLE}; got {given!r} (a duration cannot be negative)")
    return seconds


def text(seconds: float) -> str:
    """The shortest usual spelling: 1209600 -> ``14d``, 1.5 -> ``1.5s``, 0.25 -> ``250ms``."""
    value = parse(seconds)
    if value == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = UNITS[unit]
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    if value < 1:
        return f"{_number(value * 1000)}ms"
    return f"{_number(value)}s"


def _number(value: float) -> str:
    """At most three decimals, no trailing zeros: 1.5 -> '1.5', 0.0004 -> '0'."""
    return f"{value:.3f}".rstrip("0").rstrip(".")
