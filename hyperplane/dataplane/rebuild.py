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

``scan`` (``fastpath.attach_scan``: the compiled module's ``hp_attach_scan`` and
``hp_attach_claim``, when built and allowed) does the pass's verdicts and the index in C,
with the same hash, and the port claims when every slot's allocators are fresh
``portalloc`` ones (the NAT gateway's are claimed here); Python mends the torn records.
Both leave the same table, index words and allocators (a test holds them to it).
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Callable
from itertools import compress
from operator import itemgetter
from typing import Any, Protocol

from hyperplane.dataplane import records as r
from hyperplane.dataplane.conntrack import INBOUND
from hyperplane.dataplane.index import TAG, KeyIndex
from hyperplane.dataplane.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from hyperplane.dataplane.portalloc import EniPorts, PortAllocator
from hyperplane.dataplane.store import CACHE, Ports, SessionStore, Slot

LIVE_ONLY = bytes(int(value == 1) for value in range(256))  # a live byte -> the used map
KNOWN_PROTOCOLS = bytes(int(value in r.PROTOCOLS) for value in range(256))
CLAIM_PROTOCOLS = (PROTO_TCP, PROTO_UDP, PROTO_ICMP)  # fastpath.CLAIM_PROTOCOLS
STALE = bytes(r.stale_tcp_fields(state) for state in range(256))


class Scan(Protocol):
    """The compiled passes (``fastpath.CompiledAttach``)."""

    def __call__(self, body: memoryview, hwm: int, bound: bytes, protocols: bytes,
                 stale: bytes, slots: memoryview, mask: int,
                 used: Any) -> tuple[int, list[int], int]:
        """Verdicts and index: (records kept, torn records, records dropped)."""
        ...

    def claim(self, body: memoryview, used: Any, hwm: int, alloc_of: array,
              arrays: list) -> tuple[list, list, list, list]:
        """Port claims: per allocator records and owners, records refused, moved words."""
        ...


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
    for slot, (slot_recs, slot_found) in _by_slot(recs, found).items():
        _claim(store, slot, slot_recs, slot_found)
    _close_pass(store, recs[-1] if recs else -1)


def _rebuild_scanned(store: SessionStore, hwm: int, now: float, scan: Scan) -> None:
    """``_rebuild`` with the pass done by ``scan`` (in C); the torn records mended here, the
    ports claimed by ``scan.claim`` when every slot has fresh ``EniPorts``, else here."""
    mem, used = store.mem, store.used
    bound = bytes(int(state is not None) for state in store.slots)
    view = memoryview(mem)
    body = view[r.HEADER:r.HEADER + hwm * r.RECORD]
    found: list[tuple] = []
    claims = None
    try:
        index = store.index = KeyIndex(4 * bytes(body[r.LIVE_AT::r.RECORD]).count(1))
        kept, torn, dropped = scan(body, hwm, bound, KNOWN_PROTOCOLS, STALE, index.slots,
                                   index.mask, used)
        allocators = _fresh_allocators(store)
        if allocators is not None:
            claims = allocators, scan.claim(body, used, hwm, *_claim_arrays(allocators))
        else:
            found = list(compress(r.SCAN_KEYS.iter_unpack(body), used[:hwm]))
    finally:
        body.release()
        view.release()
    store.dropped += dropped
    for rec in torn:
        _mend(store, rec, r.SEQ.unpack_from(mem, r.record_at(rec))[0], 0, 0, 0, now)
    index.count = 2 * kept
    last = used.rfind(b"\x01", 0, hwm) if hwm else -1
    if claims is None:
        recs = list(compress(range(hwm), used[:hwm]))
        for slot, (slot_recs, slot_found) in _by_slot(recs, found).items():
            _claim(store, slot, slot_recs, slot_found)
    else:
        _claimed(store, *claims)
    _close_pass(store, last)


def _fresh_allocators(store: SessionStore) -> list[tuple[int, PortAllocator]] | None:
    """(slot, allocator) of every bound slot and protocol (``fastpath.CLAIM_PROTOCOLS``'s
    order), when all are untouched ``portalloc`` allocators; else None."""
    allocators = []
    for slot, state in enumerate(store.slots):
        if state is None:
            continue
        if type(state.ports) is not EniPorts:
            return None
        for proto in CLAIM_PROTOCOLS:
            alloc = state.ports.get(proto)
            if alloc is None or alloc.count or alloc.owners is not None:
                return None
            allocators.append((slot, alloc))
    return allocators


def _claim_arrays(allocators: list[tuple[int, PortAllocator]]) -> tuple[array, list]:
    """The slot-and-protocol -> allocator map and every allocator's owners and refs."""
    alloc_of = array("i", [0]) * (r.SLOTS * len(CLAIM_PROTOCOLS))
    arrays = []
    for a, (slot, alloc) in enumerate(allocators):
        alloc_of[slot * len(CLAIM_PROTOCOLS) + a % len(CLAIM_PROTOCOLS)] = a
        arrays.append(alloc._arrays())
    return alloc_of, arrays


def _claimed(store: SessionStore, allocators: list[tuple[int, PortAllocator]],
             claims: tuple[list, list, list, list]) -> None:
    """``scan.claim``'s results taken in: counts, moved endpoints, refused records
    dropped (as ``_claim`` drops them); an allocator no record used is left untouched."""
    records, owned, rejected, moved = claims
    words: list[list[int]] = [[] for _ in allocators]
    for a, word in moved:
        words[a].append(word)
    for (slot, alloc), n, own, alloc_words in zip(allocators, records, owned, words,
                                                   strict=True):
        if not n:
            alloc.owners = alloc.refs = None
            continue
        alloc.count = own
        alloc.moved.fill(alloc_words)
        store.slots[slot].count += n  # type: ignore[union-attr]
    for rec in rejected:
        slot = r.KEY.unpack_from(store.mem, r.record_at(rec) + r.OUT_KEY_AT)[0]
        store.slots[slot].count -= 1  # type: ignore[union-attr]
        _drop(store, rec)


def _close_pass(store: SessionStore, last: int) -> None:
    """The count, the high water mark (past ``last``, the last record the pass kept before
    the claims) and the lowest free record."""
    store.count = store.attached = len(store.index) // 2
    store.hwm = last + 1
    store.low = max(store.used.find(b"\0"), 0)
    r.set_u64(store.mem, r.HWM_AT, store.hwm)


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
            _drop(store, rec)


def _drop(store: SessionStore, rec: int) -> None:
    """A kept record refused its port: out of the index, not live, counted dropped."""
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
