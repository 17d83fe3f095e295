"""Frames as bytes: offsets, checksums and small builders (pure).

The dataplane never parses a frame into objects.  It reads and writes a few
fields in place at fixed offsets of one receive buffer laid out as

    [0:10)   virtio-net header (PACKET_VNET_HDR): flags, gso_type, hdr_len,
             gso_size, csum_start, csum_offset
    [10:24)  Ethernet: destination MAC, source MAC, ethertype
    [24:..)  IPv4 header, then TCP / UDP / ICMP

and every offset the dataplane reads or writes has a name here (``IP_TTL``,
``IP_SRC``, ``TCP_FLAGS``...: absolute in the buffer, or from the L4 header's
start); no other module writes a number for a field's place.
and adjusts checksums incrementally (RFC 1624).  A full checksum field holds
the complement of the ones'-complement sum; when the virtio header says
NEEDS_CSUM the L4 field holds instead the *uncomplemented* pseudo-header sum
that the kernel completes later, so it is adjusted with the opposite sign and
only for pseudo-header (address) changes.  ``complete_checksum`` finishes such
a frame in software instead (as the kernel's ``skb_checksum_help``), for the
rare frame that must be cut into fragments.

Builders (ARP frames, a plain IPv4 header) are here too.  This module knows
layouts and arithmetic only; what to do with a frame is ``pipeline``'s (with
``tcpstate``, ``icmp`` and ``fragments``).
"""

from __future__ import annotations

import struct

# -- where things are in the receive buffer (absolute offsets) -----------------------------
VNET_LEN = 10
VNET_FLAGS = 0          # virtio-net flags: VNET_F_NEEDS_CSUM
VNET_GSO_TYPE = 1       # gso_type: non-zero means a GSO super-frame
VNET_F_NEEDS_CSUM = 1
VNET_CSUM = struct.Struct("<HH")  # at offset 6: csum_start (from the Ethernet header), offset
ETH = VNET_LEN
ETH_ADDRS = slice(ETH, ETH + 12)  # destination MAC then source MAC
ETH_TYPE = ETH + 12     # two bytes
IP = ETH + 14
# offsets inside an IPv4 header (also used for the header an ICMP error quotes)
IPH_TOTAL, IPH_ID, IPH_FRAG, IPH_TTL, IPH_PROTO, IPH_CSUM, IPH_SRC, IPH_DST = \
    2, 4, 6, 8, 9, 10, 12, 16
IPH_MIN = 20            # an IPv4 header without options
IP_VIHL = IP            # version (high nibble) and header length in words (low)
IP_TOTAL = IP + IPH_TOTAL     # two bytes: total length
IP_ID = IP + IPH_ID           # two bytes: identification
IP_FRAG = IP + IPH_FRAG       # flags (DF, MF) and the fragment offset's high bits
IP_FRAG_LOW = IP_FRAG + 1     # the fragment offset's low byte
IP_TTL = IP + IPH_TTL
IP_PROTO = IP + IPH_PROTO
IP_CSUM = IP + IPH_CSUM       # two bytes
IP_SRC_AT = IP + IPH_SRC
IP_DST_AT = IP + IPH_DST
IP_SRC = slice(IP_SRC_AT, IP_SRC_AT + 4)
IP_DST = slice(IP_DST_AT, IP_DST_AT + 4)
IP_ADDRS = slice(IP_SRC_AT, IP_DST_AT + 4)  # source then destination: 8 bytes

# -- offsets from the start of the L4 header ----------------------------------------------
L4_SPORT = 0            # TCP and UDP: source port (two bytes)
L4_DPORT = 2            # destination port (two bytes)
L4_PORTS_LEN = 4
ICMP_TYPE = 0
ICMP_CSUM = 2
ICMP_ID = 4             # echo identifier (two bytes)
TCP_SEQ = 4
TCP_ACK = 8
TCP_OFF = 12            # data offset in words (high nibble)
TCP_FLAGS = 13
TCP_MIN = 20            # the shortest TCP header; UDP and ICMP headers are 8 bytes
L4_MIN = 8

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

IP_DF = 0x40  # in byte 6 of the IPv4 header (flags and fragment offset high bits)
IP_MF = 0x20

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

ICMP_ECHO_REPLY = 0
ICMP_UNREACH = 3
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAM_PROBLEM = 12
ICMP_ERRORS = (ICMP_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM)
UNREACH_FRAG_NEEDED = 4
UNREACH_ADMIN_PROHIBITED = 13

# offset of the L4 checksum field from the start of the L4 header
L4_CSUM = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMP: 2}

# reading a key's parts in place: 8 address bytes, a 32-bit and a 16-bit big-endian word
IPS = struct.Struct("!8s").unpack_from
WORD32 = struct.Struct("!I").unpack_from
WORD16 = struct.Struct("!H").unpack_from

TTL_DELTA = 0xFEFF  # ones'-complement change of the TTL/protocol word when TTL drops by one


def fold(value: int) -> int:
    value = (value & 0xFFFF) + (value >> 16)
    return (value & 0xFFFF) + (value >> 16)


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """Ones'-complement sum of 16-bit big-endian words (odd length padded)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    return fold(fold(total))


def checksum(data: bytes | bytearray | memoryview) -> int:
    return ones_sum(data) ^ 0xFFFF


def delta(old: bytes, new: bytes) -> int:
    """The ones'-complement change turning a sum over ``old`` into one over ``new``."""
    return fold(fold(ones_sum(new) + (ones_sum(old) ^ 0xFFFF)))


def add(a: int, b: int) -> int:
    return fold(a + b)


def update_full(csum: int, change: int) -> int:
    """A complemented (complete) checksum after a change of ``change``."""
    return fold((csum ^ 0xFFFF) + change) ^ 0xFFFF


def update_partial(csum: int, change: int) -> int:
    """An uncomplemented partial (pseudo-header) sum after the same change."""
    return fold(csum + change)


def ipv4_header(total: int, ident: int, flags_frag: int, ttl: int, proto: int, src: bytes,
                dst: bytes, tos: int = 0) -> bytes:
    """A 20-byte IPv4 header with a valid checksum."""
    raw = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, ident, flags_frag, ttl,
                                proto, 0, src, dst))
    struct.pack_into("!H", raw, 10, checksum(raw))
    return bytes(raw)


def complete_checksum(buf: bytearray, length: int) -> None:
    """Finish a NEEDS_CSUM frame's L4 checksum in software and clear the flag.

    As the kernel's ``skb_checksum_help``: the field holds the pseudo-header sum,
    so the complement of the sum from ``csum_start`` to the end of the IPv4
    packet is the checksum.  A UDP result of 0 is sent as 0xFFFF.
    """
    if not buf[VNET_FLAGS] & VNET_F_NEEDS_CSUM:
        return
    start, offset = VNET_CSUM.unpack_from(buf, 6)
    begin = ETH + start
    end = min(length, IP + ((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1]))
    at = begin + offset
    if begin < IP + IPH_MIN or at + 2 > end:
        buf[VNET_FLAGS] &= ~VNET_F_NEEDS_CSUM & 0xFF
        return
    value = checksum(buf[begin:end])
    if value == 0 and buf[IP_PROTO] == PROTO_UDP:
        value = 0xFFFF
    buf[at] = value >> 8
    buf[at + 1] = value & 0xFF
    buf[VNET_FLAGS] &= ~VNET_F_NEEDS_CSUM & 0xFF


def ip_to_bytes(ip: str) -> bytes:
    return bytes(int(part) for part in ip.split("."))


def ip_to_str(raw: bytes | bytearray | memoryview) -> str:
    return ".".join(str(b) for b in bytes(raw[:4]))


def mac_to_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_to_str(raw: bytes | bytearray | memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw[:6]))


def ipv4_checksum_ok(header: bytes | bytearray | memoryview) -> bool:
    return ones_sum(header) == 0xFFFF


ARP_FMT = "!HHBBH6s4s6s4s"


def arp_frame(op: int, src_mac: bytes, src_ip: bytes, dst_mac: bytes, dst_ip: bytes,
              eth_dst: bytes | None = None) -> bytes:
    """An ARP request (op 1) or reply (op 2) frame with an empty virtio header."""
    eth = (eth_dst or dst_mac) + src_mac + struct.pack("!H", ETH_P_ARP)
    body = struct.pack(ARP_FMT, 1, ETH_P_IP, 6, 4, op, src_mac, src_ip, dst_mac, dst_ip)
    return bytes(VNET_LEN) + eth + body


def parse_arp(buf: bytes | bytearray | memoryview, length: int) -> tuple | None:
    """(op, sender mac, sender ip, target ip) of an Ethernet/IPv4 ARP frame, else None."""
    if length < ETH + 14 + 28:
        return None
    htype, ptype, hlen, plen, op, smac, sip, _tmac, tip = struct.unpack_from(ARP_FMT, buf, IP)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        return None
    return op, smac, sip, tip
