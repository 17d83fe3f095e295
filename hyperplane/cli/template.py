"""The CLI's part of CloudFormation/SAM templates: option parsing and the stack's lines.

``parse_overrides`` reads ``--parameter-overrides`` as ``sam deploy`` does (``Key=Value``
words, or ``ParameterKey=Key,ParameterValue=Value``; several per option, shell-quoted);
``parse_pairs`` reads ``--code LogicalId=DIR``; ``stack_lines`` is what ``up``, ``status``
and ``validate`` print about a stack: each resource's logical id beside its physical id
and what it became, the skipped types, notes, cfn-lint's warnings, and the ENIs the
template caused, one line per (subnet, security-group set).
"""

from __future__ import annotations

import re
import shlex

from hyperplane.errors import UsageError

_LONG_FORM = re.compile(r"ParameterKey=([^,]+),ParameterValue=(.*)")


def parse_overrides(values: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise UsageError(f"--parameter-overrides {value!r}: {exc}") from None
        for word in words:
            long_form = _LONG_FORM.fullmatch(word)
            key, sep, text = (long_form.group(1), "=", long_form.group(2)) if long_form \
                else word.partition("=")
            if not sep or not key:
                raise UsageError(f"--parameter-overrides {word!r}: expected Key=Value")
            found[key] = text
    return found


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    found = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key or not text:
            raise UsageError(f"{option} {value!r}: expected LogicalId=DIR")
        found[key] = text
    return found


def stack_lines(stack: dict, eni_sets: list[dict] | None = None,
                brief: bool = False) -> list[str]:
    if not stack:
        return []
    lines = [f"stack       {stack['name']} ({stack['template']})"]
    if not brief:
        for r in stack["resources"]:
            if r["emulated"]:
                shown = f"  -> {r['as']}" if r.get("as") else ""
                lines.append(f"resource    {r['logical_id']:<24} {r['physical_id']:<28} "
                             f"{r['type']}{shown}")
    lines += [f"            {line}" for line in stack.get("skipped", [])]
    lines += [f"note        {line}" for line in stack.get("notes", [])]
    lines += [f"lint        {line}" for line in stack.get("warnings", [])]
    for eni in eni_sets or []:
        lines.append(f"eni         {eni['id']:<22} {eni['subnet']} ({eni['subnet_logical']}) "
                     f"[{', '.join(eni['security_groups'])}] {eni['ip']}  "
                     f"functions {', '.join(eni['functions'])}")
    return lines
