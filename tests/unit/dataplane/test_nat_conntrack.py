"""Port allocation, the session table and session lifetimes (through the pipeline)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.conntrack import INBOUND, Table, make_session
from hyperplane.dataplane.portalloc import EniPorts, PortAllocator
from hyperplane.dataplane.store import SessionStore
from hyperplane.model.settings import Timeouts
from tests.unit.dataplane.frames import (
    DB_IP,
    ENI_IP,
    ENV_IPS,
    ENV_MACS,
    GW_IP,
    GW_MACS,
    Rig,
    assert_checksums_valid,
    drop_delta,
    drops,
    eni_port_of,
    env_frame,
    ip_of,
    make_rig,
    only_session,
    parse,
    send,
    send_and_assert_no_replies,
    send_and_expect,
    syn,
    synack,
    tcp_in,
    tcp_out,
    udp_back,
    udp_out,
)

A = bytes([169, 254, 128, 1])
B = bytes([169, 254, 128, 2])
REMOTE = bytes([10, 0, 1, 10])
ENI = bytes([10, 0, 1, 4])


# -- PortAllocator ----------------------------------------------------------------------------


def test_original_port_is_kept_when_free() -> None:
    ports = PortAllocator(seed=1)
    assert ports.acquire(A, 40000) == 40000
    other = ports.acquire(B, 40000)
    assert other is not None and other != 40000 and 1024 <= other <= 65535
    assert len(ports) == 2


def test_same_endpoint_shares_its_port_and_counts_references() -> None:
    ports = PortAllocator(seed=1)
    assert ports.acquire(A, 40000) == ports.acquire(A, 40000) == 40000
    ports.release(A, 40000)
    assert ports.owner(40000) == (A, 40000) and ports.mapping(A, 40000) == (40000, 1)
    ports.release(A, 40000)
    assert ports.owner(40000) is None and len(ports) == 0
    assert ports.acquire(B, 40000) == 40000


def test_release_of_an_unknown_endpoint_is_harmless() -> None:
    ports = PortAllocator(seed=1)
    ports.release(A, 1234)
    assert len(ports) == 0


def test_low_ports_stay_low_when_the_range_allows_them() -> None:
    ports = PortAllocator(1, 65535, seed=3)
    assert ports.acquire(A, 80) == 80
    for endpoint in range(50):
        port = ports.acquire(bytes([10, 9, 0, endpoint]), 80)
        assert port is not None and 1 <= port < 1024
    high = ports.acquire(B, 80 + 40000)
    assert high == 40080


def test_low_ports_are_moved_up_when_the_range_starts_at_1024() -> None:
    ports = PortAllocator(seed=3)
    port = ports.acquire(A, 80)
    assert port is not None and port >= 1024


def test_exhaustion_returns_none_and_release_frees_a_port() -> None:
    ports = PortAllocator(2000, 2003, seed=5)
    got = [ports.acquire(bytes([10, 0, 0, i]), 2000) for i in range(4)]
    assert sorted(got) == [2000, 2001, 2002, 2003]
    assert ports.acquire(bytes([10, 0, 0, 9]), 2000) is None
    ports.release(bytes([10, 0, 0, 2]), 2000)
    assert ports.acquire(bytes([10, 0, 0, 9]), 2000) == got[2]


def test_a_range_below_1024_serves_high_source_ports() -> None:
    ports = PortAllocator(1, 1023, seed=1)
    port = ports.acquire(A, 40000)
    assert port is not None and 1 <= port <= 1023


@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(2000, 2010)),
                    max_size=60))
def test_a_port_never_serves_two_endpoints(ops) -> None:
    ports = PortAllocator(2000, 2007, seed=0)
    assert ports.mappings() == {}
    live: dict[tuple[bytes, int], list[int]] = {}
    for acquire, host, port in ops:
        endpoint = (bytes([10, 0, 0, host]), port)
        if acquire:
            full = len(live) == 8
            got = ports.acquire(*endpoint)
            if endpoint in live:
                assert got == live[endpoint][0]
            elif full:
                assert got is None
            if got is None:  # full, or (rarely, by design) 64 random misses
                assert endpoint not in live
                continue
            assert 2000 <= got <= 2007
            live.setdefault(endpoint, [got, 0])[1] += 1
            assert live[endpoint][0] == got
        elif endpoint in live:
            ports.release(*endpoint)
            live[endpoint][1] -= 1
            if not live[endpoint][1]:
                del live[endpoint]
        owners = [v[0] for v in live.values()]
        assert len(owners) == len(set(owners)) == len(ports)
        for (ip, port), (eni_port, count) in live.items():
            assert ports.mapping(ip, port) == (eni_port, count)


# -- sessions and the table ---------------------------------------------------------------


def session(env_ip: bytes = A, env_port: int = 40000, eni_port: int = 40000, now: float = 0.0,
            timeout: float = 30.0, proto: int = p.PROTO_TCP):
    return make_session(proto, None, env_ip, env_port, REMOTE, 8080, ENI, eni_port, REMOTE,
                        timeout, now)


def bound_table(capacity: int = 64, cache_size: int = 2048) -> tuple[SessionStore, Table]:
    """A table bound to slot 0 of a store in anonymous memory."""
    store = SessionStore.anonymous(capacity, EniPorts, cache_size)
    table = Table()
    store.bind("eni-1", table, lambda s: None)
    return store, table


def test_session_is_found_under_both_keys() -> None:
    store, table = bound_table()
    s = session(eni_port=1500)
    table.add(s)
    assert s.out_key == (p.PROTO_TCP, A + REMOTE, (40000 << 16) | 8080)
    assert s.in_key == (p.PROTO_TCP | INBOUND, REMOTE + ENI, (8080 << 16) | 1500)
    assert table.sessions[s.out_key] is table.sessions[s.in_key] is s and len(table) == 1
    assert table.find(s.out_key) is table.find(s.in_key) is s  # the index has both keys
    table.remove(s)
    table.remove(s)  # twice is harmless
    assert table.sessions == {} and len(table) == 0 and store.count == 0
    assert table.find(s.out_key) is None and table.find(s.in_key) is None


def test_icmp_session_keys_use_the_identifier_only() -> None:
    s = session(env_port=7, eni_port=3000, proto=p.PROTO_ICMP)
    assert s.out_key == (p.PROTO_ICMP, A + REMOTE, 7 << 16)
    assert s.in_key == (p.PROTO_ICMP | INBOUND, REMOTE + ENI, 3000 << 16)


@given(env_port=st.integers(1, 65535), eni_port=st.integers(1, 65535),
       env_ip=st.binary(min_size=4, max_size=4), payload=st.binary(max_size=20))
def test_precomputed_outbound_rewrite_matches_scapy(env_port, eni_port, env_ip, payload) -> None:
    s = session(env_ip=env_ip, env_port=env_port, eni_port=eni_port)

    def segment(src: bytes, sport: int, ttl: int) -> IP:
        return IP(bytes(IP(src=p.ip_to_str(src), dst=DB_IP, ttl=ttl)
                        / TCP(sport=sport, dport=8080) / payload))

    before, after = segment(env_ip, env_port, 64), segment(ENI, eni_port, 63)
    assert p.update_full(before.chksum, s.ip_out) == after.chksum
    assert p.update_full(before[TCP].chksum, s.full_out) == after[TCP].chksum


def test_reap_frees_at_most_budget_expired_sessions() -> None:
    _, table = bound_table()
    sessions = [session(env_port=1000 + i, eni_port=1000 + i) for i in range(5)]
    for s in sessions:
        table.add(s)
    assert table.reap(now=10.0) == 0  # none expired yet (expiry at 30)
    assert table.reap(now=31.0, budget=2) == 2 and len(table) == 3
    assert table.reap(now=31.0, budget=2) == 2 and len(table) == 1
    assert table.reap(now=31.0, budget=2) == 1 and len(table) == 0
    assert table.sessions == {} and all(s.dead for s in sessions)


def test_reap_skips_live_sessions_and_discards_removed_ones() -> None:
    _, table = bound_table()
    old, removed, fresh = session(A, 1, 1), session(B, 2, 2), session(A, 3, 3, now=100.0)
    for s in (removed, fresh, old):
        table.add(s)
    table.remove(removed)
    assert table.reap(now=50.0, budget=3) == 1 and old.dead and not fresh.dead
    assert table.live(50.0) == [fresh] and len(table) == 1


def test_an_evicted_session_is_written_back_and_read_again() -> None:
    store, table = bound_table(cache_size=2)
    first, second, third = (session(A, port, port) for port in (1, 2, 3))
    for s in (first, second, third):
        table.add(s)
    assert not first.cached and first.out_key not in table.sessions  # the oldest went
    first.pkts_out += 5  # a stale object: its changes are not the table's
    again = table.get(first.out_key)
    assert again is not first and again.cached and again.rec == first.rec
    assert again.pkts_out == 0 and again.out_key == first.out_key
    assert (again.ip_out, again.full_out, again.ip_in, again.full_in) == (
        first.ip_out, first.full_out, first.ip_in, first.full_in)
    again.pkts_in, again.bytes_in = 7, 700
    for s in (second, third):  # push it out again: written back on the way
        table.get(s.out_key)
    assert not again.cached and table.get(again.in_key).pkts_in == 7


def test_timeouts_from_dict() -> None:
    assert Timeouts.from_dict(None) == Timeouts()
    assert Timeouts.from_dict({"udp": "5", "tcp_syn": 2}).udp == 5.0
    with pytest.raises(TypeError):
        Timeouts.from_dict({"sctp": 1})


# -- lifetimes through the pipeline ------------------------------------------------------


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def test_reply_after_expiry_has_no_session(rig: Rig) -> None:
    send(rig.pipeline, rig.env, syn(40000), now=0.0)
    send_and_assert_no_replies(rig.pipeline, rig.eni, synack(40000), rig.outs(), "no_session",
                               now=rig.pipeline.timeouts.tcp_syn + 1)


def test_udp_reply_after_expiry_is_not_forwarded(rig: Rig) -> None:
    send(rig.pipeline, rig.env, udp_out(), now=0.0)
    late = rig.pipeline.timeouts.udp + 1
    # counted as inbound-to-eni: a late UDP reply cannot be told from an unsolicited one
    send_and_assert_no_replies(rig.pipeline, rig.eni, udp_back(5353), rig.outs(),
                               "inbound_to_eni", now=late)


def test_retransmitted_syns_do_not_refresh_a_tcp_session(rig: Rig) -> None:
    send(rig.pipeline, rig.env, syn(40000), now=0.0)
    send(rig.pipeline, rig.env, syn(40000), now=20.0)
    assert rig.pipeline.counters["sessions_created"] == 1
    send_and_assert_no_replies(rig.pipeline, rig.eni, synack(40000), rig.outs(), "no_session",
                               now=31.0)


def test_handshake_makes_the_tcp_session_established(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    send(rig.pipeline, rig.env, syn(40000), now=0.0)
    send_and_expect(rig.pipeline, rig.eni, synack(40000), rig.env_out[0], now=10.0)
    (s,) = rig.eni.table.live(10.0)
    assert s.replied and s.expires == 10.0 + t.tcp_syn  # SYN_RECV
    send_and_expect(rig.pipeline, rig.env, tcp_out("A", 1001, 5001), rig.eni_out, now=20.0)
    assert s.expires == 20.0 + t.tcp_established
    send_and_expect(rig.pipeline, rig.env, tcp_out("PA", 1001, 5001, payload=b"hi"),
                    rig.eni_out, now=300.0)  # refreshes
    back = send_and_expect(rig.pipeline, rig.eni, tcp_in("A", 5001, 1003), rig.env_out[0],
                           now=600.0)
    assert_checksums_valid(back)


def test_outbound_udp_refreshes_the_session(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    send(rig.pipeline, rig.env, udp_out(), now=0.0)
    send(rig.pipeline, rig.env, udp_out(), now=t.udp - 1)
    send_and_expect(rig.pipeline, rig.eni, udp_back(5353), rig.env_out[0], now=t.udp + 10)


def test_expired_session_is_replaced_and_its_port_reused(rig: Rig) -> None:
    first = eni_port_of(send_and_expect(rig.pipeline, rig.env, syn(40000), rig.eni_out))
    later = rig.pipeline.timeouts.tcp_syn + 5
    second = eni_port_of(send_and_expect(rig.pipeline, rig.env, syn(40000), rig.eni_out,
                                         now=later))
    assert first == second == 40000
    assert rig.pipeline.counters["sessions_created"] == 2
    assert rig.pipeline.counters["sessions_expired"] == 1 and len(rig.eni.table) == 1


def test_new_sessions_reap_expired_ones_and_free_their_ports(rig: Rig) -> None:
    for port in (41000, 41001):
        send(rig.pipeline, rig.envs[0], syn(port), now=0.0)
    later = rig.pipeline.timeouts.tcp_syn + 1
    out = send_and_expect(rig.pipeline, rig.envs[1], syn(41000, env=1), rig.eni_out, now=later)
    assert eni_port_of(out) == 41000  # env 0's expired session gave the port back
    assert len(rig.eni.table) == 1 and rig.pipeline.counters["sessions_expired"] == 2


def assert_refused_with_code_13(rig: Rig, frame: bytes, reason: str, now: float = 0.0) -> None:
    """The flow is refused: one drop, and unreachable code 13 back to the environment."""
    before, sent = drops(rig.pipeline), len(rig.eni_out)
    send(rig.pipeline, rig.env, frame, now)
    assert drop_delta(before, rig.pipeline) == {reason: 1} and len(rig.eni_out) == sent
    error = parse(rig.env_out[0][-1])
    assert (error.src, error.dst) == (GW_MACS[0], ENV_MACS[0])
    assert (error[IP].src, error[IP].dst, error[ICMP].type, error[ICMP].code) == (
        GW_IP, ENV_IPS[0], 3, 13)
    assert bytes(error[ICMP].payload) == ip_of(frame)[:28]  # IPv4 header + 8 bytes
    assert_checksums_valid(rig.env_out[0][-1])


def test_connection_limit_is_enforced_per_eni() -> None:
    rig = make_rig(connection_limit=2)
    for port in (41000, 41001):
        send_and_expect(rig.pipeline, rig.env, syn(port), rig.eni_out)
    assert_refused_with_code_13(rig, syn(41002), "eni_connection_limit")
    assert rig.eni.counters["eni_connection_limit"] == 1 and len(rig.eni.table) == 2


def test_out_of_ports_is_counted_and_existing_flows_keep_working() -> None:
    rig = make_rig(port_range=(2000, 2001))
    for port in (2000, 2001):
        send_and_expect(rig.pipeline, rig.env, syn(port), rig.eni_out)
    assert_refused_with_code_13(rig, syn(2002), "out_of_ports")
    back = send_and_expect(rig.pipeline, rig.eni, synack(2000), rig.env_out[0], now=1.0)
    assert parse(back)[TCP].dport == 2000


def test_out_of_ports_recovers_after_expiry() -> None:
    rig = make_rig(port_range=(2000, 2000))
    send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    assert_refused_with_code_13(rig, udp_out(5354), "out_of_ports", now=1.0)
    later = rig.pipeline.timeouts.udp + 1
    out = send_and_expect(rig.pipeline, rig.env, udp_out(5354), rig.eni_out, now=later)
    assert parse(out)[UDP].sport == 2000


def test_refused_icmp_echo_gets_code_13_too() -> None:
    rig = make_rig(port_range=(2000, 2000))
    for ident in (7, 8):
        frame = env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=8, id=ident) / b"ping")
        if ident == 7:
            send_and_expect(rig.pipeline, rig.env, frame, rig.eni_out)
        else:
            assert_refused_with_code_13(rig, frame, "out_of_ports")


def test_table_full_is_counted_and_answered_with_code_13(rig: Rig) -> None:
    rig.pipeline.max_sessions = 1
    send_and_expect(rig.pipeline, rig.env, syn(41000), rig.eni_out)
    assert_refused_with_code_13(rig, syn(41001), "table_full")
    assert rig.eni.counters["table_full"] == 1
    back = send_and_expect(rig.pipeline, rig.eni, synack(41000), rig.env_out[0], now=1.0)
    assert parse(back)[TCP].dport == 41000  # the existing flow keeps working


def test_describe_reports_both_directions(rig: Rig) -> None:
    send(rig.pipeline, rig.env, syn(40000), now=0.0)
    assert only_session(rig).describe(0.0)["state"] == "SYN_SENT"
    send(rig.pipeline, rig.eni, synack(40000), now=5.0)
    assert only_session(rig).describe(5.0)["state"] == "SYN_RECV"
    send(rig.pipeline, rig.env, tcp_out("A", 1001, 5001), now=5.0)
    (s,) = rig.eni.table.live(5.0)
    row = s.describe(5.0)
    assert row["protocol"] == "tcp" and row["replied"] and row["timeout"] == 350
    assert row["state"] == "ESTABLISHED"
    assert row["original"] == {"src": ENV_IPS[0], "sport": 40000, "dst": DB_IP, "dport": 8080}
    assert row["reply"] == {"src": DB_IP, "sport": 8080, "dst": ENI_IP, "dport": 40000}
    assert row["packets"] == {"original": 2, "reply": 1}
    assert parse(rig.env_out[0][-1])[TCP].dport == 40000


def test_describe_has_no_state_for_udp(rig: Rig) -> None:
    send(rig.pipeline, rig.env, udp_out(), now=0.0)
    row = only_session(rig).describe(0.0)
    assert row["protocol"] == "udp" and row["state"] is None and not row["replied"]


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sampled_from([1, 6, 17]))
def test_a_sessions_checksum_changes_are_packet_deltas(env_ip: bytes, eni_ip: bytes,
                                                       env_port: int, eni_port: int,
                                                       proto: int) -> None:
    """make_session's inline arithmetic gives what ``packet.delta``/``add`` give."""
    s = make_session(proto, None, env_ip, env_port, b"\xc6\x33\x64\x07", 443, eni_ip,
                     eni_port, b"\x0a\x00\x00\x01", 30.0, 0.0)
    out_l4, in_l4 = eni_port.to_bytes(2, "big"), env_port.to_bytes(2, "big")
    d_ip, d_ip_in = p.delta(env_ip, eni_ip), p.delta(eni_ip, env_ip)
    assert (s.ip_out, s.ip_in) == (p.add(d_ip, p.TTL_DELTA), p.add(d_ip_in, p.TTL_DELTA))
    if proto == p.PROTO_ICMP:
        assert (s.full_out, s.part_out) == (p.delta(in_l4, out_l4), 0)
        assert (s.full_in, s.part_in) == (p.delta(out_l4, in_l4), 0)
    else:
        assert (s.full_out, s.part_out) == (p.add(d_ip, p.delta(in_l4, out_l4)), d_ip)
        assert (s.full_in, s.part_in) == (p.add(d_ip_in, p.delta(out_l4, in_l4)), d_ip_in)
    assert s.deltas == (d_ip, d_ip_in)
