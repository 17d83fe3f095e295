"""A template's Parameters: their values from defaults and overrides, checked (pure).

``resolve_parameters(raw, overrides, source) -> Parameters`` gives each parameter
its value: the override (``Key=Value`` on the command line, parsed by the caller)
or else its ``Default``.  Values are what ``Ref`` returns: a string for
``String``, ``Number`` (checked as a number, kept as the text given, as
CloudFormation does) and the single-valued AWS types (``AWS::EC2::VPC::Id``,
``AWS::EC2::Subnet::Id``... any ``AWS::EC2::*::Id`` or ``::Name``,
``AWS::SSM::Parameter::Name``, ``AWS::Route53::HostedZone::Id``); a list of
strings for ``List<Number>``, ``CommaDelimitedList`` and ``List<AWS::EC2::...>``
(split at commas, each item trimmed of spaces).

Checked as CloudFormation checks them: ``AllowedValues``, ``AllowedPattern`` (the
whole value, or each item of a list), ``MinLength``/``MaxLength`` (strings),
``MinValue``/``MaxValue`` (numbers); a violation names ``ConstraintDescription``
when the template gives one.  ``NoEcho`` parameters are listed in ``no_echo`` so
that whoever prints values masks them.  All parameters without a value (no
default, no override) are named in one error; an override of a parameter the
template does not declare is an error.

``AWS::SSM::Parameter::Value<...>`` (SSM is not emulated; the choice made here):
an override is taken as the parameter's *value*, standing in for what SSM would
return; without one, a ``Default`` (in CloudFormation the *name* of the SSM
parameter) is used as given and the parameter is listed in ``ssm_unresolved`` so
that the caller can warn that its value is an SSM name, not what SSM holds;
with neither, the error says to give the value as an override.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from hyperplane.errors import TopologyError
from hyperplane.model.fields import kind, shown

SCALAR_TYPES = ("String", "Number", "AWS::SSM::Parameter::Name",
                "AWS::Route53::HostedZone::Id")
LIST_TYPES = ("CommaDelimitedList", "List<Number>", "List<String>")  # List<String>: in SSM<...>
_EC2 = re.compile(r"AWS::EC2::[A-Za-z]+::(?:Id|Name|KeyName|GroupName)")
_EC2_LIST = re.compile(r"List<(AWS::EC2::[A-Za-z]+::(?:Id|Name|GroupName)|"
                       r"AWS::Route53::HostedZone::Id)>")
_SSM = re.compile(r"AWS::SSM::Parameter::Value<(.+)>")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z0-9]+")
KEYS = ("Type", "Default", "Description", "AllowedValues", "AllowedPattern",
        "ConstraintDescription", "MinLength", "MaxLength", "MinValue", "MaxValue", "NoEcho")


@dataclass(frozen=True)
class Parameters:
    """The resolved parameters: name -> value (a string, or a list of strings)."""

    values: dict[str, object] = field(default_factory=dict)
    no_echo: frozenset[str] = frozenset()
    ssm_unresolved: frozenset[str] = frozenset()


def _fail(source: str, path: str, reason: str) -> NoReturn:
    raise TopologyError(source, path, reason)


def is_list_type(type_: str) -> bool:
    ssm = _SSM.fullmatch(type_)
    inner = ssm.group(1) if ssm else type_
    return inner in LIST_TYPES or _EC2_LIST.fullmatch(inner) is not None


def known_type(type_: str) -> bool:
    ssm = _SSM.fullmatch(type_)
    inner = ssm.group(1) if ssm else type_
    if inner == "List<String>" and not ssm:
        return False
    return inner in SCALAR_TYPES or inner in LIST_TYPES or \
        _EC2.fullmatch(inner) is not None or _EC2_LIST.fullmatch(inner) is not None


def _as_text(value: object, source: str, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)   # a YAML list as a list parameter's default
    _fail(source, path, f"expected a string, got {kind(value)} {shown(value)}")


def resolve_parameters(raw: object, overrides: Mapping[str, str], source: str) -> Parameters:
    """The parameters' values (see the module's docstring), or one ``TopologyError``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(source, "Parameters", f"expected a mapping, got {kind(raw)}")
    for name in overrides:
        if name not in raw:
            close = difflib.get_close_matches(str(name), [str(n) for n in raw], n=1)
            hint = f"; did you mean {shown(close[0])}?" if close else ""
            declared = ", ".join(map(str, raw)) or "none"
            _fail(source, f"Parameters.{name}", f"an override names a parameter the template "
                  f"does not declare (parameters: {shown(declared)}){hint}")
    values: dict[str, object] = {}
    missing, no_echo, ssm = [], set(), set()
    for name, spec in raw.items():
        path = f"Parameters.{name}"
        spec = _spec(name, spec, source, path)
        if _truthy(spec.get("NoEcho")):
            no_echo.add(name)
        if name in overrides:
            given = _as_text(overrides[name], source, path)
        elif "Default" in spec:
            given = _as_text(spec["Default"], source, f"{path}.Default")
            if _SSM.fullmatch(spec["Type"]):
                ssm.add(name)
        else:
            missing.append(name)
            continue
        values[name] = _checked(given, spec, source, path)
    if missing:
        where = f"Parameters.{missing[0]}" if len(missing) == 1 else "Parameters"
        ssm_note = " (SSM is not emulated: give an SSM parameter's value itself)" if any(
            _SSM.fullmatch(raw[n]["Type"]) for n in missing) else ""
        _fail(source, where, f"no value for parameter{'s' if len(missing) > 1 else ''} "
              f"{', '.join(missing)}: no Default and no override (give NAME=VALUE){ssm_note}")
    return Parameters(values, frozenset(no_echo), frozenset(ssm))


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _spec(name: object, spec: object, source: str, path: str) -> dict:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        _fail(source, path, f"parameter name {shown(name)} must be alphanumeric")
    if not isinstance(spec, dict):
        _fail(source, path, f"expected a mapping, got {kind(spec)}")
    for key in spec:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"; did you mean {shown(close[0])}?" if close else ""
            _fail(source, f"{path}.{key}", f"unknown key {shown(key)}{hint}")
    type_ = spec.get("Type")
    if not isinstance(type_, str):
        _fail(source, f"{path}.Type", f"missing or not a string: {shown(type_)}")
    if not known_type(type_):
        _fail(source, f"{path}.Type", f"unsupported parameter type {shown(type_)} (String, "
              "Number, List<Number>, CommaDelimitedList, AWS::EC2::*::Id, "
              "List<AWS::EC2::*::Id>, AWS::SSM::Parameter::Value<...>)")
    return spec


def _checked(given: str, spec: dict, source: str, path: str) -> object:
    type_ = spec["Type"]
    constraint = spec.get("ConstraintDescription")
    note = f" ({shown(constraint)})" if constraint else ""
    if is_list_type(type_):
        items = [item.strip() for item in given.split(",")] if given.strip() else []
        for index, item in enumerate(items):
            _check_item(item, type_, spec, source, f"{path}[{index}]", note)
        return items
    _check_item(given, type_, spec, source, path, note)
    _check_length(given, spec, source, path, note)
    return given


def _check_item(value: str, type_: str, spec: dict, source: str, path: str,
                note: str) -> None:
    numeric = type_ in ("Number", "List<Number>")
    if numeric and not _NUMBER.fullmatch(value.strip()):
        _fail(source, path, f"{shown(value)} is not a number (the type is {type_}){note}")
    allowed = spec.get("AllowedValues")
    if allowed is not None:
        if not isinstance(allowed, list):
            _fail(source, f"{path}.AllowedValues", f"expected a list, got {kind(allowed)}")
        texts = [_as_text(a, source, f"{path}.AllowedValues") for a in allowed]
        if value not in texts and not (numeric and _number_in(value, texts)):
            _fail(source, path, f"{shown(value)} is not one of the AllowedValues "
                  f"{shown(texts)}{note}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None:
        try:
            matched = re.fullmatch(str(pattern), value) is not None
        except re.error as exc:
            _fail(source, f"{path}.AllowedPattern", f"not a regular expression: {exc.msg}")
        if not matched:
            _fail(source, path, f"{shown(value)} does not match the AllowedPattern "
                  f"{shown(str(pattern))}{note}")
    if numeric:
        _check_range(value, spec, source, path, note)


def _number_in(value: str, texts: list[str]) -> bool:
    return any(_NUMBER.fullmatch(t) and float(t) == float(value) for t in texts)


def _bound(spec: dict, key: str, source: str, path: str) -> tuple[float, str] | None:
    bound = spec.get(key)
    if bound is None:
        return None
    text = _as_text(bound, source, f"{path}.{key}")
    if not _NUMBER.fullmatch(text):
        _fail(source, f"{path}.{key}", f"expected a number, got {shown(bound)}")
    return float(text), text


def _check_range(value: str, spec: dict, source: str, path: str, note: str) -> None:
    low, high = _bound(spec, "MinValue", source, path), _bound(spec, "MaxValue", source, path)
    if low is not None and float(value) < low[0]:
        _fail(source, path, f"{shown(value)} is below MinValue {low[1]}{note}")
    if high is not None and float(value) > high[0]:
        _fail(source, path, f"{shown(value)} is above MaxValue {high[1]}{note}")


def _check_length(value: str, spec: dict, source: str, path: str, note: str) -> None:
    low, high = _bound(spec, "MinLength", source, path), _bound(spec, "MaxLength", source, path)
    if low is not None and len(value) < low[0]:
        _fail(source, path, f"{shown(value)} is shorter than MinLength {low[1]}{note}")
    if high is not None and len(value) > high[0]:
        _fail(source, path, f"a value of {len(value)} characters is longer than MaxLength "
              f"{high[1]}{note}")
