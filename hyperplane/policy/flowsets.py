"""Flow accounting on customer hosts for VPC Flow Logs, as nftables (pure).

A host's interface is logged from its own kernel: per flow, the packets its security
groups let through and those they drop.  Both are nftables dynamic sets whose elements
are flows with a counter each (``update @set { key counter }``), read back as JSON:

* accepted: table ``ip hp_fl`` (``render_accounting``), never replaced while the host
  lives: two base chains at priority ``filter + 10``, after ``hp_sg``'s (priority
  ``filter``), so that they see only what it accepted (a host without groups: all);
  sets ``acc`` (TCP and UDP: addresses, protocol, ports) and ``acc_o`` (other
  protocols: addresses and protocol; ports 0 as in AWS's records);
* dropped: sets ``rej`` and ``rej_o`` of ``hp_sg`` itself (``hostfw``), updated by the
  rules just before its two ``counter name ... drop`` rules (``reject_lines``).  They
  start again empty when the groups change (the table is replaced): the collector
  counts a counter lower than before as one that started again.

An update rule carries no verdict, so a full set (``SET_SIZE`` flows; elements expire
after ``TIMEOUT`` without packets) only stops the accounting of new flows, never a
packet.  ``readings`` turns ``nft -j list table`` output into ``flowwindow.Reading``
values for one interface.
"""

from __future__ import annotations

from hyperplane.model.flowwindow import Reading

TABLE = "hp_fl"
PORTS = "ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service"
OTHER = "ipv4_addr . ipv4_addr . inet_proto"
SET_SIZE = 65536
TIMEOUT = "30m"
ACTIONS = {"acc": "ACCEPT", "rej": "REJECT"}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}


def set_lines(name: str) -> list[str]:
    """The two sets of one action (``acc`` or ``rej``)."""
    lines = []
    for suffix, kind in (("", PORTS), ("_o", OTHER)):
        lines += [f"\tset {name}{suffix} {{", f"\t\ttype {kind}", f"\t\tsize {SET_SIZE}",
                  "\t\tflags dynamic,timeout", f"\t\ttimeout {TIMEOUT}", "\t}"]
    return lines


def update_lines(name: str) -> list[str]:
    """The rules that count a packet into the sets of one action (no verdict)."""
    return [f"meta l4proto {{ tcp, udp }} update @{name} "
            "{ ip saddr . ip daddr . meta l4proto . th sport . th dport counter }",
            f"meta l4proto != {{ tcp, udp }} update @{name}_o "
            "{ ip saddr . ip daddr . meta l4proto counter }"]


def render_accounting() -> str:
    """The script that makes (or makes again, empty) the accepted-flows table."""
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{",
             *set_lines("acc")]
    for chain, hook, iface in (("input", "input", "iif"), ("output", "output", "oif")):
        lines += [f"\tchain {chain} {{",
                  f"\t\ttype filter hook {hook} priority filter + 10; policy accept;",
                  f'\t\t{iface} "lo" accept',
                  *(f"\t\t{rule}" for rule in update_lines("acc")), "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _proto(value: object) -> int:
    if isinstance(value, int):
        return value
    return PROTOCOLS.get(str(value), 0) if not str(value).isdigit() else int(str(value))


def _elements(listing: dict) -> list[tuple[str, dict]]:
    """(set name, element) of every element with a counter in an ``nft -j`` listing."""
    out = []
    for item in listing.get("nftables", []):
        found = item.get("set")
        if not found:
            continue
        for elem in found.get("elem") or []:
            body = elem.get("elem", elem) if isinstance(elem, dict) else None
            if isinstance(body, dict) and "counter" in body:
                out.append((found.get("name", ""), body))
    return out


def readings(listing: dict, interface_id: str) -> list[Reading]:
    """The flows counted in the sets of one host's listing (``hp_fl`` or ``hp_sg``)."""
    rows = []
    for name, body in _elements(listing):
        action = ACTIONS.get(name.removesuffix("_o"))
        value = body.get("val")
        parts = value.get("concat") if isinstance(value, dict) else None
        if action is None or not parts or len(parts) not in (3, 5):
            continue
        sport, dport = (int(parts[3]), int(parts[4])) if len(parts) == 5 else (0, 0)
        counter = body["counter"]
        rows.append(Reading(interface_id, str(parts[0]), str(parts[1]), sport, dport,
                            _proto(parts[2]), action, int(counter.get("packets", 0)),
                            int(counter.get("bytes", 0))))
    return rows
