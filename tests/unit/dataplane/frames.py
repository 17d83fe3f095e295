"""Shared builders for the pure dataplane tests: a pipeline rig, scapy frames, assertions."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from hyperplane.dataplane import packet as p
from hyperplane.dataplane import records
from hyperplane.dataplane.conntrack import INBOUND, Session, Table
from hyperplane.dataplane.pipeline import DROP_REASONS, EniPort, EnvPort, Pipeline
from hyperplane.dataplane.store import SessionStore

ENI_IP = "10.0.1.4"
ENI_MAC = "02:e1:00:00:00:00"
ROUTER_IP = "10.0.1.1"
ROUTER_MAC = "02:aa:00:00:00:01"
DB_IP = "10.0.1.10"
DB_MAC = "02:bb:00:00:00:10"
GW_IP = "169.254.0.1"
ENV_IPS = ("169.254.128.1", "169.254.128.2")
ENV_MACS = ("02:e0:00:00:00:00", "02:e0:00:00:00:01")
GW_MACS = ("02:e2:00:00:00:00", "02:e2:00:00:00:01")
VNET = bytes(p.VNET_LEN)  # a virtio-net header with no flags


@dataclass
class Rig:
    """One ENI on 10.0.1.0/24 and two environments using it, with captured output."""

    pipeline: Pipeline
    eni: EniPort
    envs: list[EnvPort]
    eni_out: list[bytes] = field(default_factory=list)
    env_out: list[list[bytes]] = field(default_factory=list)

    @property
    def env(self) -> EnvPort:
        return self.envs[0]

    def outs(self) -> list[list[bytes]]:
        return [self.eni_out, *self.env_out]


def capture(out: list[bytes]):
    """A ``tx`` that keeps a copy of every frame (the pipeline hands out views of its buffer)."""
    return lambda frame: out.append(bytes(frame))


def make_rig(store: SessionStore | None = None, **eni_kwargs) -> Rig:
    """The rig; ``store``: its sessions' table (default: anonymous memory)."""
    pipeline = Pipeline(store=store)
    eni = EniPort("eni-1", "hpi0", ENI_IP, ENI_MAC, "10.0.1.0/24", ROUTER_IP, **eni_kwargs)
    eni.arp[p.ip_to_bytes(ROUTER_IP)] = p.mac_to_bytes(ROUTER_MAC)
    eni.arp[p.ip_to_bytes(DB_IP)] = p.mac_to_bytes(DB_MAC)
    rig = Rig(pipeline, eni, [])
    eni.tx = capture(rig.eni_out)
    pipeline.enis[eni.id] = eni
    for index, (ip, mac, gw_mac) in enumerate(zip(ENV_IPS, ENV_MACS, GW_MACS, strict=True)):
        env = EnvPort(f"hpe{index}", ip, mac, GW_IP, gw_mac, eni)
        out: list[bytes] = []
        env.tx = capture(out)
        rig.envs.append(env)
        rig.env_out.append(out)
        pipeline.envs[env.ifname] = env
    return rig


# -- frames -------------------------------------------------------------------------------


def env_frame(pkt: Packet, env: int = 0, vnet: bytes = VNET) -> bytes:
    """A frame as environment ``env`` sends it to its gateway."""
    return vnet + bytes(Ether(src=ENV_MACS[env], dst=GW_MACS[env]) / pkt)


def vpc_frame(pkt: Packet, src_mac: str = DB_MAC, vnet: bytes = VNET) -> bytes:
    """A frame as a VPC neighbour sends it to the ENI."""
    return vnet + bytes(Ether(src=src_mac, dst=ENI_MAC) / pkt)


def syn(sport: int = 40000, dst: str = DB_IP, dport: int = 8080, env: int = 0,
        **ip_fields) -> bytes:
    return env_frame(IP(src=ENV_IPS[env], dst=dst, **{"ttl": 64, **ip_fields})
                     / TCP(sport=sport, dport=dport, flags="S", seq=1000), env)


def synack(eni_port: int, src: str = DB_IP, sport: int = 8080, **ip_fields) -> bytes:
    return vpc_frame(IP(src=src, dst=ENI_IP, **{"ttl": 64, **ip_fields})
                     / TCP(sport=sport, dport=eni_port, flags="SA", seq=5000, ack=1001))


def udp_out(sport: int = 5353, chksum: int | None = None, env: int = 0) -> bytes:
    return env_frame(IP(src=ENV_IPS[env], dst=DB_IP) / UDP(sport=sport, dport=53, chksum=chksum)
                     / b"query", env)


def udp_back(eni_port: int, chksum: int | None = None) -> bytes:
    return vpc_frame(IP(src=DB_IP, dst=ENI_IP) / UDP(sport=53, dport=eni_port, chksum=chksum)
                     / b"answer!")


def tcp_out(flags: str, seq: int, ack: int = 0, sport: int = 40000, window: int = 65535,
            payload: bytes = b"", options: list | None = None, env: int = 0, dst: str = DB_IP,
            dport: int = 8080, **ip_fields) -> bytes:
    """A TCP segment from environment ``env`` with explicit sequence numbers."""
    return env_frame(IP(src=ENV_IPS[env], dst=dst, **{"ttl": 64, **ip_fields})
                     / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
                           window=window, options=options or []) / payload, env)


def tcp_in(flags: str, seq: int, ack: int = 0, eni_port: int = 40000, window: int = 65535,
           payload: bytes = b"", options: list | None = None, src: str = DB_IP,
           sport: int = 8080, **ip_fields) -> bytes:
    """A TCP segment from the VPC to the ENI with explicit sequence numbers."""
    return vpc_frame(IP(src=src, dst=ENI_IP, **{"ttl": 64, **ip_fields})
                     / TCP(sport=sport, dport=eni_port, flags=flags, seq=seq, ack=ack,
                           window=window, options=options or []) / payload)


def only_session(rig: Rig, now: float = 0.0) -> Session:
    (s,) = rig.eni.table.live(now)
    return s


def assert_tables_consistent(pipeline: Pipeline, eni: EniPort) -> None:
    """The ENI's slot of the store: records, index, cache, counts and ports agree."""
    assert eni.table.store is pipeline.store
    assert_slot_consistent(pipeline.store, eni.table, eni.ip_bytes, eni.ports)


def assert_slot_consistent(store: SessionStore, table: Table, eni_ip: bytes | None,
                           ports: dict) -> None:
    """One slot of a store: records, index, cache, counts and ports agree (a white-box
    check); ``eni_ip`` None: not checked."""
    recs = [rec for rec in store._records()  # noqa: SLF001 - a white-box check
            if records.KEY.unpack_from(store.mem, records.record_at(rec)
                                       + records.OUT_KEY_AT)[0] == table.slot]
    assert len(recs) == len(table) == store.slot_count(table.slot)
    assert len(store.index) == 2 * store.count
    refs: dict[int, dict[tuple[bytes, int], list[int]]] = {}
    for rec in recs:
        f = records.REC.unpack_from(store.mem, records.record_at(rec))
        assert f[records.F_LIVE] == 1 and f[records.F_SEQ] % 2 == 0
        proto = f[records.F_PROTO]
        out_key = (proto, f[records.F_ADDRS], f[records.F_PORTS])
        in_key = (proto | INBOUND, f[records.F_ADDRS_IN], f[records.F_PORTS_IN])
        for which, key in enumerate((out_key, in_key)):
            h = records.key_hash(table.slot, *key)
            assert store.index.lookup(h, store.mem, table.slot, key) == (rec << 1) | which
        env_ip, env_port, _, _, ip, eni_port = records.endpoints(f)
        assert eni_ip is None or ip == eni_ip
        entry = refs.setdefault(proto, {}).setdefault((env_ip, env_port), [eni_port, 0])
        assert entry[0] == eni_port  # endpoint-independent: one port per endpoint
        entry[1] += 1
    for key, s in table.sessions.items():
        assert s.cached and not s.dead and store.cached[s.rec] is s
        assert key in (s.out_key, s.in_key) and s.rec in recs
    assert len(table.sessions) == 2 * sum(1 for s in store.cached.values() if s.table is table)
    for proto, allocator in ports.items():
        want = refs.get(proto, {})
        assert len(allocator) == len(want)  # no port held for an endpoint without sessions
        for (ip, port), (eni_port, count) in want.items():
            assert allocator.mapping(ip, port) == (eni_port, count)
            assert allocator.owner(eni_port) == (ip, port)


def ip_of(frame: bytes) -> bytes:
    """The IPv4 packet of a frame (without the virtio and Ethernet headers)."""
    return frame[p.IP:]


def eni_port_of(frame: bytes) -> int:
    return parse(frame)[TCP].sport


def patched(frame: bytes, at: int, value: int) -> bytes:
    return frame[:at] + bytes([value]) + frame[at + 1:]


def to_eni(pkt) -> bytes:
    return vpc_frame(IP(src=DB_IP, dst=ENI_IP) / pkt)


def arp_reply_from(ip: str, mac: str) -> bytes:
    return vpc_frame(ARP(op=2, hwsrc=mac, psrc=ip, hwdst=ENI_MAC, pdst=ENI_IP), src_mac=mac)


def partial_frame(src: str, dst: str, sport: int, dport: int, to_eni: bool) -> bytes:
    """A TCP frame as Linux hands over a CHECKSUM_PARTIAL skb: pseudo-header sum in the field."""
    tcp = bytes(TCP(sport=sport, dport=dport, flags="PA", seq=7, ack=9) / b"payload")
    csum = pseudo_sum(src, dst, p.PROTO_TCP, len(tcp))
    tcp = tcp[:16] + csum.to_bytes(2, "big") + tcp[18:]
    vnet = struct.pack("<BBHHHH", p.VNET_F_NEEDS_CSUM, 0, 0, 0, 14 + 20, 16)
    pkt = IP(src=src, dst=dst, proto=p.PROTO_TCP) / Raw(tcp)
    return vpc_frame(pkt, vnet=vnet) if to_eni else env_frame(pkt, vnet=vnet)


def parse(frame: bytes) -> Ether:
    assert frame[:p.VNET_LEN] == VNET or frame[0] & p.VNET_F_NEEDS_CSUM
    return Ether(frame[p.VNET_LEN:])


def l4_of(pkt: Packet) -> Packet:
    for layer in (TCP, UDP, ICMP):
        if layer in pkt:
            return pkt[layer]
    raise AssertionError(f"no TCP/UDP/ICMP layer in {pkt!r}")


def assert_checksums_valid(frame: bytes) -> None:
    """Recompute the IPv4 and L4 checksums with scapy and compare with the frame's."""
    ip = parse(frame)[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    l4 = l4_of(fresh)
    udp_zero = isinstance(l4, UDP) and l4.chksum == 0  # "no checksum" stays as sent
    if not udp_zero:
        del l4.chksum
    rebuilt = IP(bytes(fresh))
    assert ip.chksum == rebuilt.chksum, f"IPv4 checksum {ip.chksum:#x} != {rebuilt.chksum:#x}"
    got, want = l4_of(ip).chksum, l4_of(rebuilt).chksum
    assert got == want, f"{type(l4).__name__} checksum {got:#x} != {want:#x}"


def pseudo_sum(src: str, dst: str, proto: int, l4_len: int) -> int:
    """The uncomplemented pseudo-header sum Linux leaves in a CHECKSUM_PARTIAL field."""
    raw = (p.ip_to_bytes(src) + p.ip_to_bytes(dst) + bytes([0, proto])
           + l4_len.to_bytes(2, "big"))
    return p.ones_sum(raw)


# -- driving the pipeline -----------------------------------------------------------------


def drops(pipeline: Pipeline) -> dict[str, int]:
    return {reason: pipeline.counters[reason] for reason in DROP_REASONS}


def drop_delta(before: dict[str, int], pipeline: Pipeline) -> dict[str, int]:
    after = drops(pipeline)
    return {k: after[k] - before[k] for k in DROP_REASONS if after[k] != before[k]}


def send(pipeline: Pipeline, port: EnvPort | EniPort, frame: bytes, now: float = 0.0) -> None:
    buf = bytearray(frame)
    pipeline.receive(port, buf, len(buf), now)


def send_and_expect(pipeline: Pipeline, port: EnvPort | EniPort, frame_bytes: bytes,
                    out_list: list[bytes], now: float = 0.0) -> bytes:
    """Send one frame; exactly one frame must come out on ``out_list`` and nothing be dropped."""
    before, sent = drops(pipeline), len(out_list)
    send(pipeline, port, frame_bytes, now)
    delta = drop_delta(before, pipeline)
    assert delta == {}, f"unexpected drops {delta}"
    assert len(out_list) == sent + 1, f"expected one frame, got {len(out_list) - sent}"
    return out_list[-1]


def send_and_assert_no_replies(pipeline: Pipeline, port: EnvPort | EniPort, frame_bytes: bytes,
                               outs: list[list[bytes]], reason: str, now: float = 0.0) -> None:
    """Send one frame; nothing may come out and exactly ``reason`` must grow, by one."""
    assert reason in DROP_REASONS
    before, sizes = drops(pipeline), [len(out) for out in outs]
    send(pipeline, port, frame_bytes, now)
    assert [len(out) for out in outs] == sizes, "a frame came out"
    delta = drop_delta(before, pipeline)
    assert delta == {reason: 1}, f"drops {delta}, expected one {reason!r}"
