"""The supervisor: every long-running process of ours started again when it dies (a process).

``python -m hyperplane.emulator.supervisor``, started by ``up`` last (in the root
namespace, like the AWS endpoint).  Every ``INTERVAL`` seconds it looks at each process
the state names under ``supervise`` (``kernel.supervision`` specs: the dataplane, the NAT
gateways' dataplane, the controller, the zygote, the endpoint, the resolvers, the
public server and the hosts' servers).  One that is gone is started again from its spec
at once (within a second), and what it needs afterwards is done: the dataplane, which
re-attached its shared-memory session table, gets its configuration from the controller
(``resync``); the NAT gateways' process gets theirs.  A process that died
``MAX_DEATHS`` times within ``WINDOW`` seconds stays down, and says why.

A name in the state's ``paused`` row (``controller stop`` puts the controller there,
``controller start`` takes it out) is left alone.  What it knows is the state's
``services`` row, which only it writes:

    {name: {"pid": PID, "restarts": N, "deaths": [t, ...], "down": null | "reason",
            "last_restart": t}}

``status`` shows it; ``down`` stops the supervisor first, so nothing is started again
while the topology is taken apart.  A spec whose process has no recorded pid yet is being
started by someone else (``up``, or the controller recording its own pid) and is left
alone.  Nobody supervises the supervisor: if it dies, ``status`` says so.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from hyperplane.emulator.requests import controller_request
from hyperplane.emulator.running import current
from hyperplane.errors import UnreachableError
from hyperplane.kernel import procs, state, supervision, vpcservices

INTERVAL = 0.1
log = logging.getLogger("hyperplane.supervisor")


class Supervisor:
    def __init__(self) -> None:
        self.services: dict[str, dict] = dict(state.load_row("services") or {})

    def pid_of(self, name: str, procs_row: dict) -> int | None:
        """The process's pid: ours if we restarted it, unless someone else has started it
        again since ours died (``controller start``: the procs row names a live process
        of ours that is not the one we know), which is then supervised as if we had."""
        known = self.services.get(name)
        recorded = procs_row.get(name)
        if (known and recorded and recorded != known["pid"] and not procs.alive(known["pid"])
                and procs.alive(recorded) and procs.is_ours(recorded)):
            known.update(pid=recorded, down=None, deaths=[])
            return recorded
        return known["pid"] if known else recorded

    def once(self) -> None:
        specs = state.load_row("supervise") or {}
        procs_row = state.load_row("procs") or {}
        paused = set(state.load_row("paused") or [])
        changed = False
        for name, entry in specs.items():
            if name in paused:  # stopped on purpose (`controller stop`)
                continue
            known = (self.services.get(name) or {}).get("pid")
            pid = self.pid_of(name, procs_row)
            changed |= bool(known and pid != known)  # adopted: saved below
            record = self.services.get(name) or {}
            if record.get("down"):
                continue
            if not pid or (procs.alive(pid) and procs.is_ours(pid)):
                continue
            changed = True
            self.died(name, entry, pid)
        if changed:
            state.save_row("services", self.services)

    def died(self, name: str, entry: dict, pid: int | None) -> None:
        record = self.services.setdefault(name, {"pid": pid, "restarts": 0, "deaths": [],
                                                 "down": None})
        now = time.time()
        again, record["deaths"] = supervision.policy(record["deaths"], now)
        if not again:
            record["down"] = (f"died {len(record['deaths'])} times within "
                              f"{supervision.WINDOW:.0f} s; left down (see {entry['log']})")
            log.error("%s: %s", name, record["down"])
            return
        try:
            record["pid"] = supervision.spawn(entry)
            record["restarts"] += 1
            record["last_restart"] = now
            state.save_row("services", self.services)  # recorded before it is waited for
            supervision.wait_ready(entry, record["pid"], name)
            self.after(entry.get("after"))
            log.info("%s restarted as pid %s", name, record["pid"])
        except (RuntimeError, OSError, UnreachableError) as exc:
            log.error("%s could not be restarted: %s", name, exc)

    @staticmethod
    def after(what: str | None) -> None:
        if what == "resync":
            try:  # the controller may be down too: it pushes when it starts
                controller_request({"op": "resync"})
            except (UnreachableError, RuntimeError, OSError) as exc:
                log.warning("resync: %s", exc)
        elif what == "natgw":
            running = current()
            if running is not None:
                vpcservices.configure_natgw(running.topology)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # our children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    supervisor = Supervisor()
    while True:
        try:
            supervisor.once()
        except Exception:  # noqa: BLE001 - logged; supervising goes on
            log.exception("supervision round failed")
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
