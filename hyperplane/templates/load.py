"""Reading a CloudFormation or SAM template file (pure but for reading the file).

The file is read within the bounds of a topology file (``model.document``: at
most ``MAX_BYTES`` bytes, ``MAX_DEPTH`` levels, ``MAX_NODES`` nodes once aliases
are expanded; checked on the event stream before any value is built), then loaded
by ``TemplateLoader``: the topology file's strict loader (a key given twice is an
error) that also knows CloudFormation's short-form tags and builds their long
form: ``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B.C`` -> ``{"Fn::GetAtt": ["A",
"B.C"]}`` (split at the first dot; the list form is kept), ``!Condition C`` ->
``{"Condition": "C"}`` and every other ``!Name`` -> ``{"Fn::Name": value}`` whether
the tagged node is a scalar, a sequence or a mapping.  A YAML timestamp
(``AWSTemplateFormatVersion: 2010-09-09`` unquoted) stays the string it is written as.

JSON is YAML, so a JSON template goes through the same loader; tabs (which JSON
allows as whitespace and YAML does not, and which valid JSON never holds inside a
string) are read as spaces when the text opens with ``{``.

Names: ``is_template(document)`` (a mapping with ``AWSTemplateFormatVersion``,
``Transform`` or ``Resources``), ``read_template(path)`` (the template, or one
``TopologyError``: ``FILE: <file>: reason``, the line of a YAML problem in the reason).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hyperplane.errors import TopologyError
from hyperplane.model.document import MAX_BYTES, StrictLoader, check_bounds
from hyperplane.model.fields import FILE_PATH, kind, shown

TEMPLATE_KEYS = ("AWSTemplateFormatVersion", "Transform", "Resources")
SHORT_FORMS = ("Base64", "Cidr", "FindInMap", "GetAZs", "ImportValue", "Join", "Select",
               "Split", "Sub", "Transform", "If", "Equals", "And", "Or", "Not", "Length",
               "ToJsonString")
_SCALAR_ONLY = ("Ref", "Condition")


def is_template(document: object) -> bool:
    """Whether ``document`` looks like a CloudFormation (or SAM) template."""
    return isinstance(document, dict) and any(k in document for k in TEMPLATE_KEYS)


def _malformed(node: yaml.Node, problem: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _tagged_value(loader: yaml.BaseLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _name_only(name: str):
    def construct(loader: yaml.BaseLoader, node: yaml.Node) -> dict:
        if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
            raise _malformed(node, f"!{name} takes a name (a non-empty scalar), "
                             f"not {_node_kind(node)}")
        return {name: loader.construct_scalar(node)}
    return construct


def _get_att(loader: yaml.BaseLoader, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        text = str(loader.construct_scalar(node))
        resource, dot, attribute = text.partition(".")
        if not dot or not resource or not attribute:
            raise _malformed(node, f"!GetAtt {shown(text)} is not Resource.Attribute")
        return {"Fn::GetAtt": [resource, attribute]}
    if isinstance(node, yaml.SequenceNode):
        return {"Fn::GetAtt": loader.construct_sequence(node, deep=True)}
    raise _malformed(node, "!GetAtt takes Resource.Attribute or [Resource, Attribute], "
                     "not a mapping")


def _function(name: str):
    def construct(loader: yaml.BaseLoader, node: yaml.Node) -> dict:
        return {f"Fn::{name}": _tagged_value(loader, node)}
    return construct


def _node_kind(node: yaml.Node) -> str:
    return "a sequence" if isinstance(node, yaml.SequenceNode) else \
        "a mapping" if isinstance(node, yaml.MappingNode) else "an empty scalar"


def _timestamp_as_text(loader: yaml.BaseLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))


class TemplateLoader(StrictLoader):
    """The strict safe loader, with CloudFormation's short-form tags."""


for _name in _SCALAR_ONLY:
    TemplateLoader.add_constructor(f"!{_name}", _name_only(_name))
for _name in SHORT_FORMS:
    TemplateLoader.add_constructor(f"!{_name}", _function(_name))
TemplateLoader.add_constructor("!GetAtt", _get_att)
TemplateLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or exc)[:200]
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_text(path: str) -> str:
    """The text of ``path`` if it is within ``MAX_BYTES``, or ``TopologyError``."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_BYTES:
            raise TopologyError(path, FILE_PATH, f"the file has {size} bytes; at most "
                                f"{MAX_BYTES} are read")
        return file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TopologyError(path, FILE_PATH, "file not found") from None
    except IsADirectoryError:
        raise TopologyError(path, FILE_PATH, "is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(path, FILE_PATH, f"cannot read: {shown(str(exc))}") from None


def parse_template_text(text: str, path: str) -> object:
    """The document of ``text`` (the contents of ``path``), within the bounds."""
    if text.lstrip().startswith("{"):
        text = text.replace("\t", " ")
    try:
        problem = check_bounds(text)
        if problem is not None:
            raise TopologyError(path, FILE_PATH, problem)
        return yaml.load(text, Loader=TemplateLoader)
    except yaml.YAMLError as exc:
        raise TopologyError(path, FILE_PATH, _yaml_reason(exc)) from None
    except RecursionError:  # not reached within the bounds; kept as a last guard
        raise TopologyError(path, FILE_PATH, "nesting too deep") from None


def read_template(path: str) -> dict:
    """The template of ``path`` (short forms in long form), or ``TopologyError``."""
    document = parse_template_text(read_text(path), path)
    if not isinstance(document, dict):
        raise TopologyError(path, FILE_PATH, f"expected a template (a mapping), got "
                            f"{kind(document)}")
    if not is_template(document):
        raise TopologyError(path, FILE_PATH, "not a CloudFormation template: it has none of "
                            + ", ".join(TEMPLATE_KEYS))
    return document
