"""The controller process: ``python -m hyperplane.controller.daemon --socket PATH``.

The control plane runs apart from the dataplane, as Hyperplane's does: this
process owns the functions, ENIs and environments (``service.Controller``,
recorded in SQLite under the state directory) and answers the CLI on a Unix
socket (``jsonline``: one request line, one reply line per connection), each
connection in its own thread (``api.OPS`` names the requests).  A ticker thread
moves the model forward on the emulated clock every ``TICK`` seconds and hands
the dataplane its whole configuration again every few seconds (constant work).

An ``invoke`` with ``"stream": true`` is answered by several lines: a streamed
response's ``{"stream": {"content_type"}}`` and ``{"chunk": "<base64>"}`` lines as the
agent relays them, each written and flushed at once (a slow reader blocks this thread,
whose agent then pauses the runtime: see ``lambda_vm.agent``), then the usual reply.

``lease`` is the one request that outlives its reply: the environment stays
held until the client closes the connection (``hyperplane exec --function``
passes the connection to the command it runs, so the environment is held while
the command lives).  Killed with -9 and started again, the process recovers
everything from the database; environments' agents, the dataplane and the
sessions through it are separate processes and keep running meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socketserver
import sys
import threading
import traceback
from collections.abc import Callable

from hyperplane import jsonline
from hyperplane.controller.api import OPS
from hyperplane.controller.service import Controller
from hyperplane.errors import ApiError, TopologyError, UsageError

TICK = 0.2
PARALLEL = ("invoke", "scale", "accounts", "function.get", "function.list", "account.settings",
            "ec2.describe_vpcs", "ec2.describe_subnets", "ec2.describe_security_groups",
            "ec2.describe_network_interfaces")  # they take the lock, not the worker
log = logging.getLogger("hyperplane.controller")


def handle(ctl: Controller, request: dict,
           on_line: Callable[[dict], None] | None = None) -> dict:
    op = request.get("op")
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    handler = OPS.get(str(op))
    if handler is None:
        return {"ok": False, "usage": f"unknown request {op!r}"}
    request = aliased(ctl, request)
    try:
        if on_line is not None and op == "invoke":
            return {"ok": True, "result": handler(ctl, request, on_line)}
        if op in PARALLEL:  # they pass through the worker only to take an environment
            return {"ok": True, "result": handler(ctl, request)}
        return {"ok": True, "result": ctl.serial(handler, ctl, request)}
    except ApiError as exc:
        return {"ok": False, "error": exc.to_dict()}
    except (TopologyError, UsageError) as exc:
        return {"ok": False, "usage": str(exc)}
    except Exception as exc:  # noqa: BLE001 - answered, logged, never fatal
        log.error("request %s failed:\n%s", op, traceback.format_exc())
        return {"ok": False, "failure": f"{type(exc).__name__}: {exc}"}


def aliased(ctl: Controller, request: dict) -> dict:
    """A template's logical id stands for its function's name (``invoke Orders``)."""
    name = request.get("name")
    aliases = (ctl.data.get("stack") or {}).get("functions") or {}
    if isinstance(name, str) and name not in ctl.model.functions and name in aliases:
        return {**request, "name": aliases[name]}
    return request


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        ctl: Controller = self.server.controller  # type: ignore[attr-defined]
        line = self.rfile.readline(jsonline.MAX_LINE)
        if not line:
            return
        try:
            request = jsonline.decode(line)
        except ValueError:
            self._reply({"ok": False, "usage": "the request is not a JSON object"})
            return
        if request.get("op") == "lease":
            self._lease(ctl, aliased(ctl, request))
            return
        if request.get("op") == "invoke" and request.get("stream"):
            reply = handle(ctl, request, self._reply)
            try:
                self._reply(reply)
            except OSError:
                pass  # the caller went away; the invocation was over anyway
            return
        self._reply(handle(ctl, request))

    def _reply(self, reply: dict) -> None:
        self.wfile.write(jsonline.encode(reply))
        self.wfile.flush()

    def _lease(self, ctl: Controller, request: dict) -> None:
        try:
            env, cold, _fn = ctl.acquire(request["name"])
        except ApiError as exc:
            self._reply({"ok": False, "error": exc.to_dict()})
            return
        except Exception as exc:  # noqa: BLE001 - answered, logged, never fatal
            log.error("lease failed:\n%s", traceback.format_exc())
            self._reply({"ok": False, "failure": f"{type(exc).__name__}: {exc}"})
            return
        try:
            self._reply({"ok": True, "result": {"env": env.to_dict(), "cold": cold}})
            while self.rfile.read(4096):  # held until the holder closes the connection
                pass
        except OSError:
            pass
        finally:
            ctl.release(env)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # bursts of concurrent invocations connect at once


def ticker(ctl: Controller, stop: threading.Event) -> None:
    while not stop.wait(TICK):
        try:
            ctl.tick()
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.error("tick failed:\n%s", traceback.format_exc())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctl = Controller()
    ctl.seed()
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    server = Server(args.socket, Handler)
    server.controller = ctl  # type: ignore[attr-defined]
    stop = threading.Event()
    threading.Thread(target=ticker, args=(ctl, stop), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log.info("controller %d ready on %s", os.getpid(), args.socket)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        stop.set()
        server.server_close()
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
