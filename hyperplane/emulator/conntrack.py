"""``hyperplane conntrack``'s work: list, follow, delete, flush (side effects: reads, requests).

* ``listing``: the sessions of the dataplane (or of the NAT gateways' process) that a
  ``ctfilter.Filter`` matches, read from the process's shared-memory table
  (``running.sessions``), or asked of the process (``ask``).
* ``follow``: NEW / UPDATE / DESTROY events (``ctevents``), by sampling the table
  every ``interval`` seconds (never asking the process), filtered; a generator that
  ends when ``stop()`` says so or the table goes away.
* ``delete``: the matching sessions freed by the process that writes the table, through
  its control socket (``{"op": "conntrack_delete", "filter": {...}}``), so the table
  keeps its one writer; ``flush`` is ``delete`` with the empty filter.  Returns the rows
  freed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from hyperplane.dataplane import ctevents, shm
from hyperplane.dataplane.ctfilter import Filter
from hyperplane.emulator import requests, running
from hyperplane.errors import UsageError
from hyperplane.kernel import state

INTERVAL = 0.1


def _role(nat: bool) -> str:
    return "natgw" if nat else "dataplane"


def listing(flt: Filter, nat: bool = False, ask: bool = False) -> list[dict]:
    return [row for row in running.sessions(None, nat, ask) if flt.matches(row)]


def _read(paths: list[str]) -> dict:
    now = time.monotonic()
    sample: dict = {}
    for path in paths:  # a group of workers: one table each (their ids are disjoint keys)
        ids, found = shm.read_records(path, now)
        sample.update({(path, key): row for key, row in
                       ctevents.sample(ids, found, now).items()})
    return sample


def follow(flt: Filter, nat: bool = False, interval: float = INTERVAL,
           stop: Callable[[], bool] = lambda: False,
           ready: Callable[[], None] = lambda: None) -> Iterator[tuple[str, dict]]:
    """Events of the sessions ``flt`` matches, as ``(event, row)``, from now on."""
    running.require()
    paths = state.shm_tables(_role(nat))
    path = paths[0]
    try:
        before = _read(paths)
    except FileNotFoundError:
        raise UsageError(f"no {_role(nat)} session table ({path}): "
                         + ("the topology has no NAT gateway" if nat else
                            "is the dataplane running?")) from None
    ready()
    while not stop():
        time.sleep(interval)
        try:
            after = _read(paths)
        except FileNotFoundError:  # `down` removed the table: every session is gone
            after = {}
        for event, row in ctevents.diff(before, after):
            if flt.matches(row):
                yield event, row
        before = after
        if not after and not _exists(path):
            return


def _exists(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except FileNotFoundError:
        return False


def delete(flt: Filter, nat: bool = False) -> list[dict]:
    """Free the matching sessions, by the process that writes the table; their rows."""
    running.require()
    message = {"op": "conntrack_delete", "filter": flt.to_wire()}
    reply = requests.natgw_request(message) if nat else requests.dataplane_request(message)
    if not reply.get("ok"):
        raise RuntimeError(f"the {_role(nat)} refused the deletion: {reply.get('error')}")
    return reply["deleted"]
