"""Attaching to a session table: verify every record, repair or drop, rebuild (pure).

``attach`` turns a mapped table file (``shm`` maps it) into a ``store.SessionStore``:
the header is checked (``records.read_header``: another version, record size or
capacity is refused), the generation goes up by one and the dirty flag is set (it
stays set until a clean close, so the next attach knows whether this process
crashed), the ENI slots and counter names are read back, and every record below the
high water mark is judged by the rules ``records`` states:

* not ``live``: free;
* the CRC of the immutable part fails, or the key blocks disagree (slot, protocol,
  directions) or name a slot that is not bound: dropped (``live`` cleared);
* an odd ``seq`` (a torn update): kept, its mutable fields mended (``records.mend``)
  and ``seq`` made even (``repaired``);
* a TCP session forgets its ACK fields (and, past the handshake, its SYN ends):
  ``records.stale_tcp_fields``;
* its port must not conflict with another record's (``Ports.claim_keys``), else dropped.

What is derived is rebuilt in one pass over the records (``struct.iter_unpack``), the
index filled in place: the used map, the index of both keys, per slot the count and the
port allocators; the lowest free record and the high water mark.  ``dropped`` and
``repaired`` say what was done; ``attached`` how many sessions were found.

``scan`` (``fastpath.attach_scan``: the compiled module's ``hp_attach_scan``, when built
and allowed) does the pass's verdicts and the index in C, with the same hash; Python then
mends the torn records and claims the ports as here.  Both leave the same table, index
words and allocators (a test holds them to it).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from itertools import compress
from operator import itemgetter

from hyperplane.dataplane import records as r
from hyperplane.dataplane.conntrack import INBOUND
from hyperplane.dataplane.index import TAG, KeyIndex
from hyperplane.dataplane.packet import PROTO_TCP
from hyperplane.dataplane.store import CACHE, Ports, SessionStore, Slot

LIVE_ONLY = bytes(int(value == 1) for value in range(256))  # a live byte -> the used map
KNOWN_PROTOCOLS = bytes(int(value in r.PROTOCOLS) for value in range(256))
STALE = bytes(r.stale_tcp_fields(state) for state in range(256))
# (body, hwm, bound slots, KNOWN_PROTOCOLS, STALE, index words, mask, used map)
#   -> (records kept, torn records, records dropped)
Scan = Callable[..., tuple[int, list[int], int]]


def attach(mem, size: int, ports: Callable[[], Ports], cache_size: int = CACHE,
           capacity: int | None = None, now: float = 0.0,
           scan: Scan | None = None) -> SessionStore:
    """The store of an existing table: header checked, every live record verified
    (or repaired, or dropped), everything derived rebuilt; generation + 1, dirty.
    ``now``: the clock (``CLOCK_MONOTONIC``) a repaired record's expiry starts from;
    ``scan``: the compiled pass, else the pure-Python one."""
    head = r.read_header(mem, size, capacity)
    store = SessionStore(mem, head["capacity"], ports, cache_size)
    store.generation = head["generation"] + 1
    store.was_dirty = bool(head["dirty"])
    r.set_u64(mem, r.GENERATION_AT, store.generation)
    r.set_u32(mem, r.DIRTY_AT, 1)
    store.names = r.counter_names(mem)
    store.name_index = {name: i for i, name in enumerate(store.names)}
    for slot in range(r.SLOTS):
        eni_id = r.slot_entry(mem, slot)
        if eni_id is not None:
            state = store.slots[slot] = Slot(eni_id, ports())
            state.created = store.read_counters(slot).get("sessions_created", 0)
            store.by_id[eni_id] = slot
    if scan is None:
        _rebuild(store, head["hwm"], now)
    else:
        _rebuild_scanned(store, head["hwm"], now, scan)
    store.hand = min(head["hand"], store.hwm)
    return store


def _rebuild(store: SessionStore, hwm: int, now: float) -> None:
    """Verify every live record below ``hwm`` (CRC, keys, a torn update's fields) and
    index it, or drop it; then claim the ports, slot by slot (a conflict drops too).
    The used map is the live bytes, translated (a dropped record cleared after)."""
    mem, used = store.mem, store.used
    bound = frozenset(store.by_id.values())
    recs: list[int] = []
    found: list[tuple] = []
    view = memoryview(mem)
    body = view[r.HEADER:r.HEADER + hwm * r.RECORD]
    try:
        lives = bytes(body[r.LIVE_AT::r.RECORD])
        used[:hwm] = lives.translate(LIVE_ONLY)
        index = store.index = KeyIndex(4 * lives.count(1))  # two keys each, half full
        slots, mask, crc32, protocols = index.slots, index.mask, zlib.crc32, r.PROTOCOLS
        stale = tuple(r.stale_tcp_fields(state) for state in range(256))
        heads, keyss = r.SCAN_HEAD.iter_unpack(body), r.SCAN_KEYS.iter_unpack(body)
        for rec, ((seq, live, state, known, imm, crc), keys) in enumerate(zip(
                heads, keyss, strict=True)):
            if live != 1:
                continue
            slot, proto, d, addrs, ports, slot_in, proto_in, d_in, addrs_in, ports_in = keys
            if (crc32(imm) != crc or slot != slot_in or slot not in bound or proto != proto_in
                    or d or d_in != 1 or proto not in protocols):
                mem[r.HEADER + rec * r.RECORD + r.LIVE_AT] = used[rec] = 0
                store.dropped += 1
                continue
            if seq & 1:
                _mend(store, rec, seq, state, known, proto, now)
            elif proto == PROTO_TCP and known & stale[state]:  # records.stale_tcp_fields
                mem[r.HEADER + rec * r.RECORD + r.KNOWN_AT] = known & ~stale[state]
            tag = hash((slot, proto, addrs, ports)) & TAG  # records.key_hash, inline
            i = tag & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = (tag << 32) | ((rec << 1) + 1)
            tag = hash((slot, proto | INBOUND, addrs_in, ports_in)) & TAG
            i = tag & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = (tag << 32) | ((rec << 1) + 2)
            recs.append(rec)
            found.append(keys)
    finally:
        heads = keyss = None  # type: ignore[assignment]  (they hold the buffer)
        body.release()
        view.release()
    index.count = 2 * len(recs)
    _finish(store, recs, found)


def _rebuild_scanned(store: SessionStore, hwm: int, now: float, scan: Scan) -> None:
    """``_rebuild`` with the pass done by ``scan`` (in C); the torn records mended and the
    ports claimed here, from the kept records' key fields."""
    mem, used = store.mem, store.used
    bound = bytes(int(state is not None) for state in store.slots)
    view = memoryview(mem)
    body = view[r.HEADER:r.HEADER + hwm * r.RECORD]
    try:
        index = store.index = KeyIndex(4 * bytes(body[r.LIVE_AT::r.RECORD]).count(1))
        kept, torn, dropped = scan(body, hwm, bound, KNOWN_PROTOCOLS, STALE, index.slots,
                                   index.mask, used)
        keep = used[:hwm]
        found = list(compress(r.SCAN_KEYS.iter_unpack(body), keep))
    finally:
        body.release()
        view.release()
    store.dropped += dropped
    for rec in torn:
        seq = r.SEQ.unpack_from(mem, r.record_at(rec))[0]
        _mend(store, rec, seq, 0, 0, 0, now)
    index.count = 2 * kept
    _finish(store, list(compress(range(hwm), keep)), found)


def _finish(store: SessionStore, recs: list[int], found: list[tuple]) -> None:
    """The ports claimed slot by slot (a conflict drops), the counts, the high water mark
    and the lowest free record, from the kept records (``recs``) and their key fields."""
    mem, used, index = store.mem, store.used, store.index
    for slot, (slot_recs, slot_found) in _by_slot(recs, found).items():
        _claim(store, slot, slot_recs, slot_found)
    store.count = store.attached = len(index) // 2
    store.hwm = recs[-1] + 1 if recs else 0
    store.low = max(used.find(b"\0"), 0)
    r.set_u64(mem, r.HWM_AT, store.hwm)


def _by_slot(recs: list[int], found: list[tuple]) -> dict[int, tuple[list[int], list[tuple]]]:
    """The records (numbers and key fields) grouped by their slot."""
    slots = set(map(itemgetter(0), found))
    if len(slots) <= 1:
        return {slot: (recs, found) for slot in slots}
    grouped: dict[int, tuple[list[int], list[tuple]]] = {slot: ([], []) for slot in slots}
    for rec, keys in zip(recs, found, strict=True):
        slot_recs, slot_found = grouped[keys[0]]
        slot_recs.append(rec)
        slot_found.append(keys)
    return grouped


def _mend(store: SessionStore, rec: int, seq: int, state: int, known: int, proto: int,
          now: float) -> None:
    """A torn update repaired (``records.mend``), and a TCP session's possibly stale
    sequence fields forgotten (``records.stale_tcp_fields``: ``tcpstate`` is liberal with
    them unknown, until the next ACKs re-learn them)."""
    mem, off = store.mem, r.record_at(rec)
    if seq & 1:
        mem[off + r.MUT_AT:off + r.IMM_AT] = r.MUT.pack(*r.mend(r.REC.unpack_from(mem, off),
                                                               now))
        r.set_seq(mem, off, seq + 1)
        store.repaired += 1
    elif proto == PROTO_TCP and known & r.stale_tcp_fields(state):
        mem[off + 5] = known & ~r.stale_tcp_fields(state)


def _claim(store: SessionStore, slot: int, recs: list[int], found: list[tuple]) -> None:
    """The ports of a slot's records; a record whose port conflicts is dropped."""
    state = store.slots[slot]
    assert state is not None
    claimed = state.ports.claim_keys(found)
    state.count += len(recs)
    if all(claimed):
        return
    for ok, rec in zip(claimed, recs, strict=True):
        if not ok:
            state.count -= 1
            _unindex(store, rec)
            store.mem[r.record_at(rec) + r.LIVE_AT] = 0
            store.used[rec] = 0
            store.dropped += 1


def _unindex(store: SessionStore, rec: int) -> None:
    off = r.record_at(rec)
    slot, proto, _, addrs, ports = r.KEY.unpack_from(store.mem, off + r.OUT_KEY_AT)
    _, _, _, addrs_in, ports_in = r.KEY.unpack_from(store.mem, off + r.IN_KEY_AT)
    store.index.remove(r.key_hash(slot, proto, addrs, ports), rec << 1)
    store.index.remove(r.key_hash(slot, proto | INBOUND, addrs_in, ports_in), (rec << 1) | 1)
