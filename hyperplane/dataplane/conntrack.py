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

Expiry is amortised: a lookup that finds an expired session treats it as a
miss, and each new session examines at most two of the oldest sessions and
frees them if they have expired; nothing sweeps the whole table.

A TCP session also carries its connection state (the state constants are
here, ``NONE`` ... ``CLOSE``) and the little sequence bookkeeping ``tcpstate``
needs (per direction the last ACK and window, the window-scale offer, the end of
the SYN and of the FIN); ``tcpstate`` owns those fields and their timeouts, this
module only stores and describes them.
"""

from __future__ import annotations

from collections import deque

from hyperplane.dataplane import packet

Key = tuple[int, bytes, int]
INBOUND = 0x100  # tags the protocol field of outside (VPC -> environment) keys

# TCP connection states (``tcpstate`` moves a session between them)
NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE = \
    range(9)
STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
               "LAST_ACK", "TIME_WAIT", "CLOSE")


class Session:
    __slots__ = (
        "proto", "out_key", "in_key", "env", "env_ip", "env_port", "eni_port",
        "remote_ip", "remote_port", "nexthop", "out_l4", "in_l4",
        "ip_out", "full_out", "part_out", "ip_in", "full_in", "part_in",
        "timeout", "expires", "replied", "dead",
        "pkts_out", "bytes_out", "pkts_in", "bytes_in",
        # TCP only (see tcpstate)
        "state", "ack_out", "ack_in", "win_out", "win_in", "wscale_out", "wscale_in",
        "end_out", "end_in", "fin_out", "fin_in",
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


def make_session(proto: int, env, env_ip: bytes, env_port: int, remote_ip: bytes,
                 remote_port: int, eni_ip: bytes, eni_port: int, nexthop: bytes,
                 timeout: float, now: float) -> Session:
    """A session with both rewrites precomputed."""
    s = Session()
    s.proto, s.env, s.env_ip, s.env_port = proto, env, env_ip, env_port
    s.remote_ip, s.remote_port, s.eni_port, s.nexthop = remote_ip, remote_port, eni_port, nexthop
    if proto == packet.PROTO_ICMP:
        s.out_key = (proto, env_ip + remote_ip, env_port << 16)
        s.in_key = (proto | INBOUND, remote_ip + eni_ip, eni_port << 16)
    else:
        s.out_key = (proto, env_ip + remote_ip, (env_port << 16) | remote_port)
        s.in_key = (proto | INBOUND, remote_ip + eni_ip, (remote_port << 16) | eni_port)
    s.out_l4 = eni_port.to_bytes(2, "big")
    s.in_l4 = env_port.to_bytes(2, "big")
    d_ip = packet.delta(env_ip, eni_ip)
    d_port = packet.delta(s.in_l4, s.out_l4)
    s.ip_out = packet.add(d_ip, packet.TTL_DELTA)
    s.ip_in = packet.add(packet.delta(eni_ip, env_ip), packet.TTL_DELTA)
    if proto == packet.PROTO_ICMP:  # the ICMP checksum covers no pseudo-header
        s.full_out, s.part_out = d_port, 0
        s.full_in, s.part_in = packet.delta(s.out_l4, s.in_l4), 0
    else:
        s.full_out, s.part_out = packet.add(d_ip, d_port), d_ip
        d_ip_in = packet.delta(eni_ip, env_ip)
        s.full_in = packet.add(d_ip_in, packet.delta(s.out_l4, s.in_l4))
        s.part_in = d_ip_in
    s.timeout = timeout
    s.expires = now + timeout
    s.replied = False
    s.dead = False
    s.state = NONE
    s.pkts_out = s.bytes_out = s.pkts_in = s.bytes_in = 0
    return s


class Table:
    """The sessions of one ENI under both keys, with amortised expiry."""

    __slots__ = ("sessions", "order", "count", "created")

    def __init__(self) -> None:
        self.sessions: dict[Key, Session] = {}
        self.order: deque[Session] = deque()
        self.count = 0
        self.created = 0

    def __len__(self) -> int:
        return self.count

    def add(self, s: Session) -> None:
        self.sessions[s.out_key] = s
        self.sessions[s.in_key] = s
        self.order.append(s)
        self.count += 1
        self.created += 1

    def remove(self, s: Session) -> None:
        if s.dead:
            return
        s.dead = True
        self.count -= 1
        self.sessions.pop(s.out_key, None)
        self.sessions.pop(s.in_key, None)

    def reap(self, now: float, budget: int = 2) -> list[Session]:
        """Free up to ``budget`` expired sessions among the oldest; return them."""
        freed: list[Session] = []
        order = self.order
        for _ in range(min(budget, len(order))):
            s = order[0]
            if s.dead:
                order.popleft()
            elif s.expires < now:
                order.popleft()
                self.remove(s)
                freed.append(s)
            else:
                order.rotate(-1)
        return freed

    def live(self, now: float) -> list[Session]:
        return [s for s in self.order if not s.dead and s.expires >= now]
