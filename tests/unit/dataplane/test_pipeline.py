"""The packet pipeline driven with scapy frames: NAT both ways, drops, ARP, expiry, offload."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, fragment
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.arp import ARP_GIVE_UP, ARP_QUEUE, ARP_RETRY
from hyperplane.dataplane.conntrack import make_session
from hyperplane.dataplane.pipeline import Pipeline
from hyperplane.dataplane.store import SessionStore
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENI_MAC,
    ENV_IPS,
    ENV_MACS,
    GW_IP,
    GW_MACS,
    ROUTER_MAC,
    Rig,
    arp_reply_from,
    assert_checksums_valid,
    assert_tables_consistent,
    drop_delta,
    drops,
    eni_port_of,
    env_frame,
    make_rig,
    parse,
    partial_frame,
    patched,
    pseudo_sum,
    send,
    send_and_assert_no_replies,
    send_and_expect,
    syn,
    synack,
    tcp_in,
    tcp_out,
    to_eni,
    udp_back,
    udp_out,
    vpc_frame,
)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


# -- translation ----------------------------------------------------------------------------


def test_tcp_syn_from_env_is_translated(rig: Rig) -> None:
    out = send_and_expect(rig.pipeline, rig.env, syn(40000), rig.eni_out)
    pkt = parse(out)
    assert (pkt.dst, pkt.src) == (DB_MAC, ENI_MAC)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (ENI_IP, DB_IP, 63)
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, str(pkt[TCP].flags)) == (
        40000, 8080, 1000, "S")
    assert_checksums_valid(out)
    assert rig.pipeline.counters["sessions_created"] == 1
    assert rig.eni.counters["tx_packets"] == 1 and len(rig.eni.table) == 1


def test_off_link_destination_goes_to_the_vpc_router(rig: Rig) -> None:
    out = send_and_expect(rig.pipeline, rig.env, syn(dst="10.0.2.20"), rig.eni_out)
    assert parse(out).dst == ROUTER_MAC
    assert_checksums_valid(out)


def test_tcp_reply_comes_back_to_the_env(rig: Rig) -> None:
    send_and_expect(rig.pipeline, rig.env, syn(40000), rig.eni_out)
    back = send_and_expect(rig.pipeline, rig.eni, synack(40000), rig.env_out[0], now=1.0)
    pkt = parse(back)
    assert (pkt.dst, pkt.src) == (ENV_MACS[0], GW_MACS[0])
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (DB_IP, ENV_IPS[0], 63)
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].ack) == (8080, 40000, 1001)
    assert_checksums_valid(back)
    assert rig.pipeline.counters["forwarded"] == 2  # one each way


def test_udp_without_checksum_stays_without(rig: Rig) -> None:
    out = send_and_expect(rig.pipeline, rig.env, udp_out(chksum=0), rig.eni_out)
    assert parse(out)[UDP].chksum == 0
    assert_checksums_valid(out)
    back = send_and_expect(rig.pipeline, rig.eni, udp_back(5353, chksum=0), rig.env_out[0])
    assert parse(back)[UDP].chksum == 0 and parse(back)[UDP].dport == 5353
    assert_checksums_valid(back)


def test_udp_is_translated_with_valid_checksums(rig: Rig) -> None:
    out = send_and_expect(rig.pipeline, rig.env, udp_out(), rig.eni_out)
    assert (parse(out)[IP].src, parse(out)[UDP].sport) == (ENI_IP, 5353)
    assert_checksums_valid(out)
    back = send_and_expect(rig.pipeline, rig.eni, udp_back(5353), rig.env_out[0])
    assert (parse(back)[IP].dst, parse(back)[UDP].dport) == (ENV_IPS[0], 5353)
    assert_checksums_valid(back)


def test_udp_checksum_that_becomes_zero_is_sent_as_ffff(rig: Rig) -> None:
    translated = IP(bytes(IP(src=ENI_IP, dst=DB_IP) / UDP(sport=5353, dport=53, chksum=0)
                          / b"\0\0"))
    udp = bytes(translated[UDP])
    total = p.ones_sum(udp) + pseudo_sum(ENI_IP, DB_IP, p.PROTO_UDP, len(udp))
    filler = (0xFFFF - p.fold(total)).to_bytes(2, "big")  # translated sum becomes 0xFFFF
    frame = env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / UDP(sport=5353, dport=53) / filler)
    out = send_and_expect(rig.pipeline, rig.env, frame, rig.eni_out)
    assert parse(out)[UDP].chksum == 0xFFFF
    assert_checksums_valid(out)


def test_icmp_echo_identifier_is_mapped_and_restored(rig: Rig) -> None:
    ping = env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=8, id=7, seq=3) / b"ping")
    out = send_and_expect(rig.pipeline, rig.env, ping, rig.eni_out)
    icmp = parse(out)[ICMP]
    assert parse(out)[IP].src == ENI_IP and icmp.seq == 3 and icmp.id >= 1024
    assert_checksums_valid(out)
    pong = vpc_frame(IP(src=DB_IP, dst=ENI_IP) / ICMP(type=0, id=icmp.id, seq=3) / b"ping")
    back = send_and_expect(rig.pipeline, rig.eni, pong, rig.env_out[0])
    assert (parse(back)[IP].dst, parse(back)[ICMP].id, parse(back)[ICMP].type) == (
        ENV_IPS[0], 7, 0)
    assert_checksums_valid(back)


def test_two_envs_with_one_source_port_get_distinct_eni_ports(rig: Rig) -> None:
    first = eni_port_of(send_and_expect(rig.pipeline, rig.envs[0], syn(40000), rig.eni_out))
    second = eni_port_of(send_and_expect(rig.pipeline, rig.envs[1], syn(40000, env=1),
                                         rig.eni_out))
    assert first == 40000 and second != 40000 and 1024 <= second <= 65535
    for env, port in ((0, first), (1, second)):
        back = send_and_expect(rig.pipeline, rig.eni, synack(port), rig.env_out[env])
        assert (parse(back)[IP].dst, parse(back)[TCP].dport) == (ENV_IPS[env], 40000)


def test_mapping_is_endpoint_independent(rig: Rig) -> None:
    send_and_expect(rig.pipeline, rig.envs[1], syn(40000, env=1), rig.eni_out)  # takes 40000
    ports = {eni_port_of(send_and_expect(rig.pipeline, rig.env, syn(40000, dst=dst), rig.eni_out))
             for dst in (DB_IP, "10.0.2.20", "192.0.2.7")}
    assert len(ports) == 1 and ports != {40000}


def test_dont_fragment_is_not_a_fragment(rig: Rig) -> None:
    send_and_expect(rig.pipeline, rig.env, syn(flags="DF"), rig.eni_out)


def test_ip_options_move_the_l4_header(rig: Rig) -> None:
    out = send_and_expect(rig.pipeline, rig.env, syn(40000, options=[IPOption_NOP()] * 8),
                          rig.eni_out)
    assert (parse(out)[IP].ihl, parse(out)[TCP].sport) == (7, 40000)
    assert_checksums_valid(out)


# -- drops --------------------------------------------------------------------------------


def test_spoofed_source_is_dropped(rig: Rig) -> None:
    frame = env_frame(IP(src=ENV_IPS[1], dst=DB_IP) / TCP(sport=1234, dport=80))
    send_and_assert_no_replies(rig.pipeline, rig.env, frame, rig.outs(), "spoofed")
    assert rig.eni.counters["spoofed"] == 1 and len(rig.eni.table) == 0


def test_inbound_syn_ack_without_session_is_dropped(rig: Rig) -> None:
    send_and_assert_no_replies(rig.pipeline, rig.eni, synack(40000), rig.outs(), "no_session")


@pytest.mark.parametrize("l4", [TCP(sport=5555, dport=22, flags="S"), UDP(sport=5555, dport=53)],
                         ids=["tcp-syn", "udp"])
def test_unsolicited_inbound_flow_is_dropped_as_inbound_to_eni(rig: Rig, l4) -> None:
    send_and_assert_no_replies(rig.pipeline, rig.eni, to_eni(l4), rig.outs(), "inbound_to_eni")
    assert rig.eni.counters["inbound_to_eni"] == 1 and len(rig.eni.table) == 0


def test_frame_for_another_ip_is_dropped(rig: Rig) -> None:
    frame = vpc_frame(IP(src=DB_IP, dst="10.0.1.99") / TCP(sport=8080, dport=40000))
    send_and_assert_no_replies(rig.pipeline, rig.eni, frame, rig.outs(), "not_for_eni")


def test_env_without_vpc_is_dropped(rig: Rig) -> None:
    rig.env.eni = None
    send_and_assert_no_replies(rig.pipeline, rig.env, syn(), rig.outs(), "no_vpc")


MALFORMED: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("env", "shorter-than-ethernet", lambda: syn()[:20], "truncated"),
    ("eni", "shorter-than-ethernet", lambda: synack(1)[:20], "truncated"),
    ("env", "ip-header-cut", lambda: syn()[:40], "truncated"),
    ("env", "tcp-header-cut", lambda: env_frame(IP(src=ENV_IPS[0], dst=DB_IP, proto=6)
                                                / Raw(bytes(10))), "truncated"),
    ("eni", "tcp-header-cut", lambda: vpc_frame(IP(src=DB_IP, dst=ENI_IP, proto=6)
                                                / Raw(bytes(10))), "truncated"),
    ("eni", "udp-header-cut", lambda: vpc_frame(IP(src=DB_IP, dst=ENI_IP, proto=17)
                                                / Raw(bytes(4))), "truncated"),
    ("env", "ihl-4", lambda: patched(syn(), p.IP, 0x44), "bad_ip_header"),
    ("env", "version-6", lambda: patched(syn(), p.IP, 0x65), "bad_ip_header"),
    ("env", "total-length-beyond-frame", lambda: patched(syn(), p.IP + 2, 0x7F), "bad_ip_header"),
    ("eni", "ihl-4", lambda: patched(synack(1), p.IP, 0x44), "bad_ip_header"),
    ("env", "ipv6", lambda: syn()[:22] + b"\x86\xdd" + syn()[24:], "non_ipv4"),
    ("env", "vlan", lambda: p.VNET_LEN * b"\0" + bytes(Ether() / Dot1Q() / IP() / TCP()),
     "vlan"),
    ("eni", "vlan", lambda: p.VNET_LEN * b"\0" + bytes(Ether(dst=ENI_MAC) / Dot1Q() / IP()
                                                        / TCP()), "vlan"),
    ("env", "qinq", lambda: p.VNET_LEN * b"\0" + bytes(Ether(type=0x88A8) / Dot1Q() / IP()),
     "vlan"),
    ("eni", "ipv6", lambda: synack(1)[:22] + b"\x86\xdd" + synack(1)[24:], "non_ipv4"),
    ("env", "gre", lambda: env_frame(IP(src=ENV_IPS[0], dst=DB_IP, proto=47) / Raw(bytes(8))),
     "unknown_protocol"),
    ("eni", "gre", lambda: vpc_frame(IP(src=DB_IP, dst=ENI_IP, proto=47) / Raw(bytes(8))),
     "unknown_protocol"),
    ("env", "fragment-past-64k", lambda: syn(frag=8189), "fragment"),
    ("eni", "fragment-past-64k", lambda: synack(1, frag=8189), "fragment"),
    ("env", "ttl-1-non-first-fragment", lambda: syn(ttl=1, frag=185), "ttl_expired"),
    ("env", "icmp-timestamp", lambda: env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=13)),
     "icmp_unsupported"),
    ("eni", "icmp-echo-request", lambda: to_eni(ICMP(type=8)), "inbound_to_eni"),
    ("eni", "icmp-unreachable-quoting-nothing", lambda: to_eni(ICMP(type=3)),
     "icmp_error_no_session"),
    ("eni", "icmp-redirect", lambda: to_eni(ICMP(type=5)), "icmp_unsupported"),
    ("env", "icmp-unreachable-quoting-nothing",
     lambda: env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=3, code=3)),
     "icmp_error_no_session"),
    ("env", "arp-for-another-ip", lambda: env_frame(ARP(psrc=ENV_IPS[0], pdst="169.254.0.9")),
     "arp_ignored"),
    ("env", "arp-reply-for-gateway", lambda: env_frame(ARP(op=2, psrc=ENV_IPS[0], pdst=GW_IP)),
     "arp_ignored"),
    ("eni", "arp-not-ethernet", lambda: vpc_frame(ARP(hwtype=6, pdst=ENI_IP)), "arp_ignored"),
]


@pytest.mark.parametrize(("side", "frame", "reason"), [(m[0], m[2], m[3]) for m in MALFORMED],
                         ids=[f"{m[0]}-{m[1]}" for m in MALFORMED])
def test_malformed_frames_are_counted_by_reason(rig: Rig, side: str, frame, reason: str) -> None:
    port = rig.env if side == "env" else rig.eni
    send_and_assert_no_replies(rig.pipeline, port, frame(), rig.outs(), reason)


def test_inbound_ttl_1_is_dropped_after_the_session_lookup(rig: Rig) -> None:
    send(rig.pipeline, rig.env, syn(40000))
    send_and_assert_no_replies(rig.pipeline, rig.eni, synack(40000, ttl=1), rig.outs(),
                               "ttl_expired")


# -- ARP ------------------------------------------------------------------------------------


def test_env_arp_for_the_gateway_is_answered_with_the_gateway_mac(rig: Rig) -> None:
    ask = env_frame(ARP(hwsrc=ENV_MACS[0], psrc=ENV_IPS[0], pdst=GW_IP), 0)
    reply = parse(send_and_expect(rig.pipeline, rig.env, ask, rig.env_out[0]))
    assert (reply.dst, reply.src) == (ENV_MACS[0], GW_MACS[0])
    assert (reply[ARP].op, reply[ARP].hwsrc, reply[ARP].psrc) == (2, GW_MACS[0], GW_IP)
    assert (reply[ARP].hwdst, reply[ARP].pdst) == (ENV_MACS[0], ENV_IPS[0])


def test_eni_arp_for_the_eni_ip_is_answered_and_the_asker_learned(rig: Rig) -> None:
    asker = "02:cc:00:00:00:20"
    ask = vpc_frame(ARP(hwsrc=asker, psrc="10.0.1.20", pdst=ENI_IP), src_mac=asker)
    reply = parse(send_and_expect(rig.pipeline, rig.eni, ask, rig.eni_out))
    assert (reply.dst, reply.src, reply[ARP].op) == (asker, ENI_MAC, 2)
    assert (reply[ARP].hwsrc, reply[ARP].psrc, reply[ARP].pdst) == (ENI_MAC, ENI_IP, "10.0.1.20")
    assert rig.eni.arp[p.ip_to_bytes("10.0.1.20")] == p.mac_to_bytes(asker)


def test_unresolved_next_hop_is_queued_until_the_arp_reply(rig: Rig) -> None:
    request = parse(send_and_expect(rig.pipeline, rig.env, syn(40000, dst="10.0.1.20"),
                                    rig.eni_out))
    assert (request.dst, request[ARP].op, request[ARP].pdst) == ("ff:ff:ff:ff:ff:ff", 1,
                                                                  "10.0.1.20")
    assert (request[ARP].psrc, request[ARP].hwsrc) == (ENI_IP, ENI_MAC)
    before = drops(rig.pipeline)
    send(rig.pipeline, rig.env, syn(40001, dst="10.0.1.20"))  # joins the queue quietly
    assert len(rig.eni_out) == 1 and drop_delta(before, rig.pipeline) == {}
    send(rig.pipeline, rig.eni, arp_reply_from("10.0.1.20", "02:cc:00:00:00:20"))
    sent = [parse(frame) for frame in rig.eni_out[1:]]
    assert [(f.dst, f.src, f[TCP].sport) for f in sent] == [
        ("02:cc:00:00:00:20", ENI_MAC, 40000), ("02:cc:00:00:00:20", ENI_MAC, 40001)]
    for frame in rig.eni_out[1:]:
        assert_checksums_valid(frame)
    assert not rig.pipeline.has_timers()


def test_arp_is_retried_then_given_up_and_counted(rig: Rig) -> None:
    send(rig.pipeline, rig.env, syn(40000, dst="10.0.1.20"), now=100.0)
    send(rig.pipeline, rig.env, syn(40001, dst="10.0.1.20"), now=100.0)
    rig.pipeline.tick(100.0 + ARP_RETRY / 2)
    assert len(rig.eni_out) == 1
    rig.pipeline.tick(100.0 + ARP_RETRY)
    assert len(rig.eni_out) == 2 and parse(rig.eni_out[-1])[ARP].pdst == "10.0.1.20"
    before = drops(rig.pipeline)
    rig.pipeline.tick(100.0 + ARP_GIVE_UP + 0.1)
    assert drop_delta(before, rig.pipeline) == {"arp_timeout": 2}
    assert not rig.pipeline.has_timers() and len(rig.eni_out) == 2


def test_arp_queue_is_bounded(rig: Rig) -> None:
    for port in range(ARP_QUEUE):
        send(rig.pipeline, rig.env, syn(41000 + port, dst="10.0.1.20"))
    send_and_assert_no_replies(rig.pipeline, rig.env, syn(42000, dst="10.0.1.20"), rig.outs(),
                               "arp_queue_full")


# -- checksum offload (VIRTIO_NET_HDR_F_NEEDS_CSUM) -------------------------------------------


def test_partial_checksum_gets_the_pseudo_header_sum_of_the_new_addresses(rig: Rig) -> None:
    out = send_and_expect(rig.pipeline, rig.env,
                          partial_frame(ENV_IPS[0], DB_IP, 40000, 8080, False), rig.eni_out)
    tcp_len = len(out) - p.IP - 20
    assert out[0] == p.VNET_F_NEEDS_CSUM
    assert int.from_bytes(out[p.IP + 20 + 16:p.IP + 20 + 18], "big") == pseudo_sum(
        ENI_IP, DB_IP, p.PROTO_TCP, tcp_len)
    assert p.ipv4_checksum_ok(out[p.IP:p.IP + 20])
    back = send_and_expect(rig.pipeline, rig.eni, partial_frame(DB_IP, ENI_IP, 8080, 40000, True),
                           rig.env_out[0])
    assert int.from_bytes(back[p.IP + 20 + 16:p.IP + 20 + 18], "big") == pseudo_sum(
        DB_IP, ENV_IPS[0], p.PROTO_TCP, tcp_len)
    assert p.ipv4_checksum_ok(back[p.IP:p.IP + 20])


# -- robustness -----------------------------------------------------------------------------

def _quoting(pkt, icmp_type: int = 3, code: int = 3) -> bytes:
    """An ICMP error from the VPC router quoting ``pkt`` as Hyperplane sent it."""
    return vpc_frame(IP(src="10.0.1.1", dst=ENI_IP) / ICMP(type=icmp_type, code=code)
                     / Raw(bytes(pkt)))


_SENT_UDP = IP(src=ENI_IP, dst=DB_IP, ttl=63) / UDP(sport=5353, dport=53) / b"query"
_SENT_TCP = IP(src=ENI_IP, dst=DB_IP, ttl=63) / TCP(sport=40000, dport=8080, flags="S", seq=1000)
_SENT_PING = IP(src=ENI_IP, dst=DB_IP, ttl=63) / ICMP(type=8, id=7)
_BIG = bytes(range(256)) * 4
_FRAGS_OUT = [env_frame(f) for f in fragment(IP(src=ENV_IPS[0], dst=DB_IP, id=99)
                                            / UDP(sport=6000, dport=7000) / _BIG, 400)]
_FRAGS_IN = [vpc_frame(f) for f in fragment(IP(src=DB_IP, dst=ENI_IP, id=98)
                                            / UDP(sport=53, dport=5353) / _BIG, 400)]

TEMPLATES = {
    "env": [syn(40000), udp_out(), udp_out(chksum=0), syn(40000, dst="10.0.1.20"),
            env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=8, id=7)),
            env_frame(ARP(hwsrc=ENV_MACS[0], psrc=ENV_IPS[0], pdst=GW_IP)),
            tcp_out("A", 1001, 5001), tcp_out("FA", 1001, 5001), tcp_out("R", 1001),
            syn(40001, ttl=1), syn(40002, options=[IPOption_NOP()] * 4),
            env_frame(IP(src=ENV_IPS[0], dst=DB_IP, flags="DF") / UDP(sport=1, dport=2)
                      / bytes(400)),
            env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / UDP(sport=1, dport=2) / bytes(400)),
            env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=3, code=3)
                      / Raw(bytes(IP(src=DB_IP, dst=ENV_IPS[0]) / UDP(sport=53, dport=5353)))),
            *_FRAGS_OUT],
    "eni": [synack(40000), udp_back(5353), udp_back(5353, chksum=0),
            vpc_frame(IP(src=DB_IP, dst=ENI_IP) / ICMP(type=0, id=7)),
            vpc_frame(ARP(hwsrc=DB_MAC, psrc=DB_IP, pdst=ENI_IP)),
            tcp_in("RA", 0, 1001), tcp_in("R", 99999), tcp_in("FA", 5000, 1001),
            _quoting(_SENT_UDP), _quoting(_SENT_TCP, 11, 0), _quoting(_SENT_PING, 3, 4),
            _quoting(_SENT_UDP)[:p.IP + 20 + 8 + 24], synack(40000, ttl=1),
            *_FRAGS_IN],
}
ANSWERED = {"ttl_expired", "mtu_exceeded", "out_of_ports", "eni_connection_limit"}


@st.composite
def mutated(draw, side: str) -> bytes:
    frame = bytearray(draw(st.sampled_from(TEMPLATES[side])))
    for _ in range(draw(st.integers(0, 4))):
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    return bytes(frame[:draw(st.integers(0, len(frame)))])


def property_rig(cache_size: int | None = None) -> Rig:
    store = None if cache_size is None else SessionStore.anonymous(64, Pipeline.new_ports,
                                                                   cache_size)
    rig = make_rig(store, mtu=300)
    for frame in (syn(40000), udp_out(), env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(id=7))):
        send(rig.pipeline, rig.env, frame)  # sessions, so that ENI frames can match one
    rig.eni_out.clear()
    return rig


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_frame_gives_exactly_one_output_or_one_drop(data) -> None:
    rig = property_rig()
    side = data.draw(st.sampled_from(["env", "eni"]))
    frame = data.draw(st.one_of(st.binary(max_size=100), mutated(side)))
    stale = data.draw(st.binary(min_size=64, max_size=64))  # the dataplane reuses one buffer
    buf = bytearray(frame + stale)
    before, sizes = drops(rig.pipeline), [len(out) for out in rig.outs()]
    held, split = rig.eni.frags.held_frames, rig.pipeline.counters["fragmented"]
    rig.pipeline.receive(rig.env if side == "env" else rig.eni, buf, len(frame), 1.0)
    delta = drop_delta(before, rig.pipeline)
    dropped = sum(delta.values())
    sent = sum(len(out) for out in rig.outs()) - sum(sizes)
    arp = p.parse_arp(frame, len(frame)) if frame[22:24] == b"\x08\x06" else None
    if side == "eni" and arp is not None and not (arp[0] == 1 and arp[3] == p.ip_to_bytes(ENI_IP)):
        # ARP replies and announcements are consumed by learning (see the xfail below)
        assert sent == 0 and dropped <= 1
    elif rig.eni.frags.held_frames > held:
        assert (sent, dropped) == (0, 0)  # a fragment waiting for its first fragment
    elif rig.pipeline.counters["fragmented"] > split:
        assert sent >= 2 and dropped == 0
    elif dropped and sent:
        # refused or expired with an ICMP error back to the environment
        assert (sent, dropped) == (1, 1) and set(delta) <= ANSWERED
        error = parse(rig.env_out[0][-1])
        assert error[IP].src == GW_IP and error[ICMP].type in (3, 11)
        assert_checksums_valid(rig.env_out[0][-1])
    else:
        assert (sent, dropped) in ((1, 0), (0, 1))


def assert_rig_consistent(rig: Rig) -> None:
    assert_tables_consistent(rig.pipeline, rig.eni)
    frags = rig.eni.frags
    assert frags.held_frames == sum(len(e.held) for e in frags.entries.values())
    assert frags.held_bytes == sum(len(f) for e in frags.entries.values() for f in e.held)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_frame_sequences_keep_tables_consistent(data) -> None:
    """Also with a cache of one or two sessions: every look-up a miss, objects evicted
    (written back) and read again from their records between frames."""
    rig = property_rig(data.draw(st.sampled_from([None, 1, 2])))
    now = 1.0
    for _ in range(data.draw(st.integers(1, 25))):
        side = data.draw(st.sampled_from(["env", "eni"]))
        frame = bytearray(data.draw(mutated(side)))
        now += data.draw(st.sampled_from([0.0, 0.01, 1.0, 3.0, 100.0, 400.0]))
        rig.pipeline.receive(rig.env if side == "env" else rig.eni, frame, len(frame), now)
        if data.draw(st.booleans()):
            rig.pipeline.tick(now)
        assert_rig_consistent(rig)


# -- known bugs -----------------------------------------------------------------------------


def test_short_ip_frame_in_an_exact_size_buffer_is_counted_as_truncated(rig: Rig) -> None:
    send_and_assert_no_replies(rig.pipeline, rig.env, syn()[:26], rig.outs(), "truncated")


def test_truncated_frame_on_the_eni_is_counted_as_truncated(rig: Rig) -> None:
    send_and_assert_no_replies(rig.pipeline, rig.eni, synack(1)[:40], rig.outs(), "truncated")


def test_tcp_header_cut_by_ip_total_length_is_truncated_even_with_padding(rig: Rig) -> None:
    frame = env_frame(IP(src=ENV_IPS[0], dst=DB_IP, proto=6) / Raw(bytes(10))) + bytes(16)
    send_and_assert_no_replies(rig.pipeline, rig.env, frame, rig.outs(), "truncated")


def test_foreign_arp_on_the_eni_is_counted(rig: Rig) -> None:
    other = vpc_frame(ARP(hwsrc="02:cc:00:00:00:30", psrc="10.0.1.30", pdst="10.0.1.31"))
    send_and_assert_no_replies(rig.pipeline, rig.eni, other, rig.outs(), "arp_ignored")


def test_env_frame_never_uses_a_session_through_its_reply_key(rig: Rig) -> None:
    first = env_frame(IP(src=ENV_IPS[0], dst=ENV_IPS[1]) / UDP(sport=5000, dport=6000) / b"x")
    # the policy refuses a flow toward another environment before any session exists
    send_and_assert_no_replies(rig.pipeline, rig.envs[0], first, [rig.eni_out], "env_to_env")
    eni_port = rig.eni.ports[17].acquire(rig.envs[0].ip_bytes, 5000)
    rig.eni.table.add(make_session(17, rig.envs[0], rig.envs[0].ip_bytes, 5000,
                                   rig.envs[1].ip_bytes, 6000, rig.eni.ip_bytes, eni_port,
                                   rig.eni.gateway_bytes, 120.0, 0.0))
    rig.pipeline.counters["sessions_created"] += 1
    # env 1 now sends exactly the reply key of env 0's session: (env 1 -> ENI, 6000 -> 5000)
    second = env_frame(IP(src=ENV_IPS[1], dst=ENI_IP) / UDP(sport=6000, dport=5000) / b"y", 1)
    send_and_assert_no_replies(rig.pipeline, rig.envs[1], second, [rig.eni_out],
                               "to_hyperplane")
    assert rig.pipeline.counters["sessions_created"] == 1
    # and with the right addresses but the reply tuple's ports, a new session is made
    third = env_frame(IP(src=ENV_IPS[1], dst=DB_IP) / UDP(sport=6000, dport=5000) / b"z", 1)
    assert_checksums_valid(send_and_expect(rig.pipeline, rig.envs[1], third, rig.eni_out))
    assert rig.pipeline.counters["sessions_created"] == 2
