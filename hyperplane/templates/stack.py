"""A CloudFormation template resolved as a stack: resources in dependency order (pure).

``resolve(template, source, stack_name, region, account, overrides, attributes)``
does what CloudFormation does before it creates anything, and returns a ``Stack``:

1. the sections are checked (a SAM template must go through ``sam.expand`` first;
   of the transforms only ``AWS::LanguageExtensions`` is accepted, for its
   ``Fn::Length`` and ``Fn::ToJsonString``; ``Rules`` are not evaluated);
2. ``Parameters`` get their values (``parameters``: defaults, ``overrides``,
   constraints), ``Mappings`` are read, every ``Conditions`` entry is evaluated once
   (a condition may use another; a cycle is an error naming it);
3. a resource whose ``Condition`` is false is dropped (``Stack.dropped``): a ``Ref``
   or ``Fn::GetAtt`` to it is an error, except in an ``Fn::If`` branch not taken;
4. the dependency graph (``graph``: Ref, GetAtt, Sub and ``DependsOn``) orders the
   resources; a cycle is an error naming its resources;
5. each resource in that order: its properties evaluated (``intrinsics``;
   ``AWS::NoValue`` removed), its physical id and default attributes (``physical``),
   then ``attributes(resource)``, the caller's callback, whose answer is merged into
   the attributes that later ``Fn::GetAtt``/``Fn::Sub`` read (the mapping layer
   gives a database's ``Endpoint.Address`` there, an EIP's ``PublicIp``, which
   becomes the EIP's physical id, its Ref);
6. ``Outputs`` are evaluated (a false ``Condition`` leaves one out).

``Resource`` and ``Stack`` are frozen records (their dicts are the caller's to
read, not to change).  A resource's ``Metadata`` is kept as written (unevaluated).
Every error is one ``TopologyError(source, path, reason)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from hyperplane.errors import TopologyError
from hyperplane.model.fields import kind, shown
from hyperplane.templates import graph, physical
from hyperplane.templates.intrinsics import (
    NO_VALUE,
    Context,
    evaluate,
    evaluate_condition,
    references,
)
from hyperplane.templates.parameters import resolve_parameters

SECTIONS = ("AWSTemplateFormatVersion", "Description", "Metadata", "Parameters", "Rules",
            "Mappings", "Conditions", "Transform", "Resources", "Outputs")
RESOURCE_KEYS = ("Type", "Properties", "DependsOn", "Condition", "Metadata",
                 "DeletionPolicy", "UpdateReplacePolicy", "CreationPolicy", "UpdatePolicy",
                 "Version")
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
ACCEPTED_TRANSFORMS = ("AWS::LanguageExtensions",)
OUTPUT_KEYS = ("Value", "Description", "Export", "Condition")
_LOGICAL_ID = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class Resource:
    """One resolved resource."""

    logical_id: str
    type: str
    properties: dict[str, object]          # evaluated; AWS::NoValue removed
    physical_id: str                        # what Ref returns
    attributes: dict[str, object]           # what Fn::GetAtt returns, by attribute name
    depends_on: tuple[str, ...] = ()        # every resource it depends on, in stack order
    condition: str | None = None            # the condition that kept it, if any
    metadata: dict[str, object] = field(default_factory=dict)  # as written


@dataclass(frozen=True)
class Stack:
    """A resolved template: its resources in dependency order."""

    name: str
    region: str
    account: str
    stack_id: str
    source: str
    parameters: dict[str, object]
    resources: tuple[Resource, ...]
    outputs: dict[str, object]
    conditions: dict[str, bool] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()           # resources a false condition left out
    no_echo: frozenset[str] = frozenset()   # parameters whose values are not to be shown
    ssm_unresolved: frozenset[str] = frozenset()  # SSM parameters left at their Default

    def resource(self, logical_id: str) -> Resource:
        for resource in self.resources:
            if resource.logical_id == logical_id:
                return resource
        raise KeyError(logical_id)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]


AttributesCallback = Callable[[Resource], Mapping[str, object]]


def resolve(template: dict, source: str, stack_name: str, region: str, account: str,
            overrides: dict[str, str],
            attributes: AttributesCallback | None = None) -> Stack:
    """The template resolved as stack ``stack_name`` (see the module's docstring)."""
    return _Resolver(template, source, (stack_name, region, account), overrides,
                     attributes).stack()


class _Resolver:
    def __init__(self, template: object, source: str, where: tuple[str, str, str],
                 overrides: dict[str, str], callback: AttributesCallback | None) -> None:
        self.source = source
        self.callback = callback
        self.template = self._checked_template(template)
        self.raw = self._checked_resources(self.template.get("Resources"))
        params = resolve_parameters(self.template.get("Parameters"), overrides, source)
        self.params = params
        clash = [n for n in params.values if n in self.raw]
        if clash:
            self.fail(f"Resources.{clash[0]}", f"{shown(clash[0])} is both a parameter and a "
                      "resource (logical ids are unique in a template)")
        stack_name, region, account = where
        self.context = Context(source, region, account, stack_name, params.values,
                               self._checked_mappings(),
                               tuple(self.raw), self._condition, self._ref, self._attribute)
        self.where = (stack_name, region, account, self.context.partition[0])
        self.conditions_raw = self._section("Conditions")
        self.conditions: dict[str, bool] = {}
        self.evaluating: list[str] = []
        self.resolved: dict[str, Resource] = {}
        self.dropped: dict[str, str] = {}
        self.in_conditions = False

    def fail(self, path: str, reason: str) -> NoReturn:
        raise TopologyError(self.source, path, reason)

    # -- sections ---------------------------------------------------------------------
    def _checked_template(self, template: object) -> dict:
        if not isinstance(template, dict):
            self.fail("<file>", f"expected a template (a mapping), got {kind(template)}")
        for name in template:
            if name == "Globals":
                self.fail(name, "Globals belong to SAM: a SAM template must be expanded "
                          "first (templates.sam.expand)")
            if name not in SECTIONS:
                close = difflib.get_close_matches(str(name), SECTIONS, n=1)
                hint = f"; did you mean {shown(close[0])}?" if close else ""
                self.fail(str(name), f"unknown section {shown(name)}{hint}")
        transform = template.get("Transform")
        names = transform if isinstance(transform, list) else [transform] if transform else []
        for name in names:
            if name == SAM_TRANSFORM:
                self.fail("Transform", f"{SAM_TRANSFORM}: a SAM template must be expanded "
                          "first (templates.sam.expand)")
            if name not in ACCEPTED_TRANSFORMS:
                self.fail("Transform", f"transform {shown(name)} is not emulated (accepted: "
                          f"{SAM_TRANSFORM} through sam.expand, {', '.join(ACCEPTED_TRANSFORMS)})")
        return template

    def _section(self, name: str) -> dict:
        raw = self.template.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(name, f"expected a mapping, got {kind(raw)}")
        return raw

    def _checked_mappings(self) -> dict:
        mappings = self._section("Mappings")
        for name, table in mappings.items():
            if not isinstance(table, dict):
                self.fail(f"Mappings.{name}", f"expected a mapping, got {kind(table)}")
            for key, level in table.items():
                if not isinstance(level, dict):
                    self.fail(f"Mappings.{name}.{key}", f"expected a mapping of keys to "
                              f"values, got {kind(level)}")
        return mappings

    def _checked_resources(self, raw: object) -> dict[str, dict]:
        if raw is None:
            self.fail("Resources", "missing: a template declares at least one resource")
        if not isinstance(raw, dict) or not raw:
            self.fail("Resources", f"expected a non-empty mapping, got {kind(raw)}")
        for logical_id, spec in raw.items():
            path = f"Resources.{logical_id}"
            if isinstance(logical_id, str) and logical_id.startswith("Fn::ForEach"):
                self.fail(path, "Fn::ForEach (AWS::LanguageExtensions) is not supported")
            if not isinstance(logical_id, str) or not _LOGICAL_ID.fullmatch(logical_id):
                self.fail(path, f"logical id {shown(logical_id)} must be alphanumeric")
            self._check_resource(spec, path)
        return raw

    def _check_resource(self, spec: object, path: str) -> None:
        if not isinstance(spec, dict):
            self.fail(path, f"expected a mapping, got {kind(spec)}")
        for key in spec:
            if key not in RESOURCE_KEYS:
                close = difflib.get_close_matches(str(key), RESOURCE_KEYS, n=1)
                hint = f"; did you mean {shown(close[0])}?" if close else ""
                self.fail(f"{path}.{key}", f"unknown resource attribute {shown(key)}{hint}")
        type_ = spec.get("Type")
        if not isinstance(type_, str) or "::" not in type_:
            self.fail(f"{path}.Type", f"expected a resource type (AWS::Service::Thing), got "
                      f"{shown(type_)}")
        if type_.startswith("AWS::Serverless::"):
            self.fail(f"{path}.Type", f"{shown(type_)} is SAM's: the template must be expanded "
                      "first (templates.sam.expand)")
        if not isinstance(spec.get("Properties", {}), dict):
            self.fail(f"{path}.Properties", f"expected a mapping, got "
                      f"{kind(spec.get('Properties'))}")
        condition = spec.get("Condition")
        if condition is not None and not isinstance(condition, str):
            self.fail(f"{path}.Condition", f"expected a condition's name, got {kind(condition)}")

    # -- conditions -------------------------------------------------------------------
    def _condition(self, name: str, path: str) -> bool:
        if name in self.conditions:
            return self.conditions[name]
        if name not in self.conditions_raw:
            known = ", ".join(map(str, self.conditions_raw)) or "none"
            close = difflib.get_close_matches(name, list(map(str, self.conditions_raw)), n=1)
            hint = f"; did you mean {shown(close[0])}?" if close else ""
            self.fail(path, f"unknown condition {shown(name)} (conditions: {shown(known)})"
                      f"{hint}")
        if name in self.evaluating:
            loop = self.evaluating[self.evaluating.index(name):] + [name]
            self.fail(f"Conditions.{loop[0]}", "condition cycle: " + " -> ".join(loop))
        self.evaluating.append(name)
        was, self.in_conditions = self.in_conditions, True
        value = evaluate_condition(self.conditions_raw[name], self.context,
                                   f"Conditions.{name}")
        self.in_conditions = was
        self.evaluating.pop()
        self.conditions[name] = value
        return value

    # -- references -------------------------------------------------------------------
    def _target(self, name: str, path: str, how: str) -> Resource:
        if self.in_conditions:
            self.fail(path, f"{how} {shown(name)}: a condition cannot refer to a resource")
        if name in self.dropped:
            condition = self.dropped[name]
            self.fail(path, f"{how} {shown(name)}, which its condition {shown(condition)} "
                      f"(false) leaves out of the stack; refer to it only inside "
                      f"Fn::If [{condition}, ...]")
        if name not in self.resolved:  # not reached: the graph orders every reference
            self.fail(path, f"{how} {shown(name)} before it is resolved")
        return self.resolved[name]

    def _ref(self, name: str, path: str) -> object:
        resource = self._target(name, path, "Ref")
        if resource.type == "AWS::EC2::EIP" and "PublicIp" not in resource.attributes:
            self.fail(path, f"Ref {shown(name)}: an EIP's Ref is its public address, which "
                      "only the mapping gives (Fn::GetAtt of its AllocationId names it)")
        return resource.physical_id

    def _attribute(self, name: str, attribute: str, path: str) -> object:
        resource = self._target(name, path, "Fn::GetAtt")
        if attribute not in resource.attributes:
            known = ", ".join(sorted(resource.attributes)) or "none"
            self.fail(path, f"Fn::GetAtt {shown(f'{name}.{attribute}')}: "
                      f"{shown(resource.type)} has no attribute {shown(attribute)} known here "
                      f"(known: {shown(known)})")
        value = resource.attributes[attribute]
        if value is None:
            self.fail(path, f"Fn::GetAtt {shown(f'{name}.{attribute}')}: unknown (the "
                      "resource's properties do not give it)")
        return value

    # -- the stack --------------------------------------------------------------------
    def stack(self) -> Stack:
        for name in self.conditions_raw:
            self._condition(str(name), f"Conditions.{name}")
        kept = []
        for logical_id, spec in self.raw.items():
            condition = spec.get("Condition")
            path = f"Resources.{logical_id}.Condition"
            if condition is not None and not self._condition(condition, path):
                self.dropped[logical_id] = condition
            else:
                kept.append(logical_id)
        edges = self._edges(kept)
        ordered, cycle = graph.order(kept, edges)
        if cycle:
            self.fail(f"Resources.{cycle[0]}", "circular dependency: "
                      + graph.describe(cycle, edges))
        position = {name: index for index, name in enumerate(ordered)}
        for logical_id in ordered:
            depends = tuple(sorted(edges[logical_id], key=position.__getitem__))
            self.resolved[logical_id] = self._resolve(logical_id, depends)
        return Stack(self.context.stack_name, self.context.region, self.context.account,
                     self.context.stack_id, self.source, dict(self.params.values),
                     tuple(self.resolved.values()), self._outputs(), dict(self.conditions),
                     tuple(self.dropped), self.params.no_echo, self.params.ssm_unresolved)

    def _edges(self, kept: list[str]) -> dict[str, dict[str, str]]:
        kept_set = set(kept)
        edges: dict[str, dict[str, str]] = {}
        for logical_id in kept:
            spec = self.raw[logical_id]
            mine: dict[str, str] = {}
            for name in references(spec.get("Properties", {})):
                if name in kept_set:
                    mine[name] = "reference"
            for name in self._depends_on(logical_id, spec.get("DependsOn")):
                mine[name] = "DependsOn"
            edges[logical_id] = mine
        return edges

    def _depends_on(self, logical_id: str, raw: object) -> list[str]:
        path = f"Resources.{logical_id}.DependsOn"
        names = [raw] if isinstance(raw, str) else raw if raw is not None else []
        if not isinstance(names, list):
            self.fail(path, f"expected a resource's name or a list of them, got {kind(raw)}")
        for index, name in enumerate(names):
            where = f"{path}[{index}]" if isinstance(raw, list) else path
            if not isinstance(name, str) or name not in self.raw:
                close = difflib.get_close_matches(str(name), list(self.raw), n=1)
                hint = f"; did you mean {shown(close[0])}?" if close else ""
                self.fail(where, f"DependsOn {shown(name)}: no such resource{hint}")
            if name in self.dropped:
                self.fail(where, f"DependsOn {shown(name)}, which its condition "
                          f"{shown(self.dropped[name])} (false) leaves out of the stack")
        return names

    def _resolve(self, logical_id: str, depends_on: tuple[str, ...]) -> Resource:
        spec = self.raw[logical_id]
        type_ = spec["Type"]
        path = f"Resources.{logical_id}.Properties"
        properties = evaluate(spec.get("Properties", {}), self.context, path)
        if properties is NO_VALUE:
            properties = {}
        if not isinstance(properties, dict):
            self.fail(path, f"expected a mapping, got {kind(properties)}")
        physical_id = physical.physical_id(type_, logical_id, properties, self.where)
        defaults = physical.default_attributes(type_, logical_id, properties, physical_id,
                                               self.where)
        metadata = spec.get("Metadata") if isinstance(spec.get("Metadata"), dict) else {}
        resource = Resource(logical_id, type_, properties, physical_id, defaults, depends_on,
                            spec.get("Condition"), metadata)
        if self.callback is None:
            return resource
        extra = self.callback(resource)
        if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
            self.fail(f"Resources.{logical_id}", f"the attributes callback gave "
                      f"{kind(extra)}, not a mapping of attribute names to values")
        merged = {**defaults, **extra}
        if type_ == "AWS::EC2::EIP" and isinstance(merged.get("PublicIp"), str):
            physical_id = merged["PublicIp"]
        return dataclasses.replace(resource, attributes=merged, physical_id=physical_id)

    def _outputs(self) -> dict[str, object]:
        outputs: dict[str, object] = {}
        for name, spec in self._section("Outputs").items():
            path = f"Outputs.{name}"
            if not isinstance(spec, dict) or "Value" not in spec:
                self.fail(path, "expected a mapping with a Value")
            unknown = [k for k in spec if k not in OUTPUT_KEYS]
            if unknown:
                self.fail(f"{path}.{unknown[0]}", f"unknown key {shown(unknown[0])}")
            condition = spec.get("Condition")
            if condition is not None and not self._condition(str(condition),
                                                             f"{path}.Condition"):
                continue
            if "Export" in spec:
                evaluate(spec["Export"], self.context, f"{path}.Export")
            value = evaluate(spec["Value"], self.context, f"{path}.Value")
            if value is NO_VALUE:
                self.fail(f"{path}.Value", "is AWS::NoValue")
            outputs[str(name)] = value
        return outputs
