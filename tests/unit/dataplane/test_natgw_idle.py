"""The NAT gateway as AWS's: a RST to both sides at the idle timeout, CloudWatch metrics."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from hyperplane.dataplane.natgw import (
    METRICS,
    NATGW_DROPS,
    active_connections,
    cloudwatch_metrics,
)
from hyperplane.dataplane.pipeline import DROP_REASONS
from hyperplane.dataplane.tcpreset import rst_frame
from tests.unit.dataplane.frames import VNET, assert_checksums_valid, parse
from tests.unit.dataplane.test_natgw import EIP, GW_MAC, INSIDE, ROUTER_MAC, SERVER, Rig

IDLE = 2.0


def segment(flags: str, seq: int, ack: int = 0, inbound: bool = False, port: int = 40000,
            payload: bytes = b""):
    if inbound:
        return IP(src=SERVER, dst=EIP) / TCP(sport=80, dport=port, flags=flags, seq=seq,
                                             ack=ack) / payload
    return IP(src=INSIDE, dst=SERVER, ttl=63) / TCP(sport=40000, dport=80, flags=flags,
                                                    seq=seq, ack=ack) / payload


def connected(rig: Rig) -> int:
    """A connection that exchanged data: inside acknowledged 501, the server 10."""
    port = rig.send(segment("S", 7))[TCP].sport
    rig.send(segment("SA", 500, 8, inbound=True, port=port))
    rig.send(segment("PA", 8, 501, payload=b"hi"))
    rig.send(segment("A", 501, 10, inbound=True, port=port))
    return port


def resets(rig: Rig, since: int) -> list:
    frames = [parse(f) for f in rig.out[since:]]
    for f in rig.out[since:]:
        assert_checksums_valid(f)
    return [f for f in frames if TCP in f and f[TCP].flags == "R"]


def test_rst_frame_is_a_valid_reset() -> None:
    frame = rst_frame(bytes([203, 0, 113, 10]), bytes([10, 0, 1, 4]), 80, 40000, 501)
    assert_checksums_valid(bytes(frame))
    pkt = parse(bytes(frame))
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].flags, pkt[IP].ttl) == (SERVER, INSIDE, "DF", 64)
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, pkt[TCP].flags) == (80, 40000, 501,
                                                                              "R")


def test_an_idle_connection_is_reset_on_both_sides() -> None:
    rig = Rig(idle=IDLE)
    port = connected(rig)
    before = len(rig.out)
    rig.pipeline.tick(1.0)
    assert len(rig.out) == before  # not idle yet
    rig.pipeline.tick(IDLE + 0.5)
    inside, outside = resets(rig, before)
    # each with the sequence number its receiver expects next: its own last ACK
    assert (inside[IP].src, inside[IP].dst, inside[TCP].sport, inside[TCP].dport,
            inside[TCP].seq) == (SERVER, INSIDE, 80, 40000, 501)
    assert inside.dst == ROUTER_MAC  # the inside host is behind the subnet router
    assert (outside[IP].src, outside[IP].dst, outside[TCP].sport, outside[TCP].dport,
            outside[TCP].seq) == (EIP, SERVER, port, 80, 10)
    counters = rig.gw.counters
    assert (counters["idle_timeouts"], counters["idle_resets_sent"]) == (1, 2)
    assert rig.gw.table.live(IDLE + 0.5) == [] and rig.pipeline.counters["sessions_expired"] == 1


def test_a_connection_closed_or_never_answered_is_not_reset() -> None:
    rig = Rig(idle=IDLE)
    port = connected(rig)
    rig.send(segment("FA", 10, 501))
    rig.send(segment("FA", 501, 11, inbound=True, port=port))
    rig.send(segment("A", 11, 502))
    rig.send(IP(src=INSIDE, dst=SERVER, ttl=63)
             / TCP(sport=40001, dport=80, flags="S", seq=1))  # never answered
    (closed,) = [s for s in rig.gw.table.live(0.0) if s.env_port == 40000]
    assert closed.state == 7  # TIME_WAIT: both FINs
    before = len(rig.out)
    rig.pipeline.tick(IDLE + 0.5)
    assert resets(rig, before) == [] and rig.gw.counters.get("idle_timeouts", 0) == 0
    assert rig.gw.table.live(IDLE + 0.5) == []


def test_a_packet_continuing_an_idled_connection_resets_it_and_is_dropped() -> None:
    rig = Rig(idle=IDLE)
    connected(rig)
    before = len(rig.out)
    frame = bytearray(VNET + bytes(Ether(src=ROUTER_MAC, dst=GW_MAC)
                                   / segment("PA", 10, 501, payload=b"again")))
    rig.pipeline.receive(rig.gw, frame, len(frame), IDLE + 0.5)  # before any tick reaped it
    assert [r[IP].dst for r in resets(rig, before)] == [INSIDE, SERVER]
    assert len(rig.out) == before + 2  # the data itself is not forwarded
    assert rig.pipeline.counters["idle_timeout"] == 1 and rig.gw.counters["idle_timeout"] == 1
    assert rig.gw.table.live(IDLE + 0.5) == []
    fresh = rig.send(segment("S", 100), now=IDLE + 0.6)  # a new SYN opens a new flow
    assert fresh[TCP].flags == "S" and len(rig.gw.table.live(IDLE + 0.6)) == 1


def test_counters_under_cloudwatch_names() -> None:
    rig = Rig(idle=IDLE)
    connected(rig)
    rig.send(IP(src=INSIDE, dst=SERVER, ttl=63) / UDP(sport=5000, dport=53) / b"q")
    rig.send(IP(src=SERVER, dst=EIP) / TCP(sport=80, dport=999, flags="S"))  # dropped
    rows = rig.pipeline.store.describe(0.0, rig.gw.table.slot)
    metrics = cloudwatch_metrics(rig.gw.counters, active_connections(rows),
                                 DROP_REASONS + NATGW_DROPS)
    tcp_out = [40, 42]  # SYN, data (IPv4 bytes); the UDP query is 29
    tcp_in = [40, 40]
    assert metrics == {
        "ActiveConnectionCount": 1, "BytesInFromDestination": sum(tcp_in) + 40,
        "BytesInFromSource": sum(tcp_out) + 29, "BytesOutToDestination": sum(tcp_out) + 29,
        "BytesOutToSource": sum(tcp_in), "ConnectionAttemptCount": 2,
        "ConnectionEstablishedCount": 1, "ErrorPortAllocation": 0, "IdleTimeoutCount": 0,
        "PacketsDropCount": 1, "PacketsInFromDestination": 3, "PacketsInFromSource": 3,
        "PacketsOutToDestination": 3, "PacketsOutToSource": 2}
    assert set(METRICS) | {"ActiveConnectionCount", "PacketsDropCount"} == set(metrics)
