"""The dependency graph of a stack's resources, and their order (pure).

A resource depends on each resource it names through ``Ref``, ``Fn::GetAtt`` or
``Fn::Sub`` in its properties (in every branch of an ``Fn::If``: as
CloudFormation does) and on each resource of its ``DependsOn``.  ``order(nodes,
edges)`` gives the resources so that each comes after all it depends on, ties
broken by the template's order (so the order is stable), or reports a cycle:
``cycle(...)`` names the resources in it and how each depends on the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# logical id -> {dependency: "DependsOn" or "reference"}
Edges = Mapping[str, Mapping[str, str]]


def order(nodes: Sequence[str], edges: Edges) -> tuple[list[str], list[str]]:
    """(the nodes in dependency order, []) or ([], a cycle: [A, B, ..., A])."""
    done: set[str] = set()
    result: list[str] = []
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(d in done for d in edges.get(n, {}))]
        if not ready:
            return [], _find_cycle(pending, edges)
        ready_set = set(ready)
        result.extend(ready)
        done |= ready_set
        pending = [n for n in pending if n not in ready_set]
    return result, []


def _find_cycle(pending: list[str], edges: Edges) -> list[str]:
    """A cycle among ``pending`` (each of which waits on another pending node)."""
    waiting = set(pending)
    path: list[str] = [pending[0]]
    seen = {pending[0]: 0}
    while True:
        node = path[-1]
        following = next(d for d in edges[node] if d in waiting)
        if following in seen:
            return path[seen[following]:] + [following]
        seen[following] = len(path)
        path.append(following)


def describe(cycle: list[str], edges: Edges) -> str:
    """``A -(Ref/GetAtt/Sub)-> B -(DependsOn)-> A``."""
    text = cycle[0]
    for here, there in zip(cycle, cycle[1:], strict=False):
        how = "DependsOn" if edges[here][there] == "DependsOn" else "Ref/GetAtt/Sub"
        text += f" -({how})-> {there}"
    return text
