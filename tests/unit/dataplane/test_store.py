"""The session store: table files, attach (verify, repair, rebuild), slots, counters, pages."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hyperplane.dataplane import packet as p
from hyperplane.dataplane import records
from hyperplane.dataplane.conntrack import UNKNOWN, Session, Table, make_session
from hyperplane.dataplane.portalloc import EniPorts
from hyperplane.dataplane.records import TableError, table_path
from hyperplane.dataplane.shm import attach_table, create_table, open_table, read_sessions
from hyperplane.dataplane.store import SessionStore, TableFullError
from tests.unit.dataplane.frames import assert_slot_consistent

ENI = bytes([10, 0, 1, 4])
REMOTE = bytes([10, 0, 1, 10])


def env_ip(n: int) -> bytes:
    return bytes([169, 254, 128, 1 + n % 4])


def bind(store: SessionStore, eni_id: str = "eni-1") -> Table:
    table = Table()
    store.bind(eni_id, table, lambda s: None)
    return table


def open_flow(table: Table, n: int, proto: int = p.PROTO_TCP, now: float = 0.0,
              timeout: float = 100.0, remote_port: int = 8080) -> Session:
    """Flow ``n``: environment ``env_ip(n)``, port 2000 + n // 4 (so the four
    environments' endpoints want the same ENI ports and some are moved)."""
    ports = table.store.slots[table.slot].ports  # type: ignore[union-attr]
    ip, port = env_ip(n), 2000 + n // 4
    eni_port = ports[proto].acquire(ip, port)
    assert eni_port is not None
    s = make_session(proto, None, ip, port, REMOTE, 0 if proto == p.PROTO_ICMP else remote_port,
                     ENI, eni_port, REMOTE, timeout, now)
    if proto == p.PROTO_TCP:
        s.state, s.ack_out, s.win_out, s.end_out = 3, 5001, 100, 1001  # ESTABLISHED
    table.add(s)
    return s


def crash(store: SessionStore) -> None:
    """What a kill -9 leaves: the file mapped and written as it is, nothing closed cleanly."""
    assert store.release is not None
    store.release()


def snapshot(store: SessionStore, table: Table) -> dict:
    """Everything derived, in comparable form: keys -> record, ports, counts."""
    keys = {}
    for s in table.live(0.0):
        keys[s.out_key] = keys[s.in_key] = (s.rec, s.proto, s.env_ip, s.env_port, s.eni_port,
                                            s.remote_ip, s.remote_port, s.ip_out, s.full_out,
                                            s.part_out, s.ip_in, s.full_in, s.part_in)
    ports = table.store.slots[table.slot].ports  # type: ignore[union-attr]
    return {"keys": keys, "count": len(table), "ports": {proto: (a.mappings(), len(a))
                                                         for proto, a in ports.items()}}


def test_table_path_names_the_state_and_role() -> None:
    assert table_path("a1b2", "dataplane") == "/dev/shm/hp-a1b2-dataplane.sessions"
    assert table_path("a1b2", "natgw") == "/dev/shm/hp-a1b2-natgw.sessions"
    for bad in (("a/b", "natgw"), ("", "natgw"), ("a1", "controller")):
        with pytest.raises(ValueError):
            table_path(*bad)


def test_create_close_attach_and_the_header(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 100, EniPorts)
    assert os.path.getsize(path) == records.file_size(100)
    head = records.read_header(store.mem, os.path.getsize(path))
    assert (head["capacity"], head["generation"], head["dirty"]) == (100, 1, 1)
    open_flow(bind(store), 0)
    store.close()
    with open(path, "rb") as fh:
        assert records.read_header(fh.read(), os.path.getsize(path))["dirty"] == 0
    again = open_table(path, EniPorts)  # present: attached, not created
    assert (again.generation, again.was_dirty, again.attached, again.count) == (2, False, 1, 1)
    crash(again)
    third = attach_table(path, EniPorts)
    assert (third.generation, third.was_dirty) == (3, True)
    third.close()


def test_files_of_another_kind_are_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    create_table(path, 10, EniPorts).close()
    with pytest.raises(TableError, match="capacity 10, not 20"):
        attach_table(path, EniPorts, capacity=20)
    with open(path, "r+b") as fh:  # another version
        fh.seek(8)
        fh.write((2).to_bytes(4, "little"))
    with pytest.raises(TableError, match="version 2"):
        attach_table(path, EniPorts)
    junk = tmp_path / "junk.sessions"
    junk.write_bytes(os.urandom(records.file_size(10)))
    with pytest.raises(TableError, match="bad magic"):
        attach_table(str(junk), EniPorts)
    short = tmp_path / "short.sessions"
    short.write_bytes(b"x")
    with pytest.raises(TableError, match="not a session table"):
        attach_table(str(short), EniPorts)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 10, EniPorts)
    with pytest.raises(TableError, match="in use by another process"):
        attach_table(path, EniPorts)
    crash(store)  # the lock goes with the writer
    attach_table(path, EniPorts).close()


def test_keys_ports_and_mappings_are_rebuilt_as_they_were(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 1000, EniPorts, cache_size=8)
    table = bind(store)
    flows = [open_flow(table, n, proto) for n in range(40)
             for proto in (p.PROTO_TCP, p.PROTO_UDP, p.PROTO_ICMP)]
    open_flow(table, 3, p.PROTO_UDP, remote_port=53)  # a second session of one endpoint
    table.remove(flows[10])
    assert any(s.eni_port != s.env_port for s in flows)  # some endpoints were moved
    before = snapshot(store, table)
    crash(store)
    store = attach_table(path, EniPorts, cache_size=8)
    table = bind(store)
    assert snapshot(store, table) == before
    assert_slot_consistent(store, table, ENI, store.slots[table.slot].ports)
    for s in flows[:3]:
        found = table.get(s.in_key)
        assert found is not None and found.out_key == s.out_key and found.rec == s.rec
    assert table.get(flows[10].out_key) is None


def test_tcp_ack_fields_are_forgotten_on_attach_and_the_rest_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 10, EniPorts)
    s = open_flow(bind(store), 0)
    crash(store)
    store = attach_table(path, EniPorts)
    again = bind(store).get(s.out_key)
    assert again is not None
    assert (again.state, again.win_out, again.expires, again.timeout) == (3, 100, 100.0, 100.0)
    assert again.ack_out == again.end_out == UNKNOWN  # liberal until the next ACK (tcpstate)
    store.close()


def test_a_state_write_through_keeps_the_write_back_fields_as_they_were(
        tmp_path: Path) -> None:
    """``update_state`` writes replied, state, scales, expiry and timeout at once; the
    counters and ACK fields reach the record at the next write-back (``update``)."""
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 10, EniPorts)
    s = open_flow(bind(store), 0)
    s.replied, s.state, s.wscale_in, s.expires, s.timeout = True, 7, 6, 55.5, 10.0  # LAST_ACK
    s.pkts_out, s.ack_in, s.win_in = 9, 777, 50
    store.update_state(s)
    fields = records.REC.unpack_from(store.mem, records.record_at(s.rec))
    assert (fields[records.F_FLAGS], fields[records.F_STATE], fields[records.F_WSCALE_IN],
            fields[records.F_EXPIRES], fields[records.F_TIMEOUT]) == (1, 7, 6, 55.5, 10.0)
    assert fields[records.F_SEQ] % 2 == 0
    assert (fields[records.F_PKTS_OUT], fields[records.F_WIN_IN]) == (0, 0)  # write-back
    assert fields[records.F_KNOWN] & records.KNOWN_ACK_IN == 0  # still says: not written
    store.update(s)
    fields = records.REC.unpack_from(store.mem, records.record_at(s.rec))
    assert (fields[records.F_PKTS_OUT], fields[records.F_ACK_IN], fields[records.F_WIN_IN],
            fields[records.F_STATE]) == (9, 777, 50, 7)
    assert fields[records.F_KNOWN] & records.KNOWN_ACK_IN
    store.close()


def test_counters_continue(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 10, EniPorts)
    table = bind(store)
    store.write_counters(None, {"forwarded": 12, "no_session": 3, "zero": 0})
    store.write_counters(table.slot, {"rx_packets": 7})
    crash(store)
    store = attach_table(path, EniPorts)
    assert store.read_counters(None) == {"forwarded": 12, "no_session": 3}
    assert store.read_counters(bind(store).slot) == {"rx_packets": 7}
    store.close()


def test_slots_follow_their_eni_and_absent_ones_are_freed(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 100, EniPorts)
    one, two = bind(store, "eni-1"), bind(store, "eni-2")
    for n in range(3):
        open_flow(one, n)
        open_flow(two, n + 10)
    crash(store)
    store = attach_table(path, EniPorts)
    assert store.slot_ids() == {0: "eni-1", 1: "eni-2"}
    two, three = bind(store, "eni-2"), bind(store, "eni-3")
    assert (two.slot, three.slot, len(two), len(three)) == (1, 2, 3, 0)
    assert store.prune({"eni-2", "eni-3"}) == 3  # eni-1 is not in the snapshot
    assert store.slot_ids() == {1: "eni-2", 2: "eni-3"} and store.count == 3
    assert bind(store, "eni-4").slot == 0  # a freed slot is used again
    store.close()


def test_freed_records_are_used_again_lowest_first(tmp_path: Path) -> None:
    store = create_table(str(tmp_path / "t.sessions"), 100, EniPorts)
    table = bind(store)
    flows = [open_flow(table, n) for n in range(5)]
    assert [s.rec for s in flows] == [0, 1, 2, 3, 4]
    table.remove(flows[3])
    table.remove(flows[1])
    assert [open_flow(table, n).rec for n in (20, 21, 22)] == [1, 3, 5]
    store.close()


def test_pages_in_use_grow_with_the_sessions(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 1_000_000, EniPorts)
    table = bind(store)
    empty = os.stat(path).st_blocks * 512
    assert os.path.getsize(path) > 128_000_000 > 20 * empty  # sparse
    for n in range(3200):
        open_flow(table, n)
    grown = os.stat(path).st_blocks * 512 - empty
    assert 3200 * 128 <= grown <= 3200 * 128 + 3 * 4096
    store.close()


def test_a_full_table_refuses_new_sessions(tmp_path: Path) -> None:
    store = create_table(str(tmp_path / "t.sessions"), 2, EniPorts)
    table = bind(store)
    first = open_flow(table, 0)
    open_flow(table, 1)
    assert store.full()
    with pytest.raises(TableFullError):
        open_flow(table, 2)
    table.remove(first)
    assert not store.full() and open_flow(table, 3).rec == 0
    store.close()


def test_the_clock_hand_frees_expired_sessions_a_few_at_a_time(tmp_path: Path) -> None:
    store = create_table(str(tmp_path / "t.sessions"), 100, EniPorts, cache_size=2)
    table = bind(store)
    for n in range(6):
        open_flow(table, n, timeout=10.0 if n % 2 else 1000.0)
    assert store.reap(5.0, budget=6) == 0
    assert store.reap(50.0, budget=2) == 1  # records 0 (live) and 1 (expired)
    assert store.reap(50.0, budget=10) == 2 and len(table) == 3
    assert_slot_consistent(store, table, ENI, store.slots[table.slot].ports)
    store.close()


def torn(store: SessionStore, s: Session, at: int | None = None, value: int = 0) -> None:
    """Leave ``s``'s record as a writer killed in the middle of an update would."""
    off = records.record_at(s.rec)
    records.SEQ.pack_into(store.mem, off, records.SEQ.unpack_from(store.mem, off)[0] | 1)
    if at is not None:
        store.mem[off + at] = value


def test_a_torn_update_is_mended_and_a_bad_record_dropped(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 100, EniPorts)
    table = bind(store)
    kept, zeroed, garbled, bad_crc, free = (open_flow(table, n) for n in range(5))
    kept.pkts_out = 9
    store.update(kept)
    torn(store, kept)  # died after the odd seq, before any field: values as they were
    torn(store, zeroed)  # died inside a pack_into-style write: fields zeroed
    zeroed_at = records.record_at(zeroed.rec) + records.MUT_AT
    store.mem[zeroed_at:records.record_at(zeroed.rec) + records.IMM_AT] = bytes(77)
    torn(store, garbled, 4, 200)  # a TCP state that does not exist
    for at in range(8, 20):  # expiry and timeout garbage
        store.mem[records.record_at(garbled.rec) + at] = 0xFF
    store.mem[records.record_at(bad_crc.rec) + records.IMM_AT + 6] ^= 0xFF  # CRC fails
    store.mem[records.record_at(free.rec) + records.LIVE_AT] = 0  # never marked live
    crash(store)
    now = time.monotonic()
    store = attach_table(path, EniPorts)
    table = bind(store)
    assert (store.count, store.repaired, store.dropped) == (3, 3, 1)
    for s in (kept, zeroed, garbled):  # no session is lost to a torn write
        again = table.get(s.out_key)
        assert again is not None and again.rec == s.rec and again.expires >= now
        assert records.SEQ.unpack_from(store.mem, records.record_at(s.rec))[0] % 2 == 0
        assert again.ack_out == again.end_out == UNKNOWN  # liberal until re-learned
    again = table.get(kept.out_key)
    assert again is not None and (again.pkts_out, again.state, again.timeout) == (9, 3, 100.0)
    assert again.expires >= now + 100.0
    again = table.get(garbled.out_key)
    assert again is not None and (again.state, again.timeout) == (3, records.MEND_TIMEOUT)
    again = table.get(zeroed.out_key)
    assert again is not None and again.timeout == records.MEND_TIMEOUT
    for gone in (bad_crc, free):
        assert table.get(gone.out_key) is None and table.get(gone.in_key) is None
    assert_slot_consistent(store, table, ENI, store.slots[table.slot].ports)
    assert len(store.slots[table.slot].ports[p.PROTO_TCP]) == 3  # their ports are free
    store.close()


def test_read_sessions_reads_a_live_table_without_its_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sessions")
    store = create_table(path, 100, EniPorts)
    table = bind(store, "eni-7")
    flows = [open_flow(table, n, proto) for n, proto in
             ((0, p.PROTO_TCP), (1, p.PROTO_UDP), (2, p.PROTO_ICMP))]
    flows[1].pkts_out, flows[1].bytes_out = 3, 300
    store.update(flows[1])
    rows = read_sessions(path, now=1.0)
    assert rows == store.describe(1.0)
    assert {row["eni"] for row in rows} == {"eni-7"}
    by_proto = {row["protocol"]: row for row in rows}
    assert by_proto["udp"]["packets"] == {"original": 3, "reply": 0}
    assert by_proto["tcp"]["state"] == "ESTABLISHED" and by_proto["icmp"]["state"] is None
    assert by_proto["tcp"]["reply"] == {"src": "10.0.1.10", "sport": 8080, "dst": "10.0.1.4",
                                        "dport": flows[0].eni_port}
    assert rows[0] == dict(flows[0].describe(1.0), eni="eni-7")
    torn(store, flows[2])  # mid-update: a reader never serves it
    assert len(read_sessions(path, now=1.0)) == 2
    assert read_sessions(path, now=200.0) == []  # expired
    store.close()
