"""IPv4 fragments: the session each fragment belongs to, held fragments, splitting (pure).

Only the first fragment of a datagram (offset 0) carries the L4 header, so
only it can be looked up like a whole packet.  Its L4 checksum covers the
whole datagram, so the incremental update the pipeline applies to it as for
a whole packet is exactly right, and the other fragments need nothing but
the IPv4 address, TTL and header checksum rewrite.  What they lack is the
session, which this module supplies: a ``FragmentTable`` (one per ENI and
direction-tagged key, so overlapping VPCs never meet) maps
``(direction, source+destination, protocol << 16 | IP id)`` to an ``Entry``
remembering the session found for the first fragment.

Fragments that arrive before their first fragment are *held* (copied) in the
entry and handed back when the first one has been translated, in arrival
order.  Holding is bounded in count (``MAX_HELD`` frames) and bytes
(``MAX_HELD_BYTES``) per table, beyond which the caller drops and counts
``fragment-dropped``; entries are bounded too (``MAX_ENTRIES``).  Every entry
lives at most ``TIMEOUT`` seconds from its first fragment; held frames still
waiting then are dropped and counted ``fragment-timeout``.  An entry goes
away early once its bytes are all accounted for (the last fragment gives the
datagram's size).  Expiry is amortised: ``expire`` pops entries from the head
of a creation-ordered queue only while they are finished or too old, and the
pipeline calls it when it makes an entry and from its timer tick.

``split`` is the other half of being a router: an IPv4 packet larger than the
next link's MTU and without DF is cut into fragments (offset and MF kept
relative to the original, options without the copy flag left out of later
fragments, checksums recomputed).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from hyperplane import packet as p

if TYPE_CHECKING:
    from hyperplane.conntrack import Session

TIMEOUT = 2.0
MAX_ENTRIES = 1024
MAX_HELD = 64
MAX_HELD_BYTES = 256 * 1024

FragKey = tuple[int, bytes, int]


class Entry:
    __slots__ = ("key", "session", "created", "held", "covered", "size", "done")

    def __init__(self, key: FragKey, now: float) -> None:
        self.key = key
        self.session: Session | None = None
        self.created = now
        self.held: list[bytearray] = []
        self.covered = 0
        self.size = -1
        self.done = False


def key_of(direction: int, buf: bytearray) -> FragKey:
    """The table key of the IPv4 fragment in ``buf`` (direction 0 out, 1 in)."""
    ip = p.IP
    return (direction, bytes(buf[ip + 12:ip + 20]),
            (buf[ip + 9] << 16) | (buf[ip + 4] << 8) | buf[ip + 5])


def span(buf: bytearray) -> tuple[int, int, bool]:
    """(byte offset, payload bytes, more fragments) of the IPv4 fragment in ``buf``."""
    ip = p.IP
    offset = (((buf[ip + 6] & 0x1F) << 8) | buf[ip + 7]) << 3
    payload = ((buf[ip + 2] << 8) | buf[ip + 3]) - ((buf[ip] & 0x0F) << 2)
    return offset, payload, bool(buf[ip + 6] & p.IP_MF)


class FragmentTable:
    """Fragment entries of one ENI, bounded in entries, held frames, bytes and time."""

    __slots__ = ("entries", "order", "held_frames", "held_bytes", "timeout", "max_entries",
                 "max_held", "max_held_bytes")

    def __init__(self, timeout: float = TIMEOUT, max_entries: int = MAX_ENTRIES,
                 max_held: int = MAX_HELD, max_held_bytes: int = MAX_HELD_BYTES) -> None:
        self.entries: dict[FragKey, Entry] = {}
        self.order: deque[Entry] = deque()
        self.held_frames = 0
        self.held_bytes = 0
        self.timeout = timeout
        self.max_entries = max_entries
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: FragKey, now: float) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None and entry.created + self.timeout <= now:
            return None  # too old: a fresh datagram reusing the id (expire drops the rest)
        return entry

    def _new(self, key: FragKey, now: float) -> tuple[Entry | None, int]:
        """A new entry (None if the table is full) and the held frames that timed out."""
        timed_out = self.expire(now)
        if len(self.entries) >= self.max_entries:
            return None, timed_out
        entry = self.entries[key] = Entry(key, now)
        self.order.append(entry)
        return entry, timed_out

    def first(self, key: FragKey, session: Session, payload: int, more: bool,
              now: float) -> tuple[list[bytearray], int]:
        """The first fragment was translated with ``session``.

        Returns the held frames to translate and send now, and the number of
        held frames that timed out meanwhile (to be counted).
        """
        timed_out = 0
        entry = self.get(key, now)
        if entry is None:
            entry, timed_out = self._new(key, now)
            if entry is None:
                return [], timed_out
        entry.session = session
        held = entry.held
        if held:
            entry.held = []
            self.held_frames -= len(held)
            self.held_bytes -= sum(len(frame) for frame in held)
        self.account(entry, 0, payload, more)
        return held, timed_out

    def hold(self, key: FragKey, frame: bytearray, offset: int, payload: int, more: bool,
             now: float) -> tuple[bool, int]:
        """Keep a copy of a fragment whose first fragment is not here yet.

        Returns (held, frames timed out meanwhile); not held when a bound is
        reached (the caller counts ``fragment-dropped``).
        """
        timed_out = 0
        if (self.held_frames >= self.max_held
                or self.held_bytes + len(frame) > self.max_held_bytes):
            return False, timed_out
        entry = self.get(key, now)
        if entry is None:
            entry, timed_out = self._new(key, now)
            if entry is None:
                return False, timed_out
        entry.held.append(frame)
        self.held_frames += 1
        self.held_bytes += len(frame)
        self.account(entry, offset, payload, more)
        return True, timed_out

    def account(self, entry: Entry, offset: int, payload: int, more: bool) -> None:
        """Count a fragment's bytes; forget the entry once the datagram is complete."""
        entry.covered += payload
        if not more:
            entry.size = offset + payload
        if entry.size >= 0 and entry.covered >= entry.size and not entry.held:
            self._remove(entry)

    def _remove(self, entry: Entry) -> None:
        if not entry.done:
            entry.done = True
            if self.entries.get(entry.key) is entry:
                del self.entries[entry.key]

    def expire(self, now: float) -> int:
        """Forget finished and too-old entries at the head; the held frames dropped."""
        dropped = 0
        order = self.order
        while order and (order[0].done or order[0].created + self.timeout <= now):
            entry = order.popleft()
            if entry.held:
                dropped += len(entry.held)
                self.held_frames -= len(entry.held)
                self.held_bytes -= sum(len(frame) for frame in entry.held)
                entry.held = []
            self._remove(entry)
        return dropped

    def waiting(self) -> bool:
        """Whether frames are held (the pipeline's timer must run to time them out)."""
        return self.held_frames > 0


def split(buf: bytearray, length: int, mtu: int) -> list[bytearray]:
    """The IPv4 packet in ``buf`` cut into frames of at most ``mtu`` IPv4 bytes each.

    The L4 checksum must be complete (see ``packet.complete_checksum``); the
    virtio header of each piece is empty.  Returns [] if ``mtu`` leaves no
    room for 8 bytes of payload.
    """
    ip = p.IP
    ihl = (buf[ip] & 0x0F) << 2
    total = min((buf[ip + 2] << 8) | buf[ip + 3], length - ip)
    field = (buf[ip + 6] << 8) | buf[ip + 7]
    base, more = field & 0x1FFF, field & 0x2000
    first_header = bytes(buf[ip:ip + ihl])
    later_header = first_header[:20] + _copied_options(first_header[20:])
    payload = bytes(buf[ip + ihl:ip + total])
    eth = bytes(buf[p.ETH:ip])
    frames: list[bytearray] = []
    offset = 0
    while offset < len(payload) or not frames:
        header = first_header if offset == 0 else later_header
        room = (mtu - len(header)) & ~7
        if room < 8:
            return []
        piece = payload[offset:offset + room]
        last = offset + len(piece) >= len(payload)
        frag = (base + (offset >> 3)) | (more if last else 0x2000) | (field & 0x4000)
        head = bytearray(header)
        head[0] = 0x40 | (len(header) >> 2)
        head[2:4] = (len(header) + len(piece)).to_bytes(2, "big")
        head[6:8] = frag.to_bytes(2, "big")
        head[10:12] = b"\0\0"
        head[10:12] = p.checksum(head).to_bytes(2, "big")
        frames.append(bytearray(p.VNET_LEN) + eth + head + piece)
        offset += len(piece)
    return frames


def _copied_options(options: bytes) -> bytes:
    """The options of an IPv4 header that every fragment carries (copy flag set), padded."""
    kept = bytearray()
    at = 0
    while at < len(options):
        kind = options[at]
        if kind == 0:
            break
        if kind == 1:
            at += 1
            continue
        if at + 1 >= len(options) or options[at + 1] < 2:
            break
        size = options[at + 1]
        if kind & 0x80:
            kept += options[at:at + size]
        at += size
    kept += bytes(-len(kept) % 4)
    return bytes(kept)
