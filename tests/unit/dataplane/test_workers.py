"""The worker group's pure parts: replies merged, table names, port slices narrowed."""

from __future__ import annotations

import socket

from hyperplane.dataplane import bpf, shm
from hyperplane.dataplane.loop import Worker
from hyperplane.dataplane.portalloc import EniPorts
from hyperplane.dataplane.workers import merge, worker_table
from tests.unit.dataplane.frames import make_rig, send_and_expect, syn
from tests.unit.dataplane.test_nat_conntrack import assert_refused_with_code_13


def test_replies_merge_counters_summed_lists_joined() -> None:
    one = {"ok": True, "stats": {"global": {"forwarded": 3, "no_session": 0},
                                 "enis": {"eni-a": {"sessions_active": 2}},
                                 "table": {"path": "/dev/shm/a", "sessions": 2},
                                 "fast_path": {"mode": "python"}},
           "sessions": [{"n": 1}]}
    two = {"ok": True, "stats": {"global": {"forwarded": 4, "no_session": 1},
                                 "enis": {"eni-a": {"sessions_active": 5},
                                          "eni-b": {"sessions_active": 1}},
                                 "table": {"path": "/dev/shm/b", "sessions": 5},
                                 "fast_path": {"mode": "python"}},
           "sessions": [{"n": 2}]}
    got = merge([one, two])
    assert got["ok"] is True
    assert got["stats"]["global"] == {"forwarded": 7, "no_session": 1}
    assert got["stats"]["enis"] == {"eni-a": {"sessions_active": 7},
                                    "eni-b": {"sessions_active": 1}}
    assert got["stats"]["table"] == {"path": "/dev/shm/a", "sessions": 7}
    assert got["stats"]["fast_path"] == {"mode": "python"}
    assert got["sessions"] == [{"n": 1}, {"n": 2}]
    assert one["sessions"] == [{"n": 1}]  # the replies are not changed


def test_each_worker_has_its_own_table_file() -> None:
    assert worker_table("/dev/shm/hp-0123456789-dataplane.sessions", 1) == \
        "/dev/shm/hp-0123456789-dataplane-w1.sessions"
    assert worker_table("/tmp/t", 0) == "/tmp/t-w0.sessions"


def test_a_worker_allocates_only_ports_the_program_steers_to_it() -> None:
    a, b = socket.socketpair()
    try:
        for count in (2, 3, 4):
            workers = [Worker(i, count, a) for i in range(count)]
            for w in workers:
                low, high = w.ports((1024, 65535))
                assert (low * count) >> 16 == w.index and (high * count) >> 16 == w.index
            spans = [w.ports((1024, 65535)) for w in workers]
            covered = sorted(p for low, high in spans for p in range(low, high + 1))
            assert covered == list(range(1024, 65536))  # every port, once
        # a range wholly in another worker's slice: empty, so allocations fail (counted)
        low, high = Worker(1, 2, a).ports((40000, 40003))
        assert (low, high) == (40000, 40003)
        low, high = Worker(0, 2, a).ports((40000, 40003))
        assert low > high
        assert bpf.port_slice(1, 2) == (32768, 65535)
    finally:
        a.close()
        b.close()


def test_a_connection_limit_counts_the_sessions_of_every_worker(tmp_path) -> None:
    """Worker 1 holds two sessions of the ENI; worker 0, limit 3, admits one more only."""
    peer_path, own_path = str(tmp_path / "w1.sessions"), str(tmp_path / "w0.sessions")
    peer = make_rig(store=shm.create_table(peer_path, 64, EniPorts), connection_limit=3)
    for port in (50000, 50002):
        send_and_expect(peer.pipeline, peer.env, syn(port), peer.eni_out)
    peer.pipeline.flush()  # as its tick does every second
    assert shm.read_slot_counter(peer_path, "sessions_active") == {"eni-1": 2}
    a, b = socket.socketpair()
    try:
        worker = Worker(0, 2, a, (peer_path, str(tmp_path / "absent.sessions")))
        assert worker.elsewhere(0.0) == {"eni-1": 2}
        assert worker.elsewhere(0.5) is None  # read again only after PEERS_INTERVAL
    finally:
        a.close()
        b.close()
    own = make_rig(store=shm.create_table(own_path, 64, EniPorts), connection_limit=3)
    own.eni.elsewhere = 2
    send_and_expect(own.pipeline, own.env, syn(41000), own.eni_out)
    assert_refused_with_code_13(own, syn(41002), "eni_connection_limit")
    own.eni.elsewhere = 0  # the peer's sessions ended
    send_and_expect(own.pipeline, own.env, syn(41004), own.eni_out)
    for rig in (peer, own):
        rig.pipeline.close_tables()
