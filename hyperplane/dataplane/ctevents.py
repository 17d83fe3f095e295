"""conntrack events (NEW / UPDATE / DESTROY) from two samples of a session table (pure).

``hyperplane conntrack --follow`` is ``conntrack -E`` without asking the dataplane
anything: it samples the shared-memory table (``shm.read_records``) every
``interval`` and compares each sample with the one before (``diff``):

* a session is known by its *identity* (``identity``): its record number, the slot,
  its outside key (protocol, addresses, ports) and its creation time, all in the
  record's immutable part, so a record freed and taken again by another flow, or
  by the same 5-tuple again, is a new session;
* NEW: an identity not in the previous sample (its row as first seen: a TCP flow
  made and answered within one interval shows up ESTABLISHED);
* UPDATE: the same identity whose TCP state, ``replied`` or ``[ASSURED]`` changed (what
  the kernel reports as an update; counters and timeouts alone do not make one);
* DESTROY: an identity gone (freed by the dataplane, deleted, or expired: an
  expired record is not shown even before the dataplane's clock hand frees it), with
  the row as last seen.

Sampling shows what each sample saw: a session made and gone between two samples is
not shown, and states a session passed through between two samples are skipped (the
default interval, 0.1 s, is shorter than any timeout).  Events come in a stable order:
DESTROY, then UPDATE, then NEW, each sorted by record number.
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperplane.dataplane import records as r
from hyperplane.dataplane.ctfilter import assured

NEW, UPDATE, DESTROY = "new", "update", "destroy"
Identity = tuple


def identity(rec: int, fields: tuple) -> Identity:
    """What tells one session from another in a table: see the module docstring."""
    return (rec, fields[r.F_SLOT], fields[r.F_PROTO], fields[r.F_ADDRS], fields[r.F_PORTS],
            fields[r.F_CREATED])


def sample(ids: dict[int, str], found: Iterable[tuple], now: float) -> dict[Identity, dict]:
    """One sample: rows (``records.describe``) by identity, from ``shm.read_records``."""
    return {identity(rec, fields): r.describe(fields, now, ids.get(fields[r.F_SLOT]))
            for rec, fields in found}


def _shown(row: dict) -> tuple:
    return (row.get("state"), bool(row.get("replied")), assured(row))


def diff(before: dict[Identity, dict], after: dict[Identity, dict]) -> list[tuple[str, dict]]:
    """The events that turn sample ``before`` into sample ``after``."""
    events: list[tuple[str, dict]] = []
    events += [(DESTROY, before[k]) for k in sorted(before.keys() - after.keys())]
    events += [(UPDATE, after[k]) for k in sorted(before.keys() & after.keys())
               if _shown(before[k]) != _shown(after[k])]
    events += [(NEW, after[k]) for k in sorted(after.keys() - before.keys())]
    return events
