"""Connection tracking: sessions under both keys, timeouts, amortised expiry (pure).

As in VPP's NAT44-ED, one ``Session`` holds both directions of a flow and the
rewrite of each, computed once when the session is made (new address and
port, and the checksum changes they cause).  A ``Table`` belongs to one ENI
(so two VPCs with overlapping addresses never meet in one table) and maps
both the inside key (as the environment sends) and the outside key (as the
VPC answers) to the same session.

Keys are ``(protocol, source+destination address bytes, ports word)``; for
ICMP echo the word is ``identifier << 16``.  Outside keys carry ``INBOUND``
in the protocol field, so a frame from an environment can never match a
session through its reply key, whatever addresses it uses.

Where sessions live: in the session store (``store.SessionStore``: fixed-size
records in a shared-memory file that outlives the process, ``records`` has the
layout), each ENI's in its own slot.  A ``Table`` is the ENI's view of its slot:
``sessions`` is a bounded cache of materialised ``Session`` objects under both
keys (the pipeline's fast path is one dict look-up, as before), ``get``/``find``
fall back to the store's index and materialise the record, ``add`` writes the
record (write-through), ``remove`` frees it.  A session knows its record
(``rec``), its table, whether it is still the cached object (``cached``: an
evicted one is written back and replaced by a fresh object on the next look-up)
and the packet count last written back (``synced``).

Expiry is amortised: a lookup that finds an expired session treats it as a
miss, and each new session lets the store's clock hand examine at most two
records and free them if they have expired; nothing sweeps the whole table on
the packet path.

A TCP session also carries its connection state (the state constants are
here, ``NONE`` ... ``CLOSE``) and the little sequence bookkeeping ``tcpstate``
needs (per direction the last ACK and window, the window-scale offer, the end of
the SYN and of the FIN); ``tcpstate`` owns those fields and their timeouts, this
module only stores and describes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hyperplane.dataplane import packet
from hyperplane.dataplane.packet import PROTO_ICMP, TTL_DELTA

if TYPE_CHECKING:
    from hyperplane.dataplane.store import SessionStore

Key = tuple[int, bytes, int]
INBOUND = 0x100  # tags the protocol field of outside (VPC -> environment) keys
UNKNOWN = -1     # a TCP sequence field not learned yet

# TCP connection states (``tcpstate`` moves a session between them)
NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE = \
    range(9)
STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
               "LAST_ACK", "TIME_WAIT", "CLOSE")


class Session:
    __slots__ = (
        "proto", "out_key", "in_key", "env", "env_ip", "env_port", "eni_port",
        "remote_ip", "remote_port", "nexthop",
        "ip_out", "full_out", "part_out", "ip_in", "full_in", "part_in",
        "timeout", "expires", "replied", "dead",
        "pkts_out", "bytes_out", "pkts_in", "bytes_in",
        # TCP only (see tcpstate)
        "state", "ack_out", "ack_in", "win_out", "win_in", "wscale_out", "wscale_in",
        "end_out", "end_in", "fin_out", "fin_in",
        # where it is kept (see the module docstring)
        "rec", "table", "cached", "synced", "deltas",
    )

    def describe(self, now: float) -> dict:
        return {
            "protocol": {1: "icmp", 6: "tcp", 17: "udp"}.get(self.proto, str(self.proto)),
            "state": STATE_NAMES[self.state] if self.proto == packet.PROTO_TCP
            else None,
            "timeout": max(0, round(self.expires - now)),
            "replied": self.replied,
            "original": {"src": packet.ip_to_str(self.env_ip), "sport": self.env_port,
                         "dst": packet.ip_to_str(self.remote_ip), "dport": self.remote_port},
            "reply": {"src": packet.ip_to_str(self.remote_ip), "sport": self.remote_port,
                      "dst": packet.ip_to_str(self._eni_ip()),
                      "dport": self.eni_port},
            "packets": {"original": self.pkts_out, "reply": self.pkts_in},
            "bytes": {"original": self.bytes_out, "reply": self.bytes_in},
        }

    def _eni_ip(self) -> bytes:
        return self.in_key[1][4:8]

    @property
    def out_l4(self) -> bytes:
        """The outside port as the packet carries it (``rewrite.translate`` writes
        ``eni_port`` itself; ICMP errors and the compiled fast path read this)."""
        return self.eni_port.to_bytes(2, "big")

    @property
    def in_l4(self) -> bytes:
        """The inside port as the packet carries it."""
        return self.env_port.to_bytes(2, "big")


_ADDRESS_DELTAS: dict[tuple[bytes, bytes], tuple[int, int, int, int]] = {}
MAX_ADDRESS_DELTAS = 4096  # (environment, ENI) address pairs remembered, then forgotten


def _address_deltas(env_ip: bytes, eni_ip: bytes) -> tuple[int, int, int, int]:
    """The checksum changes of the address rewrite, both ways, then with the TTL's:
    ``packet.delta`` and ``packet.add`` on the words' sums, inline (the same values): each
    sum adds two 16-bit values, so one fold (``packet.fold``'s first step) is exact.
    Remembered by address pair: every session of an environment on an ENI shares them."""
    x = int.from_bytes(env_ip, "big")
    x = (x >> 16) + (x & 0xFFFF)
    env_sum = (x & 0xFFFF) + (x >> 16)  # packet.ones_sum(env_ip)
    x = int.from_bytes(eni_ip, "big")
    x = (x >> 16) + (x & 0xFFFF)
    eni_sum = (x & 0xFFFF) + (x >> 16)
    x = eni_sum + (env_sum ^ 0xFFFF)
    d_ip = (x & 0xFFFF) + (x >> 16)
    x = env_sum + (eni_sum ^ 0xFFFF)
    d_ip_in = (x & 0xFFFF) + (x >> 16)
    x, y = d_ip + TTL_DELTA, d_ip_in + TTL_DELTA
    found = d_ip, d_ip_in, (x & 0xFFFF) + (x >> 16), (y & 0xFFFF) + (y >> 16)
    if len(_ADDRESS_DELTAS) >= MAX_ADDRESS_DELTAS:
        _ADDRESS_DELTAS.clear()
    _ADDRESS_DELTAS[env_ip, eni_ip] = found
    return found


def make_session(proto: int, env, env_ip: bytes, env_port: int, remote_ip: bytes,
                 remote_port: int, eni_ip: bytes, eni_port: int, nexthop: bytes,
                 timeout: float, now: float) -> Session:
    """A session with both rewrites precomputed."""
    s = Session()
    s.proto, s.env, s.env_ip, s.env_port = proto, env, env_ip, env_port
    s.remote_ip, s.remote_port, s.eni_port, s.nexthop = remote_ip, remote_port, eni_port, nexthop
    if proto == PROTO_ICMP:
        s.out_key = (proto, env_ip + remote_ip, env_port << 16)
        s.in_key = (proto | INBOUND, remote_ip + eni_ip, eni_port << 16)
    else:
        s.out_key = (proto, env_ip + remote_ip, (env_port << 16) | remote_port)
        s.in_key = (proto | INBOUND, remote_ip + eni_ip, (remote_port << 16) | eni_port)
    found = _ADDRESS_DELTAS.get((env_ip, eni_ip))
    d_ip, d_ip_in, s.ip_out, s.ip_in = found or _address_deltas(env_ip, eni_ip)
    x = eni_port + (env_port ^ 0xFFFF)  # the ports' (as ``_address_deltas``)
    d_port = (x & 0xFFFF) + (x >> 16)
    x = env_port + (eni_port ^ 0xFFFF)
    d_port_in = (x & 0xFFFF) + (x >> 16)
    if proto == PROTO_ICMP:  # the ICMP checksum covers no pseudo-header
        s.full_out, s.part_out = d_port, 0
        s.full_in, s.part_in = d_port_in, 0
    else:
        x = d_ip + d_port
        s.full_out, s.part_out = (x & 0xFFFF) + (x >> 16), d_ip
        x = d_ip_in + d_port_in
        s.full_in, s.part_in = (x & 0xFFFF) + (x >> 16), d_ip_in
    s.deltas = (d_ip, d_ip_in)  # kept until the store writes the record
    s.rec, s.table, s.cached, s.synced = -1, None, False, 0
    s.timeout = timeout
    s.expires = now + timeout
    s.replied = False
    s.dead = False
    s.state = NONE
    s.pkts_out = s.bytes_out = s.pkts_in = s.bytes_in = 0
    s.ack_out = s.ack_in = s.end_out = s.end_in = s.fin_out = s.fin_in = UNKNOWN
    s.win_out = s.win_in = 0
    s.wscale_out = s.wscale_in = UNKNOWN
    return s


Resolve = Callable[[Session], None]  # sets a materialised session's env and nexthop


class Table:
    """The sessions of one ENI: a cache under both keys over its slot of the store."""

    __slots__ = ("sessions", "store", "slot", "resolve")

    def __init__(self) -> None:
        self.sessions: dict[Key, Session] = {}  # the cached sessions, under both keys
        self.store: SessionStore | None = None
        self.slot = -1
        self.resolve: Resolve = _unresolved

    def bind(self, store: SessionStore, slot: int, resolve: Resolve) -> None:
        self.store, self.slot, self.resolve = store, slot, resolve

    def _store(self) -> SessionStore:
        if self.store is None:
            raise RuntimeError("the table is not bound to a session store (add its ENI "
                               "to a pipeline first)")
        return self.store

    def __len__(self) -> int:
        store = self.store  # ``store.slot_count``, inline: every new flow asks
        state = None if store is None else store.slots[self.slot]
        return 0 if state is None else state.count

    @property
    def created(self) -> int:
        return 0 if self.store is None else self.store.slot_created(self.slot)

    def get(self, key: Key) -> Session | None:
        """The session under ``key`` (maybe expired), from the cache or the store."""
        s = self.sessions.get(key)
        if s is None and self.store is not None:
            s = self.store.find(self, key)
        return s

    def find(self, key: Key) -> Session | None:
        """The session under ``key`` from the store (after a miss in ``sessions``)."""
        return None if self.store is None else self.store.find(self, key)

    def add(self, s: Session) -> None:
        store = self.store
        (self._store() if store is None else store).create(self, s)

    def remove(self, s: Session) -> None:
        if not s.dead:
            self._store().delete(s)

    def reap(self, now: float, budget: int = 2) -> int:
        """Let the store's clock hand look at ``budget`` records (of any ENI) and free the
        expired ones; how many it freed."""
        return self._store().reap(now, budget)

    def live(self, now: float) -> list[Session]:
        """This ENI's unexpired sessions, materialised (for tests and small tables)."""
        return [] if self.store is None else self.store.live(self, now)

    def current(self, s: Session) -> Session:
        """``s`` if it is still the cached object (or dead), else the session now under its
        key (dead if there is none): for references kept across packets (fragments)."""
        if s.cached or s.dead:
            return s
        found = self.get(s.out_key)
        if found is None:
            s.dead = True
            return s
        return found


def _unresolved(s: Session) -> None:
    s.env = None
    s.nexthop = s.remote_ip
