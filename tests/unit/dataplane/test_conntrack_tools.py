"""conntrack-tools in the dataplane: filters, [ASSURED], deletion by the writer, events."""

from __future__ import annotations

import pytest

from hyperplane.dataplane import ctevents, shm
from hyperplane.dataplane.ctfilter import Filter, assured, delete
from tests.unit.dataplane.frames import (
    DB_IP,
    ENV_IPS,
    assert_tables_consistent,
    eni_port_of,
    make_rig,
    parse,
    syn,
    synack,
    tcp_in,
    tcp_out,
    udp_back,
    udp_out,
)


def row(protocol: str = "tcp", state: str | None = "ESTABLISHED", src: str = "169.254.128.1",
        sport: int = 40000, dst: str = "10.0.1.10", dport: int = 8080, eni: str = "eni-1",
        replied: bool = True, packets_out: int = 3) -> dict:
    return {"protocol": protocol, "state": state, "timeout": 300, "replied": replied,
            "original": {"src": src, "sport": sport, "dst": dst, "dport": dport},
            "reply": {"src": dst, "sport": dport, "dst": "10.0.1.4", "dport": sport},
            "packets": {"original": packets_out, "reply": 2},
            "bytes": {"original": 180, "reply": 120}, "eni": eni}


# -- filters ------------------------------------------------------------------------------
def test_every_given_field_must_match_the_original_direction() -> None:
    flt = Filter.parse({"src": "169.254.0.0/16", "dst": "10.0.1.10", "sport": "40000",
                        "dport": 8080, "proto": "TCP", "state": "established", "eni": "eni-1"})
    assert flt.matches(row())
    assert not flt.matches(row(dport=8081))
    assert not flt.matches(row(sport=40001))
    assert not flt.matches(row(src="10.0.1.4"))  # the ENI's address is the reply's side
    assert not flt.matches(row(dst="10.0.1.11"))
    assert not flt.matches(row(eni="eni-2"))
    assert not flt.matches(row(state="TIME_WAIT"))
    assert not flt.matches(row(protocol="udp", state=None))
    assert Filter.parse({}).matches(row(protocol="icmp", state=None))


def test_protocol_numbers_state_lists_and_the_wire_form() -> None:
    flt = Filter.parse({"proto": "17"})
    assert flt.proto == "udp" and flt.matches(row(protocol="udp", state=None))
    flt = Filter.parse({"state": "SYN_SENT,ESTABLISHED", "src": "169.254.128.1"})
    assert flt.states == {"SYN_SENT", "ESTABLISHED"}
    assert not Filter.parse({"state": "SYN_SENT"}).matches(row(protocol="udp", state=None))
    assert Filter.parse(flt.to_wire()) == flt
    assert Filter.parse({"src": None, "dport": "", "eni": None}).is_empty()


@pytest.mark.parametrize(("values", "named"), [
    ({"src": "10.0.0.300"}, "--src"), ({"dst": "db"}, "--dst"), ({"sport": "http"}, "--sport"),
    ({"dport": 70000}, "--dport"), ({"proto": "sctp"}, "--proto"),
    ({"state": "OPEN"}, "--state"), ({"mark": 1}, "--mark")])
def test_a_bad_value_names_its_option(values: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Filter.parse(values)


def test_assured_as_the_kernel_sets_it() -> None:
    assert assured(row())
    assert not assured(row(state="SYN_RECV"))
    assert not assured(row(replied=False))
    assert assured(row(state="TIME_WAIT"))
    assert assured(row(protocol="udp", state=None, packets_out=2))
    assert not assured(row(protocol="udp", state=None, packets_out=1))  # not yet a stream
    assert not assured(row(protocol="icmp", state=None))


# -- deletion by the writer ---------------------------------------------------------------
def established(rig, sport: int) -> int:
    out = rig.pipeline
    out.receive(rig.env, bytearray(syn(sport=sport)), len(syn(sport=sport)), 0.0)
    port = eni_port_of(rig.eni_out[-1])
    frame = bytearray(synack(port))
    out.receive(rig.eni, frame, len(frame), 0.0)
    frame = bytearray(tcp_out("A", 1001, 5001, sport=sport))
    out.receive(rig.env, frame, len(frame), 0.0)
    return port


def test_delete_frees_the_matching_sessions_and_counts_them() -> None:
    rig = make_rig()
    pl = rig.pipeline
    for sport in (40000, 40001):
        established(rig, sport)
    frame = bytearray(udp_out())
    pl.receive(rig.env, frame, len(frame), 0.0)
    freed = delete(pl, Filter.parse({"proto": "tcp", "sport": 40001}), 1.0)
    assert [(r["protocol"], r["original"]["sport"], r["state"]) for r in freed] == [
        ("tcp", 40001, "ESTABLISHED")]
    assert pl.counters["sessions_deleted"] == 1 and rig.eni.counters["sessions_deleted"] == 1
    assert sorted((s.proto, s.env_port) for s in rig.eni.table.live(1.0)) == [
        (6, 40000), (17, 5353)]
    assert_tables_consistent(pl, rig.eni)
    assert len(delete(pl, Filter(), 1.0)) == 2  # a flush
    assert rig.eni.table.live(1.0) == [] and pl.counters["sessions_deleted"] == 3
    assert_tables_consistent(pl, rig.eni)


def test_the_next_packet_of_a_deleted_flow_picks_it_up_on_the_same_port() -> None:
    """As Linux with nf_conntrack_tcp_loose=1: a mid-stream ACK from the environment makes
    a new ESTABLISHED session, and the ENI port is the same (it was freed, and the
    original port is kept when free); a segment from the VPC side finds no session."""
    rig = make_rig()
    pl = rig.pipeline
    port = established(rig, 40000)
    delete(pl, Filter(), 1.0)
    back = bytearray(tcp_in("A", 5001, 1001, eni_port=port))
    pl.receive(rig.eni, back, len(back), 1.0)
    assert pl.counters["no_session"] == 1
    data = bytearray(tcp_out("PA", 1001, 5001, payload=b"more"))
    pl.receive(rig.env, data, len(data), 1.0)
    sent = parse(rig.eni_out[-1])
    assert sent["TCP"].sport == port and sent["IP"].dst == DB_IP
    (s,) = rig.eni.table.live(1.0)
    assert (s.state, s.replied, s.env_port) == (3, False, 40000)  # ESTABLISHED, unreplied
    assert pl.counters["sessions_created"] == 2


# -- events from samples of a table file --------------------------------------------------
def test_events_new_update_destroy_from_two_samples(tmp_path) -> None:
    path = str(tmp_path / "t.sessions")
    store = shm.create_table(path, 64, make_rig().pipeline.new_ports)
    try:
        rig = make_rig(store)
        pl = rig.pipeline

        def sampled(now: float) -> dict:
            pl.flush()
            ids, found = shm.read_records(path, now)
            return ctevents.sample(ids, found, now)

        empty = sampled(0.0)
        frame = bytearray(syn())
        pl.receive(rig.env, frame, len(frame), 0.0)
        first = sampled(0.0)
        [(event, new)] = ctevents.diff(empty, first)
        assert event == "new" and new["state"] == "SYN_SENT" and not new["replied"]
        assert new["original"]["src"] == ENV_IPS[0] and new["eni"] == "eni-1"
        frame = bytearray(synack(eni_port_of(rig.eni_out[-1])))
        pl.receive(rig.eni, frame, len(frame), 0.0)
        second = sampled(0.0)
        [(event, changed)] = ctevents.diff(first, second)
        assert event == "update" and changed["state"] == "SYN_RECV" and changed["replied"]
        assert ctevents.diff(second, sampled(0.0)) == []  # nothing moved: no event
        frame = bytearray(udp_out())
        pl.receive(rig.env, frame, len(frame), 0.0)
        frame = bytearray(udp_back(5353))
        pl.receive(rig.eni, frame, len(frame), 0.0)
        third = sampled(0.0)
        assert [(e, r["protocol"]) for e, r in ctevents.diff(second, third)] == [("new", "udp")]
        delete(pl, Filter.parse({"proto": "tcp"}), 0.0)
        fourth = sampled(0.0)
        [(event, gone)] = ctevents.diff(third, fourth)
        assert event == "destroy" and gone["protocol"] == "tcp"
        expired = sampled(10_000.0)  # past every timeout: shown as gone before it is reaped
        assert [e for e, _ in ctevents.diff(fourth, expired)] == ["destroy"]
    finally:
        store.close()


def test_the_same_five_tuple_again_is_a_new_session() -> None:
    fields = (0,) * 21 + (0, 6, 0, b"\xa9\xfe\x80\x01\n\x00\x01\n", 40000 << 16 | 8080) \
        + (0,) * 9 + (100, 0)
    again = fields[:35] + (101, 0)
    assert ctevents.identity(3, fields) != ctevents.identity(3, again)
    assert ctevents.identity(3, fields) != ctevents.identity(4, fields)
