"""The real servers of emulated customer hosts, run for real on 127.0.0.1 and spoken to
with real clients (pymysql, pg8000, raw RESP and memcached text).

Every server listens on 127.0.0.1 on a free port and is stopped by its test (in
``finally``): the supervisor by SIGTERM (SIGKILL if it lingers), the server it started
through a pidfd taken while the supervisor was alive, so no other process is ever hit.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperplane.services import dbinit, servers

ROOT = Path(__file__).resolve().parents[3]
READY_WAIT = 90.0
STOP_WAIT = 30.0


def installed(*names: str, extra: tuple[str, ...] = ()) -> bool:
    try:
        dbinit.find(names, dbinit.search_dirs(extra), together=bool(extra))
    except dbinit.NotInstalledError:
        return False
    return True


needs_mariadb = pytest.mark.skipif(not installed("mariadbd", "mariadb-install-db"),
                                   reason="MariaDB (mariadb-server) is not installed")
needs_postgres = pytest.mark.skipif(not installed("initdb", "postgres",
                                                  extra=tuple(dbinit.pg_dirs())),
                                    reason="PostgreSQL (postgresql) is not installed")
needs_redis = pytest.mark.skipif(not installed("redis-server"),
                                 reason="redis-server is not installed")
needs_memcached = pytest.mark.skipif(not installed("memcached"),
                                     reason="memcached is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gone(pidfd: int, timeout: float) -> bool:
    """The process has ended within ``timeout`` (a pidfd turns readable then)."""
    return bool(select.select([pidfd], [], [], timeout)[0])


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    ready: dict
    stderr: Path
    pidfd: int | None  # the server's own process, when it is a child of the supervisor

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def wait_ready(proc: subprocess.Popen, ready: Path, stderr: Path) -> dict:
    deadline = time.monotonic() + READY_WAIT
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before ready:\n{stderr.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not ready in {READY_WAIT} s:\n{stderr.read_text()}")
        time.sleep(0.02)
    return json.loads(ready.read_text())


def command(kind: str, work: Path, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "hyperplane.services.servers", kind, "--address",
            "127.0.0.1", "--port", str(port), "--data", str(work / "data"), "--name", "db",
            "--ready", str(work / "ready"), *args]


@contextmanager
def running(kind: str, work: Path, *args: str, port: int | None = None,
            env: dict | None = None) -> Iterator[Server]:
    port = port or free_port()
    (work / "ready").unlink(missing_ok=True)
    stderr = work / "stderr"
    environ = {k: v for k, v in os.environ.items() if k != dbinit.PATH_VARIABLE}
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(command(kind, work, port, *args), stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err, cwd=ROOT, env={**environ, **(env or {})},
                                start_new_session=True)
    server = Server(proc, port, {}, stderr, None)
    try:
        server.ready = wait_ready(proc, work / "ready", stderr)
        if server.ready["pid"] != proc.pid:
            server.pidfd = os.pidfd_open(server.ready["pid"])
        yield server
    finally:
        server.stop()
        if server.pidfd is not None:
            if not gone(server.pidfd, STOP_WAIT):
                signal.pidfd_send_signal(server.pidfd, signal.SIGKILL)
            os.close(server.pidfd)


def stop_and_check(server: Server) -> None:
    """SIGTERM: the supervisor exits 0 and its server process is gone."""
    assert server.stop() == 0, server.stderr.read_text()
    assert server.pidfd is not None and gone(server.pidfd, STOP_WAIT)


# -- databases ----------------------------------------------------------------------------
@needs_mariadb
def test_mysql_master_user_database_sigterm_and_restart(tmp_path: Path) -> None:
    pymysql = pytest.importorskip("pymysql")

    user, password, database = "ad'm`in\\", "p\\w'd; \"é\" --", "app`db é"
    args = ("--user", user, "--password", password, "--database", database)

    def connect(server: Server, secret: str = password) -> pymysql.Connection:
        # pymysql encodes a str password as latin-1; the server hashed UTF-8
        return pymysql.connect(host="127.0.0.1", port=server.port, user=user,
                               password=secret.encode(), database=database,
                               connect_timeout=10, read_timeout=10, write_timeout=10)

    with running("mysql", tmp_path, *args) as server:
        assert server.ready == {"kind": "mysql", "warning": "", "pid": server.ready["pid"]}
        with connect(server) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1, DATABASE(), CURRENT_USER()")
            assert cur.fetchone() == (1, database, f"{user}@%")
            cur.execute("SHOW DATABASES")
            assert (database,) in cur.fetchall()
            cur.execute("CREATE TABLE kept (v VARCHAR(20))")
            cur.execute("INSERT INTO kept VALUES ('before restart')")
            conn.commit()
        with pytest.raises(pymysql.err.OperationalError) as refused:
            connect(server, "wrong")
        assert refused.value.args[0] == 1045  # access denied
        assert not (tmp_path / "data" / "init.sql").exists()  # the password is not left
        stop_and_check(server)
    with running("mysql", tmp_path, *args) as server:
        with connect(server) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM kept")
            assert cur.fetchall() == (("before restart",),)
    changed = ("--user", user, "--password", "new one", "--database", database)
    with running("mysql", tmp_path, *changed) as server:  # the template changed it
        connect(server, "new one").close()
        with pytest.raises(pymysql.err.OperationalError):
            connect(server, password)


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory the system user postgres can reach (tmp_path's parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hyperplane-test-pg-"))
    try:
        path.chmod(0o711)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@needs_postgres
def test_postgres_master_user_database_sigterm_and_restart(reachable_dir: Path) -> None:
    native = pytest.importorskip("pg8000.native")
    DatabaseError = native.DatabaseError  # noqa: N806 - the library's class

    user, password, database = "ad'm\"in\\$hp$", "p\\w'd; \"é\"", "app\"db é"
    args = ("--user", user, "--password", password, "--database", database)

    def connect(server: Server, secret: str = password) -> native.Connection:
        return native.Connection(user, host="127.0.0.1", port=server.port,
                                        password=secret, database=database, timeout=10)

    with running("postgres", reachable_dir, *args) as server:
        assert server.ready == {"kind": "postgres", "warning": "", "pid": server.ready["pid"]}
        conn = connect(server)
        try:
            assert conn.run("SELECT 1, current_database(), current_user") == \
                [[1, database, user]]
            assert conn.run("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") \
                == [[True]]
            conn.run("CREATE TABLE kept (v text)")
            conn.run("INSERT INTO kept VALUES ('before restart')")
        finally:
            conn.close()
        with pytest.raises(DatabaseError) as refused:
            connect(server, "wrong")
        assert refused.value.args[0]["C"] == "28P01"  # invalid_password
        stop_and_check(server)
    with running("postgres", reachable_dir, *args) as server:
        conn = connect(server)
        try:
            assert conn.run("SELECT v FROM kept") == [["before restart"]]
        finally:
            conn.close()
    changed = ("--user", user, "--password", "new one", "--database", database)
    with running("postgres", reachable_dir, *changed) as server:
        connect(server, "new one").close()
        with pytest.raises(DatabaseError):
            connect(server, password)


# -- caches -------------------------------------------------------------------------------
def exchange(sock: socket.socket, data: bytes, end: bytes = b"\r\n") -> bytes:
    sock.sendall(data)
    reply = b""
    while not reply.endswith(end):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


@needs_redis
def test_redis_asks_for_the_password(tmp_path: Path) -> None:
    with running("redis", tmp_path, "--password", 'se cret"\\') as server:
        assert server.ready["kind"] == "redis"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert exchange(sock, b"PING\r\n").startswith(b"-NOAUTH")
            assert exchange(sock, b"AUTH wrong\r\n").startswith(b"-WRONGPASS")
            auth = b'*2\r\n$4\r\nAUTH\r\n$9\r\nse cret"\\\r\n'
            assert exchange(sock, auth) == b"+OK\r\n"
            assert exchange(sock, b"PING\r\n") == b"+PONG\r\n"
        assert not (tmp_path / "data" / "redis.conf").exists()


@needs_redis
def test_a_server_that_dies_on_its_own_is_reported(tmp_path: Path) -> None:
    with running("redis", tmp_path) as server:
        assert server.pidfd is not None
        signal.pidfd_send_signal(server.pidfd, signal.SIGKILL)
        assert server.proc.wait(STOP_WAIT) == 1
        assert "exited on its own" in server.stderr.read_text()


@needs_memcached
def test_memcached_stores_and_answers(tmp_path: Path) -> None:
    with running("memcached", tmp_path) as server:
        assert server.ready["kind"] == "memcached"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert exchange(sock, b"version\r\n").startswith(b"VERSION ")
            assert exchange(sock, b"set k 0 0 5\r\nhello\r\n") == b"STORED\r\n"
            assert exchange(sock, b"get k\r\n", b"END\r\n") == \
                b"VALUE k 0 5\r\nhello\r\nEND\r\n"
        stop_and_check(server)


@needs_memcached
def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.Popen(command("memcached", tmp_path, port), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=STOP_WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 1
    assert "before answering" in err and "Address already in use" in err
    assert not (tmp_path / "ready").exists()


# -- tcp, proxy, fallback -----------------------------------------------------------------
def test_tcp_listener_takes_many_clients(tmp_path: Path) -> None:
    with running("tcp", tmp_path) as server:
        assert server.ready == {"kind": "tcp", "warning": "", "pid": server.proc.pid}
        clients = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                   for _ in range(50)]
        try:
            for sock in clients:
                sock.sendall(b"x" * 10000)
                sock.shutdown(socket.SHUT_WR)
            for sock in clients:
                assert sock.recv(10) == b""  # read to EOF, then closed
        finally:
            for sock in clients:
                sock.close()


class Echo:
    """A TCP echo server on 127.0.0.1 that first tells each client its address."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn, peer), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            conn.settimeout(20)
            conn.sendall(f"{peer[0]}:{peer[1]}\n".encode())
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


def owner_has_socket(pid: int, local_port: int, remote_port: int) -> bool:
    """Process ``pid`` holds the TCP socket 127.0.0.1:local_port -> remote_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == local_port and \
                int(fields[2].split(":")[1], 16) == remote_port:
            inodes.add(fields[9])
    links = {f"socket:[{inode}]" for inode in inodes}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) in links:
                return True
        except OSError:
            continue
    return False


def test_proxy_opens_its_own_connection_and_copies_both_ways(tmp_path: Path) -> None:
    echo = Echo()
    try:
        with running("proxy", tmp_path, "--target", f"127.0.0.1:{echo.port}") as server:
            assert server.ready == {"kind": "proxy", "warning": "", "pid": server.proc.pid}
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
                header = exchange(sock, b"", b"\n")
                host, port = header.decode().strip().rsplit(":", 1)
                assert host == "127.0.0.1" and int(port) != sock.getsockname()[1]
                assert owner_has_socket(server.proc.pid, int(port), echo.port)
                payload = os.urandom(1 << 20)
                sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                          sock.shutdown(socket.SHUT_WR)))
                sender.start()
                received = bytearray()
                while chunk := sock.recv(1 << 16):
                    received += chunk
                sender.join(20)
                assert bytes(received) == payload  # and EOF came back: half close passed on
    finally:
        echo.close()


def test_a_missing_program_gives_a_tcp_listener_and_one_warning(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    warning = (f"warning: host db: mysql needs MariaDB (Debian package mariadb-server), "
               f"which is not installed; port {port} answers as a plain TCP listener")
    with running("mysql", tmp_path, "--user", "admin", "--password", "pw", port=port,
                 env={dbinit.PATH_VARIABLE: str(empty)}) as server:
        assert server.ready == {"kind": "tcp", "warning": warning, "pid": server.proc.pid}
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"hello")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(10) == b""
        assert server.stop() == 0
    assert server.stderr.read_text().splitlines() == [warning]


# -- arguments and quoting ----------------------------------------------------------------
BASE = ["--address", "127.0.0.1", "--data", "/nonexistent", "--name", "db"]


@pytest.mark.parametrize("args", [
    ["tcp", "--port", "0"], ["tcp", "--port", "65536"], ["tcp", "--port", "x"],
    ["oracle", "--port", "1521"], ["proxy", "--port", "80"],
    ["tcp", "--port", "80", "--target", "10.0.0.1:80"], ["proxy", "--port", "80", "--target",
                                                         "10.0.0.1:99999"],
    ["mysql", "--port", "3306"], ["mysql", "--port", "3306", "--user", "a"],
    ["postgres", "--port", "5432", "--user", "pg_x", "--password", "p"],
    ["mysql", "--port", "3306", "--user", "a\nb", "--password", "p"],
    ["mysql", "--port", "3306", "--user", "a", "--password", "p", "--database", "x" * 65],
    ["mysql", "--port", "3306", "--user", "a", "--password", "p", "--database", "db "],
])
def test_bad_arguments_are_refused(args: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        servers.parse([*args, *BASE])
    assert exited.value.code == 2


def test_bad_address_and_name_are_refused() -> None:
    for bad in (["--address", "10.0.0.300"], ["--name", "a b"]):
        argv = ["tcp", "--port", "80", *BASE, *bad]
        with pytest.raises(SystemExit):
            servers.parse(argv)


def test_quoting() -> None:
    assert dbinit.mysql_string("a'b\\c\nd") == "'a\\'b\\\\c\\nd'"
    assert dbinit.mysql_name("a`b") == "`a``b`"
    assert dbinit.pg_string("a'b\\c\nd") == "E'a\\'b\\\\c\\x0ad'"
    assert dbinit.pg_name('a"b') == '"a""b"'
    assert dbinit.redis_string('a b"\\') == '"a\\x20b\\x22\\x5c"'
    for quote in (dbinit.mysql_string, dbinit.mysql_name, dbinit.pg_string, dbinit.pg_name):
        with pytest.raises(ValueError):
            quote("a\0b")
    with pytest.raises(ValueError):
        dbinit.check(dbinit.Options("redis", "127.0.0.1", 6379, Path("/x"), "db",
                                    password="a\0b"))
