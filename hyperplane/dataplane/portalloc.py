"""Per-ENI port allocation with endpoint-independent mapping (pure).

RFC 4787 / 5382 behaviour as in VPP's NAT44-ED: an inside endpoint (address, port)
keeps one ENI port for every destination while any of its sessions lives
(endpoint-independent mapping); one ENI port never serves two inside endpoints at
once; the original port is kept when free, otherwise the original folded into the
range (``low + (port - low) % size``: outside the range, as in a worker's slice, a
client's walk through its ports stays a walk), then random ports of the same class
(<1024 or >=1024) are tried a bounded number of times before the allocation fails
(counted by the caller as ``out-of-ports``).  ICMP echo identifiers are allocated
the same way in their own space.

Storage is a few bytes a port, not objects: per protocol an array of 65,536
owners (the endpoint as ``ip << 16 | port``, 0 free) and one of reference counts
(the sessions using the port), in anonymous memory (``index.zeros``: the pages of
ports never used cost nothing); an endpoint mapped to a port other
than its own is also in an ``index.EndpointMap``.  ``EniPorts`` is the set of
allocators of one ENI (a dict by protocol), with the two calls the session table
makes: ``claim`` (a session found in the table when a dataplane attaches) and
``free`` (a session freed).
"""

from __future__ import annotations

import random
from operator import itemgetter

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.index import EndpointMap, zeros

ATTEMPTS = 64
SPACE = 65536


def endpoint_of(ip: bytes, port: int) -> int:
    return (int.from_bytes(ip, "big") << 16) | port


class PortAllocator:
    """Ports of one ENI address for one protocol."""

    __slots__ = ("low", "high", "owners", "refs", "moved", "count", "rng")

    def __init__(self, low: int = 1024, high: int = 65535, seed: int | None = None) -> None:
        self.low = low
        self.high = high
        self.owners: memoryview | None = None  # port -> endpoint (0: free), on first use
        self.refs: memoryview | None = None    # port -> sessions using it
        self.moved = EndpointMap(16)      # endpoints mapped to another port than their own
        self.count = 0
        self.rng = random.Random(seed)

    def _arrays(self) -> tuple[memoryview, memoryview]:
        if self.owners is None or self.refs is None:
            self.owners = zeros("Q", SPACE)
            self.refs = zeros("I", SPACE)
        return self.owners, self.refs

    def acquire(self, inside_ip: bytes, inside_port: int) -> int | None:
        """The ENI port for an inside endpoint (one more reference), or None if none is free."""
        owners, refs = self.owners, self.refs
        if owners is None or refs is None:
            owners, refs = self._arrays()
        endpoint = (int.from_bytes(inside_ip, "big") << 16) | inside_port  # endpoint_of
        owner = owners[inside_port]
        if owner == endpoint:
            refs[inside_port] += 1
            return inside_port
        port = self.moved.get(endpoint) if self.moved.count else None
        if port is not None:
            refs[port] += 1
            return port
        if not owner and 0 < inside_port and self.low <= inside_port <= self.high:
            owners[inside_port] = endpoint  # its own port, free and in range (``_pick``'s
            refs[inside_port] = 1           # first choice; ``_own``, inline)
            self.count += 1
            return inside_port
        port = self._pick(owners, inside_port)
        if port is None:
            return None
        self._own(owners, refs, endpoint, inside_port, port)
        return port

    def _own(self, owners: memoryview, refs: memoryview, endpoint: int, inside_port: int,
             port: int) -> None:
        owners[port] = endpoint
        refs[port] = 1
        self.count += 1
        if port != inside_port:
            self.moved.put(endpoint, port)

    def claim(self, inside_ip: bytes, inside_port: int, port: int) -> bool:
        """One more reference to ``port`` for the endpoint (a session read back from the
        table); False if the port already serves another endpoint (the session is dropped)."""
        owners, refs = self._arrays()
        endpoint = endpoint_of(inside_ip, inside_port)
        owner = owners[port]
        if owner == endpoint:
            refs[port] += 1
            return True
        if owner or owners[inside_port] == endpoint or self.moved.get(endpoint) is not None:
            return False  # the port serves another endpoint, or the endpoint another port
        self._own(owners, refs, endpoint, inside_port, port)
        return True

    def claim_keys(self, found: list[tuple]) -> list[bool]:
        """``claim`` for records of this protocol given by their key fields (see
        ``store.Ports.claim_keys``), in one pass (an attach, into an empty allocator)."""
        if self.count:
            return [self.claim(addrs[:4], ports >> 16, ports_in >> 16 if proto == p.PROTO_ICMP
                               else ports_in & 0xFFFF)
                    for _, proto, _, addrs, ports, _, _, _, _, ports_in in found]
        owners, refs = self._arrays()
        from_bytes, seen, moved, claimed = int.from_bytes, set(), [], []
        icmp = bool(found) and found[0][1] == p.PROTO_ICMP
        for _, _, _, addrs, ports, _, _, _, _, ports_in in found:
            inside_port = ports >> 16
            endpoint = ((from_bytes(addrs, "big") >> 32) << 16) | inside_port
            port = ports_in >> 16 if icmp else ports_in & 0xFFFF
            owner = owners[port]
            if owner == endpoint:
                refs[port] += 1
                claimed.append(True)
            elif owner or endpoint in seen:  # the port serves another, or it another port
                claimed.append(False)
            else:
                owners[port] = endpoint
                refs[port] = 1
                seen.add(endpoint)
                if port != inside_port:
                    moved.append((endpoint << 16) | port)
                claimed.append(True)
        self.count = len(seen)
        self.moved.fill(moved)
        return claimed

    def release(self, inside_ip: bytes, inside_port: int) -> None:
        if self.owners is None or self.refs is None:
            return
        endpoint = endpoint_of(inside_ip, inside_port)
        if self.owners[inside_port] == endpoint:
            port = inside_port
        else:
            found = self.moved.get(endpoint)
            if found is None:
                return
            port = found
        self.refs[port] -= 1
        if self.refs[port] <= 0:
            self.refs[port] = 0
            self.owners[port] = 0
            self.count -= 1
            if port != inside_port:
                self.moved.delete(endpoint)

    def owner(self, port: int) -> tuple[bytes, int] | None:
        """The endpoint ``port`` serves, or None if it is free."""
        endpoint = self.owners[port] if self.owners is not None else 0
        return ((endpoint >> 16).to_bytes(4, "big"), endpoint & 0xFFFF) if endpoint else None

    def mapping(self, inside_ip: bytes, inside_port: int) -> tuple[int, int] | None:
        """(ENI port, references) of an endpoint, or None if it has no mapping."""
        if self.owners is None or self.refs is None:
            return None
        endpoint = endpoint_of(inside_ip, inside_port)
        port = inside_port if self.owners[inside_port] == endpoint else self.moved.get(endpoint)
        return None if port is None else (port, self.refs[port])

    def mappings(self) -> dict[tuple[bytes, int], tuple[int, int]]:
        """Every endpoint's (ENI port, references) (for checks; a walk of all ports)."""
        if self.owners is None or self.refs is None:
            return {}
        return {((e >> 16).to_bytes(4, "big"), e & 0xFFFF): (port, self.refs[port])
                for port, e in enumerate(self.owners) if e}

    def _range_for(self, port: int) -> tuple[int, int]:
        """The ports of the same class as ``port``, or the whole range if that class is empty."""
        if port < 1024 and self.low < 1024:
            return max(self.low, 1), min(self.high, 1023)
        if self.high >= 1024:
            return max(self.low, 1024), self.high
        return max(self.low, 1), self.high

    def _pick(self, owners: memoryview, wanted: int) -> int | None:
        low, high = self._range_for(wanted)
        if low <= wanted <= high and not owners[wanted]:
            return wanted
        if self.count >= self.high - self.low + 1:
            return None
        # the inside port folded into the range: a client walking its ports walks these
        # too, so a server does not meet a port it still holds in TIME_WAIT (a worker's
        # slice of the range holds half the ports an environment picks from)
        folded = low + (wanted - low) % (high - low + 1)
        if not owners[folded]:
            return folded
        for _ in range(ATTEMPTS):
            port = self.rng.randint(low, high)
            if not owners[port]:
                return port
        return None

    def __len__(self) -> int:
        return self.count


class EniPorts(dict):
    """The port allocators of one ENI, by protocol (TCP, UDP, ICMP echo identifiers)."""

    def __init__(self, port_range: tuple[int, int] = (1024, 65535)) -> None:
        super().__init__((proto, PortAllocator(*port_range))
                         for proto in (p.PROTO_TCP, p.PROTO_UDP, p.PROTO_ICMP))

    def set_range(self, port_range: tuple[int, int]) -> None:
        """New allocations from ``port_range`` (ports held outside it stay held)."""
        for ports in self.values():
            ports.low, ports.high = port_range

    def claim(self, proto: int, env_ip: bytes, env_port: int, remote_ip: bytes,
              remote_port: int, eni_port: int) -> bool:
        return self[proto].claim(env_ip, env_port, eni_port)

    def claim_keys(self, found: list[tuple]) -> list[bool]:
        """``store.Ports.claim_keys``: each record's claim in its protocol's allocator."""
        protocols = set(map(itemgetter(1), found))
        if len(protocols) == 1:
            ports = self.get(protocols.pop())
            return ports.claim_keys(found) if ports is not None else [False] * len(found)
        by_proto: dict[int, list[int]] = {}
        for i, keys in enumerate(found):
            by_proto.setdefault(keys[1], []).append(i)
        claimed = [False] * len(found)
        for proto, places in by_proto.items():
            ports = self.get(proto)
            if ports is not None:
                got = ports.claim_keys([found[i] for i in places])
                for i, ok in zip(places, got, strict=True):
                    claimed[i] = ok
        return claimed

    def free(self, proto: int, env_ip: bytes, env_port: int, remote_ip: bytes,
             remote_port: int, eni_port: int) -> None:
        self[proto].release(env_ip, env_port)
