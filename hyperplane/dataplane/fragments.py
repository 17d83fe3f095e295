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
``fragment_dropped``; entries are bounded too (``MAX_ENTRIES``).  Every entry
lives at most ``TIMEOUT`` seconds from its first fragment; held frames still
waiting then are dropped and counted ``fragment_timeout``.  An entry goes
away early once its bytes are all accounted for (the last fragment gives the
datagram's size).  Expiry is amortised: ``expire`` pops entries from the head
of a creation-ordered queue only while they are finished or too old, and the
pipeline calls it when it makes an entry and from its timer tick.

``split`` is the other half of being a router: an IPv4 packet larger than the
next link's MTU and without DF is cut into fragments (offset and MF kept
relative to the original, options without the copy flag left out of later
fragments, checksums recomputed).

``FragmentPath`` is the pipeline's part that uses both (``pipeline.Pipeline``
inherits it): non-first fragments both ways, and sending a packet in pieces.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.hop import Hop
from hyperplane.dataplane.packet import (
    IP,
    IP_DF,
    IP_DST,
    IP_FRAG,
    IP_MF,
    IP_PROTO,
    IP_SRC,
    IP_TOTAL,
    IP_TTL,
    IP_VIHL,
    VNET_GSO_TYPE,
)
from hyperplane.dataplane.rewrite import rewrite_ip

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Session
    from hyperplane.dataplane.ports import EniPort, EnvPort

TIMEOUT = 2.0
MAX_ENTRIES = 1024
MAX_HELD = 64
MAX_HELD_BYTES = 256 * 1024

FragKey = tuple[int, bytes, int]
OUT, IN = 0, 1  # directions: from an environment, from the VPC


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
    return (direction, bytes(buf[p.IP_ADDRS]),
            (buf[IP_PROTO] << 16) | (buf[p.IP_ID] << 8) | buf[p.IP_ID + 1])


def span(buf: bytearray) -> tuple[int, int, bool]:
    """(byte offset, payload bytes, more fragments) of the IPv4 fragment in ``buf``."""
    offset = (((buf[IP_FRAG] & 0x1F) << 8) | buf[IP_FRAG + 1]) << 3
    payload = ((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1]) - ((buf[IP_VIHL] & 0x0F) << 2)
    return offset, payload, bool(buf[IP_FRAG] & IP_MF)


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
        reached (the caller counts ``fragment_dropped``).
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
    ihl = (buf[IP_VIHL] & 0x0F) << 2
    total = min((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1], length - ip)
    field = (buf[IP_FRAG] << 8) | buf[IP_FRAG + 1]
    base, more = field & 0x1FFF, field & 0x2000
    first_header = bytes(buf[ip:ip + ihl])
    later_header = first_header[:p.IPH_MIN] + _copied_options(first_header[p.IPH_MIN:])
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
        head[0] = 0x40 | (len(header) >> 2)  # version 4, header length in words
        head[p.IPH_TOTAL:p.IPH_TOTAL + 2] = (len(header) + len(piece)).to_bytes(2, "big")
        head[p.IPH_FRAG:p.IPH_FRAG + 2] = frag.to_bytes(2, "big")
        head[p.IPH_CSUM:p.IPH_CSUM + 2] = b"\0\0"
        head[p.IPH_CSUM:p.IPH_CSUM + 2] = p.checksum(head).to_bytes(2, "big")
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


class FragmentPath(Hop):
    """Fragments in the pipeline: non-first fragments both ways, and splitting."""

    def fragment_from_env(self, env: EnvPort, eni: EniPort | None, buf: bytearray,
                          length: int, end: int, now: float) -> None:
        """A non-first fragment from an environment."""
        if buf[IP_SRC] != env.ip_bytes:
            self.drop("spoofed", eni)
        elif buf[IP_PROTO] not in p.L4_CSUM:
            self.drop("unknown_protocol", eni)
        elif eni is None:
            self.drop("no_vpc")
        elif buf[IP_DST] == eni.ip_bytes or any(buf[IP_DST] == e.ip_bytes for e in env.spill):
            self.drop("to_hyperplane", eni)
        elif buf[IP_TTL] <= 1:
            self.drop("ttl_expired", eni)  # no ICMP error about a non-first fragment
        else:
            self._fragment(eni, buf, length, end, OUT, now)

    def fragment_from_eni(self, eni: EniPort, buf: bytearray, length: int, end: int,
                          now: float) -> None:
        """A non-first fragment from the VPC."""
        if buf[IP_DST] != eni.ip_bytes:
            self.drop("not_for_eni", eni)
        elif buf[IP_PROTO] not in p.L4_CSUM:
            self.drop("unknown_protocol", eni)
        elif buf[IP_TTL] <= 1:
            self.drop("ttl_expired", eni)
        else:
            self._fragment(eni, buf, length, end, IN, now)

    def _fragment(self, eni: EniPort, buf: bytearray, length: int, end: int, direction: int,
                  now: float) -> None:
        offset, payload, more = span(buf)
        if offset + payload > 0xFFFF - 20:
            self.drop("fragment", eni)
            return
        key = key_of(direction, buf)
        entry = eni.frags.get(key, now)
        if entry is None or entry.session is None:
            held, timed_out = eni.frags.hold(key, bytearray(buf[:length]), offset, payload,
                                             more, now)
            if timed_out:
                self.drop("fragment_timeout", eni, timed_out)
            if not held:
                self.drop("fragment_dropped", eni)
            return
        s = entry.session
        if not s.cached and s.table is not None:  # evicted from the cache meanwhile
            s = entry.session = s.table.current(s)
        if s.dead or s.expires < now:
            self.drop("fragment_dropped", eni)
            return
        eni.frags.account(entry, offset, payload, more)
        self._send_fragment(eni, s, buf, length, end, direction, now)

    def _send_fragment(self, eni: EniPort, s: Session, buf: bytearray, length: int, end: int,
                       direction: int, now: float) -> None:
        if direction == IN:
            rewrite_ip(buf, IP_DST, s.env_ip, s.ip_in)
            s.pkts_in += 1
            s.bytes_in += length - p.ETH
            self.to_env(s, buf, length)
            return
        if s.in_key[1][4:] != eni.ip_bytes:  # tracked in the primary's table, held by a spill
            holder = s.env.holder(s)
            if holder is None:
                self.drop("fragment_dropped", s.env.eni)
                return
            eni = holder
        split = False
        if end - IP > eni.mtu and not buf[VNET_GSO_TYPE]:
            if buf[IP_FRAG] & IP_DF:
                self.drop("mtu_exceeded", eni)
                return
            split = True
        rewrite_ip(buf, IP_SRC, eni.ip_bytes, s.ip_out)
        s.pkts_out += 1
        s.bytes_out += length - p.ETH
        self.to_vpc(eni, s.nexthop, buf, length, now, split)

    def _first_fragment(self, eni: EniPort, key: FragKey, s: Session, buf: bytearray,
                        now: float, inbound: bool) -> None:
        """Remember the session of a first fragment just sent; send what was held for it."""
        payload = ((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1]) - ((buf[IP_VIHL] & 0x0F) << 2)
        held, timed_out = eni.frags.first(key, s, payload, True, now)
        if timed_out:
            self.drop("fragment_timeout", eni, timed_out)
        for frame in held:
            end = IP + ((frame[IP_TOTAL] << 8) | frame[IP_TOTAL + 1])
            self._send_fragment(eni, s, frame, len(frame), end, IN if inbound else OUT, now)

    def send_split(self, eni: EniPort, nexthop: bytes, buf: bytearray, length: int,
                   now: float) -> None:
        """Cut a translated packet to the ENI link's MTU and send each piece."""
        p.complete_checksum(buf, length)
        pieces = split(buf, length, eni.mtu)
        if not pieces:
            self.drop("mtu_exceeded", eni)
            return
        self.counters["fragmented"] += 1
        for piece in pieces:
            self.to_vpc(eni, nexthop, piece, len(piece), now)
