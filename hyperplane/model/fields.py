"""Reading fields of a loaded document, with errors that name the field (pure).

``Fields`` is the base of the topology parser (``parser.Parser``): each helper
checks one shape (a mapping with known keys, a list, a non-empty string, an id,
an integer in a range, a boolean, a list of unique ids, a CIDR) and returns the
value, or raises one ``TopologyError``: ``FILE: field.path: reason``.  A value is
shown in a message only through ``shown`` (a bounded ``repr``), so a message stays
short whatever the document holds.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from typing import Any, NoReturn

import netaddr

from hyperplane.errors import TopologyError

FILE_PATH = "<file>"  # the field path of errors about the file itself (I/O, YAML, root)
IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_PREFIX = re.compile(r"0|[1-9][0-9]?")
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 60
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4
_SHOWN.maxlevel = 2


def shown(value: object) -> str:
    """``repr(value)``, cut short: never more than about a hundred characters."""
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an integer past Python's digit limit
        return f"<{kind(value)} too long to show>"


def kind(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def ipv4(text: object) -> netaddr.IPAddress | None:
    """A strict dotted quad (no leading zeros, no shorthand), else None."""
    if not isinstance(text, str) or not IPV4.fullmatch(text):
        return None
    if any(int(octet) > 255 for octet in text.split(".")):
        return None
    return netaddr.IPAddress(text)


class Fields:
    """Shape checks bound to one source (the file name errors carry)."""

    source: str

    def fail(self, path: str, reason: str) -> NoReturn:
        raise TopologyError(self.source, path, reason)

    def mapping(self, raw: object, path: str, required: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(path or FILE_PATH, f"expected a mapping, got {kind(raw)}")
        allowed = required + optional
        for name in raw:
            if not isinstance(name, str):
                self.fail(path or FILE_PATH, f"key {shown(name)} is not a string")
            if name not in allowed:
                self.fail(key(path, name), self._unknown_key(name, allowed))
        for name in required:
            if name not in raw:
                self.fail(key(path, name), "missing required field")
        return raw

    @staticmethod
    def _unknown_key(name: str, allowed: tuple[str, ...]) -> str:
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown key {shown(name)} (allowed: {', '.join(allowed)}){hint}"

    def list_of(self, raw: object, path: str) -> list[Any]:
        if not isinstance(raw, list):
            self.fail(path, f"expected a list, got {kind(raw)}")
        return raw

    def string(self, raw: object, path: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            self.fail(path, f"expected a non-empty string, got {kind(raw)} {shown(raw)}")
        return raw

    def ident(self, raw: object, path: str) -> str:
        text = self.string(raw, path)
        if any(c.isspace() for c in text):
            self.fail(path, f"id {shown(text)} must not contain whitespace")
        return text

    def integer(self, raw: object, path: str, bounds: tuple[int, int]) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.fail(path, f"expected an integer, got {kind(raw)} {shown(raw)}")
        if not bounds[0] <= raw <= bounds[1]:
            self.fail(path, f"{shown(raw)} is outside the allowed range "
                      f"{bounds[0]}..{bounds[1]}")
        return raw

    def boolean(self, raw: object, path: str) -> bool:
        if not isinstance(raw, bool):
            self.fail(path, f"expected a boolean, got {kind(raw)}")
        return raw

    def ident_list(self, raw: object, path: str, limit: int | None,
                   what: str) -> tuple[str, ...]:
        items = self.list_of(raw, path)
        if limit is not None and len(items) > limit:
            self.fail(path, f"at most {limit} {what}s are allowed, got {len(items)}")
        result: list[str] = []
        for index, item in enumerate(items):
            value = self.ident(item, f"{path}[{index}]")
            if value in result:
                self.fail(f"{path}[{index}]", f"duplicate {what} {shown(value)} "
                          f"(already at index {result.index(value)})")
            result.append(value)
        return tuple(result)

    def name(self, raw: object, path: str, pattern: re.Pattern, seen: dict[str, str],
             what: str, why: str = "") -> str:
        """A name matching ``pattern``, unique among ``seen`` (``what``: "host name")."""
        text = self.string(raw, path)
        if not pattern.fullmatch(text):
            self.fail(path, f"{what} {shown(text)} must match ^{pattern.pattern}${why}")
        self.unique(seen, text, path, what)
        return text

    def unique(self, seen: dict[str, str], value: str, path: str, what: str) -> None:
        if value in seen:
            self.fail(path, f"duplicate {what} {shown(value)} (first defined at {seen[value]})")
        seen[value] = path

    def cidr(self, raw: object, path: str, prefixes: tuple[int, int] | None,
             what: str) -> netaddr.IPNetwork:
        address, _, prefix = raw.partition("/") if isinstance(raw, str) else ("", "", "")
        if ipv4(address) is None or not _PREFIX.fullmatch(prefix) or int(prefix) > 32:
            self.fail(path, f"{shown(raw)} is not a valid IPv4 CIDR")
        net = netaddr.IPNetwork(raw)
        if net.ip != net.network:
            self.fail(path, f"{shown(raw)} has host bits set; did you mean {net.cidr}?")
        if prefixes and not prefixes[0] <= net.prefixlen <= prefixes[1]:
            self.fail(path, f"{what} prefix /{net.prefixlen} is outside the AWS-allowed range "
                      f"/{prefixes[0]}../{prefixes[1]}")
        return net
