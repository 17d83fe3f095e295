"""Session table files: create, attach, close, read from another process (I/O).

A dataplane process keeps its sessions in one file under ``/dev/shm`` (the caller
names it, normally ``records.table_path(state_id, role)``), mapped shared and
locked with ``flock`` so that only one process writes it; the lock goes with the
process, so a restarted dataplane can take it at once.  ``open_table`` creates the
file when it is absent (sparse, ``ftruncate`` to ``records.file_size(capacity)``)
and attaches to it when present (``rebuild.attach``: verified, repaired,
rebuilt).  A file of another version or capacity is refused with
``records.TableError``, never recreated behind the operator's back: removing the
file (``hyperplane down``/``cleanup``) starts afresh.

``read_sessions(path)`` (and ``read_records``, the records themselves, for
``conntrack --follow``) is for another process (``hyperplane conntrack``): it maps
the file read-only and copies all records at once; a record whose ``seq`` was odd,
or is not the same after the copy, or whose CRC fails, is copied again alone between
two reads of its ``seq`` (retrying while the writer is mid-update), so a busy
dataplane is neither asked nor disturbed, and no torn record is shown.
``read_slot_counter`` reads one counter of each ENI the same way (a worker of a group
learns the sessions its peers hold per ENI: ``loop.Worker``).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
import zlib
from collections.abc import Callable

from hyperplane.dataplane import rebuild
from hyperplane.dataplane import records as r
from hyperplane.dataplane.records import TableError
from hyperplane.dataplane.store import CACHE, Ports, SessionStore

RETRIES = 100


def _lock(fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise TableError("in use by another process (one writer per table)") from None


def _mapped(fd: int, store: SessionStore, mem: mmap.mmap) -> None:
    r.set_u32(mem, r.PID_AT, os.getpid())  # the writer, for whoever looks at the file

    def release() -> None:
        mem.close()
        os.close(fd)  # drops the lock
    store.release = release


def create_table(path: str, capacity: int, ports: Callable[[], Ports],
                 cache_size: int = CACHE) -> SessionStore:
    """A new table file at ``path`` (which must not exist)."""
    size = r.file_size(capacity)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _lock(fd, path)
        os.ftruncate(fd, size)
        mem = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    store = SessionStore.new(mem, capacity, ports, cache_size)
    _mapped(fd, store, mem)
    return store


def attach_table(path: str, ports: Callable[[], Ports], cache_size: int = CACHE,
                 capacity: int | None = None, scan: rebuild.Scan | None = None
                 ) -> SessionStore:
    """The store of the existing table file at ``path`` (see ``rebuild.attach``; ``scan``:
    its compiled pass, ``fastpath.attach_scan``)."""
    fd = os.open(path, os.O_RDWR)
    try:
        _lock(fd, path)
        size = os.fstat(fd).st_size
        if size < r.HEADER:
            raise TableError(f"{path}: {size} bytes, not a session table")
        mem = mmap.mmap(fd, size)
        try:
            store = rebuild.attach(mem, size, ports, cache_size, capacity, time.monotonic(),
                                   scan)
        except BaseException:
            with contextlib.suppress(BufferError):  # else unmapped when collected
                mem.close()
            raise
    except TableError as exc:
        os.close(fd)
        raise TableError(f"{path}: {exc}") from None
    except BaseException:
        os.close(fd)
        raise
    _mapped(fd, store, mem)
    return store


def open_table(path: str, ports: Callable[[], Ports], capacity: int | None = None,
               cache_size: int = CACHE, default_capacity: int = 1_000_000,
               scan: rebuild.Scan | None = None) -> SessionStore:
    """Attach to the table at ``path`` if it exists, else create it."""
    if os.path.exists(path):
        return attach_table(path, ports, cache_size, capacity, scan)
    return create_table(path, capacity or default_capacity, ports, cache_size)


def remove_table(path: str) -> bool:
    """Remove a table file; False if there was none."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _copy(mem: mmap.mmap, off: int) -> tuple | None:
    """A consistent copy of the record at ``off`` (None: free, or never stable)."""
    for _ in range(RETRIES):
        before = r.SEQ.unpack_from(mem, off)[0]
        if before & 1:
            continue
        fields = r.REC.unpack_from(mem, off)
        if r.SEQ.unpack_from(mem, off)[0] != before:
            continue
        if fields[r.F_LIVE] != 1 or fields[r.F_SEQ] != before:
            return None
        raw = mem[off + r.IMM_AT:off + r.CRC_AT]
        return fields if zlib.crc32(raw) == fields[r.F_CRC] else None
    return None


def read_records(path: str, now: float | None = None) -> tuple[dict[int, str], list[tuple]]:
    """The ENI ids by slot and the ``(record number, fields)`` of every unexpired session
    of a table file (``records.REC`` fields), read without disturbing its writer."""
    now = time.monotonic() if now is None else now
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < r.HEADER:
            raise TableError(f"{path}: {size} bytes, not a session table")
        mem = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    try:
        head = r.read_header(mem, size)
        ids = {slot: eni for slot in range(r.SLOTS)
               if (eni := r.slot_entry(mem, slot)) is not None}
        body = mem[r.HEADER:r.HEADER + head["hwm"] * r.RECORD]  # one copy of every record
        found = []
        for rec, fields in enumerate(r.REC.iter_unpack(body)):
            if fields[r.F_LIVE] != 1:
                continue
            off, at = r.record_at(rec), rec * r.RECORD
            if fields[r.F_SEQ] & 1 or r.SEQ.unpack_from(mem, off)[0] != fields[r.F_SEQ] or \
                    zlib.crc32(body[at + r.IMM_AT:at + r.CRC_AT]) != fields[r.F_CRC]:
                fields = _copy(mem, off)  # written to while copied: that record again, alone
            if fields is None or fields[r.F_EXPIRES] < now:
                continue
            found.append((rec, fields))
        return ids, found
    finally:
        mem.close()


def read_slot_counter(path: str, name: str) -> dict[str, int]:
    """Counter ``name`` of every ENI bound in a table file (as its writer last flushed
    them), by ENI id; {} when the file or the counter is not there."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}
    try:
        if os.fstat(fd).st_size < r.HEADER:
            return {}
        mem = mmap.mmap(fd, r.HEADER, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    try:
        names = r.counter_names(mem)
        if name not in names:
            return {}
        at = 8 * names.index(name)
        return {eni: r.get_u64(mem, r.counters_at(slot) + at) for slot in range(r.SLOTS)
                if (eni := r.slot_entry(mem, slot)) is not None}
    finally:
        mem.close()


def read_sessions(path: str, now: float | None = None) -> list[dict]:
    """The unexpired sessions of a table file, as the dataplane's ``conntrack`` rows
    (``conntrack.Session.describe`` plus ``eni``), read without disturbing its writer."""
    now = time.monotonic() if now is None else now
    ids, found = read_records(path, now)
    return [r.describe(fields, now, ids.get(fields[r.F_SLOT])) for _, fields in found]
