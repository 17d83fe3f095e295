"""The environment zygote: forks execution environments' agents, cheaply.

Starting a Python interpreter per execution environment costs tens of
milliseconds and ~10 MB each; a thousand environments would need gigabytes.
The zygote starts once (in the ``hp-plane`` namespace, so ``cleanup`` finds
it), imports the agent's code, and forks one child per environment: the child
detaches, enters the environment's namespace, redirects its output to the
environment's log and runs ``lambda_vm.agent.main``.  The handler itself is
imported in the child, inside the environment, so init code runs where it
would in Lambda (and a cold start still pays for it).  Children share the
zygote's pages copy-on-write.

Protocol (Unix socket, ``hyperplane.jsonline``: one JSON line each way):
    {"op": "spawn", "netns": NAME, "args": [...agent args...], "log": PATH, "cwd": DIR,
     "resolv": FILE or null (shown to the agent as /etc/resolv.conf),
     "mounts": [{"source": DIR, "target": /mnt/PATH}, ...] (EFS; optional)}
        -> {"ok": true, "pid": PID}
    {"op": "ping"} -> {"ok": true, "pid": ...}
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

from hyperplane import jsonline
from hyperplane.kernel import mounts
from hyperplane.kernel.netlink import enter_netns
from lambda_vm import agent


def _reap(*_args) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


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
        enter_netns(request["netns"])
        mounts.bind_resolv(request.get("resolv"))  # the VPC resolver as /etc/resolv.conf
        mounts.bind_dirs(request.get("mounts") or [])  # EFS at its LocalMountPath
        os.chdir(request.get("cwd") or "/")
        sys.argv = ["lambda_vm.agent", *request["args"]]
        code = agent.main(request["args"]) or 0
    except BaseException as exc:  # noqa: B036 - the child must end here, whatever happened
        print(f"agent failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def answer(listener: socket.socket, request: dict) -> dict:
    if request.get("op") == "spawn":
        pid = os.fork()
        if pid == 0:
            listener.close()
            _child(request)
        return {"ok": True, "pid": pid}
    return {"ok": True, "pid": os.getpid()}


def serve(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        jsonline.serve(conn, lambda request: answer(listener, request))


def warm_up() -> None:
    """Import now what every agent would import at start (children share the pages)."""
    import asyncio
    import email.parser  # noqa: F401 - http.client parses headers with it, lazily
    import http.client  # noqa: F401

    loop = asyncio.new_event_loop()
    loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execution environment zygote")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    warm_up()
    signal.signal(signal.SIGCHLD, _reap)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket + ".tmp")
    listener.listen(64)
    os.rename(args.socket + ".tmp", args.socket)
    serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
