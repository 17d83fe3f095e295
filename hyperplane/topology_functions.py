"""The topology file's ``functions:``: Lambda functions and their ``vpc_config`` (pure).

A function entry:

    name: orders                     ^[A-Za-z0-9_-]{1,64}$, unique in the file
    code: examples/functions         a directory (relative: cwd, then the file's folder
                                     and its parents)
    handler: orders.handler          module.function (the module may be dotted)
    memory: 128                      MB, 128..10240
    timeout: 3                       seconds, 1..900
    networking: hyperplane           hyperplane | legacy; absent: the file's
                                     ``settings.networking``, else hyperplane
    reserved_concurrency: 10         0..1000; absent: unreserved
    vpc_config:                      absent, null, {} or both lists empty: no VPC
      subnet_ids: [subnet-a]         at most 16, all in one VPC
      security_group_ids: [sg-a]     at most 5, in that VPC
      ipv6_allowed_for_dual_stack: false

``parse_function`` is called by ``topology._Parser.topology`` with the parser itself (its
``fail``, ``mapping``, ``string``, ``integer``, ``boolean``, ``ident_list``, ``unique`` and
``check_group_ref`` helpers and its ``subnets``/``function_paths`` tables, so errors have
the usual ``FILE: field.path: reason`` shape) once the VPCs are parsed, and returns a frozen
``Function``.  ``topology`` re-exports ``Function`` and ``VpcConfig``.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperplane.timing import NETWORKING_MODES

MAX_FUNCTION_SUBNETS = 16
MAX_SECURITY_GROUPS = 5  # per function, and per host (AWS: per network interface)
MEMORY_RANGE = (128, 10240)
TIMEOUT_RANGE = (1, 900)
RESERVED_CONCURRENCY_RANGE = (0, 1000)
FUNCTION_KEYS = ("vpc_config", "memory", "timeout", "networking", "reserved_concurrency")

_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class VpcConfig:
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    vpc_id: str
    ipv6_allowed_for_dual_stack: bool = False


@dataclass(frozen=True)
class Function:
    name: str
    code: str  # absolute path of the code directory
    handler: str  # module.function
    vpc_config: VpcConfig | None
    memory: int = 128
    timeout: int = 3
    networking: str | None = None  # hyperplane | legacy; None: settings.networking's
    reserved_concurrency: int | None = None  # None: unreserved


def _key(path: str, key: str) -> str:
    return f"{path}.{key}"


def _valid_handler(handler: str) -> bool:
    parts = handler.split(".")
    return len(parts) >= 2 and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def parse_function(p: Any, raw: object, path: str) -> Function:
    """One entry of ``functions:``; the VPCs, subnets and groups are already known."""
    m = p.mapping(raw, path, ("name", "code", "handler"), FUNCTION_KEYS)
    name = p.string(m["name"], _key(path, "name"))
    if not _FUNCTION_NAME.fullmatch(name):
        p.fail(_key(path, "name"), f"function name {name!r} must match "
               f"^{_FUNCTION_NAME.pattern}$")
    p.unique(p.function_paths, name, _key(path, "name"), "function name")
    handler = p.string(m["handler"], _key(path, "handler"))
    if not _valid_handler(handler):
        p.fail(_key(path, "handler"), f"handler {handler!r} must be 'module.function' "
               "(Python identifiers; the module may be dotted)")
    vpc_config = _vpc_config(p, m.get("vpc_config"), _key(path, "vpc_config"))
    memory = p.integer(m.get("memory", 128), _key(path, "memory"), MEMORY_RANGE)
    timeout = p.integer(m.get("timeout", 3), _key(path, "timeout"), TIMEOUT_RANGE)
    networking = _networking(p, m.get("networking"), _key(path, "networking"))
    reserved = m.get("reserved_concurrency")
    if reserved is not None:
        reserved = p.integer(reserved, _key(path, "reserved_concurrency"),
                             RESERVED_CONCURRENCY_RANGE)
    code = _code_dir(p, m["code"], _key(path, "code"))
    return Function(name, code, handler, vpc_config, memory, timeout, networking, reserved)


def _networking(p: Any, raw: object, path: str) -> str | None:
    if raw is not None and raw not in NETWORKING_MODES:
        p.fail(path, f"unknown networking mode {raw!r} (known: {', '.join(NETWORKING_MODES)})")
    return None if raw is None else str(raw)


def _code_dir(p: Any, raw: object, path: str) -> str:
    text = p.string(raw, path)
    given = Path(text).expanduser()
    # the current directory, then the file's directory and its parents (so that
    # `code: examples/functions` in examples/quickstart.yaml works from anywhere)
    bases = [Path.cwd()]
    if p.base_dir:
        base = Path(p.base_dir).resolve()
        bases += [base, *base.parents]
    candidates = [given] if given.is_absolute() else [base / given for base in bases]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    if any(candidate.exists() for candidate in candidates):
        p.fail(path, f"code {text!r} is not a directory")
    looked = ", ".join(str(candidate) for candidate in candidates)
    p.fail(path, f"code directory {text!r} does not exist (looked at {looked})")
    raise AssertionError("unreachable: fail raises")


def _vpc_config(p: Any, raw: object, path: str) -> VpcConfig | None:
    if raw is None:
        return None
    m = p.mapping(raw, path, (), ("subnet_ids", "security_group_ids",
                                  "ipv6_allowed_for_dual_stack"))
    subnets_path = _key(path, "subnet_ids")
    groups_path = _key(path, "security_group_ids")
    subnet_ids = p.ident_list(m.get("subnet_ids", []), subnets_path,
                              MAX_FUNCTION_SUBNETS, "subnet id")
    group_ids = p.ident_list(m.get("security_group_ids", []), groups_path,
                             MAX_SECURITY_GROUPS, "security group id")
    ipv6 = p.boolean(m.get("ipv6_allowed_for_dual_stack", False),
                     _key(path, "ipv6_allowed_for_dual_stack"))
    if not subnet_ids and not group_ids:
        return None  # as in AWS: empty lists mean "not attached to a VPC"
    if not group_ids:
        p.fail(groups_path, "subnet_ids are given but no security group; give both")
    if not subnet_ids:
        p.fail(subnets_path, "security_group_ids are given but no subnet; give both")
    vpc_id = _function_vpc(p, subnet_ids, subnets_path)
    for index, group_id in enumerate(group_ids):
        p.check_group_ref(f"{groups_path}[{index}]", group_id, vpc_id,
                          " (the VPC of the function's subnets)")
    return VpcConfig(subnet_ids, group_ids, vpc_id, ipv6)


def _function_vpc(p: Any, subnet_ids: tuple[str, ...], path: str) -> str:
    first = None
    for index, subnet_id in enumerate(subnet_ids):
        if subnet_id not in p.subnets:
            p.fail(f"{path}[{index}]", f"unknown subnet '{subnet_id}'")
        subnet = p.subnets[subnet_id][0]
        first = first or subnet
        if subnet.vpc_id != first.vpc_id:
            p.fail(f"{path}[{index}]", f"subnet '{subnet_id}' is in {subnet.vpc_id} but "
                   f"'{first.id}' is in {first.vpc_id}; a function's subnets must all "
                   "be in one VPC")
    assert first is not None
    return first.vpc_id
