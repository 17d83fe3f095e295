"""The state directory: what a run made, so that later commands and cleanup find it.

``/run/hyperplane`` by default (``HYPERPLANE_STATE_DIR`` overrides it).  It
holds ``state.db`` (SQLite: the topology as validated, the functions, ENIs and
execution environments of the control plane, the namespaces and processes
made, the emulated clock), ``lock`` (taken with flock around every change
made outside the controller), the sockets of the dataplane, the zygote, the
controller and each environment's agent, per-environment lock files and the
processes' logs.

The database is a key-value view of one document (a dict): ``functions``,
``enis`` and ``envs`` are tables with a row per record, every other top-level
key is a row of ``meta``.  ``save`` writes, in one transaction, only the rows
that changed since this process last loaded or saved, so the controller can
record each environment as it makes it.  What changed is found by a fingerprint
of each row, ``marshal``'s bytes (C, no key sorting: 0.5 to 0.8 ms for the
document of a 1,000-host topology, whose sorted JSON takes 1.7 ms; only changed
rows are then written as JSON).  marshal writes every value's exact type (bool, int,
float, str, list, tuple, dict) and content in order, so equal bytes mean an
identical row, hence identical JSON: a changed row is never missed.  A
difference that JSON would not show (another key order, a tuple for a list,
an interned string) only costs a needless write.  One writer at a time: ``up`` before
it starts the controller, then the controller alone, then ``down``/``cleanup``
once it has stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import marshal
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TABLES = {"functions": "name", "enis": "id", "envs": "index"}  # list key -> row id field
_cache: dict[str, dict[str, dict[str, bytes]]] = {}  # db path -> table -> row id -> print
_connections: dict[str, tuple[sqlite3.Connection, int | None]] = {}
_guard = threading.Lock()  # one transaction at a time on a process's connection
MARSHAL_VERSION = 2  # the last without references, whose use depends on reference counts


def state_dir() -> Path:
    return Path(os.environ.get("HYPERPLANE_STATE_DIR", "/run/hyperplane"))


def path(*parts: str) -> Path:
    return state_dir().joinpath(*parts)


def ensure_dirs() -> None:
    for sub in ("", "envs", "logs", "ready"):
        path(sub).mkdir(parents=True, exist_ok=True)


@contextmanager
def locked() -> Iterator[None]:
    """Hold the state lock (exclusive) for the duration of the block."""
    ensure_dirs()
    with open(path("lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def db_path() -> Path:
    return path("state.db")


def _connect() -> sqlite3.Connection:
    """This process's connection to the database (kept open: closing the last one
    checkpoints the write-ahead log, which costs a disk flush per write)."""
    key = str(db_path())
    cached = _connections.get(key)
    inode = _inode(key)
    if cached is not None and cached[1] == inode and inode is not None:
        return cached[0]
    if cached is not None:  # the file was removed (down, cleanup) and perhaps made again
        _disconnect()
    db = sqlite3.connect(key, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for table in ("meta", *TABLES):
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, value TEXT)")
    _connections[key] = (db, _inode(key))
    return db


def _inode(key: str) -> int | None:
    try:
        return os.stat(key).st_ino
    except FileNotFoundError:
        return None


def _disconnect() -> None:
    cached = _connections.pop(str(db_path()), None)
    if cached is not None:
        cached[0].close()


def exists() -> bool:
    return db_path().exists()


def load() -> dict | None:
    """The recorded document, or None when nothing is up."""
    if not exists():
        return None
    with _guard:
        db = _connect()
        rows = {table: dict(db.execute(f"SELECT id, value FROM {table}"))  # noqa: S608
                for table in ("meta", *TABLES)}
    if "source" not in rows["meta"]:
        return None
    meta = {key: json.loads(value) for key, value in rows["meta"].items()}
    loaded = {table: {key: json.loads(value) for key, value in rows[table].items()}
              for table in TABLES}
    _cache[str(db_path())] = {
        table: {key: _fingerprint(value) for key, value in values.items()}
        for table, values in (("meta", meta), *loaded.items())}
    data = dict(meta)
    for table in TABLES:
        data[table] = sorted(loaded[table].values(),
                             key=lambda r: r.get("seq", r.get("index", 0)))
    return data


def save(data: dict) -> None:
    """Record ``data``: the rows that changed since the last load or save, atomically."""
    ensure_dirs()
    key = str(db_path())
    cached = _connections.get(key)
    if cached is None or cached[1] != _inode(key):
        _cache.pop(key, None)  # another file than the one cached (removed, made again)
    cache = _cache.setdefault(key, {t: {} for t in ("meta", *TABLES)})
    wanted = {"meta": {k: v for k, v in data.items() if k not in TABLES}}
    for table, field in TABLES.items():
        wanted[table] = {str(r[field]): r for r in data.get(table, [])}
    prints = {table: {k: _fingerprint(v) for k, v in rows.items()}
              for table, rows in wanted.items()}
    with _guard:
        _write(wanted, prints, cache)
    _cache[key] = prints


def _fingerprint(value: object) -> bytes:
    """Bytes that differ whenever the row's JSON would (see the module's docstring);
    the JSON itself for what marshal does not write (a subclass of a built-in type)."""
    try:
        return marshal.dumps(value, MARSHAL_VERSION)
    except ValueError:
        return json.dumps(value, sort_keys=True).encode()


def _write(wanted: dict[str, dict[str, object]], prints: dict[str, dict[str, bytes]],
           cache: dict[str, dict[str, bytes]]) -> None:
    db = _connect()
    try:
        db.execute("BEGIN IMMEDIATE")
        for table, rows in wanted.items():
            old = cache.setdefault(table, {})
            changed = [(k, json.dumps(v, sort_keys=True)) for k, v in rows.items()
                       if old.get(k) != prints[table][k]]
            gone = [(k,) for k in old if k not in rows]
            db.executemany(f"INSERT OR REPLACE INTO {table} (id, value) VALUES (?, ?)",  # noqa: S608
                           changed)
            db.executemany(f"DELETE FROM {table} WHERE id = ?", gone)  # noqa: S608
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def load_row(key: str) -> object:
    """One top-level key of the document (a ``meta`` row), None when absent: the
    supervisor reads its specs this way, many times a second."""
    if not exists():
        return None
    with _guard:
        row = _connect().execute("SELECT value FROM meta WHERE id = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def save_row(key: str, value: object) -> None:
    """Write one top-level key alone (the supervisor's ``services``; no other writer
    changes that key, and no other row is touched)."""
    text = json.dumps(value, sort_keys=True)
    with _guard:
        db = _connect()
        db.execute("INSERT OR REPLACE INTO meta (id, value) VALUES (?, ?)", (key, text))


def forget() -> None:
    """Remove the database (``down``, ``cleanup``)."""
    _cache.pop(str(db_path()), None)
    _disconnect()
    for suffix in ("", "-wal", "-shm"):
        path("state.db" + suffix).unlink(missing_ok=True)


def control_socket() -> str:
    return str(path("dataplane.sock"))


def zygote_socket() -> str:
    return str(path("zygote.sock"))


def controller_socket() -> str:
    return str(path("controller.sock"))


def natgw_socket() -> str:
    return str(path("natgw.sock"))


SOCKETS = ("dataplane.sock", "zygote.sock", "natgw.sock", "controller.sock", "services.sock",
           "services.json")  # and the services process's listeners


SHM_DIR = Path("/dev/shm")


def instance_id() -> str:
    """A short id of this state directory: it names our shared-memory files, so that two
    state directories (tests in parallel) never share one and ``cleanup`` removes ours."""
    return hashlib.sha256(str(state_dir().resolve()).encode()).hexdigest()[:10]


def shm_path(role: str) -> str:
    """The session table of a dataplane process (``dataplane`` or ``natgw``)."""
    return str(SHM_DIR / f"hp-{instance_id()}-{role}.sessions")


def shm_tables(role: str) -> list[str]:
    """The session tables of ``role``'s process: its workers' (``dataplane.workers``)
    when it runs a group of them, else its one (which may not exist)."""
    workers = sorted(SHM_DIR.glob(f"hp-{instance_id()}-{role}-w*.sessions"))
    return [str(p) for p in workers] or [shm_path(role)]


def shm_files() -> list[Path]:
    """Our shared-memory files (this state directory's only)."""
    return sorted(SHM_DIR.glob(f"hp-{instance_id()}-*"))


def env_lock(index: int) -> Path:
    """Held (``flock`` shared) by whoever leases the environment: it outlives a controller
    restart, so a new controller does not hand a held environment to anyone else."""
    return path("envs", f"{index}.lock")


def env_held(index: int) -> bool:
    """Whether a lease holds environment ``index`` (its lock file is locked)."""
    try:
        fd = os.open(env_lock(index), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def env_socket(index: int) -> str:
    return str(path("envs", f"{index}.sock"))


def log(name: str) -> Path:
    return path("logs", f"{name}.log")


def ready_file(name: str) -> Path:
    return path("ready", name)
