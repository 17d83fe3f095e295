"""Processes the project starts inside its namespaces (side effects).

``spawn`` starts a command inside a named namespace (the child enters it with
setns before exec), detached from the caller's session, logging to a file.
``stop`` ends a process by its recorded id, and only after checking that its
command line is one of ours.  ``pids_in_namespaces`` finds every process
living in given namespaces (compared by namespace inode), so ``cleanup``
can end what a killed run left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hyperplane.kernel import mounts, netlink

OURS = ("hyperplane", "lambda_vm")  # marks in the command line of every process we start


def spawn(ns: str, argv: list[str], log_path: Path, env: dict | None = None,
          cwd: str | None = None) -> int:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: netlink.enter_netns(ns), start_new_session=True,
            close_fds=True, env=env, cwd=cwd)
    return proc.pid


def spawn_here(argv: list[str], log_path: Path) -> int:
    """Like ``spawn``, in the caller's own namespace (the AWS endpoint, on loopback)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    return proc.pid


def exec_in(ns: str, argv: list[str], resolv: str | None = None) -> int:
    """Become ``argv`` inside namespace ``ns`` (like ``ip netns exec``).

    The calling process enters the namespace and execs the command, so
    signals reach the command directly and its exit code is ours.  Returns
    only if the command cannot be started (127).  ``resolv``: a file shown
    to the command as /etc/resolv.conf (the VPC resolver), as ``ip netns``
    does with /etc/netns/NS/resolv.conf.
    """
    netlink.enter_netns(ns)
    mounts.bind_resolv(resolv)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"hyperplane: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
    return 127


def start_in(ns: str, argv: list[str], resolv: str | None = None) -> subprocess.Popen:
    """``argv`` inside namespace ``ns`` with its output captured (text), not detached."""
    def enter() -> None:
        netlink.enter_netns(ns)
        mounts.bind_resolv(resolv)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=enter,
                            close_fds=True)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def await_ready(pid: int, ready: Callable[[], bool], what: str, log_path: Path,
                timeout: float = 15.0) -> None:
    """Until ``ready()``; ``RuntimeError`` naming ``what`` and its log if ``pid`` dies first
    or ``timeout`` passes."""
    if not wait_until(lambda: not alive(pid) or ready(), timeout) or not alive(pid):
        raise RuntimeError(f"{what} did not start; see {log_path}")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def is_ours(pid: int) -> bool:
    line = cmdline(pid)
    return any(mark in line for mark in OURS)


def stop(pid: int, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, if the process is one of ours."""
    if not alive(pid) or not is_ours(pid):
        return
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    if alive(pid):
        _signal(pid, signal.SIGKILL)
        while alive(pid) and time.monotonic() < deadline + 2:
            _reap(pid)
            time.sleep(0.02)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pids_in_namespaces(names: list[str]) -> list[int]:
    """Every process whose network namespace is one of the named ones."""
    inodes = {ino for ino in (netlink.netns_inode(n) for n in names) if ino}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.append(int(entry))
        except OSError:
            continue
    return found


def kill_in_namespaces(names: list[str]) -> None:
    """End every process living in these namespaces (they are all ours)."""
    pids = [pid for pid in pids_in_namespaces(names) if pid != os.getpid()]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        for pid in pids:
            _reap(pid)
        time.sleep(0.02)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)


def mapped_paths(prefix: str) -> set[str]:
    """The files under ``prefix`` that some live process has mapped (``/proc/*/maps``):
    a session table in use is never removed by ``cleanup``."""
    found: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "maps").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            at = line.find(prefix)
            if at >= 0:
                found.add(line[at:].removesuffix(" (deleted)"))
    return found
