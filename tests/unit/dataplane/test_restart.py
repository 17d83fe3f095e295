"""A dataplane killed and started again on the same table: flows, ports and counters go on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from hyperplane.dataplane import __main__ as entry
from hyperplane.dataplane import packet as p
from hyperplane.dataplane.loop import Dataplane
from hyperplane.dataplane.natgw import NatGatewayPipeline, NatGatewayPort
from hyperplane.dataplane.pipeline import Pipeline
from hyperplane.dataplane.shm import attach_table, create_table
from hyperplane.dataplane.store import SessionStore
from hyperplane.dataplane.tables import FLUSH_INTERVAL
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENV_IPS,
    GW_IP,
    GW_MACS,
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
    tcp_in,
    tcp_out,
    udp_back,
    udp_out,
)
from tests.unit.dataplane.test_spill import SPILL_IP
from tests.unit.dataplane.test_spill_snapshot import eni_entry, env_entry

ENV_ISN, REMOTE_ISN = 1000, 5000


def crash(rig: Rig) -> None:
    """A kill -9: the table stays as written (the lock goes with the process)."""
    release = rig.pipeline.store.release
    assert release is not None
    release()


def restart(path: str) -> Rig:
    """A new process: attach, and the controller pushes the same ENIs and environments."""
    return make_rig(store=attach_table(path, Pipeline.new_ports))


def echo(ident: int) -> bytes:
    return env_frame(IP(src=ENV_IPS[0], dst=DB_IP) / ICMP(type=8, id=ident, seq=1) / b"ping")


def sport(frame: bytes) -> int:
    pkt = parse(frame)
    return pkt[ICMP].id if ICMP in pkt else pkt[TCP if TCP in pkt else UDP].sport


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "hp-test-dataplane.sessions")


def test_flows_go_on_with_the_same_eni_ports_after_a_crash(path: str) -> None:
    rig = make_rig(store=create_table(path, 1000, Pipeline.new_ports))
    other = make_rig()  # takes ports 40000 and 5353 first, so the flows below are moved
    send(other.pipeline, other.env, tcp_out("S", 1, sport=40000))
    send_and_expect(rig.pipeline, rig.envs[1], tcp_out("S", 7, sport=40000, env=1), rig.eni_out)
    tcp_port = sport(send_and_expect(rig.pipeline, rig.env, tcp_out("S", ENV_ISN), rig.eni_out))
    assert tcp_port != 40000  # env 1 holds 40000: env 0's endpoint was moved
    send_and_expect(rig.pipeline, rig.eni, tcp_in("SA", REMOTE_ISN, ENV_ISN + 1,
                                                  eni_port=tcp_port), rig.env_out[0])
    send_and_expect(rig.pipeline, rig.env, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1),
                    rig.eni_out)
    udp_port = sport(send_and_expect(rig.pipeline, rig.env, udp_out(), rig.eni_out))
    send_and_expect(rig.pipeline, rig.eni, udp_back(udp_port), rig.env_out[0])
    icmp_id = sport(send_and_expect(rig.pipeline, rig.env, echo(77), rig.eni_out))
    created = rig.pipeline.counters["sessions_created"]
    rig.pipeline.tick(1.0)  # the periodic flush: counters written
    crash(rig)

    rig = restart(path)
    pl = rig.pipeline
    assert pl.counters["restarts"] == 1 and pl.counters["attached_sessions"] == 4
    assert pl.counters["sessions_created"] == created  # counters continue
    assert_tables_consistent(pl, rig.eni)
    out = send_and_expect(pl, rig.env, tcp_out("PA", ENV_ISN + 1, REMOTE_ISN + 1,
                                               payload=b"after"), rig.eni_out, now=1.0)
    assert sport(out) == tcp_port and parse(out)[IP].src == ENI_IP
    assert_checksums_valid(out)
    back = send_and_expect(pl, rig.eni, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 6,
                                               eni_port=tcp_port), rig.env_out[0], now=1.0)
    assert parse(back)[TCP].dport == 40000 and parse(back)[IP].dst == ENV_IPS[0]
    assert_checksums_valid(back)
    assert sport(send_and_expect(pl, rig.env, udp_out(), rig.eni_out, now=1.0)) == udp_port
    back = send_and_expect(pl, rig.eni, udp_back(udp_port), rig.env_out[0], now=1.0)
    assert parse(back)[UDP].dport == 5353
    assert sport(send_and_expect(pl, rig.env, echo(77), rig.eni_out, now=1.0)) == icmp_id
    assert pl.counters["sessions_created"] == created  # no new session
    # a new endpoint still cannot take a port a restored flow holds
    fresh = sport(send_and_expect(pl, rig.env, tcp_out("S", 9, sport=tcp_port), rig.eni_out))
    assert fresh not in (tcp_port, 40000)


def test_a_rst_is_accepted_after_a_crash_lost_the_last_acks(path: str) -> None:
    rig = make_rig(store=create_table(path, 100, Pipeline.new_ports))
    send_and_expect(rig.pipeline, rig.env, tcp_out("S", ENV_ISN), rig.eni_out)
    send_and_expect(rig.pipeline, rig.eni, tcp_in("SA", REMOTE_ISN, ENV_ISN + 1),
                    rig.env_out[0])
    send_and_expect(rig.pipeline, rig.env, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1,
                                                   window=10), rig.eni_out)
    send_and_expect(rig.pipeline, rig.eni, tcp_in("PA", REMOTE_ISN + 1, ENV_ISN + 1,
                                                  payload=bytes(1000)), rig.env_out[0])
    send_and_expect(rig.pipeline, rig.env, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1001,
                                                   window=10), rig.eni_out)  # not flushed
    crash(rig)
    rig = restart(path)
    # in window from the environment's last ACK (REMOTE_ISN + 1001), not from the one the
    # table kept (REMOTE_ISN + 1, window 10): accepted, as the table is liberal after attach
    send_and_expect(rig.pipeline, rig.eni, tcp_in("R", REMOTE_ISN + 1001), rig.env_out[0])
    (s,) = rig.eni.table.live(0.0)
    assert s.state == 8  # CLOSE


def test_counters_continue_across_restarts(path: str) -> None:
    rig = make_rig(store=create_table(path, 100, Pipeline.new_ports))
    for port in (41000, 41001):
        send(rig.pipeline, rig.env, tcp_out("S", 1, sport=port))
    send(rig.pipeline, rig.eni, tcp_in("A", 1, eni_port=1234))  # no_session, on the ENI
    rig.pipeline.tick(0.0)
    crash(rig)
    for restarts in (1, 2):
        rig = restart(path)
        pl = rig.pipeline
        assert (pl.counters["restarts"], pl.counters["forwarded"]) == (restarts, 2)
        assert rig.eni.counters["no_session"] == 1 and rig.eni.table.created == 2
        pl.tick(FLUSH_INTERVAL * restarts)
        crash(rig)


def test_a_full_table_answers_new_flows_with_code_13(path: str) -> None:
    rig = make_rig(store=create_table(path, 2, Pipeline.new_ports))
    for port in (41000, 41001):
        send_and_expect(rig.pipeline, rig.env, tcp_out("S", 1, sport=port), rig.eni_out)
    before, sent = drops(rig.pipeline), len(rig.eni_out)
    frame = tcp_out("S", 1, sport=41002)
    send(rig.pipeline, rig.env, frame)
    assert drop_delta(before, rig.pipeline) == {"table_full": 1} and len(rig.eni_out) == sent
    error = parse(rig.env_out[0][-1])
    assert (error[IP].src, error[ICMP].type, error[ICMP].code) == (GW_IP, 3, 13)
    assert bytes(error[ICMP].payload) == ip_of(frame)[:28]
    assert_checksums_valid(rig.env_out[0][-1])
    back = send_and_expect(rig.pipeline, rig.eni, tcp_in("SA", 9, 2, eni_port=41000),
                           rig.env_out[0])  # existing flows keep working
    assert parse(back)[TCP].dport == 41000


def test_a_restarted_dataplane_frees_the_enis_its_first_snapshot_lacks(
        path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Dataplane, "_open", lambda self, port: None)  # no AF_PACKET sockets
    monkeypatch.setattr(Dataplane, "_close", lambda self, ifname: None)
    enis = [eni_entry("eni-1", 0, ENI_IP), eni_entry("eni-2", 1, SPILL_IP)]
    config = {"enis": enis, "envs": [env_entry(eni="eni-1", spill=["eni-2"])]}
    dp = Dataplane(str(tmp_path / "dp.sock"), path, 100)
    dp.apply_config(config)
    pl = dp.pipeline
    for eni in pl.enis.values():
        eni.tx = capture([])
        eni.arp[p.ip_to_bytes(DB_IP)] = p.mac_to_bytes(DB_MAC)
    pl.enis["eni-1"].connection_limit = 1
    for port in (41000, 41001, 41002):  # one on eni-1, two spill to eni-2
        send(pl, pl.envs["hpe0"], tcp_out("S", 1, sport=port), now=time.monotonic())
    assert [len(e.table) for e in pl.enis.values()] == [1, 2]
    rows = dp.conntrack(None)
    assert sorted(row["eni"] for row in rows) == ["eni-1", "eni-2", "eni-2"]
    dp.server.close()
    dp.epoll.close()
    release = pl.store.release
    assert release is not None
    release()  # kill -9

    dp = Dataplane(str(tmp_path / "dp.sock"), path)
    dp.apply_config({"enis": enis[:1], "envs": [env_entry(eni="eni-1")]})
    pl = dp.pipeline
    assert [len(e.table) for e in pl.enis.values()] == [1] and pl.store.count == 1
    stats = dp.stats()
    assert stats["global"]["restarts"] == 1 and stats["global"]["attached_sessions"] == 3
    assert stats["table"]["generation"] == 2 and stats["table"]["path"] == path
    assert [row["eni"] for row in dp.conntrack(None)] == ["eni-1"]
    assert dp.conntrack("eni-2") == []
    dp.close()  # SIGTERM: clean
    dp.server.close()
    dp.epoll.close()
    again = attach_table(path, Pipeline.new_ports)
    assert not again.was_dirty and again.count == 1
    again.close()


def test_the_process_refuses_a_table_of_another_capacity(path: str, tmp_path: Path,
                                                         capsys) -> None:
    create_table(path, 10, Pipeline.new_ports).close()
    code = entry.main(["--control", str(tmp_path / "dp.sock"), "--table", path,
                       "--capacity", "20"])
    assert code == 2 and "capacity 10, not 20" in capsys.readouterr().err


# -- the NAT gateway's own table -----------------------------------------------------------------
GW_MAC, GW_PRIVATE, EIP, ROUTER, ROUTER_MAC = ("02:e3:00:00:00:00", "10.0.0.5", "198.51.100.10",
                                               "10.0.0.1", "02:aa:00:00:00:01")
INSIDE, SERVER = "10.0.1.4", "203.0.113.10"


def gateway(store: SessionStore) -> tuple[NatGatewayPipeline, NatGatewayPort, list[bytes]]:
    pl = NatGatewayPipeline(store=store)
    gw = NatGatewayPort("nat-a", "hpz0", GW_PRIVATE, GW_MAC, "10.0.0.0/24", ROUTER, EIP,
                        "10.0.0.0/16", seed=1)
    gw.arp[p.ip_to_bytes(ROUTER)] = p.mac_to_bytes(ROUTER_MAC)
    out: list[bytes] = []
    gw.tx = capture(out)
    pl.enis[gw.id] = gw
    return pl, gw, out


def through(pl: NatGatewayPipeline, gw: NatGatewayPort, out: list[bytes], pkt) -> Ether:
    frame = bytearray(VNET + bytes(Ether(src=ROUTER_MAC, dst=GW_MAC) / pkt))
    pl.receive(gw, frame, len(frame), 0.0)
    assert_checksums_valid(out[-1])
    return parse(out[-1])


def test_the_nat_gateway_goes_on_after_a_crash(tmp_path: Path) -> None:
    path = str(tmp_path / "hp-test-natgw.sessions")
    pl, gw, out = gateway(create_table(path, 100, NatGatewayPipeline.new_ports))
    first = through(pl, gw, out, IP(src=INSIDE, dst=SERVER) / TCP(sport=40000, dport=80,
                                                                  flags="S"))
    moved = through(pl, gw, out, IP(src="10.0.1.5", dst=SERVER) / TCP(sport=40000, dport=80,
                                                                      flags="S"))
    assert first[TCP].sport == 40000 != moved[TCP].sport
    pl.tick(0.0)  # counters flushed
    release = pl.store.release
    assert release is not None
    release()
    pl, gw, out = gateway(attach_table(path, NatGatewayPipeline.new_ports))
    back = through(pl, gw, out, IP(src=SERVER, dst=EIP) / TCP(sport=80, dport=moved[TCP].sport,
                                                              flags="SA"))
    assert (back[IP].dst, back[TCP].dport, back[Ether].dst) == ("10.0.1.5", 40000, ROUTER_MAC)
    again = through(pl, gw, out, IP(src=INSIDE, dst=SERVER) / TCP(sport=40000, dport=80,
                                                                  flags="A"))
    assert again[TCP].sport == 40000 and pl.counters["sessions_created"] == 2
    third = through(pl, gw, out, IP(src="10.0.1.6", dst=SERVER) / TCP(sport=40000, dport=80,
                                                                      flags="S"))
    assert third[TCP].sport not in (40000, moved[TCP].sport)  # the ports in use were rebuilt
    assert pl.counters["restarts"] == 1
    pl.close_tables()


def test_an_env_gone_after_a_restart_gets_nothing(path: str) -> None:
    rig = make_rig(store=create_table(path, 100, Pipeline.new_ports))
    port = sport(send_and_expect(rig.pipeline, rig.envs[1], udp_out(env=1), rig.eni_out))
    crash(rig)
    rig = restart(path)
    del rig.pipeline.envs["hpe1"]  # the snapshot after the restart no longer has env 1
    before = len(rig.env_out[1])
    send(rig.pipeline, rig.eni, udp_back(port))
    assert len(rig.env_out[1]) == before and GW_MACS  # nowhere to deliver: discarded
