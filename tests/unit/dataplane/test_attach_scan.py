"""The compiled attach pass (``fastpath.attach_scan``) against the pure-Python one
(``rebuild._rebuild``): tables holding sessions of several ENIs and protocols, damaged at
random (torn updates, bad CRCs, key blocks that disagree, unknown protocols, unbound
slots, ports that conflict, live bytes of another value), attach alike: the same table
bytes, index words, used map, allocators, counts and verdicts.  Skipped when the
compiled module is not built."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import pytest

from hyperplane.dataplane import fastpath, rebuild
from hyperplane.dataplane import packet as p
from hyperplane.dataplane import records as r
from hyperplane.dataplane.portalloc import EniPorts
from hyperplane.dataplane.shm import create_table
from hyperplane.dataplane.store import SessionStore
from tests.unit.dataplane.test_store import bind, crash, open_flow, torn

SCAN = fastpath.attach_scan("compiled")
pytestmark = pytest.mark.skipif(SCAN is None, reason="the compiled fast path is not built")
PROTOS = (p.PROTO_TCP, p.PROTO_UDP, p.PROTO_ICMP)


def resealed(mem, rec: int, at: int, value: int) -> None:
    """Byte ``at`` of record ``rec`` set to ``value`` and the CRC made right again: a
    record whose immutable part is whole but says something else."""
    off = r.record_at(rec)
    mem[off + at] = value
    struct.pack_into("<I", mem, off + r.CRC_AT, zlib.crc32(mem[off + r.IMM_AT:off + r.CRC_AT]))


def damage(store: SessionStore, sessions: list, rng: random.Random) -> None:
    """One of the ways a record can be found after a crash, on a fifth of the records."""
    mem = store.mem
    for s in rng.sample(sessions, len(sessions) // 5):
        off, kind = r.record_at(s.rec), rng.randrange(9)
        if kind == 0:
            torn(store, s)
        elif kind == 1:
            torn(store, s, rng.randrange(3, r.IMM_AT), rng.randrange(256))
        elif kind == 2:
            mem[off + r.IMM_AT + rng.randrange(44)] ^= 1 << rng.randrange(8)
        elif kind == 3:
            mem[off + r.LIVE_AT] = rng.choice((0, 2, 255))
        elif kind == 4:
            resealed(mem, s.rec, r.IN_KEY_AT, mem[off + r.IN_KEY_AT] ^ 1)  # slots disagree
        elif kind == 5:
            resealed(mem, s.rec, r.OUT_KEY_AT + 3, 1)  # the outside key says inbound
        elif kind == 6:
            for at in (r.OUT_KEY_AT + 2, r.IN_KEY_AT + 2):
                resealed(mem, s.rec, at, 47)  # a protocol the table does not hold
        elif kind == 7:
            for at in (r.OUT_KEY_AT, r.IN_KEY_AT):
                resealed(mem, s.rec, at, 200)  # a slot no ENI holds
        else:  # another session's ENI port: one of the two loses it
            other = rng.choice(sessions)
            for at in (r.IN_KEY_AT + 12, r.IN_KEY_AT + 13):
                resealed(mem, s.rec, at, mem[r.record_at(other.rec) + at])


def table_bytes(tmp_path: Path, seed: int) -> bytes:
    """A crashed table of 300 sessions over three ENIs, damaged by ``seed``."""
    rng = random.Random(seed)
    path = str(tmp_path / f"t{seed}.sessions")
    store = create_table(path, 400, EniPorts)
    tables = [bind(store, f"eni-{i}") for i in range(3)]
    sessions = [open_flow(rng.choice(tables), n, rng.choice(PROTOS),
                          remote_port=rng.randrange(1, 65536)) for n in range(300)]
    for s in rng.sample(sessions, 20):  # some freed: holes below the high water mark
        sessions.remove(s)
        store.mem[r.record_at(s.rec) + r.LIVE_AT] = 0
    damage(store, sessions, rng)
    store.flush()
    crash(store)
    return Path(path).read_bytes()


def derived(store: SessionStore, mem: bytearray) -> dict:
    """Everything an attach writes or derives, comparable."""
    slots = {}
    for slot, state in enumerate(store.slots):
        if state is not None:
            slots[slot] = (state.count, {
                proto: (bytes(a.owners or b""), bytes(a.refs or b""), a.count,
                        bytes(a.moved.slots), len(a.moved))
                for proto, a in state.ports.items()})
    return {"table": bytes(mem), "index": bytes(store.index.slots),
            "index_count": len(store.index), "used": bytes(store.used[:]),
            "verdicts": (store.count, store.attached, store.dropped, store.repaired,
                         store.hwm, store.low, store.generation), "slots": slots}


@pytest.mark.parametrize("seed", range(12))
def test_both_passes_attach_a_damaged_table_alike(tmp_path: Path, seed: int) -> None:
    data = table_bytes(tmp_path, seed)
    got = []
    for scan in (None, SCAN):
        mem = bytearray(data)
        store = rebuild.attach(mem, len(mem), EniPorts, now=50.0, scan=scan)
        got.append(derived(store, mem))
    pure, compiled = got
    assert pure["verdicts"][2] > 0 and pure["verdicts"][3] > 0  # some dropped, some mended
    for name in pure:
        assert compiled[name] == pure[name], name


def test_the_compiled_hash_is_the_index_hash() -> None:
    lib = fastpath.load().lib
    rng = random.Random(7)
    for _ in range(2000):
        key = (rng.randrange(r.SLOTS), rng.choice(PROTOS) | rng.choice((0, 0x100)),
               rng.randbytes(8), rng.randrange(1 << 32))
        assert lib.hp_key_hash(*key) == r.key_hash(*key) & ((1 << 64) - 1)


def test_the_python_setting_keeps_the_pure_pass() -> None:
    assert fastpath.attach_scan("python") is None
    assert fastpath.attach_scan("sockets") is not None
