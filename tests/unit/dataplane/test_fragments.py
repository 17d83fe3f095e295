"""IPv4 fragments through the pipeline (both ways, any order), the fragment table, splitting."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR, IPOption_Security
from scapy.layers.inet import fragment as scapy_fragment

from hyperplane.dataplane import fragments
from hyperplane.dataplane import packet as p
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENV_IPS,
    Rig,
    drop_delta,
    drops,
    env_frame,
    ip_of,
    make_rig,
    only_session,
    parse,
    send,
    send_and_assert_no_replies,
    send_and_expect,
    udp_out,
    vpc_frame,
)

DATA = bytes((i * 7 + 3) & 0xFF for i in range(4000))


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def frags_of(pkt: IP, size: int = 1480) -> list[IP]:
    return scapy_fragment(pkt, fragsize=size)


def reassemble(frames: list[bytes]) -> tuple[IP, bytes]:
    """(the first fragment's header, the whole L4 datagram) of fragments given in any order."""
    pieces = {}
    first = None
    for frame in frames:
        ip = ip_of(frame)
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        offset = (int.from_bytes(ip[6:8], "big") & 0x1FFF) * 8
        assert p.ipv4_checksum_ok(ip[:ihl])
        pieces[offset] = ip[ihl:total]
        if offset == 0:
            first = IP(ip[:ihl])
    data, at = b"", 0
    while at in pieces:
        data += pieces[at]
        at += len(pieces[at])
    assert first is not None and at == len(data) and len(pieces) == len(frames)
    return first, data


def l4_checksum_ok(src: str, dst: str, proto: int, l4: bytes) -> bool:
    pseudo = p.ip_to_bytes(src) + p.ip_to_bytes(dst) + bytes([0, proto]) \
        + len(l4).to_bytes(2, "big")
    return p.ones_sum(pseudo + l4) == 0xFFFF


def send_all(rig: Rig, port, frames: list[bytes], now: float = 0.0) -> dict[str, int]:
    before = drops(rig.pipeline)
    for frame in frames:
        send(rig.pipeline, port, frame, now)
    return drop_delta(before, rig.pipeline)


# -- env -> VPC ---------------------------------------------------------------------------------


def outbound_udp(order: str, ident: int = 4242, rig: Rig | None = None) -> tuple[Rig, bytes]:
    rig = rig or make_rig()
    pkt = IP(src=ENV_IPS[0], dst=DB_IP, id=ident) / UDP(sport=6000, dport=7000) / DATA
    frames = [env_frame(f) for f in frags_of(pkt)]
    assert len(frames) == 3
    if order == "reversed":
        frames.reverse()
    elif order == "middle-first":
        frames = [frames[1], frames[2], frames[0]]
    assert send_all(rig, rig.env, frames) == {}
    assert len(rig.eni_out) == 3
    header, datagram = reassemble(rig.eni_out)
    assert (header.src, header.dst, header.ttl, header.id) == (ENI_IP, DB_IP, 63, ident)
    assert all(parse(f).dst == DB_MAC for f in rig.eni_out)
    return rig, datagram


@pytest.mark.parametrize("order", ["in-order", "reversed", "middle-first"])
def test_4k_udp_datagram_out_arrives_byte_identical(order: str) -> None:
    rig, datagram = outbound_udp(order)
    want = bytes(IP(src=ENI_IP, dst=DB_IP) / UDP(sport=6000, dport=7000) / DATA)[20:]
    assert datagram == want
    assert l4_checksum_ok(ENI_IP, DB_IP, 17, datagram)
    assert len(rig.eni.frags) == 0 and not rig.pipeline.has_timers()
    assert rig.pipeline.counters["sessions_created"] == 1
    assert only_session(rig).pkts_out == 3


def test_in_order_and_reversed_give_the_same_bytes() -> None:
    assert outbound_udp("in-order")[1] == outbound_udp("reversed")[1]


def test_fragments_of_a_remapped_port_are_translated_consistently(rig: Rig) -> None:
    send(rig.pipeline, rig.envs[1], udp_out(6000, env=1))  # env 1 takes ENI port 6000
    rig.eni_out.clear()
    _rig, datagram = outbound_udp("reversed", rig=rig)
    eni_port = int.from_bytes(datagram[:2], "big")
    assert eni_port != 6000
    want = bytes(IP(src=ENI_IP, dst=DB_IP) / UDP(sport=eni_port, dport=7000) / DATA)[20:]
    assert datagram == want


def test_tcp_segment_fragments_are_translated(rig: Rig) -> None:
    pkt = IP(src=ENV_IPS[0], dst=DB_IP, id=9) / TCP(sport=40000, dport=8080, flags="PA") / DATA
    frames = [env_frame(f) for f in reversed(frags_of(pkt, 1000))]
    assert send_all(rig, rig.env, frames) == {}
    header, segment = reassemble(rig.eni_out)
    assert header.src == ENI_IP and l4_checksum_ok(ENI_IP, DB_IP, 6, segment)
    assert segment[20:] == DATA


def test_big_ping_fragments_both_ways(rig: Rig) -> None:
    ping = IP(src=ENV_IPS[0], dst=DB_IP, id=11) / ICMP(type=8, id=7, seq=1) / DATA
    assert send_all(rig, rig.env, [env_frame(f) for f in reversed(frags_of(ping))]) == {}
    _header, message = reassemble(rig.eni_out)
    assert p.ones_sum(message) == 0xFFFF and message[8:] == DATA
    ident = int.from_bytes(message[4:6], "big")
    pong = IP(src=DB_IP, dst=ENI_IP, id=12) / ICMP(type=0, id=ident, seq=1) / DATA
    assert send_all(rig, rig.eni, [vpc_frame(f) for f in reversed(frags_of(pong))]) == {}
    header, message = reassemble(rig.env_out[0])
    assert header.dst == ENV_IPS[0] and p.ones_sum(message) == 0xFFFF
    assert int.from_bytes(message[4:6], "big") == 7 and message[8:] == DATA


# -- VPC -> env ---------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["in-order", "reversed"])
def test_4k_udp_reply_in_arrives_byte_identical(rig: Rig, order: str) -> None:
    send(rig.pipeline, rig.envs[1], udp_out(5353, env=1))  # env 0 gets another ENI port
    eni_port = parse(send_and_expect(rig.pipeline, rig.env, udp_out(5353), rig.eni_out))[UDP].sport
    reply = IP(src=DB_IP, dst=ENI_IP, id=777) / UDP(sport=53, dport=eni_port) / DATA
    frames = [vpc_frame(f) for f in frags_of(reply)]
    if order == "reversed":
        frames.reverse()
    assert send_all(rig, rig.eni, frames) == {}
    header, datagram = reassemble(rig.env_out[0])
    assert (header.src, header.dst, header.ttl) == (DB_IP, ENV_IPS[0], 63)
    assert datagram == bytes(IP(src=DB_IP, dst=ENV_IPS[0]) / UDP(sport=53, dport=5353)
                             / DATA)[20:]


def test_unsolicited_fragments_from_the_vpc_never_reach_an_env(rig: Rig) -> None:
    pkt = IP(src=DB_IP, dst=ENI_IP, id=5) / UDP(sport=53, dport=9999) / DATA
    frames = [vpc_frame(f) for f in frags_of(pkt)]
    delta = send_all(rig, rig.eni, frames[1:] + frames[:1])  # held, then the first: no session
    assert delta == {"inbound_to_eni": 1}
    assert rig.env_out[0] == [] and rig.pipeline.has_timers()
    before = drops(rig.pipeline)
    rig.pipeline.tick(fragments.TIMEOUT + 0.1)
    assert drop_delta(before, rig.pipeline) == {"fragment_timeout": 2}
    assert not rig.pipeline.has_timers() and len(rig.eni.frags) == 0


# -- bounds and time ---------------------------------------------------------------------------


def later_fragments(count: int, rig_env: int = 0, size: int = 1480) -> list[bytes]:
    frames = []
    for ident in range(count):
        pkt = IP(src=ENV_IPS[rig_env], dst=DB_IP, id=ident) / UDP(sport=6000, dport=7000) / DATA
        frames.append(env_frame(frags_of(pkt, size)[1]))
    return frames


def test_held_fragments_time_out_and_are_counted(rig: Rig) -> None:
    assert send_all(rig, rig.env, later_fragments(3), now=10.0) == {}
    assert rig.eni_out == [] and rig.pipeline.has_timers()
    before = drops(rig.pipeline)
    rig.pipeline.tick(10.0 + fragments.TIMEOUT - 0.1)
    assert drop_delta(before, rig.pipeline) == {}
    rig.pipeline.tick(10.0 + fragments.TIMEOUT)
    assert drop_delta(before, rig.pipeline) == {"fragment_timeout": 3}
    assert rig.eni.counters["fragment_timeout"] == 3 and not rig.pipeline.has_timers()


def test_a_first_fragment_after_the_time_limit_does_not_release_old_ones(rig: Rig) -> None:
    pkt = IP(src=ENV_IPS[0], dst=DB_IP, id=1) / UDP(sport=6000, dport=7000) / DATA
    frames = [env_frame(f) for f in frags_of(pkt)]
    send_all(rig, rig.env, frames[1:], now=0.0)
    delta = send_all(rig, rig.env, frames[:1], now=fragments.TIMEOUT + 1)
    assert delta == {"fragment_timeout": 2} and len(rig.eni_out) == 1


def test_held_fragments_are_bounded_in_count(rig: Rig) -> None:
    frames = later_fragments(fragments.MAX_HELD + 1)
    assert send_all(rig, rig.env, frames[:-1]) == {}
    send_and_assert_no_replies(rig.pipeline, rig.env, frames[-1], rig.outs(), "fragment_dropped")


def test_held_fragments_are_bounded_in_bytes(rig: Rig) -> None:
    rig.eni.frags.max_held_bytes = 2 * (p.IP + 1500)
    frames = later_fragments(3)
    assert send_all(rig, rig.env, frames[:2]) == {}
    send_and_assert_no_replies(rig.pipeline, rig.env, frames[2], rig.outs(), "fragment_dropped")


def test_fragment_entries_are_bounded(rig: Rig) -> None:
    rig.eni.frags.max_entries = 2
    frames = later_fragments(3)
    assert send_all(rig, rig.env, frames[:2]) == {}
    send_and_assert_no_replies(rig.pipeline, rig.env, frames[2], rig.outs(), "fragment_dropped")


def test_fragments_of_an_expired_session_are_dropped(rig: Rig) -> None:
    pkt = IP(src=ENV_IPS[0], dst=DB_IP, id=3) / UDP(sport=6000, dport=7000) / DATA
    frames = [env_frame(f) for f in frags_of(pkt)]
    rig.eni.frags.timeout = 1000.0
    send(rig.pipeline, rig.env, frames[0])
    send_and_assert_no_replies(rig.pipeline, rig.env, frames[1], rig.outs(), "fragment_dropped",
                               now=rig.pipeline.timeouts.udp + 1)


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("src", ENV_IPS[1], "spoofed"), ("dst", ENI_IP, "to_hyperplane"), ("proto", 47,
                                                                        "unknown_protocol"),
    ("ttl", 1, "ttl_expired")])
def test_non_first_fragment_checks(rig: Rig, field: str, value, reason: str) -> None:
    fields = {"src": ENV_IPS[0], "dst": DB_IP, "id": 3, "proto": 17, field: value}
    pkt = IP(**fields) / DATA
    frame = env_frame(frags_of(pkt)[1])
    send_and_assert_no_replies(rig.pipeline, rig.env, frame, rig.outs(), reason)


def test_interleaved_datagrams_are_kept_apart(rig: Rig) -> None:
    first = [env_frame(f) for f in frags_of(IP(src=ENV_IPS[0], dst=DB_IP, id=1)
                                            / UDP(sport=6000, dport=7000) / DATA)]
    other = bytes(reversed(DATA))
    second = [env_frame(f) for f in frags_of(IP(src=ENV_IPS[0], dst=DB_IP, id=2)
                                             / UDP(sport=6001, dport=7000) / other)]
    order = [second[2], first[1], second[1], first[2], first[0], second[0]]
    assert send_all(rig, rig.env, order) == {}
    by_id: dict[int, list[bytes]] = {}
    for frame in rig.eni_out:
        by_id.setdefault(IP(ip_of(frame)).id, []).append(frame)
    assert reassemble(by_id[1])[1][8:] == DATA and reassemble(by_id[2])[1][8:] == other


def test_first_fragment_refused_for_want_of_ports_gets_code_13() -> None:
    rig = make_rig(port_range=(2000, 2000))
    send(rig.pipeline, rig.envs[1], udp_out(5000, env=1))
    frames = [env_frame(f) for f in frags_of(IP(src=ENV_IPS[0], dst=DB_IP, id=1)
                                             / UDP(sport=6000, dport=7000) / DATA)]
    assert send_all(rig, rig.env, frames) == {"out_of_ports": 1}
    assert parse(rig.env_out[0][-1])[ICMP].code == 13 and len(rig.eni_out) == 1


# -- the table and split, directly ---------------------------------------------------------------


def test_table_forgets_a_datagram_once_complete() -> None:
    table = fragments.FragmentTable()
    key = (0, bytes(8), 17 << 16 | 1)
    held, _ = table.hold(key, bytearray(100), 1480, 1000, False, 0.0)
    assert held and len(table) == 1 and table.waiting()
    frames, timed_out = table.first(key, object(), 1480, True, 0.5)  # type: ignore[arg-type]
    assert len(frames) == 1 and timed_out == 0
    assert len(table) == 0 and not table.waiting() and table.held_bytes == 0


def test_table_keeps_an_entry_until_every_byte_is_seen() -> None:
    table = fragments.FragmentTable()
    key = (1, bytes(8), 17 << 16 | 2)
    table.first(key, object(), 1480, True, 0.0)  # type: ignore[arg-type]
    entry = table.get(key, 0.1)
    assert entry is not None
    table.account(entry, 2960, 100, False)
    assert table.get(key, 0.2) is entry  # 1480..2960 still missing
    table.account(entry, 1480, 1480, True)
    assert table.get(key, 0.3) is None and table.expire(0.3) == 0 and not table.order


def split_of(pkt: IP, mtu: int) -> list[IP]:
    buf = bytearray(env_frame(pkt))
    return [IP(ip_of(bytes(f))) for f in fragments.split(buf, len(buf), mtu)]


def test_split_keeps_only_copied_options_after_the_first_piece() -> None:
    pkt = IP(src=ENI_IP, dst=DB_IP, options=[IPOption_Security(), IPOption_RR(),
                                            IPOption_NOP()]) / UDP() / DATA[:1000]
    pieces = split_of(pkt, 400)
    assert len(pieces) > 2 and all(len(bytes(pc)) <= 400 for pc in pieces)
    original = IP(bytes(pkt))
    assert bytes(pieces[0])[20:pieces[0].ihl * 4] == bytes(original)[20:original.ihl * 4]
    later = bytes(pieces[1])[20:pieces[1].ihl * 4]
    assert later[0] == 130 and len(later) % 4 == 0 and 7 not in later[:11]  # Security, not RR


def test_split_of_a_fragment_keeps_its_offset_and_more_flag() -> None:
    pkt = IP(src=ENI_IP, dst=DB_IP, proto=17, frag=100, flags="MF") / DATA[:1000]
    pieces = split_of(pkt, 500)
    assert [pc.frag for pc in pieces] == [100, 100 + 60, 100 + 120]
    assert all(str(pc.flags) == "MF" for pc in pieces)
    assert b"".join(bytes(pc.payload) for pc in pieces) == DATA[:1000]


def test_split_refuses_an_mtu_without_room() -> None:
    pkt = IP(src=ENI_IP, dst=DB_IP, options=[IPOption_NOP()] * 40) / UDP() / DATA[:100]
    assert split_of(pkt, 64) == []
