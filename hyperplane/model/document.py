"""Reading a topology file: bounded first, then parsed (pure but for reading the file).

A file is read only within bounds, checked before any value is built, so that a
hostile or broken file fails in milliseconds with one line instead of filling the
memory: at most ``MAX_BYTES`` bytes, ``MAX_DEPTH`` levels of nesting and
``MAX_NODES`` nodes once YAML aliases are expanded (a 700-byte "billion laughs"
file expands to billions).  The bounds are checked on the YAML event stream,
which the parser produces without recursion: an anchored node's size is remembered
and every alias adds it again, so the expanded size is known without expanding.

Then the document is loaded (a safe loader that also refuses a key given twice in
one mapping) and validated by ``parser.parse_topology``.  Every problem is one
``TopologyError``: ``FILE: <file>: reason``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hyperplane.errors import TopologyError
from hyperplane.model.fields import FILE_PATH
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Topology

MAX_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it


class StrictLoader(_BASE):  # type: ignore[misc, valid-type]
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key_node.value[:60]}'", key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or exc)[:200]
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _line(event: yaml.Event) -> int:
    mark = getattr(event, "start_mark", None)
    return mark.line + 1 if mark is not None else 0


def check_bounds(text: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> str | None:
    """Why ``text`` is out of bounds (nesting, expanded size), or None.  YAML errors raise."""
    sizes: dict[str, int] = {}          # anchor -> expanded size of its node
    open_nodes: list[list] = []         # [anchor, size so far] per open collection
    total = 0
    for event in yaml.parse(text, Loader=_BASE):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_nodes) >= max_depth:
                return (f"nesting deeper than {max_depth} levels at line {_line(event)} "
                        "(the file is refused before it is read further)")
            open_nodes.append([event.anchor, 1])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if open_nodes:
            open_nodes[-1][1] += size
        total += size if not open_nodes else 0
        if (open_nodes and open_nodes[-1][1] > max_nodes) or total > max_nodes:
            return (f"more than {max_nodes} nodes once YAML aliases are expanded (at line "
                    f"{_line(event)}); a file that large is refused (is it an alias bomb?)")
    return None


def read_yaml(path: str) -> object:
    """The YAML document of ``path``, within the bounds, or ``TopologyError``."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_BYTES:
            raise TopologyError(path, FILE_PATH, f"the file has {size} bytes; at most "
                                f"{MAX_BYTES} are read")
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TopologyError(path, FILE_PATH, "file not found") from None
    except IsADirectoryError:
        raise TopologyError(path, FILE_PATH, "is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(path, FILE_PATH, f"cannot read: {exc}") from None
    try:
        problem = check_bounds(text)
        if problem is not None:
            raise TopologyError(path, FILE_PATH, problem)
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise TopologyError(path, FILE_PATH, _yaml_reason(exc)) from None
    except RecursionError:  # not reached within the bounds; kept as a last guard
        raise TopologyError(path, FILE_PATH, "nesting too deep") from None


def load_topology(path: str) -> Topology:
    """Read and validate a topology file; relative ``code`` may be relative to its folder."""
    data = read_yaml(path)
    if isinstance(data, dict) and "_layout" in data:
        raise TopologyError(path, "_layout", "is the emulator's own record of kernel names "
                            "(in its copy of the document); a file may not set it")
    return parse_topology(data, path, str(Path(path).resolve().parent))
