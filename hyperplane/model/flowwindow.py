"""Flow log aggregation: cumulative readings to increments, windows, records (pure).

The flow-log collector (``emulator.flowlogd``) reads, every poll, cumulative packet and
byte counts per flow from its sources (the dataplane's sessions, the hosts' nftables
sets) and, already as increments, the dataplane's rejected flows.  This module turns
them into AWS's records:

* ``Reading``: one flow as seen on one interface, in one direction, with one action:
  the 5-tuple as on the wire at the interface (ICMP and other protocols have ports 0,
  as in AWS's records), cumulative ``packets``/``bytes`` (or an increment when
  ``increment``), and the TCP flags seen (AWS's bits, ORed).
* ``Counters.step``: readings to increments: the difference with the previous reading
  of the same flow; a count lower than before is a counter that started again (a
  session made anew, a set element that expired) and counts whole.  An interface read
  for the first time only sets the baseline, so a flow log created later does not
  report what passed before it.
* ``Window``: one flow log's aggregation windows on the emulated clock, aligned to its
  interval (60 or 600 s).  ``add`` accumulates increments per (interface, 5-tuple,
  action) with the first and last time seen; ``close(now)`` hands back every window
  that ended by ``now``: the one with its flows, then, when the clock jumped past
  several, one window spanning the idle stretch (so that ``clock advance 14d`` writes
  one NODATA per interface, not twenty thousand).
* ``records``: a closed window as record values: a record per flow, a NODATA record
  for each covered interface without any.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import netaddr

from hyperplane.model import flowlogs as fl

PROTO_TCP = 6
OPENING = fl.SYN | fl.SYN_ACK  # the SYN and SYN-ACK bits


@dataclass(frozen=True)
class Reading:
    interface_id: str
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    action: str            # ACCEPT | REJECT
    packets: int
    bytes: int
    flags: int = 0         # AWS's tcp-flags bits seen
    increment: bool = False  # already an increment (drained from its source)

    @property
    def key(self) -> tuple:
        return (self.interface_id, self.src, self.dst, self.sport, self.dport, self.proto,
                self.action)


class Counters:
    """The last cumulative reading of every flow, to turn readings into increments."""

    def __init__(self) -> None:
        self.last: dict[tuple, tuple[int, int]] = {}
        self.known: set[str] = set()

    def step(self, readings: Iterable[Reading], covered: set[str],
             unread: frozenset[str] = frozenset()) -> list[Reading]:
        """Increments since the last step; ``covered``: the interfaces read this time
        (those not read the time before only set their baseline); ``unread``: covered
        interfaces whose source could not be read this time (their last readings kept)."""
        fresh = covered - self.known
        covered = covered - unread
        seen: dict[tuple, list[int]] = {}
        out: list[Reading] = []
        for r in readings:
            if r.increment:
                if r.packets and r.interface_id in covered:
                    out.append(r)
                continue
            now = seen.setdefault(r.key, [0, 0, 0])
            now[0] += r.packets
            now[1] += r.bytes
            now[2] |= r.flags
        for key, (packets, count, flags) in seen.items():
            if key[0] in fresh or key[0] not in covered:
                continue  # the baseline of an interface read for the first time
            prev = self.last.get(key)
            if prev is None or packets < prev[0] or count < prev[1]:
                dp, db = packets, count
            else:  # a flow seen before: its opening flags were reported then
                dp, db, flags = packets - prev[0], count - prev[1], flags & ~OPENING
            if dp or db:
                out.append(Reading(*key, dp, db, flags, True))
        kept = {k: v for k, v in self.last.items() if k[0] in unread}
        self.known = covered | (unread & self.known)
        self.last = {**kept, **{k: (v[0], v[1]) for k, v in seen.items()}}
        return out


@dataclass
class Flow:
    packets: int = 0
    bytes: int = 0
    first: int = 0
    last: int = 0
    flags: int = 0


@dataclass
class Closed:
    start: int
    end: int
    flows: dict[tuple, Flow] = field(default_factory=dict)


class Window:
    """One flow log's open window and the flows in it."""

    def __init__(self, interval: int, now: float) -> None:
        self.interval = interval
        self.start = fl.window_start(now, interval)
        self.flows: dict[tuple, Flow] = {}

    def add(self, increments: Iterable[Reading], now: float) -> None:
        t = int(now)
        for r in increments:
            f = self.flows.get(r.key)
            if f is None:
                f = self.flows[r.key] = Flow(first=max(t, self.start))
            f.packets += r.packets
            f.bytes += r.bytes
            f.last = min(t, self.start + self.interval)
            f.flags |= r.flags

    def close(self, now: float) -> list[Closed]:
        end = self.start + self.interval
        if now < end:
            return []
        out = [Closed(self.start, end, self.flows)]
        self.flows = {}
        current = fl.window_start(now, self.interval)
        if current > end:
            out.append(Closed(end, current))
        self.start = current
        return out


def direction(interface: dict, src: str) -> str:
    return "egress" if src == interface.get("ip") else "ingress"


def traffic_path(interface: dict, dst: str) -> int | None:
    """AWS's ``traffic-path`` of an egress flow: 1 within the VPC or through a NAT
    gateway (a resource with an interface in the VPC), 8 through an internet gateway."""
    cidr = interface.get("vpc_cidr")
    if cidr and netaddr.IPAddress(dst) in netaddr.IPNetwork(cidr):
        return 1
    return 8 if interface.get("internet_route") else 1


def flow_values(interface: dict, key: tuple, flow: Flow, fields: tuple[str, ...]) -> dict:
    """The values of one flow's record on ``interface``."""
    _id, src, dst, sport, dport, proto, action = key
    egress = direction(interface, src) == "egress"
    return {**interface["values"], "version": fl.version(fields), "srcaddr": src,
            "dstaddr": dst, "srcport": sport, "dstport": dport, "protocol": proto,
            "packets": flow.packets, "bytes": flow.bytes, "start": flow.first,
            "end": flow.last, "action": action, "log-status": "OK",
            "tcp-flags": flow.flags if proto == PROTO_TCP else 0, "type": "IPv4",
            "pkt-srcaddr": src, "pkt-dstaddr": dst,
            "flow-direction": "egress" if egress else "ingress",
            "traffic-path": traffic_path(interface, dst) if egress else None}


def records(closed: Closed, interfaces: dict[str, dict], fields: tuple[str, ...]) -> list[dict]:
    """A closed window's records: its flows (by interface, then first seen, then as they
    came), then a NODATA
    record for every interface without traffic in it."""
    rows = []
    busy = set()
    for key, flow in sorted(closed.flows.items(), key=lambda kv: (kv[0][0], kv[1].first)):
        interface = interfaces.get(key[0])
        if interface is None:
            continue
        busy.add(key[0])
        rows.append(flow_values(interface, key, flow, fields))
    for interface_id in sorted(set(interfaces) - busy):
        rows.append(fl.nodata_values(interfaces[interface_id]["values"], closed.start,
                                     closed.end, fields))
    return rows


# -- what the sources report, as readings -------------------------------------------------
ETH_HEADER = 14  # the dataplane counts Ethernet frames; AWS's bytes are IP packets'
PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
CLOSING = ("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE")


def session_readings(row: dict) -> list[Reading]:
    """A dataplane session (a ``conntrack`` row: ``original``/``reply`` tuples, packets and
    bytes per direction, ``eni``) as its ENI sees it: egress from the ENI's address and
    port, ingress back to them.  TCP flags: SYN (egress) and SYN-ACK (ingress, once
    replied) while the flow is new to the collector, FIN once it is closing."""
    proto = PROTOCOL_NUMBERS.get(row["protocol"]) or int(row["protocol"])
    reply = row["reply"]
    eni_ip, eni_port = reply["dst"], reply["dport"]
    remote, remote_port = reply["src"], reply["sport"]
    ports = proto in (6, 17)
    fin = fl.FIN if row.get("state") in CLOSING else 0
    out = []
    for direction, src, sport, dst, dport, opening in (
            ("original", eni_ip, eni_port, remote, remote_port, fl.SYN),
            ("reply", remote, remote_port, eni_ip, eni_port,
             fl.SYN_ACK if row.get("replied") else 0)):
        packets = row["packets"][direction]
        if not packets:
            continue
        flags = (opening | fin) if proto == PROTO_TCP else 0
        out.append(Reading(row["eni"], src, dst, sport if ports else 0, dport if ports else 0,
                           proto, "ACCEPT", packets,
                           max(0, row["bytes"][direction] - ETH_HEADER * packets), flags))
    return out


def reject_readings(row: dict) -> list[Reading]:
    """A rejected flow taken from the dataplane (``rejects``): an increment."""
    return [Reading(row["eni"], row["src"], row["dst"], row["sport"], row["dport"],
                    int(row["protocol"]), "REJECT", row["packets"],
                    max(0, row["bytes"] - ETH_HEADER * row["packets"]), 0, True)]
