"""``up``'s look at the machine before it builds: the limits a topology would exceed.

``check(topology, objs, tune)`` compares what the topology needs (``fabric.limits.needs``,
pure) with what the machine allows (``kernel.hostlimits.read``).  A limit exceeded raises
``UsageError`` (exit 2) naming the limit, its value and the number needed, before anything
is built or recorded.  With ``tune`` (``up --tune-host``) the tunable limits exceeded are
raised first (``hostlimits.tune``: only those, only up to the number needed) and the
machine read again; the changes are returned as lines (each with how to undo it).
Without ``tune`` nothing on the machine changes.
"""

from __future__ import annotations

from hyperplane.errors import UsageError
from hyperplane.fabric import limits
from hyperplane.kernel import hostlimits
from hyperplane.model.topology import Topology


def check(topology: Topology, objs: frozenset, tune: bool = False) -> list[str]:
    """Refuse a topology past a machine limit (raise ``tune``-able ones first if asked)."""
    needed = limits.needs(topology, objs)
    machine = hostlimits.read()
    short = limits.check(needed, machine)
    changes: list[hostlimits.Change] = []
    if short and tune:
        changes = hostlimits.tune(short, machine)
        machine = hostlimits.read()
        short = limits.check(needed, machine)
    if short:
        hint = ""
        if not tune and any(machine[s.name].tunable for s in short):
            hint = "; `hyperplane up --tune-host` raises it (docs/cli.md says what it changes)"
        raise UsageError("up refused, nothing built: " +
                         "; ".join(s.message() for s in short) + hint)
    return [change.line() for change in changes]
