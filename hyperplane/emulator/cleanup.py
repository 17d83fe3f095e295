"""``hyperplane cleanup``: remove what a killed or crashed run left behind.

Like Mininet's ``mn -c``, but narrower: it removes only what carries the
project's name prefix (namespaces named ``hp-*``; every interface we make
lives inside one of them) and the processes recorded in the state database or
living inside those namespaces, and nothing else on the machine.
"""

from __future__ import annotations

import json
import sqlite3

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
        recorded = [pid for pid in data.get("procs", {}).values()
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
    return {"processes": sorted(set(recorded) | set(stray)), "namespaces": removed}
