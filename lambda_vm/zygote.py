"""The environment zygote: forks execution environments' agents, cheaply.

Starting a Python interpreter per execution environment costs tens of milliseconds and
about 10 MB each; a thousand environments would need gigabytes.  The zygote starts once
(in the ``hp-plane`` namespace, so ``cleanup`` finds it), imports and exercises
everything an agent uses (``warm_up``), moves all of it out of the garbage collector's
sight (``gc.freeze``: a collection in a child would otherwise write to every object's
header and copy every page), and forks one child per environment.  The child detaches,
enters the environment's namespace, redirects its output to the environment's log and
runs ``lambda_vm.agent.main``.  The handler itself is imported in the child, inside the
environment, so init code runs where it would in Lambda (and a cold start still pays
for it).  Children share the zygote's pages copy-on-write: a few hundred KiB of their
own each.

Mounts.  A child showing the VPC's resolver as ``/etc/resolv.conf`` gets a mount
namespace of its own, a copy of its parent's.  The host's ``/run/netns`` holds one
mount per network namespace, a thousand of them with a thousand environments, and a
copy would carry them all and keep receiving every new one (a thousand mount namespaces
times a thousand mounts).  So the zygote keeps a descriptor of ``/run/netns`` and then
leaves it out of a mount namespace of its own (``private_mounts``); a child opens its
namespace through that descriptor and copies a mount table of a few dozen entries.

Protocol (Unix socket, ``hyperplane.jsonline``: one JSON line each way):
    {"op": "spawn", "netns": NAME, "args": [...agent args...], "log": PATH, "cwd": DIR,
     "resolv": FILE or null (shown to the agent as /etc/resolv.conf),
     "mounts": [{"source": DIR, "target": /mnt/PATH}, ...] (EFS; optional)}
        -> {"ok": true, "pid": PID}
    {"op": "spawn_many", "spawns": [SPAWN, ...]} -> {"ok": true, "pids": [PID, ...]}
        (many in one request: a burst of a thousand pays one round trip per chunk)
    {"op": "ping"} -> {"ok": true, "pid": ...}
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import signal
import socket
import sys

from hyperplane import jsonline
from hyperplane.kernel import mounts
from hyperplane.kernel.netlink import NETNS_DIR, enter_netns
from lambda_vm import agent, rehearsal

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_REC, MS_SLAVE = 16384, 1 << 19
MNT_DETACH = 2
_LIBC = ctypes.CDLL(None, use_errno=True)
_NETNS: list[int] = []  # a descriptor of the host's /run/netns, once ours are private


def _reap(*_args) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def private_mounts() -> bool:
    """Leave the host's /run/netns out of a mount namespace of our own (see above);
    False, and nothing changed, where that cannot be done."""
    try:
        fd = os.open(NETNS_DIR, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    if _LIBC.unshare(CLONE_NEWNS) != 0:
        os.close(fd)
        return False
    # slave first: an unmount in a namespace sharing peers would reach the host's
    if _LIBC.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0 or \
            _LIBC.umount2(os.fsencode(NETNS_DIR), MNT_DETACH) != 0:
        os.close(fd)
        return True  # a namespace of our own, /run/netns still in it: still correct
    _NETNS.append(fd)
    return True


def enter(name: str) -> None:
    """Enter network namespace ``name`` (through the kept descriptor when there is one)."""
    if not _NETNS:
        enter_netns(name)
        return
    fd = os.open(name, os.O_RDONLY, dir_fd=_NETNS[0])
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns {name}: {os.strerror(code)}")
    finally:
        os.close(fd)


def _child(request: dict) -> None:
    """In the forked child: become the environment's agent; never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        enter(request["netns"])
        for fd in _NETNS:
            os.close(fd)
        mounts.bind_resolv(request.get("resolv"))  # the VPC resolver as /etc/resolv.conf
        mounts.bind_dirs(request.get("mounts") or [])  # EFS at its LocalMountPath
        os.chdir(request.get("cwd") or "/")
        sys.argv = ["lambda_vm.agent", *request["args"]]
        code = agent.main(request["args"]) or 0
    except BaseException as exc:  # noqa: B036 - the child must end here, whatever happened
        print(f"agent failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def spawn(listener: socket.socket, request: dict) -> int:
    pid = os.fork()
    if pid == 0:
        listener.close()
        _child(request)
    return pid


def answer(listener: socket.socket, request: dict) -> dict:
    if request.get("op") == "spawn":
        return {"ok": True, "pid": spawn(listener, request)}
    if request.get("op") == "spawn_many":
        return {"ok": True, "pids": [spawn(listener, r) for r in request.get("spawns", [])]}
    return {"ok": True, "pid": os.getpid()}


def serve(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        jsonline.serve(conn, lambda request: answer(listener, request))


def warm_up() -> None:
    """Import and run once what every agent runs (children share the pages, and nothing
    lazy is left for each of them to build), then set the variables every environment
    has alike."""
    import base64
    import linecache  # noqa: F401 - traceback's, for a handler's stack trace
    import subprocess  # noqa: F401 - runtime and extension processes
    import traceback

    base64.b64encode(b"x")
    traceback.format_list(traceback.extract_stack())
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # the rehearsal's log lines go nowhere
    try:
        rehearsal.rehearse()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    args = agent.Args(["--socket", "s", "--code", "/", "--handler", "h.h", "--function", "f"])
    environment = agent.runtime_environment(args)
    for key in agent.CONSTANT_ENVIRONMENT:  # the same in every environment: set once here
        os.environ[key] = environment[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execution environment zygote")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    warm_up()
    private_mounts()
    signal.signal(signal.SIGCHLD, _reap)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket + ".tmp")
    listener.listen(64)
    os.rename(args.socket + ".tmp", args.socket)
    gc.collect()
    gc.freeze()  # what exists now is shared with every child: never traverse it there
    serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
