"""CloudFormation's intrinsic functions, evaluated in a context (pure).

``evaluate(value, context, path)`` returns ``value`` with every intrinsic function
in it replaced by its result.  An intrinsic is a mapping whose one key is ``Ref`` or
``Fn::<Name>`` (that key among others is an error); everything else is data, walked
item by item.  ``AWS::NoValue`` evaluates to ``NO_VALUE``, which a mapping drops
with its key and a list drops as an item (``Fn::If [C, !Ref AWS::NoValue, x]``).

The ``Context`` holds what the functions read: the stack's name, region and
account (the pseudo parameters), the parameters' values, the mappings, the names
of the template's resources, and three callbacks of the caller (``stack``):
``condition(name, path) -> bool``, ``resource_ref(logical_id, path)`` (its
physical id) and ``resource_attr(logical_id, attribute, path)``.

Supported: ``Ref`` (parameters, pseudo parameters, resources), ``Fn::GetAtt``,
``Fn::Sub`` (both forms; ``${Name}``, ``${Res.Attr}``, ``${!Literal}``),
``Fn::Join``, ``Fn::Select``, ``Fn::Split``, ``Fn::GetAZs``, ``Fn::Cidr``,
``Fn::If``, ``Fn::Equals``, ``Fn::And``, ``Fn::Or``, ``Fn::Not``, ``Condition``
(inside a condition function), ``Fn::FindInMap`` (with ``DefaultValue``),
``Fn::Base64``, ``Fn::Length`` and ``Fn::ToJsonString``.  ``Fn::ImportValue`` is
an error (exports of other stacks are not emulated), as is any other ``Fn::``.

``references(value)`` lists the names a value refers to (``Ref``, ``Fn::GetAtt``,
``Fn::Sub``), for the dependency graph; ``evaluate_condition`` evaluates a
condition (``Conditions`` section).  Every error is one ``TopologyError``.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from hyperplane.errors import TopologyError
from hyperplane.model.fields import kind, shown
from hyperplane.templates import functions as fn


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()  # what AWS::NoValue evaluates to: dropped by its mapping or list
CONDITION_FUNCTIONS = ("Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition")
_SUB = re.compile(r"\$\{([^}]*)\}")
_PARTITIONS = (("cn-", "aws-cn", "amazonaws.com.cn"), ("us-gov-", "aws-us-gov", "amazonaws.com"))


def _no_condition(name: str, path: str) -> bool:
    raise TopologyError("", path, f"condition {shown(name)}: no conditions here")


def _no_resource(name: str, path: str) -> object:
    raise TopologyError("", path, f"resource {shown(name)}: no resources here")


def _no_attribute(name: str, attribute: str, path: str) -> object:
    raise TopologyError("", path, f"resource {shown(name)}: no resources here")


@dataclass(frozen=True)
class Context:
    """What intrinsic functions read; the callbacks are the stack's."""

    source: str
    region: str
    account: str
    stack_name: str
    parameters: Mapping[str, object] = field(default_factory=dict)
    mappings: Mapping[str, object] = field(default_factory=dict)
    resources: Collection[str] = ()
    condition: Callable[[str, str], bool] = _no_condition
    resource_ref: Callable[[str, str], object] = _no_resource
    resource_attr: Callable[[str, str, str], object] = _no_attribute

    def fail(self, path: str, reason: str) -> NoReturn:
        raise TopologyError(self.source, path, reason)

    @property
    def partition(self) -> tuple[str, str]:
        """(partition, URL suffix) of the region."""
        for prefix, partition, suffix in _PARTITIONS:
            if self.region.startswith(prefix):
                return partition, suffix
        return "aws", "amazonaws.com"

    @property
    def stack_id(self) -> str:
        """A stack ARN whose UUID is stable for the stack name, region and account."""
        key = f"hyperplane:{self.account}:{self.region}:{self.stack_name}"
        return (f"arn:{self.partition[0]}:cloudformation:{self.region}:{self.account}:"
                f"stack/{self.stack_name}/{uuid.uuid5(uuid.NAMESPACE_URL, key)}")

    def pseudo(self) -> dict[str, object]:
        partition, suffix = self.partition
        return {"AWS::Region": self.region, "AWS::AccountId": self.account,
                "AWS::StackName": self.stack_name, "AWS::StackId": self.stack_id,
                "AWS::Partition": partition, "AWS::URLSuffix": suffix,
                "AWS::NotificationARNs": [], "AWS::NoValue": NO_VALUE}


def is_intrinsic_key(name: object) -> bool:
    return name == "Ref" or (isinstance(name, str) and name.startswith("Fn::"))


def sub_names(template: str) -> list[str]:
    """The names a ``Fn::Sub`` string substitutes (``${!Literal}`` is none)."""
    return [m.strip() for m in _SUB.findall(template) if not m.startswith("!")]


def references(value: object) -> list[str]:
    """The names ``value`` refers to through Ref, Fn::GetAtt and Fn::Sub, in order."""
    found: dict[str, None] = {}
    _collect(value, found)
    return list(found)


def _collect(value: object, found: dict[str, None]) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, found)
        return
    if not isinstance(value, dict):
        return
    if len(value) == 1:
        (name, arg), = value.items()
        if name == "Ref" and isinstance(arg, str):
            found[arg] = None
        elif name == "Fn::GetAtt":
            target = arg.partition(".")[0] if isinstance(arg, str) else \
                arg[0] if isinstance(arg, list) and arg else None
            if isinstance(target, str):
                found[target] = None
        elif name == "Fn::Sub":
            _collect_sub(arg, found)
    for item in value.values():
        _collect(item, found)


def _collect_sub(arg: object, found: dict[str, None]) -> None:
    template, local = arg, {}
    if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
        template, local = arg
    if isinstance(template, str):
        for name in sub_names(template):
            if name not in local:
                found[name.partition(".")[0]] = None


def evaluate(value: object, context: Context, path: str) -> object:
    """``value`` with its intrinsic functions evaluated (may be ``NO_VALUE``)."""
    return _Evaluator(context).value(value, path)


def evaluate_condition(value: object, context: Context, path: str) -> bool:
    """A condition's value: Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition."""
    return _Evaluator(context).condition(value, path)


class _Evaluator:
    def __init__(self, context: Context) -> None:
        self.ctx = context
        self.fail = context.fail

    # -- data -------------------------------------------------------------------------
    def value(self, value: object, path: str) -> object:
        if isinstance(value, list):
            items = (self.value(item, f"{path}[{i}]") for i, item in enumerate(value))
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        intrinsic = [k for k in value if is_intrinsic_key(k)]
        if intrinsic and len(value) == 1:
            return self.function(intrinsic[0], value[intrinsic[0]], path)
        if intrinsic:
            self.fail(path, f"{shown(intrinsic[0])} must be the only key of its mapping, which "
                      f"has {len(value)}: {shown(sorted(map(str, value)))}")
        result = {}
        for name, item in value.items():
            evaluated = self.value(item, f"{path}.{name}")
            if evaluated is not NO_VALUE:
                result[name] = evaluated
        return result

    def function(self, name: str, arg: object, path: str) -> object:
        method = _FUNCTIONS.get(name)
        if name == "Fn::ImportValue":
            self.fail(path, "Fn::ImportValue: exports of other stacks are not emulated "
                      "(give the value as a parameter instead)")
        if method is None:
            supported = ", ".join(sorted(n for n in _FUNCTIONS if is_intrinsic_key(n)))
            self.fail(path, f"unsupported intrinsic function {shown(name)} (supported: "
                      f"{supported})")
        return method(self, arg, path)

    def args(self, arg: object, path: str, name: str, counts: tuple[int, ...]) -> list:
        if not isinstance(arg, list) or len(arg) not in counts:
            sizes = f"{counts[0]}..{counts[-1]}" if len(counts) > 2 else \
                " or ".join(map(str, counts))
            self.fail(path, f"{name} takes a list of {sizes} items, got {kind(arg)} "
                      f"{shown(arg)}")
        return arg

    def scalar(self, value: object, path: str, what: str) -> str:
        evaluated = self.value(value, path)
        if evaluated is NO_VALUE:
            self.fail(path, f"{what} is AWS::NoValue, where a value is needed")
        return fn.text(evaluated, path, what, self.fail)

    # -- references -------------------------------------------------------------------
    def ref(self, arg: object, path: str) -> object:
        if not isinstance(arg, str) or not arg:
            self.fail(path, f"Ref takes a name, got {kind(arg)} {shown(arg)}")
        return self.name(arg, path, "Ref")

    def name(self, name: str, path: str, how: str) -> object:
        if name in self.ctx.parameters:
            return self.ctx.parameters[name]
        pseudo = self.ctx.pseudo()
        if name in pseudo:
            return pseudo[name]
        if name in self.ctx.resources:
            return self.ctx.resource_ref(name, path)
        known = [*self.ctx.parameters, *self.ctx.resources, *pseudo]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {shown(close[0])}?" if close else ""
        self.fail(path, f"unresolvable {how} {shown(name)}: no parameter, pseudo parameter "
                  f"or resource has that name{hint}")

    def get_att(self, arg: object, path: str) -> object:
        if isinstance(arg, str) and "." in arg:
            arg = list(arg.split(".", 1))
        pair = self.args(arg, path, "Fn::GetAtt", (2,))
        resource = pair[0]
        attribute = self.scalar(pair[1], f"{path}.Fn::GetAtt[1]", "Fn::GetAtt's attribute")
        if not isinstance(resource, str) or not resource:
            self.fail(path, f"Fn::GetAtt takes a resource's name, got {shown(resource)}")
        return self.attribute(resource, attribute, path)

    def attribute(self, resource: str, attribute: str, path: str) -> object:
        if resource not in self.ctx.resources:
            close = difflib.get_close_matches(resource, list(self.ctx.resources), n=1)
            hint = f"; did you mean {shown(close[0])}?" if close else ""
            self.fail(path, f"Fn::GetAtt {shown(f'{resource}.{attribute}')}: "
                      f"{shown(resource)} is not a resource of the template{hint}")
        return self.ctx.resource_attr(resource, attribute, path)

    def sub(self, arg: object, path: str) -> str:
        template, local = arg, {}
        if isinstance(arg, list):
            template, variables = self.args(arg, path, "Fn::Sub", (2,))
            if not isinstance(variables, dict):
                self.fail(f"{path}.Fn::Sub[1]", f"Fn::Sub's variables must be a mapping, "
                          f"got {kind(variables)}")
            local = {name: self.scalar(v, f"{path}.Fn::Sub[1].{name}", f"variable {name}")
                     for name, v in variables.items()}
        if not isinstance(template, str):
            self.fail(path, f"Fn::Sub takes a string or [string, variables], got "
                      f"{kind(template)} {shown(template)}")

        def replace(match: re.Match) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            name = inner.strip()
            if not name:
                self.fail(path, "Fn::Sub: an empty ${} in the string")
            if name in local:
                return local[name]
            if "." in name:
                value = self.attribute(*name.split(".", 1), path)
            else:
                value = self.name(name, path, "Fn::Sub variable")
            return fn.text(value, path, f"Fn::Sub's ${{{shown(name)}}}", self.fail)
        return _SUB.sub(replace, template)

    # -- lists and strings ------------------------------------------------------------
    def join(self, arg: object, path: str) -> str:
        delimiter, items = self.args(arg, path, "Fn::Join", (2,))
        delimiter = self.scalar(delimiter, f"{path}.Fn::Join[0]", "Fn::Join's delimiter")
        where = f"{path}.Fn::Join[1]"
        values = fn.string_list(self.value(items, where), where, "Fn::Join's list", self.fail)
        return delimiter.join(values)

    def select(self, arg: object, path: str) -> object:
        index, items = self.args(arg, path, "Fn::Select", (2,))
        where = f"{path}.Fn::Select[0]"
        number = fn.integer(self.value(index, where), where, "Fn::Select's index", self.fail)
        values = self.value(items, f"{path}.Fn::Select[1]")
        if not isinstance(values, list):
            self.fail(f"{path}.Fn::Select[1]", f"Fn::Select takes a list, got {kind(values)}")
        if number >= len(values):
            self.fail(path, f"Fn::Select index {number} is out of range: the list has "
                      f"{len(values)} items")
        return values[number]

    def split(self, arg: object, path: str) -> list[str]:
        delimiter, source = self.args(arg, path, "Fn::Split", (2,))
        delimiter = self.scalar(delimiter, f"{path}.Fn::Split[0]", "Fn::Split's delimiter")
        if not delimiter:
            self.fail(path, "Fn::Split's delimiter is empty")
        return self.scalar(source, f"{path}.Fn::Split[1]", "Fn::Split's string").split(
            delimiter)

    def get_azs(self, arg: object, path: str) -> list[str]:
        region = self.scalar(arg, f"{path}.Fn::GetAZs", "Fn::GetAZs's region")
        return fn.azs(region or self.ctx.region)

    def cidr(self, arg: object, path: str) -> list[str]:
        block, count, bits = self.args(arg, path, "Fn::Cidr", (3,))
        where = f"{path}.Fn::Cidr"
        return fn.cidr(self.value(block, f"{where}[0]"), self.value(count, f"{where}[1]"),
                       self.value(bits, f"{where}[2]"), where, self.fail)

    def find_in_map(self, arg: object, path: str) -> object:
        items = self.args(arg, path, "Fn::FindInMap", (3, 4))
        keys = [self.scalar(item, f"{path}.Fn::FindInMap[{i}]", "Fn::FindInMap's key")
                for i, item in enumerate(items[:3])]
        default: tuple[object, ...] = ()
        if len(items) == 4:
            option = items[3]
            if not isinstance(option, dict) or list(option) != ["DefaultValue"]:
                self.fail(f"{path}.Fn::FindInMap[3]", "Fn::FindInMap's fourth item must be "
                          "{DefaultValue: value}")
            default = (self.value(option["DefaultValue"], f"{path}.Fn::FindInMap[3]"),)
        return fn.find_in_map(self.ctx.mappings, keys, default, path, self.fail)

    def base64(self, arg: object, path: str) -> str:
        return fn.base64(self.scalar(arg, f"{path}.Fn::Base64", "Fn::Base64's value"))

    def length(self, arg: object, path: str) -> int:
        values = self.value(arg, f"{path}.Fn::Length")
        if not isinstance(values, list):
            self.fail(path, f"Fn::Length takes a list, got {kind(values)}")
        return len(values)

    def to_json_string(self, arg: object, path: str) -> str:
        return fn.to_json(self.value(arg, f"{path}.Fn::ToJsonString"), path, self.fail)

    # -- conditions -------------------------------------------------------------------
    def if_(self, arg: object, path: str) -> object:
        name, when_true, when_false = self.args(arg, path, "Fn::If", (3,))
        if not isinstance(name, str) or not name:
            self.fail(path, f"Fn::If takes a condition's name first, got {shown(name)}")
        chosen = 1 if self.ctx.condition(name, path) else 2
        return self.value(arg[chosen], f"{path}.Fn::If[{chosen}]")

    def condition(self, value: object, path: str) -> bool:
        if not isinstance(value, dict) or len(value) != 1 or \
                next(iter(value)) not in CONDITION_FUNCTIONS:
            self.fail(path, f"a condition must be one of {', '.join(CONDITION_FUNCTIONS)}, "
                      f"got {kind(value)} {shown(value)}")
        (name, arg), = value.items()
        return _FUNCTIONS[name](self, arg, path)

    def condition_ref(self, arg: object, path: str) -> bool:
        if not isinstance(arg, str) or not arg:
            self.fail(path, f"Condition takes a condition's name, got {shown(arg)}")
        return self.ctx.condition(arg, path)

    def equals(self, arg: object, path: str) -> bool:
        left, right = (self.value(item, f"{path}.Fn::Equals[{i}]")
                       for i, item in enumerate(self.args(arg, path, "Fn::Equals", (2,))))
        if isinstance(left, (list, dict)) or isinstance(right, (list, dict)):
            return left == right
        return _scalar(left) == _scalar(right)

    def all_of(self, arg: object, path: str) -> bool:
        items = self.args(arg, path, "Fn::And", tuple(range(2, 11)))
        return all([self.condition(c, f"{path}.Fn::And[{i}]") for i, c in enumerate(items)])

    def any_of(self, arg: object, path: str) -> bool:
        items = self.args(arg, path, "Fn::Or", tuple(range(2, 11)))
        return any([self.condition(c, f"{path}.Fn::Or[{i}]") for i, c in enumerate(items)])

    def not_(self, arg: object, path: str) -> bool:
        return not self.condition(self.args(arg, path, "Fn::Not", (1,))[0], f"{path}.Fn::Not[0]")


def _scalar(value: object) -> object:
    return value if value is NO_VALUE or value is None else \
        fn.text(value, "", "", _never)


def _never(path: str, reason: str) -> NoReturn:  # fn.text of a scalar never fails
    raise AssertionError(reason)


_FUNCTIONS: dict[str, Callable[[_Evaluator, object, str], object]] = {
    "Ref": _Evaluator.ref, "Fn::GetAtt": _Evaluator.get_att, "Fn::Sub": _Evaluator.sub,
    "Fn::Join": _Evaluator.join, "Fn::Select": _Evaluator.select,
    "Fn::Split": _Evaluator.split, "Fn::GetAZs": _Evaluator.get_azs,
    "Fn::Cidr": _Evaluator.cidr, "Fn::FindInMap": _Evaluator.find_in_map,
    "Fn::Base64": _Evaluator.base64, "Fn::Length": _Evaluator.length,
    "Fn::ToJsonString": _Evaluator.to_json_string, "Fn::If": _Evaluator.if_,
    "Fn::Equals": _Evaluator.equals, "Fn::And": _Evaluator.all_of,
    "Fn::Or": _Evaluator.any_of, "Fn::Not": _Evaluator.not_,
    "Condition": _Evaluator.condition_ref,
}
