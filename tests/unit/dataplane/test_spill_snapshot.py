"""Spill ENIs in the dataplane's configuration snapshot (``Dataplane.apply_config``,
without packet sockets): the spill list filled and emptied, a spill without a primary
ignored, and the per-ENI count the controller reads freed of expired sessions first."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.loop import Dataplane
from tests.unit.dataplane.frames import (
    DB_IP,
    DB_MAC,
    ENI_IP,
    ENV_IPS,
    ENV_MACS,
    GW_IP,
    GW_MACS,
    ROUTER_IP,
    capture,
    drop_delta,
    drops,
    send,
    send_and_expect,
    syn,
)
from tests.unit.dataplane.test_spill import SPILL_IP, counters

# -- the snapshot (dataplane.apply_config, without packet sockets) ------------------------------


def eni_entry(eni_id: str, index: int, ip: str, limit: int = 2) -> dict:
    return {"id": eni_id, "ifname": f"hpi{index}", "ip": ip, "mac": f"02:e1:00:00:00:0{index}",
            "cidr": "10.0.1.0/24", "gateway": ROUTER_IP, "connection_limit": limit,
            "port_range": [1024, 65535], "mtu": 1500, "egress": None}


def env_entry(**extra) -> dict:
    return {"ifname": "hpe0", "ip": ENV_IPS[0], "mac": ENV_MACS[0], "gateway_ip": GW_IP,
            "gateway_mac": GW_MACS[0], **extra}


@pytest.fixture
def dataplane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(Dataplane, "_open", lambda self, port: None)  # no AF_PACKET sockets
    monkeypatch.setattr(Dataplane, "_close", lambda self, ifname: None)
    dp = Dataplane(str(tmp_path / "dp.sock"))
    yield dp
    dp.server.close()
    dp.epoll.close()


def test_the_snapshot_fills_and_empties_the_spill_list(dataplane: Dataplane) -> None:
    enis = [eni_entry("eni-1", 0, ENI_IP), eni_entry("eni-2", 1, SPILL_IP)]
    dataplane.apply_config({"enis": enis, "envs": [env_entry(eni="eni-1")]})
    pl = dataplane.pipeline
    env = pl.envs["hpe0"]
    assert env.eni is pl.enis["eni-1"] and env.spill == ()
    # unknown ids, the primary itself and repeats are left out
    dataplane.apply_config({"enis": enis, "envs": [env_entry(
        eni="eni-1", spill=["eni-9", "eni-2", "eni-1", "eni-2"])]})
    assert pl.envs["hpe0"] is env and env.spill == (pl.enis["eni-2"],)
    # drive it: two flows on the primary, the third spills, the fourth is refused
    outs: dict[str, list[bytes]] = {"eni-1": [], "eni-2": [], "hpe0": []}
    for eni in pl.enis.values():
        eni.tx = capture(outs[eni.id])
        eni.arp[p.ip_to_bytes(DB_IP)] = p.mac_to_bytes(DB_MAC)
    env.tx = capture(outs["hpe0"])
    for port, carrier in ((41000, "eni-1"), (41001, "eni-1"), (41002, "eni-2")):
        send_and_expect(pl, env, syn(port), outs[carrier])
    # the ENI leaves the snapshot (the env still names it): it leaves the env's list
    spill = pl.enis["eni-2"]
    dataplane.apply_config({"enis": enis[:1], "envs": [env_entry(
        eni="eni-1", spill=["eni-2"])]})
    assert "eni-2" not in pl.enis and env.spill == () and env.eni is pl.enis["eni-1"]
    before = drops(pl)
    send(pl, env, syn(41003))
    assert drop_delta(before, pl) == {"eni_connection_limit": 1}
    assert len(outs["eni-2"]) == 1  # nothing more went there
    assert len(spill.table) == 0 and spill.table.store is None  # its sessions went with it
    # back in the snapshot but not in the env's entry: still no spill
    dataplane.apply_config({"enis": enis, "envs": [env_entry(eni="eni-1")]})
    assert env.spill == ()


def test_a_spill_without_a_primary_is_ignored(dataplane: Dataplane) -> None:
    enis = [eni_entry("eni-1", 0, ENI_IP), eni_entry("eni-2", 1, SPILL_IP)]
    dataplane.apply_config({"enis": enis, "envs": [env_entry(eni=None, spill=["eni-2"])]})
    env = dataplane.pipeline.envs["hpe0"]
    assert env.eni is None and env.spill == ()
    dataplane.apply_config({"enis": enis, "envs": [env_entry(eni="eni-9", spill=["eni-2"])]})
    assert env.eni is None and env.spill == ()


def test_stats_at_the_limit_free_expired_sessions_first(dataplane: Dataplane,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller adds an ENI when one is full: the count it reads must be of live
    sessions, not of expired ones still in the table (expiry is amortised)."""
    dataplane.apply_config({"enis": [eni_entry("eni-1", 0, ENI_IP)],
                            "envs": [env_entry(eni="eni-1")]})
    pl = dataplane.pipeline
    env, eni = pl.envs["hpe0"], pl.enis["eni-1"]
    out: list[bytes] = []
    eni.tx, env.tx = capture(out), capture([])
    eni.arp[p.ip_to_bytes(DB_IP)] = p.mac_to_bytes(DB_MAC)
    for port in (41000, 41001):  # the limit (2), at time 100
        send_and_expect(pl, env, syn(port), out, now=100.0)
    monkeypatch.setattr("hyperplane.dataplane.loop.time.monotonic", lambda: 101.0)
    assert dataplane.stats()["enis"]["eni-1"]["sessions_active"] == 2  # live: kept
    before = counters(pl, "sessions_expired")
    monkeypatch.setattr("hyperplane.dataplane.loop.time.monotonic", lambda: 100.0 + 3600)
    assert dataplane.stats()["enis"]["eni-1"]["sessions_active"] == 0
    assert counters(pl, "sessions_expired")["sessions_expired"] == \
        before["sessions_expired"] + 2
