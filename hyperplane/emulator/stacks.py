"""A CloudFormation or SAM template as the topology ``up`` builds (side effects: reads the
file, runs cfn-lint and samtranslator, writes inline code, installs dependencies).

``is_template_file(path)`` tells a template (``AWSTemplateFormatVersion``, ``Transform``
or ``Resources``) from a topology file.  ``load(path, options, code_root, build)``:

1. ``templates.load.read_template``, within the topology file's bounds;
2. ``templates.sam.expand`` for a SAM template;
3. ``templates.stack.resolve`` with ``templates.mapping.Mapper``'s callback placing
   databases, caches and mount targets as hosts while it resolves;
4. ``templates.lint.lint``: cfn-lint's errors are ours (the first raised, the count
   named), its warnings kept as lines (last of the checks: it takes a second to load);
5. the mapped document: inline ``Code.ZipFile`` written under ``code_root``
   (``STATE_DIR/stacks/<LogicalId>``), and with ``build`` each function's
   ``requirements.txt`` / ``package.json`` installed (``kernel.buildcache``);
6. ``model.parser.parse_topology``: an error on the document is pointed at the
   template part it came from.

``Loaded.stack`` is the view ``up`` records in the state and ``status`` shows: the stack
name, each resource's logical id beside its physical id and what it became, the skipped
types, notes and cfn-lint's warnings, and the functions' logical ids (aliases of their
names for ``invoke``, ``exec --function``, ``function get`` and the endpoint).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hyperplane.errors import TopologyError
from hyperplane.kernel import buildcache
from hyperplane.model import settings
from hyperplane.model.fields import FILE_PATH
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Topology
from hyperplane.templates import lint, load, sam, stack
from hyperplane.templates.mapping import Mapper, point_error

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
_TEMPLATE_KEY = re.compile(r'^\s*"?(AWSTemplateFormatVersion|Transform|Resources)"?\s*:',
                           re.MULTILINE)
STACK_NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]{0,127}")


@dataclass
class Options:
    stack_name: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    code: dict[str, str] = field(default_factory=dict)    # logical id -> directory
    region: str = DEFAULT_REGION
    account: str = DEFAULT_ACCOUNT


@dataclass
class Loaded:
    topology: Topology
    document: dict
    stack: dict


def is_template_file(path: str) -> bool:
    """Whether ``path`` holds a template rather than a topology file (False when it
    cannot be read: the topology loader then says why)."""
    try:
        text = load.read_text(path)
    except TopologyError:
        return False
    try:
        return load.is_template(load.parse_template_text(text, path))
    except TopologyError:  # a broken template: its loader is to say what is wrong
        return bool(_TEMPLATE_KEY.search(text))


def stack_name(path: str, options: Options) -> str:
    name = options.stack_name or re.sub(r"[^-a-zA-Z0-9]+", "-", Path(path).stem).strip("-")
    if not STACK_NAME.fullmatch(name or ""):
        raise TopologyError(path, "--stack-name", f"{name!r} is not a stack name "
                            f"(^{STACK_NAME.pattern}$)")
    return name


def load_template(path: str, options: Options, code_root: Path,
                  build: bool = False) -> Loaded:
    """The template at ``path`` as a topology (see the module's docstring)."""
    template = load.read_template(path)
    name = stack_name(path, options)
    expanded = sam.expand(template, path, options.region)
    template_dir = str(Path(path).resolve().parent)
    code = {k: str(Path(v).expanduser().resolve()) for k, v in options.code.items()}
    mapper = Mapper(path, template_dir, options.account, code)
    resolved = stack.resolve(expanded, path, name, options.region, options.account,
                             options.overrides, mapper.attributes)
    mapped = mapper.map(resolved)
    warnings = _lint(path, options.region)  # last of the checks: cfn-lint takes a second
    if mapped.inline_code:
        _write_inline(mapped, code_root)
    if build:
        _build(mapped.document, path)
    try:
        topology = parse_topology(mapped.document, path, template_dir)
        settings.check(topology.settings, path)
    except TopologyError as exc:
        raise point_error(exc, mapped, path) from None
    view = {"name": name, "template": os.path.abspath(path), "region": options.region,
            "resources": mapped.resources,
            "skipped": mapped.skipped + [f"skipped {logical_id} (its Condition is false)"
                                         for logical_id in resolved.dropped],
            "notes": mapped.notes,
            "warnings": warnings, "functions": mapped.functions,
            "outputs": {k: str(v) for k, v in resolved.outputs.items()},
            "parameters": {k: ("****" if k in resolved.no_echo else
                               ",".join(map(str, v)) if isinstance(v, list) else str(v))
                           for k, v in resolved.parameters.items()}}
    for name in sorted(resolved.ssm_unresolved):
        view["notes"].append(f"parameter {name}: SSM is not emulated; its Default is used as "
                             "the value (give it with --parameter-overrides)")
    return Loaded(topology, mapped.document, view)


def _lint(path: str, region: str) -> list[str]:
    errors, warnings = lint.lint(path, region)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more cfn-lint errors)" if len(errors) > 1 else ""
        raise TopologyError(path, first.path, first.reason + more)
    return warnings


def _write_inline(mapped, root: Path) -> None:  # noqa: ANN001 - mapping.Mapped
    by_name = {f["name"]: f for f in mapped.document["functions"]}
    for logical_id, (file_name, text) in mapped.inline_code.items():
        directory = root / logical_id
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        (directory / file_name).write_text(text)
        by_name[mapped.functions[logical_id]]["code"] = str(directory)


def _build(document: dict, path: str) -> None:
    for function in document["functions"]:
        if not os.path.isdir(function["code"]):
            raise TopologyError(path, FILE_PATH, f"function {function['name']}: code "
                                f"directory {function['code']} does not exist")
        function["code"] = buildcache.build(function["name"], function["code"],
                                            function.get("runtime") or "python3.12")


def forget(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)

