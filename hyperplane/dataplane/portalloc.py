"""Per-ENI port allocation with endpoint-independent mapping (pure).

RFC 4787 / 5382 behaviour as in VPP's NAT44-ED: an inside endpoint (address,
port) keeps one ENI port for every destination while any of its sessions
lives (endpoint-independent mapping); one ENI port never serves two inside
endpoints at once; the original port is kept when free, otherwise random
ports of the same class (<1024 or >=1024) are tried a bounded number of
times before the allocation fails (counted by the caller as ``out-of-ports``).
ICMP echo identifiers are allocated the same way in their own space.
"""

from __future__ import annotations

import random

ATTEMPTS = 64


class PortAllocator:
    """Ports of one ENI address for one protocol."""

    __slots__ = ("low", "high", "mappings", "owners", "rng")

    def __init__(self, low: int = 1024, high: int = 65535, seed: int | None = None) -> None:
        self.low = low
        self.high = high
        self.mappings: dict[tuple[bytes, int], list[int]] = {}  # inside -> [port, refs]
        self.owners: dict[int, tuple[bytes, int]] = {}           # port -> inside endpoint
        self.rng = random.Random(seed)

    def acquire(self, inside_ip: bytes, inside_port: int) -> int | None:
        """The ENI port for an inside endpoint (one more reference), or None if none is free."""
        inside = (inside_ip, inside_port)
        mapping = self.mappings.get(inside)
        if mapping is not None:
            mapping[1] += 1
            return mapping[0]
        port = self._pick(inside_port)
        if port is None:
            return None
        self.mappings[inside] = [port, 1]
        self.owners[port] = inside
        return port

    def release(self, inside_ip: bytes, inside_port: int) -> None:
        inside = (inside_ip, inside_port)
        mapping = self.mappings.get(inside)
        if mapping is None:
            return
        mapping[1] -= 1
        if mapping[1] <= 0:
            del self.mappings[inside]
            self.owners.pop(mapping[0], None)

    def _range_for(self, port: int) -> tuple[int, int]:
        """The ports of the same class as ``port``, or the whole range if that class is empty."""
        if port < 1024 and self.low < 1024:
            return max(self.low, 1), min(self.high, 1023)
        if self.high >= 1024:
            return max(self.low, 1024), self.high
        return max(self.low, 1), self.high

    def _pick(self, wanted: int) -> int | None:
        low, high = self._range_for(wanted)
        if low <= wanted <= high and wanted not in self.owners:
            return wanted
        if len(self.owners) >= self.high - self.low + 1:
            return None
        for _ in range(ATTEMPTS):
            port = self.rng.randint(low, high)
            if port not in self.owners:
                return port
        return None

    def __len__(self) -> int:
        return len(self.owners)
