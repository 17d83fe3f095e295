"""``hyperplane cleanup``: remove what a killed or crashed run left behind.

Like Mininet's ``mn -c``, but narrower: it removes only what carries the
project's name prefix (namespaces named ``hp-*``; every interface we make
lives inside one of them) and the processes recorded in the state database or
living inside those namespaces, and our shared-memory session tables
(``/dev/shm/hp-<state id>-*``: this state directory's, and any other state
directory's that no live process has mapped), and nothing else on the machine.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from hyperplane.emulator.run import forget_state
from hyperplane.kernel import netlink, procs, state
from hyperplane.model import names


def cleanup() -> dict:
    """Remove leftovers; report what was removed."""
    with state.locked():
        try:
            data = state.load() or {}
        except (json.JSONDecodeError, OSError, sqlite3.Error):
            data = {}
        supervisor = data.get("procs", {}).get("supervisor")
        if supervisor and procs.alive(supervisor) and procs.is_ours(supervisor):
            procs.stop(supervisor)  # first: it would start the others again
        restarted = [r["pid"] for r in (data.get("services") or {}).values() if r.get("pid")]
        recorded = [pid for pid in [*data.get("procs", {}).values(), *restarted]
                    if procs.alive(pid) and procs.is_ours(pid)]
        for pid in recorded:
            procs.stop(pid)
        namespaces = sorted(set(netlink.list_netns(names.NS_PREFIX)) |
                            {n for n in data.get("namespaces", [])
                             if n.startswith(names.NS_PREFIX)})
        stray = procs.pids_in_namespaces(namespaces)
        procs.kill_in_namespaces(namespaces)
        removed = []
        for ns in namespaces:
            if netlink.netns_exists(ns):
                netlink.remove_netns(ns)
                removed.append(ns)
        forget_state()
        for table in orphan_tables():
            table.unlink(missing_ok=True)
    return {"processes": sorted(set(recorded) | set(stray)), "namespaces": removed}


TABLE_NAME = re.compile(r"hp-[0-9a-f]{10}-[a-z]+(-w[0-9]+)?\.sessions")


def orphan_tables() -> list[Path]:
    """Session tables a crashed run of another state directory left (a test's temporary
    one): named as ours, mapped by no live process."""
    in_use = procs.mapped_paths(str(state.SHM_DIR / "hp-"))
    return [path for path in sorted(state.SHM_DIR.glob("hp-*.sessions"))
            if TABLE_NAME.fullmatch(path.name) and str(path) not in in_use]
