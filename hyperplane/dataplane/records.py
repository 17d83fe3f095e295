"""The session table file's layout: header, ENI slots, counters, 128-byte records (pure).

A session table is one file (``/dev/shm/hp-<state id>-<role>.sessions``, see
``table_path``) that outlives the dataplane process: a header, then ``capacity``
fixed-size records.  The file is sparse (created by ``ftruncate``), so only the
pages written count; records are allocated lowest-first, so the pages in use
follow the sessions held.  Everything is little-endian; addresses are kept as the
frame carries them (4 bytes each, network order).

Header (offsets in bytes; ``HEADER`` is its size, 1,122,304 bytes: a whole number of
pages, of which only those written count)::

    0   8  magic b"HPSESS\\0\\1"
    8   4  version (1)
    12  4  record size (128)
    16  8  capacity (records)
    24  8  generation: 1 when created, + 1 at every attach
    32  4  dirty: 1 while a process is attached, 0 after a clean close
    36  4  slots (ENI slot entries, 1,024)
    40  8  hand: the expiry clock hand (a record number)
    48  8  high water mark: records [0, hwm) may be live (raised before a record past it)
    56  8  created (wall-clock seconds)
    64  4  counter names in use
    68  4  the writer's pid
    NAMES_AT      MAX_COUNTERS names of 32 bytes (ASCII, NUL-padded), appended only
    GLOBAL_AT     MAX_COUNTERS u64: the process's global counters, by name index
    SLOT_TABLE_AT SLOTS entries of 64 bytes: u32 bound (1) or free (0), u32 0, 56s ENI id
    SLOT_COUNTERS_AT  SLOTS blocks of MAX_COUNTERS u64: each ENI's counters

Record (``REC``, 128 bytes; ``off`` = ``HEADER + 128 * number``)::

    0   H  seq       odd while the writer updates the record (readers retry)
    2   B  live      1: a session; set last when created, cleared first when deleted
    3   B  flags     bit 0: replied
    4   B  state     TCP state (``conntrack.NONE`` .. ``CLOSE``)
    5   B  known     which TCP fields below hold a value (bits ``KNOWN_*``; else UNKNOWN)
    6   b  wscale_out, 7 b wscale_in   window scale offered (-1 unknown)
    8   d  expires   CLOCK_MONOTONIC seconds (the clock survives the process)
    16  f  timeout   seconds the next refresh adds
    20  H  win_out, 22 H win_in
    24  I  ack_out, 28 ack_in, 32 end_out, 36 end_in, 40 fin_out, 44 fin_in
    48  Q  pkts_out, 56 bytes_out, 64 pkts_in, 72 bytes_in
    --- immutable from here (written once, before ``live``; CRC-checked on attach) ---
    80  16 out key: H slot, B protocol, B 0, 8s env+remote address, I ports word
    96  16 in key:  H slot, B protocol, B 1, 8s remote+ENI address, I ports word
    112 H  d_ip (env -> ENI address), d_ip_in (back), full_out, full_in (the L4
           checksum changes): the ones'-complement changes of both rewrites
    120 I  created (wall-clock seconds)
    124 I  CRC32 of bytes 80..123

The key blocks are the sessions' two lookup keys (``key_bytes``: the ``conntrack``
key tuple prefixed with the ENI slot; ``key_hash`` is what the index hashes), so the
index compares them in place; the environment's, remote and ENI addresses and ports
are read back from them.  Next hops are not stored: they follow from the remote
address and the ENI's subnet (the NAT gateway's inside hop from the inside address).

Validity rules on attach (``rebuild`` applies them): a record whose ``live`` is not 1
is free; a live record must pass its CRC, name a bound slot in both keys, a known
protocol and the right directions, else it is dropped.  An odd ``seq`` is a torn
update (the writer died inside it): the immutable part is intact (the CRC says so), so
the record is kept, its mutable fields mended (``mend``) and ``seq`` made even again.
A TCP record forgets the fields ``stale_tcp_fields`` names.
"""

from __future__ import annotations

import functools
import math
import re
import struct

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.conntrack import CLOSE, ESTABLISHED, STATE_NAMES

MAGIC = b"HPSESS\x00\x01"
VERSION = 1
RECORD = 128
SLOTS = 1024
MAX_COUNTERS = 128
NAME_LEN = 32
SLOT_ENTRY = 64
ID_LEN = 56

HEAD = struct.Struct("<8sIIQQIIQQQII")
NAMES_AT = 128
GLOBAL_AT = NAMES_AT + MAX_COUNTERS * NAME_LEN
SLOT_TABLE_AT = 8192
SLOT_COUNTERS_AT = SLOT_TABLE_AT + SLOTS * SLOT_ENTRY
HEADER = -(-(SLOT_COUNTERS_AT + SLOTS * MAX_COUNTERS * 8) // 4096) * 4096
GENERATION_AT, DIRTY_AT, HAND_AT, HWM_AT, NAMES_COUNT_AT, PID_AT = 24, 32, 40, 48, 64, 68
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")
SLOT_HEAD = struct.Struct("<II56s")

KEY = struct.Struct("<HBB8sI")
REC = struct.Struct("<HBBBBbbdfHHIIIIIIQQQQ" + "HBB8sI" * 2 + "HHHHII")
MUT = struct.Struct("<BBBbbdfHHIIIIIIQQQQ")    # at offset 3: flags .. bytes_in
IMM = struct.Struct("<" + "HBB8sI" * 2 + "HHHHI")  # at 80: keys, deltas, created
BODY = struct.Struct(MUT.format + IMM.format[1:])  # at 3: both, as a new record is written
IMM_IN_BODY = MUT.size  # where the immutable part starts in BODY
SCAN_HEAD = struct.Struct("<HBxBB74x44sI")   # attach: seq, live, state, known, IMM, CRC
SCAN_KEYS = struct.Struct("<80x" + "HBB8sI" * 2 + "16x")  # attach: both keys' fields
SEQ = struct.Struct("<H")
MASK32 = 0xFFFFFFFF
STATE = struct.Struct("<BBBbbdf")  # at 3: flags .. timeout, what a state change writes
STATE_END = 3 + STATE.size  # 20
KNOWN_AT = 5
RECORD_SHIFT = 7
# positions in a tuple unpacked with REC
(F_SEQ, F_LIVE, F_FLAGS, F_STATE, F_KNOWN, F_WSCALE_OUT, F_WSCALE_IN, F_EXPIRES, F_TIMEOUT,
 F_WIN_OUT, F_WIN_IN, F_ACK_OUT, F_ACK_IN, F_END_OUT, F_END_IN, F_FIN_OUT, F_FIN_IN,
 F_PKTS_OUT, F_BYTES_OUT, F_PKTS_IN, F_BYTES_IN, F_SLOT, F_PROTO, F_DIR, F_ADDRS, F_PORTS,
 F_SLOT_IN, F_PROTO_IN, F_DIR_IN, F_ADDRS_IN, F_PORTS_IN, F_D_IP, F_D_IP_IN, F_FULL_OUT,
 F_FULL_IN, F_CREATED, F_CRC) = range(37)
LIVE_AT, MUT_AT, EXPIRES_AT, OUT_KEY_AT, IN_KEY_AT, IMM_AT, CRC_AT = 2, 3, 8, 80, 96, 80, 124
assert RECORD == 1 << RECORD_SHIFT and STATE_END == EXPIRES_AT + 12
KNOWN_ACK_OUT, KNOWN_ACK_IN, KNOWN_END_OUT, KNOWN_END_IN, KNOWN_FIN_OUT, KNOWN_FIN_IN = \
    1, 2, 4, 8, 16, 32
KNOWN_ACKS = KNOWN_ACK_OUT | KNOWN_ACK_IN
KNOWN_ENDS = KNOWN_END_OUT | KNOWN_END_IN
MAX_STATE = CLOSE
MEND_TIMEOUT = 350.0    # a torn record's timeout when its own is not sane (AWS's idle TCP)
MAX_TIMEOUT = 1e7       # seconds: a timeout or expiry further away is not sane
PROTOCOLS = {p.PROTO_ICMP: "icmp", p.PROTO_TCP: "tcp", p.PROTO_UDP: "udp"}
ROLES = ("dataplane", "natgw")
STATE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TableError(Exception):
    """A table file that cannot be used as it is (wrong magic, version, size, capacity)."""


def table_path(state_id: str, role: str) -> str:
    """Where the session table of ``role`` ("dataplane" or "natgw") of a state lives."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if not STATE_ID.match(state_id):
        raise ValueError(f"state id {state_id!r} is not a plain name")
    return f"/dev/shm/hp-{state_id}-{role}.sessions"


def stale_tcp_fields(state: int) -> int:
    """The ``known`` bits an attach clears in a TCP record: the ACKs were written back, not
    through, so they may be old; from ESTABLISHED on, so may the SYN ends."""
    return KNOWN_ACKS | KNOWN_ENDS if state >= ESTABLISHED else KNOWN_ACKS


def file_size(capacity: int) -> int:
    return HEADER + capacity * RECORD


def record_at(number: int) -> int:
    return HEADER + number * RECORD


# -- header -------------------------------------------------------------------------------------
def write_header(mem, capacity: int, created: int, pid: int) -> None:
    """A fresh header: generation 1, dirty (a writer is attached)."""
    mem[0:HEAD.size] = HEAD.pack(MAGIC, VERSION, RECORD, capacity, 1, 1, SLOTS, 0, 0, created,
                                 0, pid)


def read_header(mem, size: int, capacity: int | None = None) -> dict:
    """The header's fields, or ``TableError`` saying why the file is not a usable table."""
    if size < HEADER:
        raise TableError(f"{size} bytes: shorter than a session table's header")
    (magic, version, record, cap, generation, dirty, slots, hand, hwm, created, names,
     pid) = HEAD.unpack_from(mem, 0)
    if magic != MAGIC:
        raise TableError("not a session table (bad magic)")
    if version != VERSION or record != RECORD or slots != SLOTS:
        raise TableError(f"a session table of version {version} (record {record} bytes, "
                         f"{slots} slots); this dataplane reads version {VERSION} "
                         f"({RECORD} bytes, {SLOTS} slots): remove the file to start afresh")
    if capacity is not None and cap != capacity:
        raise TableError(f"a session table of capacity {cap}, not {capacity}: remove the "
                         "file to start afresh, or attach without a capacity")
    if size != file_size(cap):
        raise TableError(f"{size} bytes where capacity {cap} needs {file_size(cap)}")
    if hwm > cap or names > MAX_COUNTERS:
        raise TableError(f"corrupt header (high water mark {hwm}, {names} counter names)")
    return {"capacity": cap, "generation": generation, "dirty": dirty, "hand": hand,
            "hwm": hwm, "created": created, "names": names, "pid": pid}


def mutable_fields(s) -> tuple:
    """The mutable fields of a record (``MUT``) for the session ``s`` (a
    ``conntrack.Session``); a TCP field still UNKNOWN has its ``known`` bit clear."""
    ao, ai, eo, ei, fo, fi = s.ack_out, s.ack_in, s.end_out, s.end_in, s.fin_out, s.fin_in
    known = ((0 if ao < 0 else KNOWN_ACK_OUT) | (0 if ai < 0 else KNOWN_ACK_IN)
             | (0 if eo < 0 else KNOWN_END_OUT) | (0 if ei < 0 else KNOWN_END_IN)
             | (0 if fo < 0 else KNOWN_FIN_OUT) | (0 if fi < 0 else KNOWN_FIN_IN))
    return (bool(s.replied), s.state, known, s.wscale_out, s.wscale_in, s.expires,
            s.timeout, s.win_out, s.win_in, ao & 0xFFFFFFFF, ai & 0xFFFFFFFF, eo & 0xFFFFFFFF,
            ei & 0xFFFFFFFF, fo & 0xFFFFFFFF, fi & 0xFFFFFFFF, s.pkts_out, s.bytes_out,
            s.pkts_in, s.bytes_in)  # (MASK32 and the bits written out: the fastest Python)


# Fields are written as packed bytes copied in (``mem[a:b] = ...``), never with
# ``pack_into``: that zeroes its whole destination before writing the fields one by one,
# so a process killed inside it would leave zeros where neither value was.
def set_u32(mem, at: int, value: int) -> None:
    mem[at:at + 4] = U32.pack(value)


def set_u64(mem, at: int, value: int) -> None:
    mem[at:at + 8] = U64.pack(value)


def set_seq(mem, off: int, value: int) -> None:
    mem[off:off + 2] = SEQ.pack(value & 0xFFFF)


def get_u64(mem, at: int) -> int:
    return U64.unpack_from(mem, at)[0]


# -- ENI slots and counters ---------------------------------------------------------------------
def slot_entry(mem, slot: int) -> str | None:
    """The ENI id bound to ``slot``, or None if the slot is free."""
    bound, _, raw = SLOT_HEAD.unpack_from(mem, SLOT_TABLE_AT + slot * SLOT_ENTRY)
    return raw.rstrip(b"\0").decode("utf-8", "replace") if bound == 1 else None


def bind_slot(mem, slot: int, eni_id: str) -> None:
    """Write the id, then mark the slot bound (a crash in between leaves it free)."""
    raw = eni_id.encode()
    if len(raw) > ID_LEN:
        raise ValueError(f"ENI id {eni_id!r} is longer than {ID_LEN} bytes")
    at = SLOT_TABLE_AT + slot * SLOT_ENTRY
    mem[at + 8:at + SLOT_ENTRY] = raw.ljust(ID_LEN, b"\0")
    set_u32(mem, at, 1)


def free_slot(mem, slot: int) -> None:
    """Mark the slot free first, then clear its id and counters."""
    at = SLOT_TABLE_AT + slot * SLOT_ENTRY
    set_u32(mem, at, 0)
    mem[at + 8:at + SLOT_ENTRY] = bytes(ID_LEN)
    block = SLOT_COUNTERS_AT + slot * MAX_COUNTERS * 8
    mem[block:block + MAX_COUNTERS * 8] = bytes(MAX_COUNTERS * 8)


def counter_names(mem) -> list[str]:
    count = U32.unpack_from(mem, NAMES_COUNT_AT)[0]
    return [bytes(mem[NAMES_AT + i * NAME_LEN:NAMES_AT + (i + 1) * NAME_LEN]).rstrip(b"\0")
            .decode("ascii", "replace") for i in range(min(count, MAX_COUNTERS))]


def add_counter_name(mem, index: int, name: str) -> None:
    """Write a new name at ``index``, then count it (names are only ever appended)."""
    raw = name.encode("ascii")[:NAME_LEN]
    at = NAMES_AT + index * NAME_LEN
    mem[at:at + NAME_LEN] = raw.ljust(NAME_LEN, b"\0")
    set_u32(mem, NAMES_COUNT_AT, index + 1)


def counters_at(slot: int | None) -> int:
    """Where the counter block of ``slot`` (None: the process's global one) starts."""
    return GLOBAL_AT if slot is None else SLOT_COUNTERS_AT + slot * MAX_COUNTERS * 8


def read_counters(mem, slot: int | None, names: list[str]) -> dict[str, int]:
    at = counters_at(slot)
    values = struct.unpack_from(f"<{len(names)}Q", mem, at)
    return {name: value for name, value in zip(names, values, strict=True) if value}


# -- records --------------------------------------------------------------------------------------
def key_bytes(slot: int, key: tuple) -> bytes:
    """The 16-byte key block of a ``conntrack`` key tuple in ``slot``."""
    proto = key[0]
    return KEY.pack(slot, proto & 0xFF, proto >> 8, key[1], key[2])


def key_hash(slot: int, proto: int, addrs: bytes, ports: int) -> int:
    """The index's hash of a key (``proto`` with ``conntrack.INBOUND`` for inside keys)."""
    return hash((slot, proto, addrs, ports))


def mend(fields: tuple, now: float) -> tuple:
    """The mutable fields (``MUT``'s values) a torn record (odd ``seq``) is given: its
    fields may be any mix of the old and new values, so the state and window scales
    are kept only if valid, the timeout only if sane, the expiry is at least ``now`` plus
    the timeout (a torn session lives on rather than vanish), the TCP sequence fields
    are all forgotten (``tcpstate`` is liberal until it re-learns them), and the counters
    are kept as found."""
    proto, state, timeout, expires = (fields[F_PROTO], fields[F_STATE], fields[F_TIMEOUT],
                                      fields[F_EXPIRES])
    if state > MAX_STATE:
        state = ESTABLISHED if proto == p.PROTO_TCP else 0
    if not (math.isfinite(timeout) and 0.0 < timeout <= MAX_TIMEOUT):
        timeout = MEND_TIMEOUT
    if not (math.isfinite(expires) and now + timeout <= expires <= now + MAX_TIMEOUT):
        expires = now + timeout
    wso, wsi = (w if -1 <= w <= 14 else -1 for w in (fields[F_WSCALE_OUT], fields[F_WSCALE_IN]))
    return ((fields[F_FLAGS] & 1, state, 0, wso, wsi, expires, timeout)
            + fields[F_WIN_OUT:F_SLOT])


def eni_port_of(proto: int, ports_in: int) -> int:
    return ports_in >> 16 if proto == p.PROTO_ICMP else ports_in & 0xFFFF


def endpoints(f: tuple) -> tuple:
    """(env ip, env port, remote ip, remote port, ENI ip, ENI port) of a record's fields."""
    addrs, ports = f[F_ADDRS], f[F_PORTS]
    return (addrs[:4], ports >> 16, addrs[4:], ports & 0xFFFF, f[F_ADDRS_IN][4:],
            eni_port_of(f[F_PROTO], f[F_PORTS_IN]))


@functools.lru_cache(maxsize=4096)
def _ip(raw: bytes) -> str:
    return p.ip_to_str(raw)


def describe(fields: tuple, now: float, eni_id: str | None) -> dict:
    """A record's fields as ``conntrack.Session.describe`` shows a session (plus ``eni``)."""
    proto = fields[F_PROTO]
    env_ip, env_port, remote_ip, remote_port, eni_ip, eni_port = endpoints(fields)
    return {
        "protocol": PROTOCOLS.get(proto, str(proto)),
        "state": STATE_NAMES[fields[F_STATE]] if proto == p.PROTO_TCP else None,
        "timeout": max(0, round(fields[F_EXPIRES] - now)),
        "replied": bool(fields[F_FLAGS] & 1),
        "original": {"src": _ip(env_ip), "sport": env_port, "dst": _ip(remote_ip),
                     "dport": remote_port},
        "reply": {"src": _ip(remote_ip), "sport": remote_port, "dst": _ip(eni_ip),
                  "dport": eni_port},
        "packets": {"original": fields[F_PKTS_OUT], "reply": fields[F_PKTS_IN]},
        "bytes": {"original": fields[F_BYTES_OUT], "reply": fields[F_BYTES_IN]},
        "eni": eni_id,
    }
