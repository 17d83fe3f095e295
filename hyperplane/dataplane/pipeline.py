"""The Hyperplane packet pipeline: fast path and slow path (pure).

Two kinds of ports face the pipeline (``ports``): ``EnvPort`` (the link of one
execution environment; Hyperplane answers ARP there for the environments'
gateway) and ``EniPort`` (the ENI's link into its subnet; Hyperplane owns the
ENI address, answers ARP for it and resolves next hops).
``Pipeline.receive(port, buf, length, now)`` handles one frame that arrived on a
port, in place in ``buf``.

Fast path: find the session under the frame's key, apply its precomputed
rewrite (``rewrite.translate``: address, port, TTL, incremental checksums), set
the MACs and hand the frame to the other port's ``tx``.  For TCP the fast path
also covers a plain ACK segment of an ESTABLISHED session (it records the ACK and
window); any segment with SYN, FIN or RST, or of a session in another state, goes
through ``tcpstate.track``.  Slow path, only on a miss from an environment: the
policy (``acl.admit``: the ENI's egress rules, nothing toward 169.254/16), the
limits, the ENI port and the new session.  An environment may have spill ENIs
(``EnvPort.spill``, same key as its primary): only on a miss in the primary's
table are theirs looked at, and a new flow goes to the first ENI, primary then
spill, below its connection limit; the ENI holding a session carries its
packets, fragments and ICMP errors.

Around that, Hyperplane behaves as a router hop; the pipeline inherits each part:

* ``icmp.ErrorPath``: the errors it sends to an environment (time exceeded,
  fragmentation needed, unreachable code 13 when a new flow is refused for want
  of ports or ENI capacity), and the translation of ICMP errors about a tracked
  flow, both ways, without touching the session's state or lifetime;
* ``fragments.FragmentPath``: non-first IPv4 fragments follow the session their
  first fragment found (held, bounded, until it comes), and a packet too big for
  the ENI link without DF is fragmented;
* ``arp.Neighbour``: ARP on every link, next-hop resolution and the timers;
* ``tables.TablePath``: the sessions live in a ``store.SessionStore`` (a table file
  that outlives the process, or anonymous memory): the ENIs bound to their slots,
  sessions read back from records re-bound to the living ports, the store's upkeep;
* ``hop.Hop``, the parts' common base: ``drop``, ``to_env`` and ``to_vpc``.

Sessions are written through when made, on a first reply and a TCP timeout change
(``_track``), the rest written back (``store``); a cache miss asks the store first.  A
new flow when the table is full gets unreachable code 13, counted ``table_full``.

Every drop is counted under a named reason (``DROP_REASONS``, snake_case) in
``Pipeline.counters`` and per ENI in ``EniPort.counters``; nothing raises out of
``receive``.  The pipeline does no I/O of its own: ports carry a ``tx`` callable
given by the I/O layer (``loop``), so tests drive it with plain lists.
"""

from __future__ import annotations

from hyperplane.dataplane import acl, tcpstate
from hyperplane.dataplane import packet as p
from hyperplane.dataplane.arp import Neighbour
from hyperplane.dataplane.conntrack import ESTABLISHED, INBOUND, Session, make_session
from hyperplane.dataplane.fragments import IN, OUT, FragmentPath
from hyperplane.dataplane.fragments import key_of as fragment_key
from hyperplane.dataplane.icmp import ErrorPath
from hyperplane.dataplane.packet import (
    ETH_ADDRS,
    ETH_TYPE,
    ICMP_ID,
    IP,
    IP_DF,
    IP_DST,
    IP_FRAG,
    IP_FRAG_LOW,
    IP_MF,
    IP_PROTO,
    IP_SRC,
    IP_SRC_AT,
    IP_TOTAL,
    IP_TTL,
    IP_VIHL,
    L4_MIN,
    TCP_ACK,
    TCP_FLAGS,
    TCP_MIN,
    VNET_GSO_TYPE,
)
from hyperplane.dataplane.portalloc import EniPorts
from hyperplane.dataplane.ports import EniPort, EnvPort
from hyperplane.dataplane.rejects import RejectLog
from hyperplane.dataplane.rewrite import translate
from hyperplane.dataplane.store import CACHE, SessionStore
from hyperplane.dataplane.tables import REAP_AT_LIMIT, Enis, Envs, TablePath
from hyperplane.dataplane.tcpstate import ACK, FAST_MASK, RST
from hyperplane.model.settings import Timeouts

IPS, WORD32, WORD16 = p.IPS, p.WORD32, p.WORD16
IP_PLAIN = IP + p.IPH_MIN  # where an IPv4 header without options ends
ACK_WIN, track = tcpstate.ACK_WIN.unpack_from, tcpstate.track

DROP_REASONS = (
    "truncated", "bad_ip_header", "non_ipv4", "vlan", "fragment", "fragment_dropped",
    "fragment_timeout", "unknown_protocol", "icmp_unsupported", "icmp_bad_checksum",
    "icmp_error_no_session", "spoofed", "no_vpc", "to_hyperplane", "ttl_expired",
    "mtu_exceeded", "no_session", "not_for_eni", "inbound_to_eni", "tcp_rst_out_of_window",
    "out_of_ports", "eni_connection_limit", "table_full", "arp_timeout", "arp_queue_full",
    "tx_full", "tx_error", "arp_ignored", "sg_egress_deny", "env_to_env",
)
EVENTS = ("sessions_created", "sessions_expired", "forwarded", "icmp_errors_sent",
          "fragmented")
VLAN_TYPES = (p.ETH_P_8021Q, p.ETH_P_8021AD)


class Pipeline(Neighbour, ErrorPath, FragmentPath, TablePath, RejectLog):
    """Frames in, frames out, counters; the state of all ENIs and environments.

    ``store``: where the sessions live (default: anonymous memory of ``max_sessions``
    records, ``cache_size`` of them materialised at most).  ``last_session``: the session
    the last frame forwarded through one went by (the compiled fast path makes its flows
    from it without parsing the frame again).
    """

    def __init__(self, timeouts: Timeouts | None = None, max_sessions: int = 1_000_000,
                 store: SessionStore | None = None, cache_size: int = CACHE) -> None:
        self.timeouts = timeouts or Timeouts()
        self.max_sessions = max_sessions
        self.envs: Envs = Envs()
        self.counters: dict[str, int] = dict.fromkeys(DROP_REASONS + EVENTS, 0)
        self.init_tables(store or SessionStore.anonymous(max_sessions, self.new_ports,
                                                         cache_size))
        self.enis: dict[str, EniPort] = Enis(self)
        self.last_session: Session | None = None

    new_ports = staticmethod(EniPorts)  # a slot's port allocators (this role's kind)

    def tick(self, now: float) -> None:
        """Timers (``arp.Neighbour.tick``) and the session table's upkeep."""
        super().tick(now)
        self.maintain(now)

    def session_count(self) -> int:
        return sum(len(e.table) for e in self.enis.values())

    # -- entry -------------------------------------------------------------
    def receive(self, port: EnvPort | EniPort, buf: bytearray, length: int, now: float) -> None:
        if length < IP:
            self.drop("truncated")
            return
        ethertype = (buf[ETH_TYPE] << 8) | buf[ETH_TYPE + 1]
        if isinstance(port, EnvPort):
            if ethertype == p.ETH_P_IP:
                self.from_env(port, buf, length, now)
            elif ethertype == p.ETH_P_ARP:
                self.arp_from_env(port, buf, length)
            else:
                self.drop("vlan" if ethertype in VLAN_TYPES else "non_ipv4")
        elif ethertype == p.ETH_P_IP:
            self.from_eni(port, buf, length, now)
        elif ethertype == p.ETH_P_ARP:
            self.arp_from_eni(port, buf, length, now)
        else:
            self.drop("vlan" if ethertype in VLAN_TYPES else "non_ipv4", port)

    def _ip_end(self, buf: bytearray, length: int, eni: EniPort | None) -> int:
        """Where the IPv4 packet ends in ``buf``, or 0 after counting a bad header."""
        if length < IP + p.IPH_MIN:
            self.drop("truncated", eni)
            return 0
        vihl = buf[IP_VIHL]
        ihl = (vihl & 0x0F) << 2
        end = IP + ((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1])
        if vihl >> 4 != 4 or ihl < 20 or end < IP + ihl or end > length:
            self.drop("bad_ip_header", eni)
            return 0
        return end

    # -- environment -> VPC -------------------------------------------------------
    def _out_key(self, env: EnvPort, eni: EniPort | None, buf: bytearray,
                 l4: int) -> tuple | None:
        """The session key of an outbound packet; ``()`` for an ICMP error; None: counted."""
        if buf[IP_SRC] != env.ip_bytes:
            self.drop("spoofed", eni)
            return None
        proto = buf[IP_PROTO]
        if proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            key: tuple = (proto, IPS(buf, IP_SRC_AT)[0], WORD32(buf, l4)[0])
        elif proto == p.PROTO_ICMP and buf[l4] == p.ICMP_ECHO:
            key = (proto, IPS(buf, IP_SRC_AT)[0], WORD16(buf, l4 + ICMP_ID)[0] << 16)
        elif proto == p.PROTO_ICMP and buf[l4] in p.ICMP_ERRORS:
            key = ()
        else:
            self.drop("icmp_unsupported" if proto == p.PROTO_ICMP else "unknown_protocol",
                      eni)
            return None
        if eni is None:
            self.drop("no_vpc")
            return None
        if buf[IP_DST] == eni.ip_bytes:
            self.drop("to_hyperplane", eni)
            return None
        return key

    def from_env(self, env: EnvPort, buf: bytearray, length: int, now: float) -> None:
        eni = env.eni
        end = (IP + ((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1])  # a plain header, inline
               if length >= IP_PLAIN and buf[IP_VIHL] == 0x45 else 0)
        if not IP_PLAIN <= end <= length:  # else ``_ip_end`` checks it (and counts)
            end = self._ip_end(buf, length, eni)
            if not end:
                return
        if (buf[IP_FRAG] & 0x1F) or buf[IP_FRAG_LOW]:
            self.fragment_from_env(env, eni, buf, length, end, now)
            return
        l4 = IP + ((buf[IP_VIHL] & 0x0F) << 2)
        proto = buf[IP_PROTO]
        if l4 + (TCP_MIN if proto == p.PROTO_TCP else L4_MIN) > end:
            self.drop("truncated", eni)
            return
        if ((proto == p.PROTO_TCP or proto == p.PROTO_UDP) and eni is not None
                and buf[IP_SRC] == env.ip_bytes and buf[IP_DST] != eni.ip_bytes):
            key: tuple | None = (proto, IPS(buf, IP_SRC_AT)[0], WORD32(buf, l4)[0])  # inline
        else:
            key = self._out_key(env, eni, buf, l4)
            if key is None:
                return
            if not key:
                self.icmp_error_from_env(env, buf, length, l4, end, now)
                return
        if buf[IP_TTL] <= 1:
            self.drop("ttl_expired", eni)
            self.answer(env, buf, length, p.ICMP_TIME_EXCEEDED, 0)
            return
        split = False
        if end - IP > eni.mtu and not buf[VNET_GSO_TYPE]:
            split = self._needs_split(env, eni, buf, length, end)
            if split is None:
                return
        s = eni.table.sessions.get(key)
        if s is None or s.expires < now:
            found = self._miss_out(env, eni, buf, length, l4, end, proto, key, s, now)
            if found is None:
                return
            eni, s = found
            if eni is not env.eni:  # a spill ENI's link may be smaller (not with one fabric)
                split = self._needs_split(env, eni, buf, length, end)
                if split is None:
                    return
        elif proto == p.PROTO_TCP:
            flags = buf[l4 + TCP_FLAGS]
            if flags & FAST_MASK == ACK and s.state == ESTABLISHED:
                s.ack_out, s.win_out = ACK_WIN(buf, l4 + TCP_ACK)
                s.expires = now + s.timeout
            elif not self._track(s, buf, l4, end, flags, False, now):
                self.drop("tcp_rst_out_of_window", eni)
                return
        else:
            s.expires = now + s.timeout
        fkey = fragment_key(OUT, buf) if buf[IP_FRAG] & IP_MF else None
        self.last_session = s
        translate(s, buf, l4, proto, length, eni.ip_bytes)
        mac = eni.arp.get(s.nexthop)
        if mac is None or split or fkey is not None:
            self.to_vpc(eni, s.nexthop, buf, length, now, split)
            if fkey is not None:  # tracked in the primary's table (see _send_fragment)
                self._first_fragment(env.eni, fkey, s, buf, now, False)
            return
        buf[ETH_ADDRS] = mac + eni.mac_bytes
        self.counters["forwarded"] += 1
        eni.counters["tx_packets"] += 1
        eni.counters["tx_bytes"] += length - p.VNET_LEN
        eni.tx(memoryview(buf)[:length])

    def _needs_split(self, env: EnvPort, eni: EniPort, buf: bytearray, length: int,
                     end: int) -> bool | None:
        """Whether the packet must be fragmented for ``eni``'s link; None: refused (DF)."""
        if end - IP <= eni.mtu or buf[VNET_GSO_TYPE]:
            return False
        if buf[IP_FRAG] & IP_DF:
            self.drop("mtu_exceeded", eni)
            self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_FRAG_NEEDED, eni.mtu)
            return None
        return True

    def _miss_out(self, env: EnvPort, eni: EniPort, buf: bytearray, length: int, l4: int,
                  end: int, proto: int, key: tuple, stale: Session | None,
                  now: float) -> tuple[EniPort, Session] | None:
        """No live session in the primary's cache: a spill ENI's cached one, the table's, a
        spill ENI's, or a new one."""
        if stale is None:
            found = env.spill_session(key, now, cached=True) if env.spill else None
            if found is not None:
                return self._carry_on(found[0], found[1], buf, l4, end, proto, now)
            stale = eni.table.find(key)
            if stale is not None and stale.expires >= now:
                return self._carry_on(eni, stale, buf, l4, end, proto, now)
        if stale is not None:  # expired: its port back before a new one is chosen
            self._free(eni, stale)
        found = env.spill_session(key, now) if env.spill else None
        if found is None:
            return self.new_session(env, eni, buf, length, l4, end, proto, now)
        return self._carry_on(found[0], found[1], buf, l4, end, proto, now)

    def _carry_on(self, eni: EniPort, s: Session, buf: bytearray, l4: int, end: int,
                  proto: int, now: float) -> tuple[EniPort, Session] | None:
        """An outbound packet of a live session found off the fast path."""
        if proto != p.PROTO_TCP:
            s.expires = now + s.timeout
            return eni, s
        flags = buf[l4 + TCP_FLAGS]
        if flags & FAST_MASK == ACK and s.state == ESTABLISHED:  # as the fast path
            s.ack_out, s.win_out = ACK_WIN(buf, l4 + TCP_ACK)
            s.expires = now + s.timeout
        elif not self._track(s, buf, l4, end, flags, False, now):
            self.drop("tcp_rst_out_of_window", eni)
            return None
        return eni, s

    def _track(self, s: Session, buf: bytearray, l4: int, end: int, flags: int,
               inbound: bool, now: float) -> bool:
        """``tcpstate.track``; written through when ``replied`` or the timeout moved (a
        state keeping its timeout, FIN_WAIT or CLOSE_WAIT, is written back: ``store``)."""
        timeout, replied = s.timeout, s.replied
        ok = track(s, buf, l4, end, flags, inbound, now, self.timeouts)
        if s.timeout != timeout or s.replied != replied:
            self.store.update_state(s)
        return ok

    # -- the slow path: a new flow -------------------------------------------------
    def new_session(self, env: EnvPort, eni: EniPort, buf: bytearray, length: int, l4: int,
                    end: int, proto: int, now: float) -> tuple[EniPort, Session] | None:
        """Policy, ENI and port choice, the new session and its ENI; None: counted.

        The primary ``eni`` carries the flow unless it is at its connection
        limit; then the first of the environment's spill ENIs below its own.
        """
        if env.spill and any(buf[IP_DST] == e.ip_bytes for e in env.spill):
            self.drop("to_hyperplane", eni)
            return None
        if proto == p.PROTO_TCP and buf[l4 + TCP_FLAGS] & RST:
            self.drop("no_session", eni)  # a RST opens nothing
            return None
        if proto == p.PROTO_ICMP:
            env_port, remote_port = WORD16(buf, l4 + ICMP_ID)[0], 0
        else:
            ports = WORD32(buf, l4)[0]
            env_port, remote_port = ports >> 16, ports & 0xFFFF
        carrier = self._carrier(env, eni, buf, length, proto, remote_port, now)
        if carrier is None:
            return None
        eni, store = carrier, self.store
        if store.count >= self.max_sessions or store.count >= store.capacity:  # (``full``)
            self.drop("table_full", eni)
            self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_ADMIN_PROHIBITED)
            return None
        eni_port = eni.ports[proto].acquire(env.ip_bytes, env_port)
        if eni_port is None:
            self.drop("out_of_ports", eni)
            self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_ADMIN_PROHIBITED)
            return None
        remote, t = bytes(buf[IP_DST]), self.timeouts
        timeout = t.tcp_syn if proto == p.PROTO_TCP else t.udp if proto == p.PROTO_UDP else t.icmp
        on_link = int.from_bytes(remote, "big") & eni.mask == eni.net  # ``eni.nexthop``, inline
        s = make_session(proto, env, env.ip_bytes, env_port, remote, remote_port, eni.ip_bytes,
                         eni_port, remote if on_link else eni.gateway_bytes, timeout, now)
        if proto == p.PROTO_TCP:
            tcpstate.start(s, buf, l4, end, buf[l4 + TCP_FLAGS], now, t)
        old = eni.table.get(s.out_key) if eni is not env.eni else None  # a spill's, expired
        if old is not None:
            self._free(eni, old)
        eni.table.add(s)
        self.counters["sessions_created"] += 1
        return eni, s

    def _carrier(self, env: EnvPort, eni: EniPort, buf: bytearray, length: int, proto: int,
                 remote_port: int, now: float) -> EniPort | None:
        """The ENI that admits and carries a new flow (egress rules, connection limit)."""
        refused = acl.admit(eni.egress, buf, proto, remote_port)
        if refused:  # silently, as AWS (the connect times out); kept for flow logs
            self.refuse(refused, eni, buf, length, proto, remote_port)
            return None
        self.reap(now)
        if len(eni.table) + eni.elsewhere < eni.connection_limit:
            return eni
        self.reap(now, REAP_AT_LIMIT)  # the hand also passes the other ENIs' records
        if len(eni.table) + eni.elsewhere < eni.connection_limit:
            return eni
        spill = self._spill_carrier(env, now) if env.spill else None
        if spill is None:
            self.drop("eni_connection_limit", eni)
            self.answer(env, buf, length, p.ICMP_UNREACH, p.UNREACH_ADMIN_PROHIBITED)
            return None
        refused = acl.admit(spill.egress, buf, proto, remote_port)  # same key's rules
        if refused:
            self.refuse(refused, spill, buf, length, proto, remote_port)
            return None
        return spill

    def _spill_carrier(self, env: EnvPort, now: float) -> EniPort | None:
        """The first spill ENI below its connection limit (after reaping), or None."""
        for eni in env.spill:
            if len(eni.table) + eni.elsewhere < eni.connection_limit:
                return eni
        return None

    def _free(self, eni: EniPort, s: Session) -> None:
        """Free an expired session (its record and port reference: ``store``)."""
        if not s.dead:
            eni.table.remove(s)
            self.counters["sessions_expired"] += 1

    # -- VPC -> environment -------------------------------------------------------
    def _in_key(self, eni: EniPort, buf: bytearray, l4: int) -> tuple | None:
        """The session key of an inbound packet; ``()`` for an ICMP error; None: counted."""
        if buf[IP_DST] != eni.ip_bytes:
            self.drop("not_for_eni", eni)
            return None
        proto = buf[IP_PROTO]
        if proto == p.PROTO_TCP or proto == p.PROTO_UDP:
            return (proto | INBOUND, IPS(buf, IP_SRC_AT)[0], WORD32(buf, l4)[0])
        if proto != p.PROTO_ICMP:
            self.drop("unknown_protocol", eni)
            return None
        kind = buf[l4]
        if kind in p.ICMP_ERRORS:
            return ()
        if kind != p.ICMP_ECHO_REPLY:
            self.drop("inbound_to_eni" if kind == p.ICMP_ECHO else "icmp_unsupported", eni)
            return None
        return (proto | INBOUND, IPS(buf, IP_SRC_AT)[0], WORD16(buf, l4 + ICMP_ID)[0] << 16)

    def from_eni(self, eni: EniPort, buf: bytearray, length: int, now: float) -> None:
        eni.counters["rx_packets"] += 1
        eni.counters["rx_bytes"] += length - p.VNET_LEN
        end = (IP + ((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1])  # a plain header, inline
               if length >= IP_PLAIN and buf[IP_VIHL] == 0x45 else 0)
        if not IP_PLAIN <= end <= length:  # else ``_ip_end`` checks it (and counts)
            end = self._ip_end(buf, length, eni)
            if not end:
                return
        if (buf[IP_FRAG] & 0x1F) or buf[IP_FRAG_LOW]:
            self.fragment_from_eni(eni, buf, length, end, now)
            return
        l4 = IP + ((buf[IP_VIHL] & 0x0F) << 2)
        proto = buf[IP_PROTO]
        if l4 + (TCP_MIN if proto == p.PROTO_TCP else L4_MIN) > end:
            self.drop("truncated", eni)
            return
        if (proto == p.PROTO_TCP or proto == p.PROTO_UDP) and buf[IP_DST] == eni.ip_bytes:
            key: tuple | None = (proto | INBOUND, IPS(buf, IP_SRC_AT)[0], WORD32(buf, l4)[0])
        else:  # ``_in_key``'s first case above, inline
            key = self._in_key(eni, buf, l4)
            if key is None:
                return
            if not key:
                self.icmp_error_from_eni(eni, buf, length, l4, end, now)
                return
        s = eni.table.sessions.get(key)
        if s is None or s.expires < now:
            if s is None:
                s = eni.table.find(key)
            if s is None or s.expires < now:
                self.refuse_in(eni, buf, length, l4, proto)  # (``rejects``)
                return
        if buf[IP_TTL] <= 1:
            self.drop("ttl_expired", eni)
            return
        if proto == p.PROTO_TCP:
            flags = buf[l4 + TCP_FLAGS]
            if flags & FAST_MASK == ACK and s.state == ESTABLISHED and s.replied:
                s.ack_in, s.win_in = ACK_WIN(buf, l4 + TCP_ACK)
                s.expires = now + s.timeout
            elif not self._track(s, buf, l4, end, flags, True, now):
                self.drop("tcp_rst_out_of_window", eni)
                return
        else:
            self._refresh_on_reply(s, now)
        fkey = fragment_key(IN, buf) if buf[IP_FRAG] & IP_MF else None
        self.last_session = s
        translate(s, buf, l4, proto, length, None)
        buf[ETH_ADDRS] = s.env.eth_in
        self.counters["forwarded"] += 1
        s.env.tx(memoryview(buf)[:length])
        if fkey is not None:
            self._first_fragment(eni, fkey, s, buf, now, True)

    @staticmethod
    def _opens_flow(buf: bytearray, l4: int, proto: int) -> bool:
        """An unsolicited attempt to open a flow toward the ENI (a SYN, any UDP)."""
        if proto == p.PROTO_TCP:
            return buf[l4 + TCP_FLAGS] & 0x12 == 0x02  # SYN without ACK
        return proto == p.PROTO_UDP

    def _refresh_on_reply(self, s: Session, now: float) -> None:
        if not s.replied:
            s.replied = True
            if s.proto == p.PROTO_UDP:
                s.timeout = self.timeouts.udp_replied
            s.expires = now + s.timeout
            self.store.update_state(s)
            return
        s.expires = now + s.timeout


__all__ = ["DROP_REASONS", "EVENTS", "EniPort", "EnvPort", "Pipeline"]
