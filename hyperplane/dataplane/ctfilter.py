"""Selecting sessions as conntrack-tools does: filters, ASSURED, deletion (pure).

A ``Filter`` is what ``hyperplane conntrack`` takes to list (``-L``), follow (``-E``),
delete (``-D``) or flush (``-F``, the empty filter) sessions, with conntrack's
meaning: every given field must match, and the addresses and ports are those of the
*original* direction (the environment's, or the inside host's for a NAT gateway, to
the remote side), ``--src``/``--dst`` as an address or a CIDR, ``--proto`` a name
(``tcp``, ``udp``, ``icmp``) or a number, ``--state`` one or more TCP states (so it
matches TCP sessions only), ``--eni`` the ENI (or NAT gateway) holding the session.
For ICMP echo, ``sport`` is the identifier and ``dport`` 0, as in the rows.

``Filter.parse`` takes the values as the CLI and the control socket carry them
(strings or numbers; ``to_wire`` is the other way) and raises ``ValueError`` naming
the option; ``matches`` tests one row (``records.describe``'s dict).

``assured(row)`` is conntrack's ``[ASSURED]`` flag, derived from what a row holds: a
TCP session that saw a reply and got past the handshake (ESTABLISHED or a later
state), a UDP session that saw a reply and more than one packet out (a stream); ICMP
never is (as in the kernel).

``delete(pipeline, flt, now)`` is the dataplane's side of ``--delete``/``--flush``:
the process that writes the table frees the matching unexpired sessions itself
(``store.SessionStore.delete_matching``: record, index, port reference, cached
object), counts ``sessions_deleted`` (global and per ENI) and returns the rows it
freed.  The next packet of a deleted flow is a packet without a session: see
``docs/observability.md`` (Connection tracking events) for what each role does then.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from hyperplane.dataplane import records as r
from hyperplane.dataplane.conntrack import STATE_NAMES

PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
PROTOCOL_NAMES = {n: name for name, n in PROTOCOL_NUMBERS.items()}
TCP_STATES = STATE_NAMES[1:]  # NONE is never shown
ASSURED_STATES = frozenset(STATE_NAMES[STATE_NAMES.index("ESTABLISHED"):])
Network = ipaddress.IPv4Network


@dataclass(frozen=True)
class Filter:
    """The sessions a conntrack command applies to (None: any)."""

    src: Network | None = None
    dst: Network | None = None
    sport: int | None = None
    dport: int | None = None
    proto: str | None = None
    states: frozenset[str] | None = None
    eni: str | None = None

    @classmethod
    def parse(cls, values: dict[str, Any] | None) -> Filter:
        """A filter from option values (``src dst sport dport proto state eni``)."""
        values = {k: v for k, v in (values or {}).items() if v not in (None, "", ())}
        unknown = set(values) - {"src", "dst", "sport", "dport", "proto", "state", "eni"}
        if unknown:
            raise ValueError(f"--{sorted(unknown)[0]}: not a conntrack filter")
        return cls(_network("src", values.get("src")), _network("dst", values.get("dst")),
                   _port("sport", values.get("sport")), _port("dport", values.get("dport")),
                   _proto(values.get("proto")), _states(values.get("state")),
                   str(values["eni"]) if "eni" in values else None)

    def to_wire(self) -> dict[str, Any]:
        """The filter as ``parse`` takes it back (for the control socket)."""
        out: dict[str, Any] = {}
        for name in ("src", "dst"):
            net = getattr(self, name)
            if net is not None:
                out[name] = str(net)
        for name in ("sport", "dport", "proto", "eni"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.states is not None:
            out["state"] = sorted(self.states)
        return out

    def is_empty(self) -> bool:
        return not self.to_wire()

    def matches(self, row: dict) -> bool:
        original = row["original"]
        if self.proto is not None and row["protocol"] != self.proto:
            return False
        if self.states is not None and row.get("state") not in self.states:
            return False
        if self.eni is not None and row.get("eni") != self.eni:
            return False
        if self.sport is not None and original["sport"] != self.sport:
            return False
        if self.dport is not None and original["dport"] != self.dport:
            return False
        if self.src is not None and ipaddress.IPv4Address(original["src"]) not in self.src:
            return False
        return self.dst is None or ipaddress.IPv4Address(original["dst"]) in self.dst


def _network(name: str, value: object) -> Network | None:
    if value is None:
        return None
    try:
        return ipaddress.IPv4Network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"--{name}: {value!r} is not an IPv4 address or CIDR") from None


def _port(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        port = int(str(value))
    except ValueError:
        raise ValueError(f"--{name}: {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--{name}: {port} is not a port number (0-65535)")
    return port


def _proto(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    if text.isdigit() and int(text) in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[int(text)]
    if text in PROTOCOL_NUMBERS:
        return text
    raise ValueError(f"--proto: {value!r} is not tcp, udp or icmp (or 6, 17, 1)")


def _states(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple, set, frozenset)) else str(value).split(",")
    states = frozenset(str(s).strip().upper() for s in items if str(s).strip())
    wrong = sorted(states - set(TCP_STATES))
    if wrong or not states:
        raise ValueError(f"--state: {wrong[0] if wrong else value!r} is not a TCP state "
                         f"(known: {', '.join(TCP_STATES)})")
    return states


def assured(row: dict) -> bool:
    """conntrack's ``[ASSURED]``: see the module docstring."""
    if not row.get("replied"):
        return False
    if row["protocol"] == "tcp":
        return row.get("state") in ASSURED_STATES
    return row["protocol"] == "udp" and row["packets"]["original"] >= 2


def delete(pipeline: Any, flt: Filter, now: float) -> list[dict]:
    """Free the unexpired sessions ``flt`` matches (by the table's writer); their rows."""
    freed: list[dict] = []

    def match(fields: tuple, eni_id: str | None) -> bool:
        row = r.describe(fields, now, eni_id)
        if flt.matches(row):
            freed.append(row)
            return True
        return False

    pipeline.store.delete_matching(match, now)
    counters = pipeline.counters
    counters["sessions_deleted"] = counters.get("sessions_deleted", 0) + len(freed)
    for row in freed:
        eni = pipeline.enis.get(row["eni"])
        if eni is not None:
            eni.counters["sessions_deleted"] = eni.counters.get("sessions_deleted", 0) + 1
    return freed
