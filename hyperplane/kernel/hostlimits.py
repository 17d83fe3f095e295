"""The machine's limits a topology can run into: read, and raised on request (side effects).

``read()`` gives each limit ``fabric.limits`` checks as a ``Limit`` record: its value
(``/proc/sys`` in the caller's namespaces, ``getrlimit``) and what the machine uses
already where that can be read:

    user.max_net_namespaces            network namespaces alive (distinct ones of every
                                       process and of /run/netns)
    fs.mount-max                       mounts of this mount namespace
    net.ipv4.neigh.default.gc_thresh3  not counted (the non-permanent entries of all
                                       namespaces cannot be read at once)
    kernel.pid_max, kernel.threads-max tasks alive (/proc/loadavg)
    fs.file-max                        files open (fs.file-nr)
    RLIMIT_NOFILE                      this process's soft limit (what every process
                                       ``up`` starts inherits)
    bridge ports (BR_MAX_PORTS)        a constant of the kernel: not tunable

``tune(shortfalls)`` (``up --tune-host`` only) raises exactly the limits named, to the
number needed, never lowers one, and returns what it changed with the command that
undoes it: a sysctl is written in /proc/sys (until reboot, or until undone); the open
files limit is this process's own (``setrlimit``, soft and if need be hard, up to
``fs.nr_open``), inherited by the processes it starts and gone with them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from hyperplane.fabric.limits import BR_MAX_PORTS, Limit, Shortfall

PROC_SYS = Path("/proc/sys")
NETNS_DIR = Path("/run/netns")
SYSCTLS = ("user.max_net_namespaces", "fs.mount-max", "net.ipv4.neigh.default.gc_thresh3",
           "kernel.pid_max", "kernel.threads-max", "fs.file-max")
NOFILE = "RLIMIT_NOFILE"
BRIDGE_PORTS = "bridge ports (BR_MAX_PORTS)"


@dataclass(frozen=True)
class Change:
    name: str
    old: int
    new: int
    undo: str

    def line(self) -> str:
        return f"changed {self.name} from {self.old} to {self.new} (undo: {self.undo})"


def sysctl_path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def _sysctl(key: str) -> int | None:
    try:
        return int(sysctl_path(key).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _net_namespaces() -> int:
    """Distinct network namespaces alive: those of every process and the named ones."""
    seen: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                seen.add(os.stat(f"/proc/{entry.name}/ns/net").st_ino)
            except OSError:
                continue
    if NETNS_DIR.is_dir():
        for entry in os.scandir(NETNS_DIR):
            try:
                seen.add(os.stat(entry.path).st_ino)
            except OSError:
                continue
    return len(seen)


def _mounts() -> int:
    with open("/proc/self/mountinfo") as fh:
        return sum(1 for _ in fh)


def _tasks() -> int:
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])


def _files_open() -> int:
    return int((PROC_SYS / "fs/file-nr").read_text().split()[0])


def read() -> dict[str, Limit]:
    """Every limit this machine reports, with what it uses already."""
    in_use = {"user.max_net_namespaces": _net_namespaces, "fs.mount-max": _mounts,
              "kernel.pid_max": _tasks, "kernel.threads-max": _tasks,
              "fs.file-max": _files_open}
    limits: dict[str, Limit] = {}
    for key in SYSCTLS:
        value = _sysctl(key)
        if value is not None:
            used = in_use[key]() if key in in_use else 0
            limits[key] = Limit(key, value, used)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        limits[NOFILE] = Limit(NOFILE, soft)
    limits[BRIDGE_PORTS] = Limit(BRIDGE_PORTS, BR_MAX_PORTS, tunable=False)
    return limits


def _raise_nofile(needed: int) -> Change | None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nr_open = _sysctl("fs.nr_open") or hard
    if needed > max(hard, nr_open):
        return None
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    return Change(NOFILE, soft, needed, "nothing: it is this run's own limit, inherited by "
                  "the processes `up` starts and gone with them")


def _raise_sysctl(key: str, needed: int) -> Change | None:
    old = _sysctl(key)
    if old is None or old >= needed:
        return None
    sysctl_path(key).write_text(str(needed))
    return Change(key, old, needed, f"sysctl -w {key}={old}")


def tune(short: list[Shortfall], tunable: dict[str, Limit]) -> list[Change]:
    """Raise each tunable limit in ``short`` to what is needed; what was changed."""
    changes: list[Change] = []
    for item in short:
        limit = tunable.get(item.name)
        if limit is None or not limit.tunable:
            continue
        change = (_raise_nofile(item.needed) if item.name == NOFILE
                  else _raise_sysctl(item.name, item.needed))
        if change is not None:
            changes.append(change)
    return changes
