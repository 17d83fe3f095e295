"""ICMP: the errors Hyperplane sends as a router hop, and errors about tracked flows translated."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from hyperplane.dataplane import icmp
from hyperplane.dataplane import packet as p
from hyperplane.dataplane.tcpstate import STATE_NAMES
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENV_IPS,
    ENV_MACS,
    GW_IP,
    GW_MACS,
    ROUTER_IP,
    Rig,
    assert_checksums_valid,
    drop_delta,
    drops,
    env_frame,
    ip_of,
    make_rig,
    only_session,
    parse,
    partial_frame,
    send,
    send_and_assert_no_replies,
    send_and_expect,
    syn,
    tcp_in,
    tcp_out,
    udp_out,
    vpc_frame,
)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def assert_error_to_env(frame: bytes, icmp_type: int, code: int, offending: bytes,
                        env: int = 0) -> ICMP:
    """An error from the gateway to env ``env`` quoting ``offending``'s IPv4 header + 8 bytes."""
    pkt = parse(frame)
    assert (pkt.src, pkt.dst) == (GW_MACS[env], ENV_MACS[env])
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].proto) == (GW_IP, ENV_IPS[env], 1)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (icmp_type, code)
    ihl = (offending[p.IP] & 0x0F) * 4
    assert bytes(pkt[ICMP].payload) == ip_of(offending)[:ihl + 8]
    assert_checksums_valid(frame)
    return pkt[ICMP]


def vpc_error(quoted: bytes, icmp_type: int = 3, code: int = 3, src: str = ROUTER_IP,
              **icmp_fields) -> bytes:
    """An ICMP error from the VPC to the ENI quoting the IPv4 bytes ``quoted``."""
    return vpc_frame(IP(src=src, dst=ENI_IP) / ICMP(type=icmp_type, code=code, **icmp_fields)
                     / Raw(quoted))


def expected_quote(original: bytes, ttl: int = 63) -> bytes:
    """The environment's own packet as the far side saw it: its TTL spent, checksum fixed."""
    ip = IP(ip_of(original))
    ip.ttl = ttl
    del ip.chksum
    return bytes(ip)


def assert_error_from_vpc(frame: bytes, original: bytes, icmp_type: int, code: int,
                          quoted_len: int | None = None, src: str = ROUTER_IP,
                          quoted_ttl: int = 63) -> ICMP:
    """The error reached env 0 with the environment's packet restored in the quote."""
    pkt = parse(frame)
    assert (pkt.src, pkt.dst) == (GW_MACS[0], ENV_MACS[0])
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (src, ENV_IPS[0], 63)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (icmp_type, code)
    quote = ip_of(frame)[28:]
    want = expected_quote(original, quoted_ttl)
    assert quote == want[:quoted_len or len(want)]
    assert p.ipv4_checksum_ok(quote[:20])
    assert_checksums_valid(frame)  # outer IPv4 and ICMP
    return pkt[ICMP]


# -- errors Hyperplane sends -------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_expiry_gets_time_exceeded_from_the_gateway(rig: Rig, ttl: int) -> None:
    frame = udp_out(33434)
    frame = frame[:p.IP + 8] + bytes([ttl]) + frame[p.IP + 9:]
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.env, frame)
    assert drop_delta(before, rig.pipeline) == {"ttl_expired": 1}
    assert rig.eni_out == [] and len(rig.eni.table) == 0
    assert_error_to_env(rig.env_out[0][-1], 11, 0, frame)
    assert rig.pipeline.counters["icmp_errors_sent"] == 1


def test_traceroute_sees_hyperplane_then_the_hops_beyond(rig: Rig) -> None:
    probe = env_frame(IP(src=ENV_IPS[0], dst="10.0.2.20", ttl=1) / UDP(sport=44000, dport=33434)
                      / bytes(32))
    send(rig.pipeline, rig.env, probe)
    assert parse(rig.env_out[0][-1])[IP].src == GW_IP  # hop 1: Hyperplane
    probe = env_frame(IP(src=ENV_IPS[0], dst="10.0.2.20", ttl=2) / UDP(sport=44000, dport=33435)
                      / bytes(32))
    sent = send_and_expect(rig.pipeline, rig.env, probe, rig.eni_out)
    assert parse(sent)[IP].ttl == 1
    # hop 2: the VPC router's time exceeded, quoting the probe as Hyperplane sent it
    error = vpc_error(ip_of(sent)[:28], icmp_type=11, code=0)
    got = send_and_expect(rig.pipeline, rig.eni, error, rig.env_out[0])
    quoted = IP(ip_of(got)[28:])
    assert (quoted.src, quoted.dst, quoted[UDP].sport, quoted[UDP].dport) == (
        ENV_IPS[0], "10.0.2.20", 44000, 33435)
    assert_error_from_vpc(got, probe, 11, 0, quoted_len=28, quoted_ttl=1)


def test_no_error_about_a_multicast_destination(rig: Rig) -> None:
    frame = env_frame(IP(src=ENV_IPS[0], dst="224.0.0.251", ttl=1) / UDP(sport=5353, dport=5353))
    send_and_assert_no_replies(rig.pipeline, rig.env, frame, rig.outs(), "ttl_expired")


def test_no_error_about_an_icmp_error(rig: Rig) -> None:
    inner = IP(src=DB_IP, dst=ENV_IPS[0]) / UDP(sport=53, dport=5353)
    frame = env_frame(IP(src=ENV_IPS[0], dst=DB_IP, ttl=1) / ICMP(type=3, code=3)
                      / Raw(bytes(inner)[:28]))
    send(rig.pipeline, rig.env, udp_out(5353))  # a session, so that the error is about it
    send_and_assert_no_replies(rig.pipeline, rig.env, frame, rig.outs(), "ttl_expired")


def test_may_answer_rules() -> None:
    def buf(pkt) -> bytearray:
        return bytearray(env_frame(pkt))

    assert icmp.may_answer(buf(IP(dst=DB_IP) / UDP()))
    assert icmp.may_answer(buf(IP(dst=DB_IP) / ICMP(type=8)))
    assert icmp.may_answer(buf(IP(dst=DB_IP, flags="MF") / UDP()))  # a first fragment
    assert not icmp.may_answer(buf(IP(dst=DB_IP, frag=10) / Raw(bytes(8))))
    assert not icmp.may_answer(buf(IP(dst="255.255.255.255") / UDP()))
    assert not icmp.may_answer(buf(IP(dst="239.1.2.3") / UDP()))
    assert not icmp.may_answer(buf(IP(dst=DB_IP) / ICMP(type=11)))


def test_error_frame_quotes_what_there_is_of_a_short_packet() -> None:
    frame = bytearray(env_frame(IP(src=ENV_IPS[0], dst=DB_IP, proto=17) / Raw(b"abc")))
    out = icmp.error_frame(frame, len(frame), bytes(12), p.ip_to_bytes(GW_IP),
                           p.ip_to_bytes(ENV_IPS[0]), 3, 13)
    assert out[p.IP + 28:] == bytes(frame[p.IP:]) and len(out) == p.IP + 28 + 23
    assert_checksums_valid(out)


# -- MTU --------------------------------------------------------------------------------------


def big_udp(size: int = 1500, flags: str = "DF", vnet: bytes = bytes(10)) -> bytes:
    payload = bytes(range(256)) * ((size - 28) // 256 + 1)
    return env_frame(IP(src=ENV_IPS[0], dst=DB_IP, flags=flags) / UDP(sport=6000, dport=7000)
                     / payload[:size - 28], vnet=vnet)


def test_too_big_with_df_gets_fragmentation_needed_with_the_mtu() -> None:
    rig = make_rig(mtu=1400)
    frame = big_udp(1500)
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.env, frame)
    assert drop_delta(before, rig.pipeline) == {"mtu_exceeded": 1}
    assert rig.eni_out == [] and len(rig.eni.table) == 0
    error = assert_error_to_env(rig.env_out[0][-1], 3, 4, frame)
    assert error.nexthopmtu == 1400
    send_and_expect(rig.pipeline, rig.env, big_udp(1400), rig.eni_out)  # exactly the MTU fits


def test_gso_super_frames_are_not_checked_against_the_mtu() -> None:
    rig = make_rig(mtu=1400)
    vnet = struct.pack("<BBHHHH", 0, 1, 54, 1448, 0, 0)  # gso_type TCPV4
    frame = env_frame(IP(src=ENV_IPS[0], dst=DB_IP, flags="DF")
                      / TCP(sport=40000, dport=8080, flags="A") / bytes(4000), vnet=vnet)
    out = send_and_expect(rig.pipeline, rig.env, frame, rig.eni_out)
    assert len(out) == len(frame) and out[:10] == vnet


def test_too_big_without_df_is_fragmented_on_the_eni_link() -> None:
    rig = make_rig(mtu=576)
    frame = big_udp(1500, flags="")
    send(rig.pipeline, rig.env, frame)
    assert rig.pipeline.counters["fragmented"] == 1 and len(rig.eni_out) == 3
    pieces = [IP(ip_of(f)) for f in rig.eni_out]
    assert all(len(ip_of(f)) <= 576 for f in rig.eni_out)
    assert [pc.frag * 8 for pc in pieces] == [0, 552, 1104]
    assert [str(pc.flags) for pc in pieces] == ["MF", "MF", ""]
    for f in rig.eni_out:
        assert p.ipv4_checksum_ok(ip_of(f)[:20])
        assert parse(f).dst == DB_MAC
    whole = b"".join(ip_of(f)[20:] for f in rig.eni_out)
    want = IP(src=ENI_IP, dst=DB_IP) / UDP(sport=6000, dport=7000) / IP(ip_of(frame))[UDP].load
    assert whole == bytes(want)[20:]  # the translated datagram, byte for byte


def test_a_partial_checksum_is_completed_before_fragmenting() -> None:
    rig = make_rig(mtu=576)
    src = partial_frame(ENV_IPS[0], DB_IP, 40000, 8080, False)
    payload = bytes(1200)
    tcp = bytearray(ip_of(src)[20:])[:20] + payload
    pseudo = p.ones_sum(p.ip_to_bytes(ENV_IPS[0]) + p.ip_to_bytes(DB_IP)
                        + bytes([0, 6]) + len(tcp).to_bytes(2, "big"))
    tcp[16:18] = pseudo.to_bytes(2, "big")
    frame = src[:p.IP] + bytes(IP(src=ENV_IPS[0], dst=DB_IP, proto=6) / Raw(bytes(tcp)))
    send(rig.pipeline, rig.env, frame)
    assert len(rig.eni_out) == 3 and all(f[0] == 0 for f in rig.eni_out)
    whole = b"".join(ip_of(f)[20:] for f in rig.eni_out)
    assert p.ones_sum(p.ip_to_bytes(ENI_IP) + p.ip_to_bytes(DB_IP) + bytes([0, 6])
                      + len(whole).to_bytes(2, "big") + whole) == 0xFFFF


# -- errors from the VPC about tracked flows ------------------------------------------------


def test_port_unreachable_reaches_the_env_with_its_own_address_and_port(rig: Rig) -> None:
    original = udp_out(5353)
    sent = send_and_expect(rig.pipeline, rig.env, original, rig.eni_out)
    s = only_session(rig)
    expires = s.expires
    error = vpc_error(ip_of(sent), src=DB_IP)  # the whole datagram quoted, as Linux does
    got = send_and_expect(rig.pipeline, rig.eni, error, rig.env_out[0], now=5.0)
    assert_error_from_vpc(got, original, 3, 3, src=DB_IP)
    quoted = IP(ip_of(got)[28:])
    assert (quoted.src, quoted[UDP].sport) == (ENV_IPS[0], 5353)
    assert s.expires == expires and not s.replied and not s.dead  # neither refreshed nor ended
    assert rig.pipeline.counters["forwarded"] == 2


def test_error_about_a_remapped_port_restores_the_env_port(rig: Rig) -> None:
    send(rig.pipeline, rig.envs[1], udp_out(5353, env=1))  # env 1 takes ENI port 5353
    original = udp_out(5353)
    sent = send_and_expect(rig.pipeline, rig.env, original, rig.eni_out)
    assert parse(sent)[UDP].sport != 5353
    got = send_and_expect(rig.pipeline, rig.eni, vpc_error(ip_of(sent)), rig.env_out[0])
    assert_error_from_vpc(got, original, 3, 3)


def test_udp_without_checksum_stays_without_in_the_quote(rig: Rig) -> None:
    original = udp_out(5353, chksum=0)
    sent = send_and_expect(rig.pipeline, rig.env, original, rig.eni_out)
    got = send_and_expect(rig.pipeline, rig.eni, vpc_error(ip_of(sent)), rig.env_out[0])
    assert IP(ip_of(got)[28:])[UDP].chksum == 0
    assert_error_from_vpc(got, original, 3, 3)


@pytest.mark.parametrize("quoted_len", [28, 40, None], ids=["8-bytes", "with-checksum", "all"])
def test_tcp_host_unreachable_is_translated(rig: Rig, quoted_len: int | None) -> None:
    original = syn(40000, dst="10.0.2.20")
    sent = send_and_expect(rig.pipeline, rig.env, original, rig.eni_out)
    quote = ip_of(sent)[:quoted_len] if quoted_len else ip_of(sent)
    got = send_and_expect(rig.pipeline, rig.eni, vpc_error(quote, code=1), rig.env_out[0])
    assert_error_from_vpc(got, original, 3, 1, quoted_len=quoted_len)
    assert STATE_NAMES[only_session(rig).state] == "SYN_SENT"


def test_fragmentation_needed_from_the_vpc_carries_the_mtu_to_the_env(rig: Rig) -> None:
    original = env_frame(IP(src=ENV_IPS[0], dst=DB_IP, flags="DF")
                         / TCP(sport=40000, dport=8080, flags="PA") / bytes(1400))
    sent = send_and_expect(rig.pipeline, rig.env, original, rig.eni_out)
    error = vpc_error(ip_of(sent)[:576 - 28], code=4, nexthopmtu=1280)
    got = send_and_expect(rig.pipeline, rig.eni, error, rig.env_out[0])
    assert assert_error_from_vpc(got, original, 3, 4, quoted_len=576 - 28).nexthopmtu == 1280


def test_time_exceeded_about_an_echo_request_restores_the_identifier(rig: Rig) -> None:
    original = env_frame(IP(src=ENV_IPS[0], dst="10.0.2.20", ttl=2) / ICMP(type=8, id=7, seq=1)
                         / b"ping")
    send(rig.pipeline, rig.envs[1], env_frame(IP(src=ENV_IPS[1], dst="10.0.2.20")
                                              / ICMP(type=8, id=7), 1))  # takes identifier 7
    sent = send_and_expect(rig.pipeline, rig.env, original, rig.eni_out)
    assert parse(sent)[ICMP].id != 7
    got = send_and_expect(rig.pipeline, rig.eni, vpc_error(ip_of(sent), 11, 0), rig.env_out[0])
    pkt = parse(got)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (ROUTER_IP, ENV_IPS[0], 63)
    quote = ip_of(got)[28:]
    assert quote == expected_quote(original, ttl=1)
    assert p.ones_sum(quote[20:]) == 0xFFFF  # the quoted echo's own checksum
    assert_checksums_valid(got)


def test_error_with_a_bad_checksum_is_dropped(rig: Rig) -> None:
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    error = vpc_error(ip_of(sent), chksum=0x1234)
    send_and_assert_no_replies(rig.pipeline, rig.eni, error, rig.outs(), "icmp_bad_checksum")
    assert rig.eni.counters["icmp_bad_checksum"] == 1


def test_error_about_an_unknown_flow_is_dropped(rig: Rig) -> None:
    stranger = bytes(IP(src=ENI_IP, dst=DB_IP, ttl=63) / UDP(sport=9999, dport=53))
    send_and_assert_no_replies(rig.pipeline, rig.eni, vpc_error(stranger), rig.outs(),
                               "icmp_error_no_session")


def test_error_quoting_a_packet_from_another_address_is_dropped(rig: Rig) -> None:
    sent = bytearray(ip_of(send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)))
    sent[12:16] = p.ip_to_bytes("10.0.1.77")  # not from the ENI
    send_and_assert_no_replies(rig.pipeline, rig.eni, vpc_error(bytes(sent)), rig.outs(),
                               "icmp_error_no_session")


def test_error_about_an_expired_flow_is_dropped(rig: Rig) -> None:
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    send_and_assert_no_replies(rig.pipeline, rig.eni, vpc_error(ip_of(sent)), rig.outs(),
                               "icmp_error_no_session", now=rig.pipeline.timeouts.udp + 1)


def test_error_never_ends_an_established_tcp_session(rig: Rig) -> None:
    send(rig.pipeline, rig.env, tcp_out("S", 1000))
    send(rig.pipeline, rig.eni, tcp_in("SA", 5000, 1001))
    sent = send_and_expect(rig.pipeline, rig.env, tcp_out("A", 1001, 5001), rig.eni_out)
    s = only_session(rig)
    expires = s.expires
    for code in (0, 1, 3, 4):
        send_and_expect(rig.pipeline, rig.eni, vpc_error(ip_of(sent), code=code),
                        rig.env_out[0], now=100.0)
    assert STATE_NAMES[s.state] == "ESTABLISHED" and s.expires == expires and not s.dead


def test_error_with_ttl_1_is_not_forwarded(rig: Rig) -> None:
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    error = vpc_frame(IP(src=ROUTER_IP, dst=ENI_IP, ttl=1) / ICMP(type=3, code=3)
                      / Raw(ip_of(sent)))
    send_and_assert_no_replies(rig.pipeline, rig.eni, error, rig.outs(), "ttl_expired")


def test_fragmented_error_is_dropped(rig: Rig) -> None:
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    error = vpc_frame(IP(src=ROUTER_IP, dst=ENI_IP, flags="MF") / ICMP(type=3, code=3)
                      / Raw(ip_of(sent)))
    send_and_assert_no_replies(rig.pipeline, rig.eni, error, rig.outs(), "fragment")


@pytest.mark.parametrize("quote", [b"", bytes(12), bytes(IP(src=ENI_IP, dst=DB_IP, proto=17))],
                         ids=["empty", "short-header", "no-l4"])
def test_error_with_a_short_quote_has_no_session(rig: Rig, quote: bytes) -> None:
    send(rig.pipeline, rig.env, udp_out(5353))
    send_and_assert_no_replies(rig.pipeline, rig.eni, vpc_error(quote), rig.outs(),
                               "icmp_error_no_session")


# -- errors from an environment about a flow it received -----------------------------------------


def test_env_port_unreachable_goes_out_from_the_eni(rig: Rig) -> None:
    send(rig.pipeline, rig.envs[1], udp_out(5353, env=1))  # env 1 takes ENI port 5353
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    eni_port = parse(sent)[UDP].sport
    reply = vpc_frame(IP(src=DB_IP, dst=ENI_IP) / UDP(sport=53, dport=eni_port) / b"late")
    delivered = send_and_expect(rig.pipeline, rig.eni, reply, rig.env_out[0])
    error = env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=3, code=3)
                      / Raw(ip_of(delivered)))
    out = send_and_expect(rig.pipeline, rig.env, error, rig.eni_out)
    pkt = parse(out)
    assert (pkt.dst, pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (DB_MAC, ENI_IP, DB_IP, 63)
    quote = ip_of(out)[28:]
    assert quote == expected_quote(reply) and p.ipv4_checksum_ok(quote[:20])
    assert_checksums_valid(out)


def test_error_with_a_partial_checksum_leaves_the_outer_checksum_to_the_kernel(rig: Rig) -> None:
    sent = send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out)
    error = bytearray(vpc_error(ip_of(sent)))
    icmp_at = p.IP + 20
    error[icmp_at + 2:icmp_at + 4] = b"\0\0"  # what an skb with CHECKSUM_PARTIAL carries
    error[:10] = struct.pack("<BBHHHH", p.VNET_F_NEEDS_CSUM, 0, 0, 0, 34, 2)
    got = send_and_expect(rig.pipeline, rig.eni, bytes(error), rig.env_out[0])
    assert got[icmp_at + 2:icmp_at + 4] == b"\0\0"
    assert IP(ip_of(got)[28:]).src == ENV_IPS[0] and p.ipv4_checksum_ok(ip_of(got)[:20])
