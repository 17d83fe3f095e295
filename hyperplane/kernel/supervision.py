"""Long-running processes as specs: started the same way by ``up`` and by the supervisor
(side effects).

A spec is plain data, recorded in the state under ``supervise`` (name -> spec), so that
the supervisor (``emulator.supervisor``) can start a dead process again exactly as ``up``
did, without knowing what it is:

    {"netns": "hp-plane" or null (the caller's own namespace), "argv": [...],
     "log": PATH, "ready": READY, "after": "resync" | "natgw" | null}

    READY  {"file": PATH}        the process touches (or writes) PATH once serving
           {"ping": SOCKET}      it answers ``{"op": "ping"}`` on a jsonline socket
           {"controller": SOCKET}  the same, with its own pid in the answer
           {"socket": PATH}      PATH exists (the zygote's socket)
           {"tcp": PORT}         127.0.0.1:PORT accepts (the AWS endpoint)

``after`` names what the supervisor does once a restarted process is ready (the
dataplane's configuration pushed again by the controller, the NAT gateways' sent).
``start(spec)`` spawns and waits (``RuntimeError`` naming the log if it dies or times out).
``policy`` decides, from the recent deaths of a process, whether it is started again:
five deaths within a minute and it stays down, with the reason.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hyperplane import jsonline
from hyperplane.errors import UnreachableError
from hyperplane.kernel import procs

READY_TIMEOUT = 15.0
MAX_DEATHS = 5        # within WINDOW seconds: the process stays down
WINDOW = 60.0


def spec(netns: str | None, argv: list[str], log: Path | str, ready: dict,
         after: str | None = None) -> dict:
    return {"netns": netns, "argv": list(argv), "log": str(log), "ready": ready,
            "after": after}


def _pinged(sock: str, pid: int | None = None) -> bool:
    try:
        reply = jsonline.request(sock, {"op": "ping"}, timeout=1)
    except (UnreachableError, OSError, ValueError):
        return False
    return bool(reply.get("ok") or reply.get("pid")) and (pid is None or reply.get("pid") == pid)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def ready_check(ready: dict, pid: int):  # noqa: ANN201 - a predicate
    if "file" in ready:
        return lambda: os.path.exists(ready["file"])
    if "ping" in ready:
        return lambda: _pinged(ready["ping"])
    if "controller" in ready:
        return lambda: _pinged(ready["controller"], pid)
    if "socket" in ready:
        return lambda: os.path.exists(ready["socket"])
    return lambda: _listening(int(ready["tcp"]))


def _clear(ready: dict) -> None:
    """What says "ready" must not be left over from the process that died."""
    for key in ("file", "socket"):
        if key in ready:
            Path(ready[key]).unlink(missing_ok=True)


def spawn(entry: dict) -> int:
    """Start the process of a spec without waiting."""
    _clear(entry["ready"])
    log = Path(entry["log"])
    if entry["netns"]:
        return procs.spawn(entry["netns"], entry["argv"], log)
    return procs.spawn_here(entry["argv"], log)


def wait_ready(entry: dict, pid: int, what: str, timeout: float = READY_TIMEOUT) -> None:
    procs.await_ready(pid, ready_check(entry["ready"], pid), what, Path(entry["log"]),
                      timeout)


def start(entry: dict, what: str, timeout: float = READY_TIMEOUT) -> int:
    pid = spawn(entry)
    wait_ready(entry, pid, what, timeout)
    return pid


def policy(deaths: list[float], now: float) -> tuple[bool, list[float]]:
    """(start it again?, the deaths still within the window) after a death at ``now``."""
    recent = [t for t in deaths if now - t < WINDOW] + [now]
    return len(recent) < MAX_DEATHS, recent
