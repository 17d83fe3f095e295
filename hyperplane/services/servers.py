"""One real server for an emulated customer host: the database or cache a template declares
(RDS, ElastiCache), a plain TCP listener, or a forwarder like RDS Proxy.

    python -m hyperplane.services.servers KIND --address IP --port P --data DIR
        --name HOSTNAME [--ready FILE] [--user U] [--password W] [--database D]
        [--target HOST:PORT]
    KIND: mysql | postgres | redis | memcached | tcp | proxy

``up`` starts it inside the host's namespace; it binds ``IP:P`` there.

* mysql, postgres, redis, memcached: the Debian server program runs as our child (``dbinit``
  makes its data directory under DIR, the master user and the database), its output
  in ``DIR/server.log``.  We poll every POLL seconds, for at most READY_TIMEOUT, until
  the server answers on IP:P (a connection, and the server's own sign of readiness: the
  MariaDB greeting, PostgreSQL's ``ready`` in postmaster.pid, redis' PONG, memcached's
  VERSION), giving up early if the child dies (with the last lines of its log); then we
  write ``--ready`` and wait on the child.
* tcp: a listener in this process that accepts, reads and discards until EOF, and closes.
* proxy: a forwarder in this process, as RDS Proxy: each client's connection is opened
  anew toward ``--target`` from this host's address; both directions are copied (a half
  close is passed on, and the other direction then has LINGER seconds to finish; a reset
  ends both).
  Both hold at most MAX_CONNECTIONS connections at once; more are closed on arrival.

A server program that is not installed: ONE warning line on stderr (``warning: host db:
mysql needs MariaDB (Debian package mariadb-server), which is not installed; port 3306
answers as a plain TCP listener``) and the port answers as the tcp listener.

The ready file, written whole (by rename) once serving:
    {"kind": "mysql" | ... | "tcp" (what really answers), "warning": "" or the warning
     line, "pid": the server's process (ours for tcp and proxy)}

SIGTERM or SIGINT: the child is stopped (SIGTERM, SIGINT for PostgreSQL's fast shutdown;
SIGKILL after GRACE seconds) and we exit 0.  The child is also told to stop if we die
(PR_SET_PDEATHSIG).  A child that ends on its own, a server that never answers or a data
directory that cannot be made: exit 1 with a message on stderr.  Bad arguments: exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hyperplane.services import dbinit
from hyperplane.services.dbinit import Account, Launch, Options

KINDS = ("mysql", "postgres", "redis", "memcached", "tcp", "proxy")
NEEDS = {"mysql": ("MariaDB", "mariadb-server"), "postgres": ("PostgreSQL", "postgresql"),
         "redis": ("Redis", "redis-server"), "memcached": ("memcached", "memcached")}
POLL = 0.025            # seconds between readiness probes
READY_TIMEOUT = 60.0    # for the server to answer
INIT_TIMEOUT = 300.0    # for one initialisation program (initdb, mariadb-install-db)
GRACE = 10.0            # between the stop signal and SIGKILL
MAX_CONNECTIONS = 1000  # tcp and proxy
LINGER = 30.0           # proxy: for the other direction after a half close
CONNECT_TIMEOUT = 10.0  # proxy: toward the target
CHUNK = 1 << 16
LOG_LINES = 20
PR_SET_PDEATHSIG = 1
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")


# -- arguments ----------------------------------------------------------------------------
def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 1-65535")
    return port


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def host_name(text: str) -> str:
    if not HOST_NAME.match(text):
        raise argparse.ArgumentTypeError(f"not a host name: {text!r}")
    return text


def target_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or any(c.isspace() for c in host):
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, port_number(port)


def parse(argv: list[str] | None) -> tuple[Options, tuple[str, int] | None, Path | None]:
    parser = argparse.ArgumentParser(description="one real server of a customer host")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--address", type=ip_address, required=True)
    parser.add_argument("--port", type=port_number, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--name", type=host_name, required=True)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--database", default="")
    parser.add_argument("--target", type=target_address)
    args = parser.parse_args(argv)
    if (args.kind == "proxy") != (args.target is not None):
        parser.error("--target is for proxy, and proxy needs it")
    opts = Options(args.kind, args.address, args.port, args.data.absolute(), args.name,
                   args.user, args.password, args.database)
    try:
        dbinit.check(opts)
    except ValueError as exc:
        parser.error(str(exc))
    return opts, args.target, args.ready


def write_ready(path: Path | None, kind: str, warning: str, pid: int) -> None:
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"kind": kind, "warning": warning, "pid": pid}) + "\n")
    os.replace(temporary, path)


def log_tail(path: Path, lines: int = LOG_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# -- the child server ---------------------------------------------------------------------
class Child:
    """A started program, signalled through a pidfd (a reused pid is never hit)."""

    def __init__(self, proc: subprocess.Popen, stop_signal: int) -> None:
        self.proc = proc
        self.stop_signal = stop_signal
        self.timer: threading.Timer | None = None
        self.stopped = False
        try:
            self.fd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.fd = None

    def signal(self, sig: int) -> None:
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif self.proc.returncode is None:
                os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """The stop signal now, SIGKILL after GRACE seconds (from a timer thread)."""
        if self.stopped:
            return
        self.stopped = True
        self.signal(self.stop_signal)
        self.timer = threading.Timer(GRACE, self.signal, (signal.SIGKILL,))
        self.timer.daemon = True
        self.timer.start()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Supervisor:
    """Runs the initialisation programs and the server as children; a stop signal reaches
    whichever is running."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.log_path = opts.data / "server.log"
        self.child: Child | None = None
        self.stop_signal = signal.SIGTERM
        self.stopping = False
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self.child is not None:
            self.child.stop()

    def _die_with_us(self, sig: int) -> None:  # in the child, before exec
        self._prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    def start(self, argv: list[str], account: Account | None, stdin: int,
              stdout: int | object) -> Child:
        creds: dict = {} if account is None else {
            "user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT,
                                cwd=self.opts.data, close_fds=True, start_new_session=True,
                                preexec_fn=functools.partial(self._die_with_us,
                                                             self.stop_signal), **creds)
        self.child = Child(proc, self.stop_signal)
        if self.stopping:
            self.child.stop()
        return self.child

    def run(self, argv: list[str], account: Account | None,
            stdin: bytes | None) -> tuple[int, str]:
        """An initialisation program to its end: (exit status, output); output also logged."""
        if self.stopping:
            return 1, "stopped"
        child = self.start(argv, account, subprocess.PIPE if stdin else subprocess.DEVNULL,
                           subprocess.PIPE)
        try:
            output, _ = child.proc.communicate(stdin, timeout=INIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.signal(signal.SIGKILL)
            output, _ = child.proc.communicate()
            output += f"\n{argv[0]} killed after {INIT_TIMEOUT:g} s\n".encode()
        finally:
            child.close()
            self.child = None
        text = output.decode(errors="replace")
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n{text}")
        return child.proc.returncode, text

    def serve(self, launch: Launch, ready: Path | None) -> int:
        self.stop_signal = launch.stop_signal
        with open(self.log_path, "ab") as log:
            child = self.start(launch.argv, launch.account, subprocess.DEVNULL, log)
        try:
            answered = self._await(child, launch.ready)
        finally:
            for path in launch.secrets:
                path.unlink(missing_ok=True)
        if answered:
            write_ready(ready, self.opts.kind, "", child.proc.pid)
        died = child.proc.poll() is not None
        if not answered:
            child.stop()
        status = child.proc.wait()
        child.close()
        if self.stopping:
            return 0
        opts = self.opts
        what = (f"exited on its own (status {status})" if answered else
                f"exited (status {status}) before answering" if died
                else f"did not answer on {opts.address}:{opts.port} in {READY_TIMEOUT:g} s")
        print(f"servers: host {opts.name}: {opts.kind} server (pid {child.proc.pid}) {what}; "
              f"last lines of {self.log_path}:\n{log_tail(self.log_path)}", file=sys.stderr)
        return 1

    def _await(self, child: Child, ready: Callable[[int], bool]) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.stopping and child.proc.poll() is None and \
                time.monotonic() < deadline:
            if ready(child.proc.pid):
                return not self.stopping and child.proc.poll() is None
            time.sleep(POLL)
        return False


# -- tcp and proxy, in this process -------------------------------------------------------
async def discard(gate: asyncio.Semaphore, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    if gate.locked():
        writer.close()
        return
    async with gate:
        try:
            while await reader.read(CHUNK):
                pass
        except OSError:
            pass
        finally:
            writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Until EOF, which is passed on (True), or an error (False)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return True
    except OSError:
        return False


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), LINGER)
    except (OSError, asyncio.TimeoutError):
        writer.transport.abort()


async def forward(gate: asyncio.Semaphore, source: str, target: tuple[str, int],
                  reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if gate.locked():
        writer.close()
        return
    async with gate:
        local = None if ipaddress.ip_address(source).is_unspecified else (source, 0)
        try:
            far_reader, far_writer = await asyncio.wait_for(
                asyncio.open_connection(*target, local_addr=local), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()
            return
        tasks = [asyncio.create_task(_copy(reader, far_writer)),
                 asyncio.create_task(_copy(far_reader, writer))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pending and all(task.result() for task in done):
                await asyncio.wait(pending, timeout=LINGER)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(_close(writer), _close(far_writer))


async def listen(opts: Options, target: tuple[str, int] | None, ready: Path | None,
                 warning: str, stopped: Callable[[], bool]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stopped():  # a signal that came before these handlers
        return 0
    gate = asyncio.Semaphore(MAX_CONNECTIONS)
    handler = functools.partial(forward, gate, opts.address, target) if target else \
        functools.partial(discard, gate)
    try:
        server = await asyncio.start_server(handler, opts.address, opts.port, backlog=1024)
    except OSError as exc:
        print(f"servers: host {opts.name}: cannot listen on {opts.address}:{opts.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    write_ready(ready, opts.kind, warning, os.getpid())
    await stop.wait()
    server.close()
    return 0


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    opts, target, ready = parse(argv)
    opts.data.mkdir(parents=True, exist_ok=True)
    if opts.kind in ("tcp", "proxy"):
        return asyncio.run(listen(opts, target, ready, "", lambda: False))
    supervisor = Supervisor(opts)
    supervisor.install()
    try:
        launch = dbinit.prepare(opts, supervisor.run)
    except dbinit.NotInstalledError:
        product, package = NEEDS[opts.kind]
        warning = (f"warning: host {opts.name}: {opts.kind} needs {product} (Debian package "
                   f"{package}), which is not installed; port {opts.port} answers as a "
                   "plain TCP listener")
        print(warning, file=sys.stderr, flush=True)
        return asyncio.run(listen(replace(opts, kind="tcp"), None, ready, warning,
                                  lambda: supervisor.stopping))
    except (dbinit.SetupError, OSError) as exc:
        if supervisor.stopping:
            return 0
        print(f"servers: host {opts.name}: {opts.kind}: {exc} (log: {supervisor.log_path})",
              file=sys.stderr)
        return 1
    if supervisor.stopping:
        return 0
    return supervisor.serve(launch, ready)


if __name__ == "__main__":
    sys.exit(main())
