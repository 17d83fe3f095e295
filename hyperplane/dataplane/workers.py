"""A group of dataplane workers on one fanout group, each restarted onto its own slot (I/O).

``python -m hyperplane.dataplane --workers N --control SOCKET --table PATH ...`` runs
this process (the *group*) in the Hyperplane namespace.  It makes N ring sockets
joined in order to one ``PACKET_FANOUT`` group (``ring.fanout_sockets``: the kernel
steers each IPv4 frame with ``bpf.fanout``) and starts N workers
(``python -m hyperplane.dataplane --worker I/N --ring-fd FD``, each a ``loop.Dataplane``
with a ``loop.Worker``), each given its member's socket.  The group holds every
socket for the life of the group: a worker that dies leaves its member in place (the
kernel would otherwise move the last member into its slot, and every flow of that
worker would land on another), frames for it wait in its ring, and the worker started
again onto the same socket carries on from its own table file (``worker_table``) with
the configuration the group last pushed.  The other workers are untouched.

A worker that dies is started again at once (the group waits on a pidfd); one that
died ``MAX_DEATHS`` times within ``WINDOW`` seconds stays down, and ``stats`` says why.
Workers die with the group (``PR_SET_PDEATHSIG``); a group started again first waits
for the workers of the one before it (their pids are in ``PIDS``) to end.

The group's control socket speaks the dataplane's protocol (``loop``): each request is
passed to every worker and the replies merged (``merge``: counters summed, sessions
and rejects concatenated), with ``workers`` added to ``stats``: per worker its pid,
restarts, port slice and why it is down.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hyperplane import jsonline
from hyperplane.dataplane.bpf import port_slice
from hyperplane.dataplane.ring import fanout_sockets
from hyperplane.errors import UnreachableError

MAX_DEATHS = 5
WINDOW = 60.0
READY_TIMEOUT = 15.0
PR_SET_PDEATHSIG = 1


def worker_table(table: str, index: int) -> str:
    """Worker ``index``'s session table file, beside the group's name for it."""
    stem = table[:-len(".sessions")] if table.endswith(".sessions") else table
    return f"{stem}-w{index}.sessions"


def merge(replies: list[dict]) -> dict:
    """One reply out of the workers' (pure): numbers summed, lists joined, the first
    worker's other values kept, mappings merged key by key."""
    out: dict = {}
    for reply in replies:
        for key, value in reply.items():
            if key not in out:
                out[key] = json.loads(json.dumps(value))  # a copy
            elif isinstance(value, bool) or value is None:
                continue
            elif isinstance(value, (int, float)) and isinstance(out[key], (int, float)):
                out[key] += value
            elif isinstance(value, list) and isinstance(out[key], list):
                out[key] += value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = merge([out[key], value])
    return out


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Slot:
    """One worker's place in the group: its socket, its process, its deaths."""

    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index, self.sock = index, sock
        self.proc: subprocess.Popen | None = None
        self.pidfd = -1
        self.restarts = 0
        self.deaths: list[float] = []
        self.down: str | None = None


class WorkerGroup:
    def __init__(self, control_path: str, workers: int, worker_argv: list[str]) -> None:
        self.control_path = control_path
        self.pids_path = Path(f"{control_path}.workers")
        self._wait_old_workers()
        self.worker_argv = worker_argv
        self.slots = [Slot(i, s) for i, s in enumerate(fanout_sockets(workers, os.getpid()))]
        self.config: dict | None = None
        self.running = True
        self.epoll = select.epoll()
        self.server = jsonline.listen(control_path)
        self.epoll.register(self.server.fileno(), select.EPOLLIN)
        for slot in self.slots:
            self.start(slot)
        for slot in self.slots:
            self.wait_ready(slot)

    def _wait_old_workers(self) -> None:
        """The workers of a group that died end (they get SIGTERM as it dies) before
        this group's attach to their tables."""
        try:
            old = json.loads(self.pids_path.read_text())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 5.0
        for pid in old:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)

    def worker_socket(self, slot: Slot) -> str:
        return f"{self.control_path}.w{slot.index}"

    def start(self, slot: Slot) -> None:
        fd = slot.sock.fileno()
        argv = [sys.executable, "-m", "hyperplane.dataplane", *self.worker_argv,
                "--worker", f"{slot.index}/{len(self.slots)}", "--ring-fd", str(fd),
                "--control", self.worker_socket(slot)]
        slot.proc = subprocess.Popen(argv, pass_fds=(fd,), preexec_fn=_die_with_parent)
        slot.pidfd = os.pidfd_open(slot.proc.pid)
        self.epoll.register(slot.pidfd, select.EPOLLIN)
        self.pids_path.write_text(json.dumps([s.proc.pid for s in self.slots if s.proc]))

    def wait_ready(self, slot: Slot) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and slot.proc.poll() is None:
            try:
                jsonline.request(self.worker_socket(slot), {"op": "ping"}, timeout=1)
                return True
            except (UnreachableError, OSError, ValueError):
                time.sleep(0.02)
        return False

    def reap(self, slot: Slot) -> None:
        """A worker died: started again onto its socket, unless it keeps dying."""
        self.epoll.unregister(slot.pidfd)
        os.close(slot.pidfd)
        slot.pidfd = -1
        code = slot.proc.wait()
        if not self.running:
            return
        now = time.monotonic()
        slot.deaths = [t for t in slot.deaths if now - t < WINDOW] + [now]
        if len(slot.deaths) >= MAX_DEATHS:
            slot.down = (f"died {len(slot.deaths)} times within {WINDOW:.0f} s "
                         f"(last exit status {code}); not started again")
            print(f"worker {slot.index}: {slot.down}", file=sys.stderr, flush=True)
            return
        slot.restarts += 1
        print(f"worker {slot.index} (pid {slot.proc.pid}) exited with {code}; "
              "starting it again", file=sys.stderr, flush=True)
        self.start(slot)
        if self.wait_ready(slot) and self.config is not None:
            self.ask(slot, {"op": "config", "config": self.config})

    # -- control ----------------------------------------------------------------------
    def ask(self, slot: Slot, request: dict) -> dict | None:
        if slot.down or slot.proc is None or slot.proc.poll() is not None:
            return None
        try:
            return jsonline.request(self.worker_socket(slot), request, timeout=10)
        except (UnreachableError, OSError, ValueError):
            return None

    def answer(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "workers": len(self.slots)}
        replies = [r for r in (self.ask(s, request) for s in self.slots) if r is not None]
        if op == "config" and all(r.get("ok") for r in replies):
            self.config = request.get("config")
        failed = [r for r in replies if not r.get("ok")]
        if failed:
            return failed[0]
        if not replies:
            return {"ok": False, "error": "no dataplane worker is running"}
        reply = merge(replies)
        if op == "stats":
            reply["stats"]["workers"] = self.describe()
        return reply

    def describe(self) -> list[dict]:
        return [{"index": s.index, "pid": s.proc.pid if s.proc else None,
                 "restarts": s.restarts, "down": s.down,
                 "ports": list(port_slice(s.index, len(self.slots)))}
                for s in self.slots]

    def handle_control(self) -> None:
        try:
            conn, _ = self.server.accept()
        except BlockingIOError:
            return
        jsonline.serve(conn, self.answer, timeout=30.0)

    # -- loop -------------------------------------------------------------------------
    def run(self) -> None:
        by_pidfd = {s.pidfd: s for s in self.slots}
        while self.running:
            try:
                events = self.epoll.poll(1.0)
            except InterruptedError:
                continue
            for fd, _mask in events:
                if fd == self.server.fileno():
                    self.handle_control()
                elif fd in by_pidfd:
                    self.reap(by_pidfd[fd])
                    by_pidfd = {s.pidfd: s for s in self.slots if s.pidfd >= 0}

    def stop(self, *_args) -> None:
        self.running = False

    def close(self) -> None:
        """Every worker asked to stop (each writes its table and marks it clean)."""
        self.running = False
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
        for slot in self.slots:
            if slot.proc is not None:
                try:
                    slot.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    slot.proc.kill()
                    slot.proc.wait()
            slot.sock.close()
        self.pids_path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
