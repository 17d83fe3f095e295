"""Checksum arithmetic and the ARP builders of hyperplane.packet, checked against scapy."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from hyperplane.dataplane import packet as p

ipv4 = st.binary(min_size=4, max_size=4)
word = st.binary(min_size=2, max_size=2)


def even_bytes(min_words: int = 0, max_words: int = 40) -> st.SearchStrategy[bytes]:
    return st.integers(min_words, max_words).flatmap(
        lambda n: st.binary(min_size=2 * n, max_size=2 * n))


def with_checksum(data: bytes, at: int) -> bytes:
    """``data`` with a valid complemented checksum written at byte offset ``at``."""
    blank = data[:at] + b"\0\0" + data[at + 2:]
    return blank[:at] + struct.pack("!H", p.checksum(blank)) + blank[at + 2:]


# -- plain sums ---------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_checksum_matches_scapy(data: bytes) -> None:
    assert p.checksum(data) == scapy_checksum(data)
    assert p.ones_sum(data) == p.checksum(data) ^ 0xFFFF


@given(st.binary(max_size=64))
def test_ones_sum_pads_odd_lengths_with_a_zero_byte(data: bytes) -> None:
    assert p.ones_sum(data) == p.ones_sum(data + b"\0" if len(data) % 2 else data)


@given(st.binary(max_size=64))
def test_ones_sum_accepts_bytearray_and_memoryview(data: bytes) -> None:
    assert p.ones_sum(bytearray(data)) == p.ones_sum(memoryview(data)) == p.ones_sum(data)


def test_fold_handles_double_carry() -> None:
    assert p.fold(0x1FFFF) == 1
    assert p.fold(0xFFFF + 0xFFFF) == 0xFFFF
    assert p.fold(0xFFFF_FFFF) == 0xFFFF


@given(st.binary(min_size=20, max_size=60).filter(lambda b: len(b) % 4 == 0))
def test_ipv4_checksum_ok_accepts_what_checksum_writes(header: bytes) -> None:
    assume(any(header))
    assert p.ipv4_checksum_ok(with_checksum(header, 10))


# -- incremental updates (RFC 1624) --------------------------------------------------------


@given(data=st.data(), header=even_bytes(2, 30))
def test_update_full_equals_recompute_for_random_field_changes(data, header: bytes) -> None:
    words = len(header) // 2
    at = 2 * data.draw(st.integers(0, words - 1), label="checksum word")
    fields = [i for i in range(words) if 2 * i != at]
    changed = data.draw(st.lists(st.sampled_from(fields), min_size=1, unique=True), label="words")
    old = with_checksum(header, at)
    new = bytearray(old)
    change = 0
    for index in changed:
        value = data.draw(word)
        change = p.add(change, p.delta(old[2 * index:2 * index + 2], value))
        new[2 * index:2 * index + 2] = value
    # an all-zero header has two valid encodings (0x0000 vs 0xFFFF); no real header is one
    assume(any(new[:at] + new[at + 2:]))
    csum = struct.unpack_from("!H", old, at)[0]
    assert p.update_full(csum, change) == p.checksum(new[:at] + b"\0\0" + new[at + 2:])


@given(old=st.binary(min_size=8, max_size=8), new=st.binary(min_size=8, max_size=8))
def test_delta_of_a_block_equals_sum_of_word_deltas(old: bytes, new: bytes) -> None:
    by_words = 0
    for i in range(0, 8, 2):
        by_words = p.add(by_words, p.delta(old[i:i + 2], new[i:i + 2]))
    assert p.update_full(0x1234, p.delta(old, new)) == p.update_full(0x1234, by_words)


@given(src=ipv4, dst=ipv4, new_src=ipv4, ttl=st.integers(2, 255), ident=st.integers(0, 65535))
def test_nat_rewrite_of_an_ipv4_header_matches_scapy(src, dst, new_src, ttl, ident) -> None:
    """Source rewrite plus TTL decrement (TTL_DELTA) equals scapy's fresh checksum."""
    def header(source: bytes, hops: int) -> IP:
        return IP(bytes(IP(src=p.ip_to_str(source), dst=p.ip_to_str(dst), ttl=hops, id=ident,
                           proto=6)))

    before = header(src, ttl)
    change = p.add(p.delta(src, new_src), p.TTL_DELTA)
    assert p.update_full(before.chksum, change) == header(new_src, ttl - 1).chksum


@given(src=ipv4, dst=ipv4, new_src=ipv4, new_dst=ipv4, length=st.integers(20, 1500),
       proto=st.sampled_from([p.PROTO_TCP, p.PROTO_UDP]))
def test_update_partial_matches_recomputed_pseudo_header_sum(src, dst, new_src, new_dst,
                                                              length, proto) -> None:
    def pseudo(s: bytes, d: bytes) -> int:
        return p.ones_sum(s + d + bytes([0, proto]) + length.to_bytes(2, "big"))

    change = p.add(p.delta(src, new_src), p.delta(dst, new_dst))
    assert p.update_partial(pseudo(src, dst), change) == pseudo(new_src, new_dst)


@given(sport=st.integers(0, 65535), new_sport=st.integers(0, 65535), src=ipv4, new_src=ipv4,
       payload=st.binary(max_size=40))
def test_tcp_checksum_update_for_address_and_port_matches_scapy(sport, new_sport, src, new_src,
                                                                 payload) -> None:
    def segment(source: bytes, port: int) -> IP:
        return IP(bytes(IP(src=p.ip_to_str(source), dst="10.0.1.10")
                        / TCP(sport=port, dport=80) / payload))

    change = p.add(p.delta(src, new_src),
                   p.delta(sport.to_bytes(2, "big"), new_sport.to_bytes(2, "big")))
    got = p.update_full(segment(src, sport)[TCP].chksum, change)
    assert got == segment(new_src, new_sport)[TCP].chksum


def test_ttl_delta_is_the_complement_of_one_hop() -> None:
    assert p.TTL_DELTA == p.delta(bytes([64, 6]), bytes([63, 6]))
    assert p.TTL_DELTA == p.delta(bytes([2, 17]), bytes([1, 17]))


# -- addresses ----------------------------------------------------------------------------


@given(ipv4)
def test_ip_round_trip(raw: bytes) -> None:
    assert p.ip_to_bytes(p.ip_to_str(raw)) == raw


@given(st.binary(min_size=6, max_size=6))
def test_mac_round_trip(raw: bytes) -> None:
    text = p.mac_to_str(raw)
    assert p.mac_to_bytes(text) == raw
    assert text == text.lower() and len(text) == 17


# -- ARP ----------------------------------------------------------------------------------

MAC_A = bytes.fromhex("02e100000000")
MAC_B = bytes.fromhex("02aa00000001")
IP_A = bytes([10, 0, 1, 4])
IP_B = bytes([10, 0, 1, 1])


@pytest.mark.parametrize("op", [1, 2])
def test_arp_frame_matches_scapy(op: int) -> None:
    eth_dst = b"\xff" * 6 if op == 1 else MAC_B
    target_mac = bytes(6) if op == 1 else MAC_B
    frame = p.arp_frame(op, MAC_A, IP_A, target_mac, IP_B, eth_dst=eth_dst)
    expected = Ether(dst=p.mac_to_str(eth_dst), src=p.mac_to_str(MAC_A)) / ARP(
        op=op, hwsrc=p.mac_to_str(MAC_A), psrc=p.ip_to_str(IP_A),
        hwdst=p.mac_to_str(target_mac), pdst=p.ip_to_str(IP_B))
    assert frame[:p.VNET_LEN] == bytes(p.VNET_LEN)
    assert frame[p.VNET_LEN:] == bytes(expected)


def test_arp_frame_addresses_the_target_mac_by_default() -> None:
    frame = p.arp_frame(2, MAC_A, IP_A, MAC_B, IP_B)
    assert frame[p.ETH:p.ETH + 6] == MAC_B
    assert frame[p.ETH + 6:p.ETH + 12] == MAC_A


@given(op=st.integers(0, 65535), smac=st.binary(min_size=6, max_size=6), sip=ipv4,
       tmac=st.binary(min_size=6, max_size=6), tip=ipv4)
def test_parse_arp_round_trip(op, smac, sip, tmac, tip) -> None:
    frame = p.arp_frame(op, smac, sip, tmac, tip)
    assert p.parse_arp(frame, len(frame)) == (op, smac, sip, tip)
    padded = bytearray(frame + bytes(18))  # Ethernet pads ARP to 60 bytes
    assert p.parse_arp(padded, len(padded)) == (op, smac, sip, tip)


def test_parse_arp_reads_scapy_frames() -> None:
    pkt = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:bb:00:00:00:10") / ARP(
        op="who-has", hwsrc="02:bb:00:00:00:10", psrc="10.0.1.10", pdst="10.0.1.4")
    frame = bytes(p.VNET_LEN) + bytes(pkt)
    assert p.parse_arp(frame, len(frame)) == (
        1, bytes.fromhex("02bb00000010"), bytes([10, 0, 1, 10]), IP_A)


@pytest.mark.parametrize("patch", [
    {"hwtype": 6}, {"ptype": 0x86DD}, {"hwlen": 8}, {"plen": 16},
])
def test_parse_arp_rejects_non_ethernet_ipv4(patch: dict) -> None:
    frame = bytes(p.VNET_LEN) + bytes(Ether() / ARP(pdst="10.0.1.4", **patch))
    assert p.parse_arp(frame, len(frame)) is None


def test_parse_arp_rejects_short_frames() -> None:
    frame = p.arp_frame(1, MAC_A, IP_A, bytes(6), IP_B)
    assert p.parse_arp(frame, len(frame) - 1) is None
    assert p.parse_arp(frame[:30], 30) is None


# -- builders and software checksum completion ------------------------------------------------


@given(src=ipv4, dst=ipv4, ttl=st.integers(0, 255), ident=st.integers(0, 0xFFFF))
def test_ipv4_header_has_a_valid_checksum(src: bytes, dst: bytes, ttl: int, ident: int) -> None:
    header = p.ipv4_header(60, ident, 0x4000, ttl, 17, src, dst, 0xC0)
    assert len(header) == 20 and p.ipv4_checksum_ok(header)
    parsed = IP(header)
    assert (parsed.len, parsed.id, parsed.ttl, parsed.proto, parsed.tos) == (60, ident, ttl,
                                                                              17, 0xC0)


def partial(l4, payload: bytes) -> bytearray:
    """A frame as Linux hands over a CHECKSUM_PARTIAL skb (pseudo-header sum in the field)."""
    proto = 6 if l4 is TCP else 17
    seg = bytearray(bytes(l4(sport=1, dport=2) / payload))
    at = 16 if proto == 6 else 6
    pseudo = p.ones_sum(bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, proto])
                        + len(seg).to_bytes(2, "big"))
    seg[at:at + 2] = pseudo.to_bytes(2, "big")
    vnet = struct.pack("<BBHHHH", p.VNET_F_NEEDS_CSUM, 0, 0, 0, 34, at)
    ip = IP(src="10.0.0.1", dst="10.0.0.2", proto=proto) / Raw(bytes(seg))
    return bytearray(vnet + bytes(Ether() / ip))


@pytest.mark.parametrize("l4", [TCP, UDP], ids=["tcp", "udp"])
@given(payload=st.binary(max_size=300))
def test_complete_checksum_gives_what_scapy_computes(l4, payload: bytes) -> None:
    frame = partial(l4, payload)
    p.complete_checksum(frame, len(frame))
    assert frame[0] == 0
    done = IP(bytes(frame[p.IP:]))
    want = IP(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / l4(sport=1, dport=2) / payload))
    assert done[l4].chksum == want[l4].chksum


def test_complete_checksum_leaves_other_frames_alone_and_survives_bad_offsets() -> None:
    frame = partial(TCP, b"data")
    plain = bytearray(frame)
    plain[0] = 0
    untouched = bytes(plain)
    p.complete_checksum(plain, len(plain))
    assert bytes(plain) == untouched
    for start, offset in ((0, 16), (34, 4000), (9000, 0)):
        bad = bytearray(frame)
        struct.pack_into("<HH", bad, 6, start, offset)
        p.complete_checksum(bad, len(bad))
        assert bad[0] == 0 and bad[p.ETH:p.IP + 20] == frame[p.ETH:p.IP + 20]
