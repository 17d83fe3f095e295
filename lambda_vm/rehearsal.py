"""An agent's life, rehearsed once in the zygote before the first fork (side effects:
a temporary directory, loopback sockets, all removed).

CPython 3.11 rewrites bytecode as it runs it (specialisation) and fills caches on
first use (h11's, the import system's, enum lookups); done in each forked agent, that
writing copies the pages it touches.  So the zygote runs the paths every agent runs:
an agent with the built-in runtime is initialised on a one-line handler and answers
three invocations on its control socket, and the Runtime API answers a runtime's
``GET .../next`` and a chunked ``POST .../response`` over real HTTP.  Nothing of it
stays: the handler module, its directory and every socket are gone afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile

from lambda_vm import agent
from lambda_vm.httpserver import Server, listen
from lambda_vm.loop import Loop
from lambda_vm.runtime_api import Invocation, RuntimeApi

MODULE = "hp_zygote_rehearsal"
WAIT = 5.0  # seconds: every step is local and takes microseconds


def rehearse() -> None:
    folder = tempfile.mkdtemp(prefix="hp-zygote-")
    try:
        with open(os.path.join(folder, MODULE + ".py"), "w") as fh:
            fh.write("def handler(event, context):\n    return {'event': event}\n")
        _agent(folder)
        _runtime_api()
    finally:
        sys.modules.pop(MODULE, None)
        if folder in sys.path:
            sys.path.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _agent(folder: str) -> None:
    args = agent.Args(["--socket", os.path.join(folder, "agent.sock"), "--code", folder,
                       "--handler", MODULE + ".handler", "--function", "rehearsal"])
    the_agent = agent.Agent(args)
    listener = listen("127.0.0.1", 0)
    the_agent.server = Server(the_agent.loop, listener, the_agent.api)
    try:
        the_agent.initialise(WAIT)
        the_agent.control = agent.bind_unix(args.socket)
        the_agent.control.setblocking(False)
        the_agent.loop.reader(the_agent.control, the_agent.accept)
        for n in range(3):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(args.socket)
            client.sendall(json.dumps({"payload": {"n": n}, "request_id": f"r{n}"}).encode()
                           + b"\n")
            client.setblocking(False)
            got = bytearray()
            the_agent.loop.run_until(lambda c=client, g=got: _read(c, g), WAIT)
            client.close()
    finally:
        the_agent.server.close()
        if the_agent.control is not None:
            the_agent.loop.forget(the_agent.control)
            the_agent.control.close()
        the_agent.loop.selector.close()


def _read(sock: socket.socket, got: bytearray, end: bytes = b"\n") -> bool:
    """Whether what ``sock`` sent so far ends with ``end`` (read what is there)."""
    try:
        got.extend(sock.recv(65536))
    except BlockingIOError:
        pass
    return got.endswith(end)


def _runtime_api() -> None:
    loop = Loop()
    api = RuntimeApi("arn:aws:lambda:us-east-1:000000000000:function:rehearsal")
    server = Server(loop, listen("127.0.0.1", 0), api)
    outcome: list[dict] = []
    api.submit(Invocation("r", b"{}", 3.0, outcome.append))
    client = socket.create_connection(server.listener.getsockname())
    try:
        client.setblocking(False)
        got = bytearray()
        client.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
        loop.run_until(lambda: _read(client, got, b"\r\n\r\n{}"), WAIT)
        client.sendall(b"POST /2018-06-01/runtime/invocation/r/response HTTP/1.1\r\n"
                       b"Host: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
                       b"\r\n2\r\n{}\r\n0\r\n\r\n")
        loop.run_until(lambda: bool(outcome), WAIT)
    finally:
        client.close()
        server.close()
        loop.selector.close()
