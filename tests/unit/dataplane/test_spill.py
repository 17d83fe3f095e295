"""Spill ENIs: new flows past the primary ENI's connection limit go to the next ENI of the key."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.pipeline import Pipeline
from hyperplane.dataplane.ports import EniPort
from hyperplane.dataplane.tcpstate import STATE_NAMES
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENI_MAC,
    ENV_IPS,
    ENV_MACS,
    GW_IP,
    GW_MACS,
    ROUTER_IP,
    ROUTER_MAC,
    VNET,
    Rig,
    assert_checksums_valid,
    assert_tables_consistent,
    capture,
    drop_delta,
    drops,
    env_frame,
    ip_of,
    make_rig,
    parse,
    send,
    send_and_expect,
    syn,
    tcp_out,
    udp_out,
)
from tests.unit.dataplane.test_fragments import frags_of, l4_checksum_ok, reassemble
from tests.unit.dataplane.test_pipeline import ANSWERED, mutated

SPILL_IP = "10.0.1.5"
SPILL_MAC = "02:e1:00:00:00:01"


class SpillRig(Rig):
    spill: EniPort
    spill_out: list[bytes]

    def outs(self) -> list[list[bytes]]:
        return [*super().outs(), self.spill_out]


def spill_rig(limit: int = 2, spill_limit: int = 2, **spill_kwargs) -> SpillRig:
    """``make_rig`` with the primary's limit ``limit`` and a spill ENI for env 0 (not env 1)."""
    base = make_rig(connection_limit=limit)
    rig = SpillRig(base.pipeline, base.eni, base.envs, base.eni_out, base.env_out)
    rig.spill = EniPort("eni-2", "hpi1", SPILL_IP, SPILL_MAC, "10.0.1.0/24", ROUTER_IP,
                        connection_limit=spill_limit, **spill_kwargs)
    rig.spill.arp[p.ip_to_bytes(ROUTER_IP)] = p.mac_to_bytes(ROUTER_MAC)
    rig.spill.arp[p.ip_to_bytes(DB_IP)] = p.mac_to_bytes(DB_MAC)
    rig.spill_out = []
    rig.spill.tx = capture(rig.spill_out)
    rig.pipeline.enis[rig.spill.id] = rig.spill
    rig.env.spill = (rig.spill,)
    return rig


def to_spill(pkt: Packet) -> bytes:
    """A frame from the VPC to the spill ENI."""
    return VNET + bytes(Ether(src=DB_MAC, dst=SPILL_MAC) / IP(src=DB_IP, dst=SPILL_IP) / pkt)


def counters(pipeline: Pipeline, *names: str) -> dict[str, int]:
    return {name: pipeline.counters[name] for name in names}


def assert_consistent(rig: Rig, eni: EniPort) -> None:
    assert_tables_consistent(rig.pipeline, eni)


def assert_refused_with_code_13(rig: Rig, frame: bytes, env: int = 0) -> None:
    """Counted once as eni-connection-limit (on the primary), answered with 3/13, nothing out."""
    before, sizes = drops(rig.pipeline), [len(out) for out in rig.outs()]
    eni_before = rig.eni.counters.get("eni_connection_limit", 0)
    send(rig.pipeline, rig.envs[env], frame)
    assert drop_delta(before, rig.pipeline) == {"eni_connection_limit": 1}
    assert rig.eni.counters["eni_connection_limit"] == eni_before + 1
    grown = [len(out) - n for out, n in zip(rig.outs(), sizes, strict=True)]
    assert grown == [1 if out is rig.env_out[env] else 0 for out in rig.outs()]
    error = parse(rig.env_out[env][-1])
    assert (error.src, error.dst) == (GW_MACS[env], ENV_MACS[env])
    assert (error[IP].src, error[IP].dst, error[ICMP].type, error[ICMP].code) == (
        GW_IP, ENV_IPS[env], 3, 13)
    assert bytes(error[ICMP].payload) == ip_of(frame)[:28]
    assert_checksums_valid(rig.env_out[env][-1])


def open_four(rig: SpillRig) -> list[bytes]:
    """SYNs 41000..41003 from env 0: two leave from the primary, then two from the spill ENI."""
    out = [send_and_expect(rig.pipeline, rig.env, syn(port), rig.eni_out)
           for port in (41000, 41001)]
    out += [send_and_expect(rig.pipeline, rig.env, syn(port), rig.spill_out)
            for port in (41002, 41003)]
    return out


# -- the spill ENI takes the flows past the primary's limit ------------------------------------


def test_third_and_fourth_flows_leave_from_the_spill_eni_and_the_fifth_is_refused() -> None:
    rig = spill_rig()
    before = counters(rig.pipeline, "sessions_created", "forwarded", "icmp_errors_sent")
    sent = open_four(rig)
    assert counters(rig.pipeline, "sessions_created", "forwarded", "icmp_errors_sent") == {
        "sessions_created": before["sessions_created"] + 4,
        "forwarded": before["forwarded"] + 4, "icmp_errors_sent": before["icmp_errors_sent"]}
    for frame, src_ip, src_mac, sport in zip(
            sent, (ENI_IP, ENI_IP, SPILL_IP, SPILL_IP), (ENI_MAC, ENI_MAC, SPILL_MAC, SPILL_MAC),
            (41000, 41001, 41002, 41003), strict=True):
        pkt = parse(frame)
        assert (pkt.src, pkt.dst, pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (
            src_mac, DB_MAC, src_ip, DB_IP, 63)
        assert (pkt[TCP].sport, str(pkt[TCP].flags)) == (sport, "S")
        assert_checksums_valid(frame)
    assert (len(rig.eni.table), len(rig.spill.table)) == (2, 2)
    assert rig.spill.counters["tx_packets"] == 2 and rig.eni.counters["tx_packets"] == 2
    assert_refused_with_code_13(rig, syn(41004))
    assert "eni_connection_limit" not in rig.spill.counters
    assert (len(rig.eni.table), len(rig.spill.table)) == (2, 2)
    for eni in (rig.eni, rig.spill):
        assert_consistent(rig, eni)


def test_replies_come_back_through_the_spill_eni() -> None:
    rig = spill_rig()
    open_four(rig)
    forwarded = rig.pipeline.counters["forwarded"]
    for port in (41002, 41003):
        synack = to_spill(TCP(sport=8080, dport=port, flags="SA", seq=5000, ack=1001))
        back = send_and_expect(rig.pipeline, rig.spill, synack, rig.env_out[0], now=1.0)
        pkt = parse(back)
        assert (pkt.src, pkt.dst) == (GW_MACS[0], ENV_MACS[0])
        assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (DB_IP, ENV_IPS[0], 63)
        assert (pkt[TCP].sport, pkt[TCP].dport, str(pkt[TCP].flags)) == (8080, port, "SA")
        assert_checksums_valid(back)
    assert rig.pipeline.counters["forwarded"] == forwarded + 2
    assert rig.spill.counters["rx_packets"] == 2 and rig.eni.counters["rx_packets"] == 0
    # the handshake completes and data keeps using the spill ENI, both ways
    ack = send_and_expect(rig.pipeline, rig.env, tcp_out("A", 1001, 5001, sport=41002),
                          rig.spill_out, now=2.0)
    assert parse(ack)[IP].src == SPILL_IP and parse(ack)[TCP].sport == 41002
    (s,) = [s for s in rig.spill.table.live(2.0) if s.env_port == 41002]
    assert (s.pkts_out, s.pkts_in, s.replied) == (2, 1, True)
    data = to_spill(TCP(sport=8080, dport=41002, flags="PA", seq=5001, ack=1001) / b"hello")
    assert parse(send_and_expect(rig.pipeline, rig.spill, data, rig.env_out[0]))[Raw].load \
        == b"hello"


def test_a_reply_to_the_primary_for_a_spilled_flow_finds_no_session() -> None:
    rig = spill_rig()
    open_four(rig)
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.eni, VNET + bytes(
        Ether(src=DB_MAC, dst=ENI_MAC) / IP(src=DB_IP, dst=ENI_IP)
        / TCP(sport=8080, dport=41002, flags="SA", seq=5000, ack=1001)))
    assert drop_delta(before, rig.pipeline) == {"no_session": 1}


def test_udp_and_echo_spill_and_come_back() -> None:
    rig = spill_rig(limit=0)  # the primary takes nothing
    out = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.spill_out)
    assert (parse(out)[IP].src, parse(out)[UDP].sport) == (SPILL_IP, 5353)
    assert_checksums_valid(out)
    back = send_and_expect(rig.pipeline, rig.spill,
                           to_spill(UDP(sport=53, dport=5353) / b"answer"), rig.env_out[0])
    assert (parse(back)[IP].dst, parse(back)[UDP].dport) == (ENV_IPS[0], 5353)
    assert_checksums_valid(back)
    ping = env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=8, id=7, seq=1) / b"ping")
    out = send_and_expect(rig.pipeline, rig.env, ping, rig.spill_out)
    icmp_id = parse(out)[ICMP].id
    assert parse(out)[IP].src == SPILL_IP
    pong = to_spill(ICMP(type=0, id=icmp_id, seq=1) / b"ping")
    back = send_and_expect(rig.pipeline, rig.spill, pong, rig.env_out[0])
    assert (parse(back)[ICMP].id, parse(back)[IP].dst) == (7, ENV_IPS[0])
    assert_checksums_valid(back)
    assert (len(rig.eni.table), len(rig.spill.table)) == (0, 2)


# -- established flows stay where they are ------------------------------------------------------


def test_established_flows_on_the_primary_keep_using_it() -> None:
    rig = spill_rig()
    open_four(rig)
    for port in (41000, 41001):
        synack = VNET + bytes(Ether(src=DB_MAC, dst=ENI_MAC) / IP(src=DB_IP, dst=ENI_IP)
                              / TCP(sport=8080, dport=port, flags="SA", seq=5000, ack=1001))
        send_and_expect(rig.pipeline, rig.eni, synack, rig.env_out[0])
        for seq in (1001, 1011):
            out = send_and_expect(rig.pipeline, rig.env,
                                  tcp_out("PA", seq, 5001, sport=port, payload=b"0123456789"),
                                  rig.eni_out)
            assert (parse(out)[IP].src, parse(out)[TCP].sport) == (ENI_IP, port)
    assert rig.spill.counters["tx_packets"] == 2  # the two SYNs only
    assert (len(rig.eni.table), len(rig.spill.table)) == (2, 2)


def test_spilled_flows_stay_on_the_spill_eni_when_the_primary_has_room_again() -> None:
    rig = spill_rig()
    open_four(rig)
    rig.eni.connection_limit = 10  # as a new snapshot could
    out = send_and_expect(rig.pipeline, rig.env, tcp_out("A", 1001, 5001, sport=41003),
                          rig.spill_out)
    assert parse(out)[IP].src == SPILL_IP
    new = send_and_expect(rig.pipeline, rig.env, syn(41005), rig.eni_out)
    assert parse(new)[IP].src == ENI_IP
    assert (len(rig.eni.table), len(rig.spill.table)) == (3, 2)


def test_new_flows_return_to_the_primary_once_its_sessions_expire() -> None:
    rig = spill_rig()
    open_four(rig)  # SYN_SENT sessions: tcp_syn (30 s), never refreshed
    later = rig.pipeline.timeouts.tcp_syn + 1
    expired = rig.pipeline.counters["sessions_expired"]
    out = send_and_expect(rig.pipeline, rig.env, syn(41005), rig.eni_out, now=later)
    assert parse(out)[IP].src == ENI_IP
    # two expired sessions reaped by the store's clock hand (which ENI's: the hand's order)
    assert rig.pipeline.counters["sessions_expired"] == expired + 2
    assert len(rig.eni.table) + len(rig.spill.table) == 3 and len(rig.eni.table) <= 2


def test_an_expired_spilled_session_is_replaced_in_its_table() -> None:
    rig = spill_rig(spill_limit=4)  # room: the expired one is not reaped (budget 2)
    udp = rig.pipeline.timeouts.udp
    for port in (5000, 5001):  # the primary, kept alive below
        send_and_expect(rig.pipeline, rig.env, udp_out(port), rig.eni_out)
    for port in (5002, 5003, 5004):  # the spill ENI, 5004 the youngest
        send_and_expect(rig.pipeline, rig.env, udp_out(port), rig.spill_out, now=1.0)
    later = udp + 5.0  # 5004 has expired; 5000..5003 are refreshed just before
    for port, out in ((5000, rig.eni_out), (5001, rig.eni_out), (5002, rig.spill_out),
                      (5003, rig.spill_out)):
        send_and_expect(rig.pipeline, rig.env, udp_out(port), out, now=udp - 1.0)
    stale = rig.spill.table.sessions[(p.PROTO_UDP, p.ip_to_bytes(ENV_IPS[0])
                                      + p.ip_to_bytes(DB_IP), (5004 << 16) | 53)]
    before = counters(rig.pipeline, "sessions_created", "sessions_expired")
    out = send_and_expect(rig.pipeline, rig.env, udp_out(5004), rig.spill_out, now=later)
    assert (parse(out)[IP].src, parse(out)[UDP].sport) == (SPILL_IP, 5004)
    assert counters(rig.pipeline, "sessions_created", "sessions_expired") == {
        "sessions_created": before["sessions_created"] + 1,
        "sessions_expired": before["sessions_expired"] + 1}
    assert stale.dead and (len(rig.eni.table), len(rig.spill.table)) == (2, 3)
    for eni in (rig.eni, rig.spill):
        assert_consistent(rig, eni)


def test_a_rst_out_of_window_on_a_spilled_flow_is_dropped() -> None:
    rig = spill_rig(limit=0)
    send_and_expect(rig.pipeline, rig.env, syn(41000), rig.spill_out)
    send_and_expect(rig.pipeline, rig.spill, to_spill(
        TCP(sport=8080, dport=41000, flags="SA", seq=5000, ack=1001)), rig.env_out[0])
    send_and_expect(rig.pipeline, rig.env, tcp_out("A", 1001, 5001, sport=41000),
                    rig.spill_out)
    session = rig.spill.table.live(0.0)[0]
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.env, tcp_out("R", 900_000, sport=41000), now=1.0)  # far off window
    assert drop_delta(before, rig.pipeline) == {"tcp_rst_out_of_window": 1}
    assert rig.spill.counters["tcp_rst_out_of_window"] == 1
    assert STATE_NAMES[session.state] == "ESTABLISHED" and len(rig.spill_out) == 2
    send_and_expect(rig.pipeline, rig.env, tcp_out("R", 1001, sport=41000), rig.spill_out,
                    now=1.0)  # in window: it goes, and closes the session
    assert STATE_NAMES[session.state] == "CLOSE"


# -- environments without spill ENIs -------------------------------------------------------------


def test_an_env_without_spill_is_refused_when_the_shared_primary_is_full() -> None:
    rig = spill_rig()
    open_four(rig)  # env 0 fills the primary, then spills
    assert rig.envs[1].spill == ()
    assert_refused_with_code_13(rig, syn(42000, env=1), env=1)
    assert (len(rig.eni.table), len(rig.spill.table)) == (2, 2)


def test_without_spill_the_outputs_and_counters_are_unchanged() -> None:
    """The same frames through a plain rig and through env 1 of a spill rig: same bytes."""
    plain, spilled = make_rig(connection_limit=2), spill_rig()
    frames = [syn(41000, env=1), syn(41001, env=1), udp_out(5353, env=1), syn(41000, env=1),
              tcp_out("A", 1001, 5001, sport=41000, env=1)]
    results = []
    for rig in (plain, spilled):
        before = drops(rig.pipeline)
        for frame in frames:
            send(rig.pipeline, rig.envs[1], frame)
        results.append((rig.eni_out, rig.env_out[1], drop_delta(before, rig.pipeline),
                        counters(rig.pipeline, "sessions_created", "forwarded",
                                 "icmp_errors_sent")))
    assert results[0] == results[1]
    assert results[0][2] == {"eni_connection_limit": 1}
    assert spilled.spill_out == [] and len(spilled.spill.table) == 0


# -- the ENI holding the session carries ICMP errors and fragments --------------------------------


def test_an_env_error_about_a_spilled_flow_leaves_from_the_spill_eni() -> None:
    rig = spill_rig(limit=0)
    send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.spill_out)
    reply = to_spill(UDP(sport=53, dport=5353) / b"late")
    delivered = send_and_expect(rig.pipeline, rig.spill, reply, rig.env_out[0])
    error = env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=3, code=3)
                      / Raw(ip_of(delivered)))
    out = send_and_expect(rig.pipeline, rig.env, error, rig.spill_out)
    pkt = parse(out)
    assert (pkt.src, pkt.dst, pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (
        SPILL_MAC, DB_MAC, SPILL_IP, DB_IP, 63)
    quoted = IP(ip_of(out)[28:])
    assert (quoted.src, quoted.dst, quoted[UDP].sport, quoted[UDP].dport) == (
        DB_IP, SPILL_IP, 53, 5353)
    assert p.ipv4_checksum_ok(ip_of(out)[28:48])
    assert_checksums_valid(out)
    assert rig.eni_out == []


def test_a_vpc_error_about_a_spilled_flow_reaches_the_env() -> None:
    rig = spill_rig(limit=0)
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.spill_out)
    error = VNET + bytes(Ether(src=ROUTER_MAC, dst=SPILL_MAC)
                         / IP(src=ROUTER_IP, dst=SPILL_IP) / ICMP(type=3, code=1)
                         / Raw(ip_of(sent)))
    back = send_and_expect(rig.pipeline, rig.spill, error, rig.env_out[0])
    pkt = parse(back)
    assert (pkt[IP].src, pkt[IP].dst, pkt[ICMP].type, pkt[ICMP].code) == (
        ROUTER_IP, ENV_IPS[0], 3, 1)
    quoted = IP(ip_of(back)[28:])
    assert (quoted.src, quoted[UDP].sport) == (ENV_IPS[0], 5353)
    assert_checksums_valid(back)


@pytest.mark.parametrize("order", ["in-order", "reversed"])
def test_fragments_of_a_spilled_datagram_all_leave_from_the_spill_eni(order: str) -> None:
    rig = spill_rig(limit=0)
    data = bytes(range(256)) * 16
    frames = [env_frame(f) for f in frags_of(IP(src=ENV_IPS[0], dst=DB_IP, id=777)
                                             / UDP(sport=6000, dport=7000) / data)]
    assert len(frames) == 3
    if order == "reversed":
        frames.reverse()  # the non-first ones wait in the primary's fragment table
    before = drops(rig.pipeline)
    for frame in frames:
        send(rig.pipeline, rig.env, frame)
    assert drop_delta(before, rig.pipeline) == {}
    assert rig.eni_out == [] and len(rig.spill_out) == 3
    assert all(parse(f).src == SPILL_MAC for f in rig.spill_out)
    header, datagram = reassemble(rig.spill_out)
    assert (header.src, header.dst, header.id) == (SPILL_IP, DB_IP, 777)
    assert l4_checksum_ok(SPILL_IP, DB_IP, 17, datagram)
    assert len(rig.eni.frags) == 0 and not rig.pipeline.has_timers()
    (s,) = rig.spill.table.live(0.0)
    assert s.pkts_out == 3


def test_a_spill_eni_on_a_smaller_link_refuses_or_splits_big_packets() -> None:
    rig = spill_rig(limit=0, mtu=576)
    payload = bytes(1000)
    big_df = env_frame(IP(src=ENV_IPS[0], dst=DB_IP, flags="DF") / UDP(sport=6000, dport=7000)
                       / payload)
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.env, big_df)
    assert drop_delta(before, rig.pipeline) == {"mtu_exceeded": 1}
    error = parse(rig.env_out[0][-1])
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 576)
    send(rig.pipeline, rig.env, env_frame(IP(src=ENV_IPS[0], dst=DB_IP)
                                          / UDP(sport=6000, dport=7000) / payload))
    assert rig.pipeline.counters["fragmented"] == 1 and len(rig.spill_out) == 2
    assert all(len(ip_of(f)) <= 576 and IP(ip_of(f)).src == SPILL_IP for f in rig.spill_out)


def test_the_spill_eni_address_is_hyperplane_too() -> None:
    rig = spill_rig()
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.env, syn(41000, dst=SPILL_IP))
    later = env_frame(IP(src=ENV_IPS[0], dst=SPILL_IP, frag=100, proto=17) / Raw(bytes(16)))
    send(rig.pipeline, rig.env, later)  # a non-first fragment
    assert drop_delta(before, rig.pipeline) == {"to_hyperplane": 2}
    assert rig.eni_out == rig.spill_out == [] and len(rig.eni.table) == 0
    assert len(rig.eni.frags) == 0


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_frame_from_a_spilling_env_gives_exactly_one_output_or_one_drop(data) -> None:
    """``test_pipeline``'s property with the env's flows split over a primary and a spill."""
    rig = spill_rig(limit=1, spill_limit=3, mtu=300)
    rig.eni.mtu = 300
    for frame in (syn(40000), udp_out(), env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(id=7))):
        send(rig.pipeline, rig.env, frame)  # the SYN on the primary, the others spilled
    assert (len(rig.eni.table), len(rig.spill.table)) == (1, 2)
    frame = data.draw(st.one_of(st.binary(max_size=100), mutated("env")))
    stale = data.draw(st.binary(min_size=64, max_size=64))  # the dataplane reuses one buffer
    buf = bytearray(frame + stale)
    before, sizes = drops(rig.pipeline), [len(out) for out in rig.outs()]
    held, split = rig.eni.frags.held_frames, rig.pipeline.counters["fragmented"]
    rig.pipeline.receive(rig.env, buf, len(frame), 1.0)
    delta = drop_delta(before, rig.pipeline)
    dropped = sum(delta.values())
    sent = sum(len(out) for out in rig.outs()) - sum(sizes)
    assert rig.spill.frags.held_frames == 0  # an env's fragments wait in its primary's table
    if rig.eni.frags.held_frames > held:
        assert (sent, dropped) == (0, 0)
    elif rig.pipeline.counters["fragmented"] > split:
        assert sent >= 2 and dropped == 0
    elif dropped and sent:
        assert (sent, dropped) == (1, 1) and set(delta) <= ANSWERED
        assert_checksums_valid(rig.env_out[0][-1])
    else:
        assert (sent, dropped) in ((1, 0), (0, 1))
    for eni in (rig.eni, rig.spill):
        assert_consistent(rig, eni)
