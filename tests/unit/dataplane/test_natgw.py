"""The NAT gateway role of the NAT engine: translation both ways, per-destination ports."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.natgw import NatGatewayPipeline, NatGatewayPort
from tests.unit.dataplane.frames import VNET, assert_checksums_valid, capture, parse

GW_MAC, GW_IP, EIP = "02:e3:00:00:00:00", "10.0.0.5", "198.51.100.10"
ROUTER_IP, ROUTER_MAC = "10.0.0.1", "02:aa:00:00:00:01"
NEIGHBOUR_IP, NEIGHBOUR_MAC = "10.0.0.20", "02:bb:00:00:00:20"  # on the public subnet
INSIDE = "10.0.1.4"  # an ENI in the private subnet: reached through the router
SERVER = "203.0.113.10"


class Rig:
    def __init__(self, per_destination: int = 55000, idle: float = 350.0) -> None:
        self.pipeline = NatGatewayPipeline()
        self.gw = NatGatewayPort("nat-a", "hpz0", GW_IP, GW_MAC, "10.0.0.0/24", ROUTER_IP,
                                 EIP, "10.0.0.0/16", per_destination, (1024, 65535), idle,
                                 seed=1)
        self.gw.arp[p.ip_to_bytes(ROUTER_IP)] = p.mac_to_bytes(ROUTER_MAC)
        self.gw.arp[p.ip_to_bytes(NEIGHBOUR_IP)] = p.mac_to_bytes(NEIGHBOUR_MAC)
        self.out: list[bytes] = []
        self.gw.tx = capture(self.out)
        self.pipeline.enis[self.gw.id] = self.gw

    def send(self, pkt, src_mac: str = ROUTER_MAC, now: float = 0.0) -> Ether | None:
        frame = bytearray(VNET + bytes(Ether(src=src_mac, dst=GW_MAC) / pkt))
        before = len(self.out)
        self.pipeline.receive(self.gw, frame, len(frame), now)
        if len(self.out) == before:
            return None
        assert len(self.out) == before + 1
        assert_checksums_valid(self.out[-1])
        return parse(self.out[-1])

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.pipeline.counters.items() if v and k not in (
            "sessions_created", "forwarded", "sessions_expired")}


def syn(src: str = INSIDE, sport: int = 40000, dst: str = SERVER, dport: int = 80):
    return IP(src=src, dst=dst, ttl=63) / TCP(sport=sport, dport=dport, flags="S", seq=7)


def test_outbound_is_translated_to_the_elastic_ip_and_replies_come_back() -> None:
    rig = Rig()
    out = rig.send(syn())
    assert (out[IP].src, out[IP].dst, out[TCP].sport, out[IP].ttl) == (EIP, SERVER, 40000, 62)
    assert out[Ether].dst == ROUTER_MAC and out[Ether].src == GW_MAC
    back = rig.send(IP(src=SERVER, dst=EIP) / TCP(sport=80, dport=40000, flags="SA", ack=8))
    assert (back[IP].src, back[IP].dst, back[TCP].dport) == (SERVER, INSIDE, 40000)
    assert back[Ether].dst == ROUTER_MAC  # the inside host is behind the subnet router
    assert rig.drops() == {}


def test_an_on_link_inside_host_gets_its_replies_directly() -> None:
    rig = Rig()
    rig.send(IP(src=NEIGHBOUR_IP, dst=SERVER) / UDP(sport=5000, dport=53) / b"q",
             src_mac=NEIGHBOUR_MAC)
    back = rig.send(IP(src=SERVER, dst=EIP) / UDP(sport=53, dport=5000) / b"a")
    assert back[Ether].dst == NEIGHBOUR_MAC and back[IP].dst == NEIGHBOUR_IP


def test_icmp_echo_both_ways() -> None:
    rig = Rig()
    out = rig.send(IP(src=INSIDE, dst=SERVER) / ICMP(type=8, id=77, seq=1))
    assert out[IP].src == EIP
    back = rig.send(IP(src=SERVER, dst=EIP) / ICMP(type=0, id=out[ICMP].id, seq=1))
    assert back[IP].dst == INSIDE and back[ICMP].id == 77


def test_connections_per_destination_are_limited() -> None:
    rig = Rig(per_destination=2)
    ports = {rig.send(syn(sport=s))[TCP].sport for s in (40000, 40001)}
    assert ports == {40000, 40001}
    assert rig.send(syn(sport=40002)) is None
    assert rig.drops() == {"error_port_allocation": 1}
    assert rig.gw.counters["error_port_allocation"] == 1
    assert rig.send(syn(sport=40002, dport=443)) is not None  # another destination
    assert rig.send(syn(sport=40003, dst="203.0.113.11")) is not None


def test_the_same_port_serves_different_destinations() -> None:
    rig = Rig()
    first = rig.send(syn(src="10.0.1.4", sport=40000))
    second = rig.send(syn(src="10.0.1.5", sport=40000))
    assert first[TCP].sport == 40000 and second[TCP].sport != 40000  # same destination
    third = rig.send(syn(src="10.0.1.6", sport=40000, dport=443))
    assert third[TCP].sport == 40000  # another destination: the port is free there


def test_idle_sessions_expire_and_free_their_port() -> None:
    rig = Rig(per_destination=1, idle=350.0)
    assert rig.send(syn(sport=40000)) is not None
    assert rig.send(syn(sport=40001), now=100.0) is None  # still held
    assert rig.send(syn(sport=40001), now=351.0) is not None  # the first one idled out
    assert rig.pipeline.counters["sessions_expired"] == 1


@pytest.mark.parametrize(("pkt", "reason"), [
    (IP(src=SERVER, dst=EIP) / TCP(sport=80, dport=5555, flags="S"), "inbound_to_nat_gateway"),
    (IP(src=SERVER, dst=EIP) / UDP(sport=53, dport=5555), "inbound_to_nat_gateway"),
    (IP(src=SERVER, dst=EIP) / ICMP(type=8), "inbound_to_nat_gateway"),
    (IP(src=SERVER, dst=EIP) / TCP(sport=80, dport=5555, flags="A"), "no_session"),
    (IP(src="172.16.0.1", dst=SERVER) / TCP(sport=1, dport=80, flags="S"), "not_from_vpc"),
    (IP(src=INSIDE, dst=GW_IP) / ICMP(type=8), "to_nat_gateway"),
    (IP(src=INSIDE, dst=SERVER, ttl=1) / TCP(flags="S"), "ttl_expired"),
    (IP(src=INSIDE, dst=SERVER, flags="MF") / UDP(), "fragment"),
    (IP(src=INSIDE, dst=SERVER) / ICMP(type=3, code=1), "icmp_unsupported"),
])
def test_what_is_dropped(pkt, reason: str) -> None:
    rig = Rig()
    assert rig.send(pkt) is None
    assert rig.drops() == {reason: 1}


def test_arp_for_the_private_address_is_answered() -> None:
    rig = Rig()
    frame = bytearray(VNET + bytes(Ether(src=ROUTER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=ROUTER_MAC, psrc=ROUTER_IP, pdst=GW_IP)))
    rig.pipeline.receive(rig.gw, frame, len(frame), 0.0)
    reply = parse(rig.out[-1])
    assert reply[ARP].op == 2 and reply[ARP].psrc == GW_IP and reply[ARP].hwsrc == GW_MAC
