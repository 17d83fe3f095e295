"""The real database and cache servers of emulated customer hosts: where their programs
are, how their data directories are made, and their command lines.

``servers`` (the process ``up`` starts for such a host) calls ``prepare(options, run)``
and runs the returned ``Launch.argv`` as its child.  On the way this module makes the
data directory ``DATA`` ready (side effects: files under ``DATA``; programs run through
``run``, which the caller supervises so that a stop signal reaches them):

* mysql: MariaDB.  ``DATA/db`` is made once by ``mariadb-install-db`` (``DATA/db.initialised``
  marks it complete; an incomplete one is made again).  Every start passes an
  ``--init-file`` (``DATA/init.sql``, mode 0600, removed once the server answers) that
  creates or updates the master user ``'USER'@'%'`` (every privilege, WITH GRANT OPTION)
  and creates the database.
* postgres: PostgreSQL, run as the system user ``postgres`` when we are root (it refuses
  root; ``DATA`` is given to that user).  ``initdb`` makes ``DATA/db`` once with the
  bootstrap superuser ``rdsadmin``, whose password is random and forgotten (on RDS too
  the master user is not the bootstrap one; and initdb does not quote ``-U``).  Before
  every start a single-user session creates or updates the master user (SUPERUSER, LOGIN,
  the password) and creates the database, owned by it.  ``pg_hba.conf`` admits every
  address with a SCRAM password, the unix socket (in ``DATA``) without.
* redis: redis-server, no persistence, its settings in ``DATA/redis.conf`` (0600: it holds
  the password; removed once the server answers).
* memcached: 16 MB, TCP only.

Programs are looked up in ``$PATH``, the sbin directories and, for PostgreSQL, the newest
``/usr/lib/postgresql/VERSION/bin``; when ``HYPERPLANE_SERVER_PATH`` (a PATH-like list) is
set, it is searched instead of all of these.  A missing program raises ``NotInstalledError``.

User names, passwords and database names come from a user's template: ``check`` rejects
what the server would refuse (empty, too long, control characters in names, NUL), and the
quoting functions escape everything else.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PATH_VARIABLE = "HYPERPLANE_SERVER_PATH"
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
PG_ROOT = Path("/usr/lib/postgresql")
PG_BOOTSTRAP = "rdsadmin"
PG_ACCOUNT = "postgres"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
MYSQL_MEMORY = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M",
                "--key-buffer-size=1M", "--performance-schema=OFF")
PG_ACCEPTED = ("42P04",)  # duplicate_database: CREATE DATABASE of one made before
PG_ERROR = re.compile(r"\b(?:ERROR|FATAL|PANIC):\s*(\S*)")  # and its SQLSTATE (verbose)
PROBE_TIMEOUT = 1.0


class NotInstalledError(Exception):
    """The server's program is not installed."""


class SetupError(Exception):
    """The data directory could not be made ready (the message says why)."""


@dataclass(frozen=True)
class Options:
    kind: str
    address: str
    port: int
    data: Path           # absolute
    name: str            # the host's name, for messages
    user: str = ""
    password: str = ""
    database: str = ""


@dataclass(frozen=True)
class Account:
    """The system user a server runs as (PostgreSQL when we are root)."""
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass
class Launch:
    argv: list[str]
    ready: Callable[[int], bool]         # given the child's pid: does the server answer?
    account: Account | None = None
    stop_signal: int = signal.SIGTERM
    secrets: list[Path] = field(default_factory=list)  # removed once it answers


# run(argv, account, stdin) -> (exit status, output), supervised by the caller
Run = Callable[[list[str], "Account | None", "bytes | None"], "tuple[int, str]"]


# -- checks and quoting -------------------------------------------------------------------
LIMITS = {"mysql": {"user": 80, "database": 64}, "postgres": {"user": 63, "database": 63}}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check(opts: Options) -> None:
    """``ValueError`` for a user, password or database the server would refuse."""
    if "\0" in opts.user + opts.password + opts.database:
        raise ValueError("user, password and database may not contain NUL")
    limits = LIMITS.get(opts.kind)
    if limits is None:
        return
    if not opts.user or not opts.password:
        raise ValueError(f"{opts.kind} needs --user and --password (the master user)")
    if len(opts.password) > 1024:
        raise ValueError("the password is longer than 1024 characters")
    for what, value in (("user", opts.user), ("database", opts.database)):
        if CONTROL.search(value):
            raise ValueError(f"the {what} name {value!r} contains a control character")
        if len(value.encode()) > limits[what]:
            raise ValueError(f"the {what} name {value!r} is longer than {limits[what]} bytes")
    if opts.kind == "mysql" and (opts.database.endswith(" ") or
                                 opts.database.lower() == "information_schema"):
        raise ValueError(f"MariaDB refuses the database name {opts.database!r}")
    if opts.kind == "postgres" and opts.user.startswith("pg_"):
        raise ValueError(f"PostgreSQL reserves role names starting with pg_: {opts.user!r}")


MYSQL_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z"}


def mysql_string(text: str) -> str:
    """A MariaDB string literal (backslash escapes on, the default sql_mode)."""
    if "\0" in text:
        raise ValueError("NUL in an SQL string")
    return "'" + "".join(MYSQL_ESCAPES.get(c, c) for c in text) + "'"


def mysql_name(text: str) -> str:
    if "\0" in text:
        raise ValueError("NUL in an SQL name")
    return "`" + text.replace("`", "``") + "`"


def pg_string(text: str) -> str:
    """A PostgreSQL escape string ``E'...'``: no raw line break (single-user mode reads
    one statement a line)."""
    if "\0" in text:
        raise ValueError("NUL in an SQL string")
    out = []
    for char in text:
        if char in "\\'":
            out.append("\\" + char)
        elif CONTROL.match(char):
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "E'" + "".join(out) + "'"


def pg_name(text: str) -> str:
    if "\0" in text:
        raise ValueError("NUL in an SQL name")
    return '"' + text.replace('"', '""') + '"'


def redis_string(text: str) -> str:
    """A double-quoted redis.conf argument, every byte but the plainest as ``\\xHH``."""
    plain = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@")
    return '"' + "".join(chr(b) if b in plain else f"\\x{b:02x}"
                         for b in text.encode()) + '"'


# -- programs -----------------------------------------------------------------------------
def search_dirs(extra: Iterable[str] = ()) -> list[str]:
    override = os.environ.get(PATH_VARIABLE)
    if override is not None:
        return [d for d in override.split(os.pathsep) if d]
    return [*extra, *os.environ.get("PATH", os.defpath).split(os.pathsep), *SYSTEM_DIRS]


def find(names: Sequence[str], dirs: Iterable[str], together: bool = False) -> list[str]:
    """Each of ``names``, from the first directory that holds it (``together``: from the
    first that holds them all); ``NotInstalledError`` if one is nowhere."""
    dirs = list(dirs)
    groups = [names] if together else [[name] for name in names]
    found = []
    for group in groups:
        for directory in dirs:
            paths = [os.path.join(directory, name) for name in group]
            if all(os.path.isfile(p) and os.access(p, os.X_OK) for p in paths):
                found += paths
                break
        else:
            raise NotInstalledError(", ".join(group))
    return found


def pg_dirs() -> list[str]:
    """``/usr/lib/postgresql/VERSION/bin``, newest first."""
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))
    return [str(p) for p in sorted(PG_ROOT.glob("*/bin"), key=version, reverse=True)]


def prepare(opts: Options, run: Run) -> Launch:
    if opts.kind == "mysql":
        return mysql(opts, run)
    if opts.kind == "postgres":
        return postgres(opts, run)
    if opts.kind == "redis":
        return redis(opts)
    if opts.kind == "memcached":
        return memcached(opts)
    raise ValueError(f"no server program for {opts.kind!r}")


def _secret_file(path: Path, text: str, account: Account | None = None) -> Path:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    if account is not None:
        os.chown(path, account.uid, account.gid)
    return path


def _fresh(datadir: Path, marker: Path) -> bool:
    """Whether ``datadir`` must be made (again: one without its marker is incomplete)."""
    if marker.exists():
        return False
    if datadir.exists():
        shutil.rmtree(datadir)
    return True


def _short_enough(path: Path) -> bool:
    return len(str(path).encode()) <= SOCKET_PATH_MAX


# -- the servers --------------------------------------------------------------------------
def mysql(opts: Options, run: Run) -> Launch:
    mariadbd, install = find(("mariadbd", "mariadb-install-db"), search_dirs())
    datadir, marker, sock = opts.data / "db", opts.data / "db.initialised", \
        opts.data / "mysqld.sock"
    if not _short_enough(sock):
        raise SetupError(f"the socket path {sock} is too long: use a shorter data directory")
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    if _fresh(datadir, marker):
        status, output = run([install, "--no-defaults", f"--datadir={datadir}", *as_user,
                              "--auth-root-authentication-method=socket", "--skip-test-db",
                              "--skip-name-resolve", *MYSQL_MEMORY], None, None)
        if status != 0:
            raise SetupError(f"mariadb-install-db failed ({status}): {_last(output)}")
        marker.touch()
    user = mysql_string(opts.user) + "@'%'"
    password = mysql_string(opts.password)
    sql = ["SET NAMES utf8mb4;",
           f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {password};",
           f"ALTER USER {user} IDENTIFIED BY {password};",
           f"GRANT ALL PRIVILEGES ON *.* TO {user} WITH GRANT OPTION;"]
    if opts.database:
        sql.append(f"CREATE DATABASE IF NOT EXISTS {mysql_name(opts.database)};")
    init = _secret_file(opts.data / "init.sql", "\n".join([*sql, "FLUSH PRIVILEGES;", ""]))
    argv = [mariadbd, "--no-defaults", *as_user, f"--datadir={datadir}",
            f"--bind-address={opts.address}", f"--port={opts.port}", f"--socket={sock}",
            f"--pid-file={opts.data / 'mysqld.pid'}", "--skip-name-resolve", "--skip-log-bin",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
            "--max-connect-errors=1000000", *MYSQL_MEMORY, f"--init-file={init}"]
    return Launch(argv, lambda pid: greets(opts.address, opts.port), secrets=[init])


def postgres(opts: Options, run: Run) -> Launch:
    initdb, server = find(("initdb", "postgres"), search_dirs(pg_dirs()), together=True)
    account = pg_account() if os.geteuid() == 0 else None
    if account is not None:
        opts = dataclasses.replace(opts, data=_reachable_view(opts.data, account))
        os.chown(opts.data, account.uid, account.gid)
    datadir, marker = opts.data / "db", opts.data / "db.initialised"
    if _fresh(datadir, marker):
        pwfile = _secret_file(opts.data / "initdb.pw", secrets.token_urlsafe(32) + "\n",
                              account)
        try:
            status, output = run([initdb, "-D", str(datadir), "-U", PG_BOOTSTRAP,
                                  f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                                  "--auth-local=trust", "-E", "UTF8", "--locale=C"],
                                 account, None)
        finally:
            pwfile.unlink(missing_ok=True)
        if status != 0:
            raise SetupError(f"initdb failed ({status}): {_last(output)}")
        marker.touch()
    hba = datadir / "pg_hba.conf"
    hba.write_text("# written by hyperplane: any address with a password, as on RDS\n"
                   "local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n"
                   "host all all ::/0 scram-sha-256\n")
    if account is not None:
        os.chown(hba, account.uid, account.gid)
    _pg_master(opts, server, account, run)
    sockets = str(opts.data) if _short_enough(opts.data / f".s.PGSQL.{opts.port}") else ""
    argv = [server, "-D", str(datadir), "-c", f"listen_addresses={opts.address}",
            "-c", f"port={opts.port}", "-c", f"unix_socket_directories={sockets}",
            "-c", "shared_buffers=16MB", "-c", "max_connections=100"]
    return Launch(argv, lambda pid: _pg_ready(opts, datadir, pid), account, signal.SIGINT)


def _pg_master(opts: Options, server: str, account: Account | None, run: Run) -> None:
    """The master user and the database, through a single-user session."""
    name = pg_string(opts.user)
    tag = "$hp$"
    while tag in name:
        tag = f"$hp{secrets.token_hex(4)}$"
    sql = [f"DO {tag}BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
           f"{name}) THEN EXECUTE format('CREATE ROLE %I', {name}); END IF; END{tag};",
           f"ALTER ROLE {pg_name(opts.user)} WITH SUPERUSER LOGIN CREATEDB CREATEROLE "
           f"PASSWORD {pg_string(opts.password)};"]
    if opts.database and opts.database != "postgres":
        sql.append(f"CREATE DATABASE {pg_name(opts.database)} OWNER {pg_name(opts.user)};")
    status, output = run([server, "--single", "-D", str(opts.data / "db"),
                          "-c", "log_error_verbosity=verbose", "-c", "shared_buffers=16MB",
                          "postgres"], account, ("\n".join(sql) + "\n").encode())
    errors = [line for line in output.splitlines()
              if (found := PG_ERROR.search(line)) and found[1].rstrip(":") not in PG_ACCEPTED]
    if status != 0 or errors:
        raise SetupError(f"creating the master user failed ({status}): "
                         f"{errors[0] if errors else _last(output)}")


def pg_account() -> Account:
    try:
        entry = pwd.getpwnam(PG_ACCOUNT)
    except KeyError:
        raise SetupError(f"PostgreSQL refuses to run as root and there is no system user "
                         f"{PG_ACCOUNT!r} (Debian package postgresql makes it)") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def _reachable_view(path: Path, account: Account) -> Path:
    """``path``, or the same directory at ``/mnt/hp-pgdata`` when a parent is closed to
    ``account`` (a state directory under a private /tmp folder): bound there in a
    private mount namespace of this process, on a tmpfs over ``/mnt``, so the machine's
    own ``/mnt`` never changes.  The server and its helpers, our children, inherit it."""
    try:
        _check_reachable(path, account)
        return path
    except SetupError:
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    view = Path("/mnt/hp-pgdata")
    steps = ((lambda: libc.unshare(0x00020000), "unshare"),                  # CLONE_NEWNS
             (lambda: libc.mount(None, b"/", None, 16384 | (1 << 19), None), "rslave /"),
             (lambda: libc.mount(b"tmpfs", b"/mnt", b"tmpfs", 0, b"mode=755,size=64k"),
              "tmpfs on /mnt"),
             (lambda: view.mkdir() or 0, "mkdir"),
             (lambda: libc.mount(os.fsencode(path), os.fsencode(view), None, 4096, None),
              f"bind {path}"))                                                # MS_BIND
    for step, what in steps:
        if step() != 0:
            raise SetupError(f"{path} is closed to the user {account.name} and it cannot "
                             f"be shown elsewhere ({what}: {os.strerror(ctypes.get_errno())})")
    return view


def _check_reachable(path: Path, account: Account) -> None:
    """``SetupError`` unless ``account`` may pass through every directory above ``path``."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_mode & 0o001 or (st.st_uid == account.uid and st.st_mode & 0o100) or \
                (st.st_gid in account.groups and st.st_mode & 0o010):
            continue
        raise SetupError(f"{parent} is closed to the user {account.name}, which PostgreSQL "
                         f"runs as: its data directory {path} must be reachable")


def _pg_ready(opts: Options, datadir: Path, pid: int) -> bool:
    """The postmaster says ``ready`` in postmaster.pid (as ``pg_ctl -w`` reads it) and
    the port accepts."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    if len(lines) < 8 or lines[0].strip() != str(pid) or lines[7].strip() != "ready":
        return False
    return _answers(opts.address, opts.port, b"")


def redis(opts: Options) -> Launch:
    (server,) = find(("redis-server",), search_dirs())
    lines = [f"bind {opts.address}", f"port {opts.port}", 'save ""', "appendonly no",
             "protected-mode no", f"dir {redis_string(str(opts.data))}", "daemonize no",
             'logfile ""']
    if opts.password:
        lines.append(f"requirepass {redis_string(opts.password)}")
    conf = _secret_file(opts.data / "redis.conf", "\n".join(lines) + "\n")

    def ready(pid: int) -> bool:
        return _answers(opts.address, opts.port, b"PING\r\n", b"+PONG", b"-NOAUTH")
    return Launch([server, str(conf)], ready, secrets=[conf])


def memcached(opts: Options) -> Launch:
    (server,) = find(("memcached",), search_dirs())
    as_user = ["-u", "root"] if os.geteuid() == 0 else []
    argv = [server, *as_user, "-l", opts.address, "-p", str(opts.port), "-U", "0",
            "-m", "16"]
    return Launch(argv, lambda pid: _answers(opts.address, opts.port, b"version\r\n",
                                             b"VERSION"))


# -- readiness ----------------------------------------------------------------------------
def _answers(address: str, port: int, ask: bytes, *answers: bytes) -> bool:
    """A TCP connection succeeds and, if ``ask`` is given, the reply starts with one of
    ``answers``."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT) as sock:
            if not ask:
                return True
            sock.sendall(ask)
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(answers)


def greets(address: str, port: int) -> bool:
    """The server speaks first (MariaDB's greeting comes once it accepts logins, after
    its init file)."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT) as sock:
            return bool(sock.recv(1))
    except OSError:
        return False


def _last(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
