"""The session store: sessions as fixed-size records, and what is derived from them (pure).

A ``SessionStore`` works on one writable buffer laid out as ``records`` describes
(a header, ENI slots, counters, ``capacity`` records of 128 bytes): a mapped table
file (``shm``), or anonymous memory (``anonymous``: the same code without a file,
for tests and a dataplane run without ``--table``).  One process writes a table.

What is in the records is the truth; the rest is derived, rebuilt by ``rebuild.attach``:

* ``used``: one byte per record (anonymous memory, only touched pages count);
  allocation takes the lowest free record, so the pages in use follow the sessions;
* ``index`` (``index.KeyIndex``): both key blocks of every live record;
* per ENI slot (``Slot``): the ENI's id, its ``Table``, its port allocators (made by
  the role's ``ports`` factory: ``portalloc.EniPorts`` or the NAT gateway's) with each
  session's reference, and its session count;
* the cache: at most ``cache_size`` materialised ``conntrack.Session`` objects (FIFO),
  each in its table's ``sessions`` dict under both keys.

Writes, in the order that lets a process killed at any instant leave a table a new one
can attach to (``records`` has the rules attach applies):

* create: the high water mark first (if the record lies beyond it; raised ``HWM_STEP``
  records ahead), then every field in one copy (the mutable ones, the immutable part
  and its CRC), ``live`` = 1 last (``seq`` is left as it is: a record whose ``live`` is
  0 is free to readers and to an attach, and the delete before bumped ``seq``);
* update: ``seq`` odd, the fields, ``seq`` even.  Written through (``update_state``:
  ``replied``, state, window scales, expiry, timeout) when ``replied`` or the TCP
  timeout moves (the pipeline's ``_track``); written back (``update``: every mutable
  field, counters and ACK fields too) at eviction and every ``flush``;
* delete: ``live`` = 0 first, ``seq`` + 2, then the derived structures.

Expiry is a clock hand over the live records: ``reap(now, budget)`` looks at
``budget`` of them (the cached object's expiry if there is one) and frees the
expired; the pipeline calls it with 2 for each new session, more from its timer.
After an attach every TCP session's ACK fields (and, past the handshake, its SYN
ends) are forgotten (UNKNOWN): they were written back, not through, so they may be
old; ``tcpstate`` accepts any RST while they are unknown, until the next ACKs
re-learn them.
"""

from __future__ import annotations

import mmap
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol
from zlib import crc32

from hyperplane.dataplane import records as r
from hyperplane.dataplane.conntrack import INBOUND, UNKNOWN, Key, Session, Table
from hyperplane.dataplane.index import KeyIndex
from hyperplane.dataplane.packet import PROTO_ICMP, TTL_DELTA

CACHE = 2048
HWM_STEP = 64  # records the high water mark is raised by, ahead of need
SEQ_PACK, STATE_PACK = r.SEQ.pack, r.STATE.pack
BODY_PACK, MUT_PACK, CRC_PACK, mutable_fields = r.BODY.pack, r.MUT.pack, r.U32.pack, \
    r.mutable_fields  # the hot paths' names, bound once (``records``' layout)
HEADER, SHIFT, MUT_AT, MUT_END, STATE_END, KNOWN_AT, LIVE_AT = (
    r.HEADER, r.RECORD_SHIFT, r.MUT_AT, r.IMM_AT, r.STATE_END, r.KNOWN_AT, r.LIVE_AT)
EXPIRES_UNPACK, EXPIRES_AT = r.struct.Struct("<d").unpack_from, r.HEADER + r.EXPIRES_AT


class Ports(Protocol):
    def claim(self, proto: int, env_ip: bytes, env_port: int, remote_ip: bytes,
              remote_port: int, eni_port: int) -> bool: ...

    def free(self, proto: int, env_ip: bytes, env_port: int, remote_ip: bytes,
             remote_port: int, eni_port: int) -> None: ...

    def set_range(self, port_range: tuple[int, int]) -> None: ...

    def claim_keys(self, found: list[tuple]) -> list[bool]:
        """``claim`` for each record, given by the fields of its key blocks (``records``:
        slot, protocol, 0, env + remote addresses, outside ports word, then the same of
        the inside key): what an attach calls, in one pass."""
        ...


class TableFullError(Exception):
    """No free record (the caller checks ``full()`` first)."""


class Slot:
    """One ENI's part of the store."""

    __slots__ = ("id", "table", "ports", "count", "created")

    def __init__(self, eni_id: str, ports: Ports) -> None:
        self.id = eni_id
        self.table: Table | None = None
        self.ports = ports
        self.count = 0
        self.created = 0


class SessionStore:
    """Session records in one buffer, their index, ports, counts and a cache of objects."""

    def __init__(self, mem, capacity: int, ports: Callable[[], Ports],
                 cache_size: int = CACHE) -> None:
        if not 0 < capacity < (1 << 31) - 1:
            raise ValueError(f"capacity {capacity}: must be from 1 to 2**31 - 2")
        self.mem = mem
        self.capacity = capacity
        self.new_ports = ports
        self.cache_size = max(1, cache_size)
        self.used = mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.low = self.hwm = self.count = self.hand = 0
        self.index = KeyIndex()
        self.slots: list[Slot | None] = [None] * r.SLOTS
        self.by_id: dict[str, int] = {}
        self.cached: dict[int, Session] = {}
        self.fifo: deque[Session] = deque()
        self.names: list[str] = []
        self.name_index: dict[str, int] = {}
        self.generation = 1
        self.attached = self.repaired = self.dropped = 0
        self.was_dirty = False
        self.release: Callable[[], None] | None = None  # set by ``shm``: unmap, unlock
        self.on_expire: Callable[[int, float], None] | None = None  # (record, now) before
        # ``reap``/``reap_slot`` free an expired record (the NAT gateway's idle reset)

    # -- making and attaching -------------------------------------------------------------
    @classmethod
    def new(cls, mem, capacity: int, ports: Callable[[], Ports],
            cache_size: int = CACHE) -> SessionStore:
        """A new, empty table in ``mem`` (zeroed, ``records.file_size(capacity)`` bytes)."""
        r.write_header(mem, capacity, int(time.time()), 0)
        return cls(mem, capacity, ports, cache_size)

    @classmethod
    def anonymous(cls, capacity: int, ports: Callable[[], Ports],
                  cache_size: int = CACHE) -> SessionStore:
        """A table in anonymous memory: no file, gone with the process."""
        return cls.new(mmap.mmap(-1, r.file_size(capacity)), capacity, ports, cache_size)

    def close(self) -> None:
        """A clean close: everything written back, the dirty flag cleared."""
        self.flush()
        r.set_u64(self.mem, r.HAND_AT, self.hand)
        r.set_u32(self.mem, r.DIRTY_AT, 0)
        self.used.close()
        if self.release is not None:
            self.release()

    # -- slots -------------------------------------------------------------------------------
    def bind(self, eni_id: str, table: Table, resolve: Callable[[Session], None],
             ports: Ports | None = None) -> Slot:
        """The slot of ``eni_id`` now served by ``table``: the one it had before a restart
        (with its port allocators as rebuilt), or a free one (with ``ports``)."""
        slot = self.by_id.get(eni_id)
        if slot is None:
            slot = self.slots.index(None) if None in self.slots else -1
            if slot < 0:
                raise TableFullError(f"no free ENI slot (at most {r.SLOTS} ENIs)")
            r.bind_slot(self.mem, slot, eni_id)
            self.slots[slot] = Slot(eni_id, ports if ports is not None else self.new_ports())
            self.by_id[eni_id] = slot
        state = self.slots[slot]
        assert state is not None
        if state.table is not None and state.table is not table:
            self._uncache(state.table)
        state.table = table
        table.bind(self, slot, resolve)
        return state

    def unbind(self, eni_id: str) -> int:
        """Free the slot of ``eni_id`` and every session in it; the number freed."""
        slot = self.by_id.pop(eni_id, None)
        if slot is None:
            return 0
        freed = 0
        for rec in self._records():
            if r.KEY.unpack_from(self.mem, r.record_at(rec) + r.OUT_KEY_AT)[0] == slot:
                self._free(rec)
                freed += 1
        state = self.slots[slot]
        if state is not None and state.table is not None:
            self._uncache(state.table)
            state.table.store = None
        r.free_slot(self.mem, slot)
        self.slots[slot] = None
        return freed

    def prune(self, keep: set[str]) -> int:
        """Unbind every slot whose ENI is not in ``keep`` (after the first snapshot)."""
        return sum(self.unbind(eni_id) for eni_id in list(self.by_id) if eni_id not in keep)

    def slot_count(self, slot: int) -> int:
        state = self.slots[slot]
        return state.count if state is not None else 0

    def slot_created(self, slot: int) -> int:
        state = self.slots[slot]
        return state.created if state is not None else 0

    def slot_ids(self) -> dict[int, str]:
        return {slot: s.id for slot, s in enumerate(self.slots) if s is not None}

    def full(self) -> bool:
        return self.count >= self.capacity

    def _records(self) -> list[int]:
        """The live record numbers (a walk of the used map)."""
        found, used, rec = [], self.used, self.used.find(b"\x01")
        while 0 <= rec < self.hwm:
            found.append(rec)
            rec = used.find(b"\x01", rec + 1)
        return found

    # -- sessions ------------------------------------------------------------------------------
    def create(self, table: Table, s: Session) -> None:
        """Write the new session ``s`` of ``table`` to a free record and cache it."""
        rec = self.used.find(b"\0", self.low)
        if rec < 0:
            raise TableFullError(f"all {self.capacity} records in use")
        mem, off = self.mem, HEADER + (rec << SHIFT)
        if rec >= self.hwm:  # raised ahead, a few records at a time (a bound, not a count)
            self.hwm = min(self.capacity, rec + HWM_STEP)
            r.set_u64(mem, r.HWM_AT, self.hwm)
        self.used[rec] = 1
        self.low = rec + 1
        slot, (p_out, addrs, ports), (p_in, addrs_in, ports_in) = table.slot, s.out_key, s.in_key
        body = BODY_PACK(*mutable_fields(s), slot, p_out & 0xFF, p_out >> 8, addrs, ports, slot,
                         p_in & 0xFF, p_in >> 8, addrs_in, ports_in, *s.deltas, s.full_out,
                         s.full_in, int(time.time()))
        mem[off + MUT_AT:off + r.RECORD] = body + CRC_PACK(crc32(body[r.IMM_IN_BODY:]))
        mem[off + LIVE_AT] = 1  # last: until now the record is free, whatever it holds
        self.index.add_pair(hash((slot, p_out, addrs, ports)),  # records.key_hash, inline
                            hash((slot, p_in, addrs_in, ports_in)), rec)
        state = self.slots[slot]
        assert state is not None
        state.count += 1
        state.created += 1
        self.count += 1
        s.rec, s.table, s.deltas, s.dead = rec, table, None, False
        s.synced = s.pkts_out + s.pkts_in
        self._cache(s, table)

    def update(self, s: Session) -> None:
        """Write the mutable fields of the cached session ``s`` to its record (inline: the
        write-back of counters, expiry and ACK fields)."""
        if s.cached:
            self._write_back(s)

    def _write_back(self, s: Session) -> None:
        mem, off = self.mem, HEADER + (s.rec << SHIFT)
        low = mem[off] | 1  # seq made odd: only its low byte changes, one byte written
        mem[off] = low
        mem[off + MUT_AT:off + MUT_END] = MUT_PACK(*mutable_fields(s))  # packed, then copied
        mem[off:off + 2] = SEQ_PACK(((mem[off + 1] << 8 | low) + 1) & 0xFFFF)  # (no pack_into)
        s.synced = s.pkts_out + s.pkts_in

    def update_state(self, s: Session) -> None:
        """Write through what a TCP state change or a first reply moves: ``replied``, the
        state, the window scales, expiry and timeout (``records.STATE``); the ACK and SYN
        fields, windows and counters stay write-back (``update``), and the record's
        ``known`` byte is kept, so it still describes the fields the record holds."""
        if not s.cached:
            return
        mem, off = self.mem, HEADER + (s.rec << SHIFT)
        low = mem[off] | 1
        mem[off] = low
        mem[off + MUT_AT:off + STATE_END] = STATE_PACK(
            bool(s.replied), s.state, mem[off + KNOWN_AT], s.wscale_out, s.wscale_in,
            s.expires, s.timeout)
        mem[off:off + 2] = SEQ_PACK(((mem[off + 1] << 8 | low) + 1) & 0xFFFF)

    def delete(self, s: Session) -> None:
        """Free the session ``s`` (its record, keys, port reference)."""
        if s.dead:
            return
        if s.cached or self._holds(s):
            self._free(s.rec)
        s.dead = True

    def _holds(self, s: Session) -> bool:
        """Whether the record of the evicted object ``s`` still holds its session."""
        if s.rec < 0 or s.table is None or not self.used[s.rec]:
            return False
        at = r.record_at(s.rec) + r.OUT_KEY_AT
        return self.mem[at:at + 16] == r.key_bytes(s.table.slot, s.out_key)

    def _free(self, rec: int) -> None:
        mem, off = self.mem, r.record_at(rec)
        mem[off + r.LIVE_AT] = 0
        r.set_seq(mem, off, r.SEQ.unpack_from(mem, off)[0] + 2)
        slot, proto, _, addrs, ports = r.KEY.unpack_from(mem, off + r.OUT_KEY_AT)
        _, _, _, addrs_in, ports_in = r.KEY.unpack_from(mem, off + r.IN_KEY_AT)
        self.index.remove(r.key_hash(slot, proto, addrs, ports), rec << 1)
        self.index.remove(r.key_hash(slot, proto | INBOUND, addrs_in, ports_in), (rec << 1) | 1)
        env_ip, env_port, remote_ip, remote_port = addrs[:4], ports >> 16, addrs[4:], ports & 0xFFFF
        eni_port = r.eni_port_of(proto, ports_in)
        state = self.slots[slot]
        if state is not None:
            state.count -= 1
            state.ports.free(proto, env_ip, env_port, remote_ip, remote_port, eni_port)
        self.count -= 1
        self.used[rec] = 0
        self.low = min(self.low, rec)
        s = self.cached.pop(rec, None)
        if s is not None:
            s.cached = False
            s.dead = True
            sessions = s.table.sessions
            sessions.pop(s.out_key, None)
            sessions.pop(s.in_key, None)

    def find(self, table: Table, key: Key) -> Session | None:
        """The session under ``key`` in ``table``'s slot (materialised if not cached)."""
        slot = table.slot
        ref = self.index.lookup(hash((slot, *key)), self.mem, slot, key)  # records.key_hash
        if ref < 0:
            return None
        s = self.cached.get(ref >> 1)
        return s if s is not None else self._materialise(ref >> 1, table)

    def _materialise(self, rec: int, table: Table) -> Session:
        (_, _, flags, state, known, wso, wsi, expires, timeout, win_out, win_in, ao, ai, eo, ei,
         fo, fi, po, bo, pi, bi, _, proto, _, addrs, ports, _, _, _, addrs_in, ports_in, d_ip,
         d_ip_in, full_out, full_in, _, _) = r.REC.unpack_from(self.mem,
                                                               r.HEADER + rec * r.RECORD)
        s = Session()
        s.proto, s.out_key, s.in_key = proto, (proto, addrs, ports), (proto | INBOUND,
                                                                      addrs_in, ports_in)
        s.env_ip, s.remote_ip, s.env_port = addrs[:4], addrs[4:], ports >> 16
        s.remote_port = ports & 0xFFFF
        s.eni_port = ports_in >> 16 if proto == PROTO_ICMP else ports_in & 0xFFFF
        x = d_ip + TTL_DELTA  # packet.add as in make_session (one fold is exact here)
        s.ip_out = (x & 0xFFFF) + (x >> 16)
        x = d_ip_in + TTL_DELTA
        s.ip_in = (x & 0xFFFF) + (x >> 16)
        s.full_out, s.full_in = full_out, full_in
        if proto == PROTO_ICMP:
            s.part_out = s.part_in = 0
        else:
            s.part_out, s.part_in = d_ip, d_ip_in
        s.timeout, s.expires, s.replied, s.dead, s.state = timeout, expires, bool(flags & 1), \
            False, state
        s.pkts_out, s.bytes_out, s.pkts_in, s.bytes_in = po, bo, pi, bi
        s.ack_out = ao if known & 1 else UNKNOWN
        s.ack_in = ai if known & 2 else UNKNOWN
        s.end_out = eo if known & 4 else UNKNOWN
        s.end_in = ei if known & 8 else UNKNOWN
        s.fin_out = fo if known & 16 else UNKNOWN
        s.fin_in = fi if known & 32 else UNKNOWN
        s.win_out, s.win_in, s.wscale_out, s.wscale_in = win_out, win_in, wso, wsi
        s.rec, s.table, s.synced = rec, table, po + pi
        table.resolve(s)
        self._cache(s, table)
        return s

    # -- the cache -------------------------------------------------------------------------------
    def _cache(self, s: Session, table: Table) -> None:
        self.cached[s.rec] = s
        sessions = table.sessions
        sessions[s.out_key] = s
        sessions[s.in_key] = s
        s.cached = True
        fifo = self.fifo
        fifo.append(s)
        if len(self.cached) > self.cache_size:
            while fifo:
                old = fifo.popleft()
                if old.cached and old is not s:
                    self._evict(old)
                    break
        if len(fifo) > 4 * self.cache_size + 64:
            self.fifo = deque(x for x in fifo if x.cached)

    def _evict(self, s: Session) -> None:
        if s.pkts_out + s.pkts_in != s.synced:
            self._write_back(s)
        del self.cached[s.rec]
        sessions = s.table.sessions
        sessions.pop(s.out_key, None)
        sessions.pop(s.in_key, None)
        s.cached = False

    def _uncache(self, table: Table) -> None:
        for s in list(table.sessions.values()):
            if s.cached:
                self._evict(s)
        table.sessions.clear()

    def flush(self) -> int:
        """Write back every cached session used since its last write; how many."""
        written = 0
        for s in self.cached.values():
            if s.pkts_out + s.pkts_in != s.synced:
                self.update(s)
                written += 1
        r.set_u64(self.mem, r.HAND_AT, self.hand)
        return written

    # -- expiry ----------------------------------------------------------------------------------
    def reap(self, now: float, budget: int = 2) -> int:
        """Look at ``budget`` live records at the clock hand; free the expired.  Returns
        how many were freed."""
        freed = 0
        used, hand, cached, mem, hwm = self.used, self.hand, self.cached, self.mem, self.hwm
        for _ in range(budget if budget < self.count else self.count):
            rec = hand if hand < hwm and used[hand] else used.find(b"\x01", hand)
            if rec < 0 or rec >= hwm:
                rec = used.find(b"\x01")
                if rec < 0:
                    break
            hand = rec + 1
            s = cached.get(rec)
            if (s.expires if s is not None else EXPIRES_UNPACK(mem, EXPIRES_AT + (rec << SHIFT))[0]
                    ) < now:
                if self.on_expire is not None:
                    self.on_expire(rec, now)
                self._free(rec)
                freed += 1
        self.hand = hand
        return freed

    def reap_slot(self, slot: int, now: float) -> int:
        """Free every expired session of one slot (a full walk: only when asked)."""
        freed = 0
        for rec in self._records():
            off = r.record_at(rec)
            if r.KEY.unpack_from(self.mem, off + r.OUT_KEY_AT)[0] != slot:
                continue
            s = self.cached.get(rec)
            expires = s.expires if s is not None else EXPIRES_UNPACK(
                self.mem, off + r.EXPIRES_AT)[0]
            if expires < now:
                if self.on_expire is not None:
                    self.on_expire(rec, now)
                self._free(rec)
                freed += 1
        return freed

    def delete_matching(self, match: Callable[[tuple, str | None], bool], now: float) -> int:
        """Free every unexpired session whose record (its ``records.REC`` fields, cached
        objects written back first) and ENI id ``match`` (``conntrack --delete``); how
        many."""
        self.flush()
        ids, freed = self.slot_ids(), 0
        for rec in self._records():
            fields = r.REC.unpack_from(self.mem, r.record_at(rec))
            s = self.cached.get(rec)
            expires = s.expires if s is not None else fields[r.F_EXPIRES]
            if expires >= now and match(fields, ids.get(fields[r.F_SLOT])):
                self._free(rec)
                freed += 1
        return freed

    def live(self, table: Table, now: float) -> list[Session]:
        """The unexpired sessions of ``table``, materialised (tests, small tables)."""
        found = []
        for rec in self._records():
            if r.KEY.unpack_from(self.mem, r.record_at(rec) + r.OUT_KEY_AT)[0] != table.slot:
                continue
            s = self.cached.get(rec) or self._materialise(rec, table)
            if s.expires >= now:
                found.append(s)
        return found

    def describe(self, now: float, slot: int | None = None) -> list[dict]:
        """The unexpired sessions (of one slot) as ``Session.describe`` rows with ``eni``."""
        self.flush()
        ids = self.slot_ids()
        rows = []
        for rec in self._records():
            fields = r.REC.unpack_from(self.mem, r.record_at(rec))
            owner = fields[r.F_SLOT]
            if (slot is None or owner == slot) and fields[r.F_EXPIRES] >= now:
                rows.append(r.describe(fields, now, ids.get(owner)))
        return rows

    # -- counters --------------------------------------------------------------------------------
    def write_counters(self, slot: int | None, counters: dict[str, int]) -> None:
        """Copy ``counters`` into the table (slot None: the process's global block)."""
        mem, base = self.mem, r.counters_at(slot)
        for name, value in counters.items():
            i = self.name_index.get(name)
            if i is None:
                if len(self.names) >= r.MAX_COUNTERS or not name.isascii():
                    continue
                i = len(self.names)
                r.add_counter_name(mem, i, name)
                self.names.append(name)
                self.name_index[name] = i
            r.set_u64(mem, base + 8 * i, max(0, int(value)))

    def read_counters(self, slot: int | None) -> dict[str, int]:
        return r.read_counters(self.mem, slot, self.names)

    def stats(self) -> dict[str, int]:
        return {"capacity": self.capacity, "sessions": self.count, "generation": self.generation,
                "high_water_mark": self.hwm, "cached": len(self.cached),
                "index_bytes": self.index.nbytes()}
