"""Security-group egress rules as the dataplane evaluates them (pure).

The controller ships every ENI's egress rules in the snapshot as plain data
(``policy.secgroups.compile_rules``: protocol, ports, peer CIDRs with group peers
already resolved to their members' addresses, and a label naming the rule).
``RuleSet`` compiles such a list once per snapshot; ``admit`` is the policy for a
new flow from an environment, evaluated only on a session miss, never on the fast
path.  ``policy.reachability`` uses the same ``RuleSet`` to name the rule set that
would deny a flow, so ``reach`` and the packets agree.
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperplane.dataplane.packet import IP_DST_AT

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "all": 0}


def ip_int(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def _net(cidr: str) -> tuple[int, int]:
    address, _, prefix = cidr.partition("/")
    bits = int(prefix or 32)
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return ip_int(address) & mask, mask


class RuleSet:
    """Compiled allow rules of one direction: ``match`` names the first rule that allows.

    Exact (/32) peers sit in a set, wider ones in a short list; evaluation costs one
    pass over the rules, and runs only when a new flow is opened.
    """

    __slots__ = ("rules",)

    def __init__(self, compiled: Iterable[dict]) -> None:
        rules = []
        for r in compiled:
            lo, hi = r["ports"] if r.get("ports") else (0, 65535)
            exact, nets = set(), []
            for cidr in r["cidrs"]:
                net, mask = _net(cidr)
                if mask == 0xFFFFFFFF:
                    exact.add(net)
                else:
                    nets.append((net, mask))
            rules.append((PROTOCOLS[r["protocol"]], lo, hi, frozenset(exact), tuple(nets),
                          r.get("rule", "")))
        self.rules = tuple(rules)

    def match(self, proto: int, addr: int, port: int) -> str | None:
        """The label of the first rule allowing (proto, peer address, port), or None."""
        for r_proto, lo, hi, exact, nets, label in self.rules:
            if r_proto and r_proto != proto:
                continue
            if r_proto in (6, 17) and not lo <= port <= hi:
                continue
            if addr in exact or any(addr & mask == net for net, mask in nets):
                return label
        return None

    def allows(self, proto: int, addr: bytes, port: int) -> bool:
        return self.match(proto, int.from_bytes(addr, "big"), port) is not None

    def __len__(self) -> int:
        return len(self.rules)


def admit(egress: RuleSet | None, buf: bytearray, proto: int, port: int) -> str | None:
    """The policy for a new flow from an environment (destination in ``buf``).

    Returns the drop reason, or None to admit: nothing may go to 169.254.0.0/16 (another
    environment: ``env_to_env``; any other Hyperplane address: ``to_hyperplane``), and
    the flow must match an egress rule of the ENI's groups (``sg_egress_deny``).
    """
    d = IP_DST_AT
    if buf[d] == 169 and buf[d + 1] == 254:
        return "env_to_env" if buf[d + 2] & 0x80 else "to_hyperplane"  # 169.254.128/17: envs
    if egress is not None and egress.match(
            proto, int.from_bytes(buf[d:d + 4], "big"), port) is None:
        return "sg_egress_deny"
    return None
