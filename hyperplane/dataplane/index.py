"""Open-addressing hash tables of 64-bit integers in ``array`` storage (pure).

Session lookups and port mappings must cost a few bytes each, not the hundreds a
``dict`` of tuples costs, so both are arrays of 64-bit words with linear probing,
at most half full (doubling when needed), and backward-shift deletion (no
tombstones).  A word of 0 is an empty place.

* ``KeyIndex``: the derived index of the session table (``store``).  Each live
  session is under both of its keys; a word is ``tag << 32 | ref + 1`` with ``tag``
  the low 31 bits of the key's hash (its home place is ``tag & mask``) and ``ref`` the
  record number times two plus 0 (outside key) or 1 (inside key).  A hit on the tag is
  confirmed by comparing the key block in the table (``records``) with the key.
* ``EndpointMap``: an inside endpoint (address and port, 48 bits) to the ENI port
  it is mapped to (16 bits), one word ``endpoint << 16 | port`` (``portalloc``).

Both are rebuilt from the records when a dataplane attaches to a table, so the
hash (Python's own for key blocks) need not be stable across processes.

The words live in anonymous memory maps (``zeros``: a typed ``memoryview``, as fast
to index as an ``array``): a page counts only once written, and a table replaced by
a larger one gives its memory back to the system at once.
"""

from __future__ import annotations

import mmap
import struct

from hyperplane.dataplane.records import HEADER, OUT_KEY_AT, RECORD, key_bytes

TAG = 0x7FFFFFFF
LOW32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
START = 1024


def zeros(typecode: str, count: int) -> memoryview:
    """``count`` zeroed items of ``typecode`` in anonymous memory (untouched pages free)."""
    size = max(1, struct.calcsize(typecode) * count)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return memoryview(memory).cast(typecode)


class _Table:
    __slots__ = ("slots", "mask", "count")
    typecode = "q"

    def __init__(self, size: int = START) -> None:
        self._resize(max(START, 1 << (max(size, 1) - 1).bit_length()))
        self.count = 0

    def _resize(self, size: int) -> None:
        self.slots = zeros(self.typecode, size)
        self.mask = size - 1

    def __len__(self) -> int:
        return self.count

    def nbytes(self) -> int:
        return len(self.slots) * 8

    def _home(self, word: int) -> int:
        raise NotImplementedError

    def _insert(self, word: int) -> None:
        if 2 * (self.count + 1) > len(self.slots):
            self._grow()
        slots, mask = self.slots, self.mask
        i = self._home(word)
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = word
        self.count += 1

    def _grow(self) -> None:
        old = self.slots
        self._resize(2 * len(old))
        slots, mask, home = self.slots, self.mask, self._home
        for word in old:
            if word:
                i = home(word)
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = word

    def _delete_at(self, i: int) -> None:
        """Empty place ``i`` and shift back the words after it that may move."""
        slots, mask, home = self.slots, self.mask, self._home
        j = i
        while True:
            j = (j + 1) & mask
            word = slots[j]
            if not word:
                break
            h = home(word)
            # the word at j stays unless its home lies cyclically outside (i, j]
            if (i <= j and (h <= i or h > j)) or (i > j and h <= i and h > j):
                slots[i] = word
                i = j
        slots[i] = 0
        self.count -= 1


class KeyIndex(_Table):
    """Session key hash -> record reference (record * 2 + 0 outside / 1 inside key)."""

    __slots__ = ()

    def _home(self, word: int) -> int:
        return (word >> 32) & self.mask

    def add_pair(self, h_out: int, h_in: int, rec: int) -> None:
        """Both keys of record ``rec`` (hashes ``h_out``, ``h_in``): a new session's."""
        if 2 * (self.count + 2) > len(self.slots):
            self._grow()
        slots, mask = self.slots, self.mask
        tag = h_out & TAG
        i = tag & mask
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = (tag << 32) | ((rec << 1) + 1)
        tag = h_in & TAG
        i = tag & mask
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = (tag << 32) | ((rec << 1) + 2)
        self.count += 2

    def remove(self, h: int, ref: int) -> bool:
        word = ((h & TAG) << 32) | (ref + 1)
        slots, mask = self.slots, self.mask
        i = (h & TAG) & mask
        while True:
            found = slots[i]
            if not found:
                return False
            if found == word:
                self._delete_at(i)
                return True
            i = (i + 1) & mask

    def lookup(self, h: int, mem, slot: int, key: tuple) -> int:
        """The reference whose key block in ``mem`` holds ``key`` of ``slot`` (hash ``h``),
        or -1."""
        tag = h & TAG
        slots, mask = self.slots, self.mask
        i = tag & mask
        kb = None
        while True:
            word = slots[i]
            if not word:
                return -1
            if word >> 32 == tag:
                ref = (word & LOW32) - 1
                at = HEADER + (ref >> 1) * RECORD + OUT_KEY_AT + ((ref & 1) << 4)
                if kb is None:
                    kb = key_bytes(slot, key)
                if mem[at:at + 16] == kb:
                    return ref
            i = (i + 1) & mask


class EndpointMap(_Table):
    """Inside endpoint (``ip << 16 | port``, 48 bits) -> ENI port."""

    __slots__ = ()
    typecode = "Q"

    def _home(self, word: int) -> int:
        return (((word >> 16) * GOLDEN) >> 40) & self.mask

    def _find(self, endpoint: int) -> int:
        slots, mask = self.slots, self.mask
        i = ((endpoint * GOLDEN) >> 40) & mask
        while True:
            word = slots[i]
            if not word:
                return -1
            if word >> 16 == endpoint:
                return i
            i = (i + 1) & mask

    def get(self, endpoint: int) -> int | None:
        i = self._find(endpoint)
        return None if i < 0 else self.slots[i] & 0xFFFF

    def put(self, endpoint: int, port: int) -> None:
        i = self._find(endpoint)
        if i >= 0:
            self.slots[i] = (endpoint << 16) | port
        else:
            self._insert((endpoint << 16) | port)

    def fill(self, words: list[int]) -> None:
        """Add many new mappings (``endpoint << 16 | port`` each) at once (an attach)."""
        if not self.count and 2 * len(words) > len(self.slots):
            self._resize(1 << (2 * len(words) - 1).bit_length())
        while 2 * (self.count + len(words)) > len(self.slots):
            self._grow()
        slots, mask = self.slots, self.mask
        for word in words:
            i = (((word >> 16) * GOLDEN) >> 40) & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = word
        self.count += len(words)

    def delete(self, endpoint: int) -> None:
        i = self._find(endpoint)
        if i >= 0:
            self._delete_at(i)

    def items(self) -> list[tuple[int, int]]:
        return [(word >> 16, word & 0xFFFF) for word in self.slots if word]
