"""The value functions of CloudFormation, on values already evaluated (pure).

``intrinsics`` evaluates the arguments of an intrinsic function and hands them
here; each function checks their shapes and computes the value, or raises one
``TopologyError`` at the path of the function (``fail(path, reason)``):

    cidr(block, count, bits)      ``Fn::Cidr``: the first ``count`` networks with
                                  ``bits`` host bits (a mask of /(32 - bits), or
                                  /(128 - bits) for IPv6) inside ``block``, in order
                                  from its network address, as AWS computes them
    azs(region)                   ``Fn::GetAZs``: ``<region>a``, ``b``, ``c``
    find_in_map(...)              ``Fn::FindInMap`` with its optional DefaultValue
    base64(text), to_json(value)  ``Fn::Base64``, ``Fn::ToJsonString`` (compact JSON)
    text(value), integer(value)   a scalar as CloudFormation's text (numbers as
                                  written, booleans ``true``/``false``), an index

Values in messages go through ``model.fields.shown`` only.
"""

from __future__ import annotations

import base64 as b64
import itertools
import json
from collections.abc import Callable, Mapping
from typing import NoReturn

import netaddr

from hyperplane.model.fields import ipv4, kind, shown

Fail = Callable[[str, str], NoReturn]
AZ_LETTERS = ("a", "b", "c")
MAX_CIDR_COUNT = 256


def text(value: object, path: str, what: str, fail: Fail) -> str:
    """A scalar as text: strings as they are, numbers as written, booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    fail(path, f"{what} must be a string, got {kind(value)} {shown(value)}")


def integer(value: object, path: str, what: str, fail: Fail) -> int:
    """An integer, or a string of decimal digits (a parameter's value is a string)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1 << 31:
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 10:
        return int(value)
    fail(path, f"{what} must be an integer, got {kind(value)} {shown(value)}")


def string_list(value: object, path: str, what: str, fail: Fail) -> list[str]:
    if not isinstance(value, list):
        fail(path, f"{what} must be a list, got {kind(value)} {shown(value)}")
    return [text(item, f"{path}[{i}]", f"item {i} of {what}", fail)
            for i, item in enumerate(value)]


def azs(region: str) -> list[str]:
    """The region's availability zones as the emulator names them."""
    return [f"{region}{letter}" for letter in AZ_LETTERS]


def base64(value: str) -> str:
    return b64.b64encode(value.encode("utf-8")).decode("ascii")


def to_json(value: object, path: str, fail: Fail) -> str:
    if not isinstance(value, (dict, list)):
        fail(path, f"Fn::ToJsonString takes a mapping or a list, got {kind(value)}")
    return json.dumps(value, separators=(",", ":"))


def _network(block: str, path: str, fail: Fail) -> netaddr.IPNetwork:
    address, slash, prefix = block.partition("/")
    valid = ipv4(address) is not None or netaddr.valid_ipv6(address)
    if not slash or not valid or not prefix.isdigit() or len(prefix) > 3:
        fail(path, f"Fn::Cidr: ipBlock {shown(block)} is not a CIDR block")
    width = 32 if ipv4(address) is not None else 128
    if int(prefix) > width:
        fail(path, f"Fn::Cidr: ipBlock {shown(block)} has a prefix longer than /{width}")
    return netaddr.IPNetwork(block).cidr  # host bits set: the block's network, as AWS does


def cidr(block: object, count: object, bits: object, path: str, fail: Fail) -> list[str]:
    """``Fn::Cidr [ipBlock, count, cidrBits]``."""
    net = _network(text(block, f"{path}[0]", "Fn::Cidr's ipBlock", fail), path, fail)
    number = integer(count, f"{path}[1]", "Fn::Cidr's count", fail)
    host_bits = integer(bits, f"{path}[2]", "Fn::Cidr's cidrBits", fail)
    width = 32 if net.version == 4 else 128
    if not 1 <= number <= MAX_CIDR_COUNT:
        fail(f"{path}[1]", f"Fn::Cidr's count must be 1..{MAX_CIDR_COUNT}, got {number}")
    free = width - net.prefixlen
    if not 1 <= host_bits <= free:
        fail(f"{path}[2]", f"Fn::Cidr's cidrBits {host_bits} do not fit in {net}: they "
             f"must be 1..{free} (a mask of /{width - host_bits} inside a /{net.prefixlen})")
    prefix = width - host_bits
    available = 1 << (prefix - net.prefixlen)
    if number > available:
        fail(f"{path}[1]", f"Fn::Cidr asks for {number} networks of /{prefix} but only "
             f"{available} fit in {net}")
    return [str(sub) for sub in itertools.islice(net.subnet(prefix), number)]


def find_in_map(mappings: Mapping[str, object], keys: list[str], default: tuple[object, ...],
                path: str, fail: Fail) -> object:
    """``Fn::FindInMap [MapName, TopLevelKey, SecondLevelKey]`` (``default``: () or (v,))."""
    name, top, second = keys
    table = mappings.get(name)
    if not isinstance(table, dict):
        known = ", ".join(sorted(mappings)) or "none"
        fail(path, f"Fn::FindInMap: no mapping {shown(name)} (mappings: {shown(known)})")
    level = table.get(top)
    value = level.get(second) if isinstance(level, dict) else None
    if value is not None:
        return value
    if default:
        return default[0]
    where = f"key {shown(top)}" if not isinstance(level, dict) else \
        f"key {shown(second)} under {shown(top)}"
    fail(path, f"Fn::FindInMap: mapping {shown(name)} has no {where} (and no DefaultValue)")
