"""Crash safety: a writer killed with SIGKILL at random points leaves a table that attaches
with no lost session and no torn record served.

Each round forks a writer that attaches to the same table file and, in a loop, creates
sessions, updates them (counters, state and expiry together, so a torn update shows),
marks some expired and lets the clock hand free them, and deletes others, appending a
line to a log file after each completed step (``C``reated, ``U``pdated to a value,
``D``eletion started, ``d``eletion done, ``E``xpiry set).  The test kills it after a random
time, attaches, and checks every record against what the log says may be there:

* every session created and logged, and not being deleted or expired, is there, its
  immutable part exactly what the writer made (keys, rewrites), its counters those of
  the last logged update or of the one under way (and, unless an attach repaired a torn
  record, counters and state of one update, whole);
* nothing else is there but the one session a writer may have made without logging it;
* the index, the port allocators and the counts agree with the records.

Rounds continue on the same file, so each writer attaches to what the last one left.
The attaches take the pure-Python pass and the compiled one (when built) in turn.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from hyperplane.dataplane import fastpath, records
from hyperplane.dataplane import packet as p
from hyperplane.dataplane.conntrack import Session, Table, make_session
from hyperplane.dataplane.portalloc import EniPorts
from hyperplane.dataplane.shm import attach_table, create_table
from hyperplane.dataplane.store import SessionStore
from tests.unit.dataplane.frames import assert_slot_consistent

ROUNDS = 50
# the attach passes, taken in turn round by round: pure Python, and C when built
SCANS = [None, *filter(None, [fastpath.attach_scan("compiled")])]
LIVE = 300  # beyond this many live flows the writer deletes and expires more than it makes
ENI = bytes([10, 0, 1, 4])
REMOTE = bytes([10, 0, 1, 10])
FAR = 1e9  # an expiry that never comes


def endpoint(n: int) -> tuple[bytes, int]:
    """Flow ``n``'s environment address and port (one endpoint per flow)."""
    return bytes([169, 254, 128 + (n >> 16) % 64, (n >> 8) & 0xFF]), 1024 + (n & 0xFF) * 200


def flow_of(s: Session) -> int:
    return ((s.env_ip[2] - 128) << 16) | (s.env_ip[3] << 8) | (s.env_port - 1024) // 200


def values(v: int) -> tuple[int, int, int]:
    """What the ``v``-th update writes, together: packets, bytes, TCP state."""
    return v, 100 * v, v % 9


def bind(store: SessionStore) -> Table:
    table = Table()
    store.bind("eni-1", table, lambda s: None)
    return table


def writer(path: str, log: str, next_id: int, live: dict[int, int], seed: int) -> None:
    """The killed process: random operations on the table, each logged once complete."""
    rng = random.Random(seed)
    store = attach_table(path, EniPorts, cache_size=4, scan=SCANS[seed % len(SCANS)])
    table = bind(store)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"R\n")
    ports = store.slots[table.slot].ports  # type: ignore[union-attr]
    while True:
        op = rng.random() if len(live) < LIVE else 0.45 + 0.55 * rng.random()
        if op < 0.45 or not live:
            n, next_id = next_id, next_id + 1
            ip, port = endpoint(n)
            s = make_session(p.PROTO_TCP, None, ip, port, REMOTE, 8080, ENI,
                             ports[p.PROTO_TCP].acquire(ip, port), REMOTE, 30.0, FAR - 30.0)
            table.add(s)
            live[n] = 0
            os.write(fd, b"C %d\n" % n)
            continue
        n = rng.choice(list(live))
        s = table.get((p.PROTO_TCP, *_out_key(n)))
        assert s is not None
        if op < 0.8:
            v = live[n] + 1
            s.pkts_out, s.bytes_out, s.state = values(v)
            store.update(s)
            live[n] = v
            os.write(fd, b"U %d %d\n" % (n, v))
        elif op < 0.9:
            os.write(fd, b"D %d\n" % n)
            table.remove(s)
            del live[n]
            os.write(fd, b"d %d\n" % n)
        else:
            s.expires = 0.0
            store.update(s)
            del live[n]
            os.write(fd, b"E %d\n" % n)
            store.reap(1.0, budget=16)


def _out_key(n: int) -> tuple[bytes, int]:
    ip, port = endpoint(n)
    return ip + REMOTE, (port << 16) | 8080


def read_log(log: str) -> list[list[str]]:
    """The complete lines of the log: a write() that SIGKILL cut short (it can, where
    the line crosses a page boundary of the file) leaves a last line without its end,
    which is left out, as if the kill had come just before it."""
    with open(log, "rb") as fh:
        lines = fh.read().split(b"\n")
    return [line.decode().split() for line in lines[:-1]]


def expect(must: dict[int, int], may: set[int], lines: list[list[str]]) -> int:
    """Apply a round's log to what must be there (flow -> last update) and what may be;
    returns how many flows the round made."""
    made = 0
    for op, n, *rest in lines[1:]:
        flow = int(n)
        if op == "C":
            must[flow] = 0
            made += 1
        elif op == "U":
            must[flow] = int(rest[0])
        elif op in ("D", "E"):  # deletion or expiry started: present or not
            may.add(flow)
            must.pop(flow, None)
        elif op == "d":
            may.discard(flow)
    return made


def check(store: SessionStore, must: dict[int, int], may: set[int],
          pending: int) -> tuple[dict[int, int], set[int]]:
    """Every record against the log; ``pending``: the flow a killed writer may have made
    without logging it.  Returns what must and may be there for the next round."""
    table = bind(store)
    found: dict[int, int] = {}
    expired: set[int] = set()
    for s in table.live(-1.0):
        flow = flow_of(s)
        ip, port = endpoint(flow)
        fresh = make_session(p.PROTO_TCP, None, ip, port, REMOTE, 8080, ENI, s.eni_port, REMOTE,
                             30.0, 0.0)
        assert (s.out_key, s.in_key, s.ip_out, s.full_out, s.part_out, s.ip_in, s.full_in,
                s.part_in) == (fresh.out_key, fresh.in_key, fresh.ip_out, fresh.full_out,
                               fresh.part_out, fresh.ip_in, fresh.full_in, fresh.part_in)
        if store.repaired == 0:  # an untorn record holds one update's values, whole
            assert (s.pkts_out, s.bytes_out, s.state) == values(s.pkts_out)
        if flow in must:  # the last completed update, or the one under way
            assert s.pkts_out in (must[flow], must[flow] + 1), (flow, s.pkts_out, must[flow])
        else:
            assert flow in may or flow == pending, (flow, pending)
        if s.expires == 0.0:
            expired.add(flow)
        else:
            found[flow] = s.pkts_out
    missing = set(must) - set(found) - expired
    assert not missing, f"lost sessions {sorted(missing)[:5]}"
    assert_slot_consistent(store, table, ENI, store.slots[table.slot].ports)
    return found, expired


def test_a_writer_killed_at_random_points_loses_and_tears_nothing(tmp_path: Path) -> None:
    path, log = str(tmp_path / "t.sessions"), str(tmp_path / "log")
    create_table(path, 100_000, EniPorts).close()
    rng = random.Random(14)
    ctx = multiprocessing.get_context("fork")
    must: dict[int, int] = {}
    may: set[int] = set()
    next_id = 0
    deadline = time.monotonic() + 90
    for round_ in range(ROUNDS):
        if os.path.exists(log):
            os.unlink(log)
        child = ctx.Process(target=writer, args=(path, log, next_id, dict(must), round_))
        child.start()
        while not os.path.exists(log) or os.path.getsize(log) == 0:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        made = expect(must, may, read_log(log))
        store = attach_table(path, EniPorts, cache_size=4,
                             scan=SCANS[(round_ + 1) % len(SCANS)])
        assert store.was_dirty and store.dropped == 0
        must, may = check(store, must, may, next_id + made)
        next_id += made + 1
        store.close()
        assert time.monotonic() < deadline, f"too slow: {round_} rounds"
    assert next_id > 10 * ROUNDS  # the writers did work


def test_records_are_visible_only_once_complete(tmp_path: Path) -> None:
    """The write order, step by step: a record is free until ``live`` is set last."""
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 10, EniPorts)
    table = bind(store)
    ip, port = endpoint(0)
    s = make_session(p.PROTO_TCP, None, ip, port, REMOTE, 8080, ENI, port, REMOTE, 30.0, 0.0)
    table.add(s)
    off = records.record_at(s.rec)
    store.mem[off + records.LIVE_AT] = 0  # as if killed just before the last write
    store.release()  # type: ignore[misc]
    again = attach_table(path, EniPorts)
    assert again.count == 0 and again.dropped == 0 and not again.used[0]
    again.close()
