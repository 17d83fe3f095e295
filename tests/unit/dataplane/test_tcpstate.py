"""TCP connection tracking through the pipeline: states, RST windows, closing, timeouts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import TCP

from hyperplane.dataplane import tcpstate
from hyperplane.dataplane.tcpstate import STATE_NAMES
from tests.unit.dataplane.frames import (
    Rig,
    assert_checksums_valid,
    make_rig,
    only_session,
    parse,
    send,
    send_and_assert_no_replies,
    send_and_expect,
    tcp_in,
    tcp_out,
)

ENV_ISN, REMOTE_ISN = 1000, 5000


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def state(rig: Rig, now: float = 0.0) -> str:
    return STATE_NAMES[only_session(rig, now).state]


def out(rig: Rig, frame: bytes, now: float = 0.0) -> bytes:
    return send_and_expect(rig.pipeline, rig.env, frame, rig.eni_out, now)


def back(rig: Rig, frame: bytes, now: float = 0.0) -> bytes:
    return send_and_expect(rig.pipeline, rig.eni, frame, rig.env_out[0], now)


def handshake(rig: Rig, now: float = 0.0, window: int = 65535, syn_options=None,
              synack_options=None) -> None:
    out(rig, tcp_out("S", ENV_ISN, options=syn_options), now)
    back(rig, tcp_in("SA", REMOTE_ISN, ENV_ISN + 1, window=window, options=synack_options), now)
    out(rig, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1, window=window), now)


# -- opening ----------------------------------------------------------------------------------


def test_three_way_handshake_goes_syn_sent_syn_recv_established(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    out(rig, tcp_out("S", ENV_ISN))
    assert state(rig) == "SYN_SENT" and only_session(rig).expires == t.tcp_syn
    back(rig, tcp_in("SA", REMOTE_ISN, ENV_ISN + 1), now=1.0)
    assert state(rig, 1.0) == "SYN_RECV" and only_session(rig).expires == 1.0 + t.tcp_syn
    out(rig, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1), now=2.0)
    assert state(rig, 2.0) == "ESTABLISHED"
    assert only_session(rig).expires == 2.0 + t.tcp_established


def test_data_in_both_directions_refreshes_an_established_session(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    handshake(rig)
    for step in range(1, 4):
        now = step * (t.tcp_established - 1)
        out(rig, tcp_out("PA", ENV_ISN + 1, REMOTE_ISN + 1, payload=b"x"), now)
        back(rig, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 2), now)
    assert state(rig, now) == "ESTABLISHED"


def test_simultaneous_open_reaches_established(rig: Rig) -> None:
    out(rig, tcp_out("S", ENV_ISN))
    back(rig, tcp_in("S", REMOTE_ISN))  # the peer's own SYN crosses ours
    assert state(rig) == "SYN_RECV"
    out(rig, tcp_out("SA", ENV_ISN, REMOTE_ISN + 1))
    back(rig, tcp_in("SA", REMOTE_ISN, ENV_ISN + 1))
    assert state(rig) == "SYN_RECV"
    out(rig, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1))
    assert state(rig) == "ESTABLISHED"


def test_retransmitted_syn_keeps_syn_sent_without_refresh(rig: Rig) -> None:
    out(rig, tcp_out("S", ENV_ISN))
    out(rig, tcp_out("S", ENV_ISN), now=29.0)
    assert state(rig, 29.0) == "SYN_SENT" and only_session(rig).expires == 30.0


def test_a_mid_stream_segment_is_picked_up_as_established_but_unreplied(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    out(rig, tcp_out("A", 7000, 9000))
    s = only_session(rig)
    assert state(rig) == "ESTABLISHED" and not s.replied and s.expires == t.tcp_syn
    back(rig, tcp_in("A", 9000, 7000), now=1.0)
    assert s.replied and s.expires == 1.0 + t.tcp_established


def test_a_rst_without_session_opens_nothing(rig: Rig) -> None:
    send_and_assert_no_replies(rig.pipeline, rig.env, tcp_out("R", ENV_ISN), rig.outs(),
                               "no_session")
    assert len(rig.eni.table) == 0


# -- RST ----------------------------------------------------------------------------------------


def test_connection_refused_rst_acking_the_syn_closes(rig: Rig) -> None:
    out(rig, tcp_out("S", ENV_ISN))
    reply = back(rig, tcp_in("RA", 0, ENV_ISN + 1), now=1.0)
    assert "R" in str(parse(reply)[TCP].flags)
    assert_checksums_valid(reply)
    s = only_session(rig, 1.0)
    assert state(rig, 1.0) == "CLOSE" and s.expires == 1.0 + rig.pipeline.timeouts.tcp_transitory


@pytest.mark.parametrize("frame", [tcp_in("RA", 0, ENV_ISN + 2), tcp_in("R", 0, ENV_ISN + 1)],
                         ids=["wrong-ack", "no-ack"])
def test_rst_in_syn_sent_must_acknowledge_the_syn(rig: Rig, frame: bytes) -> None:
    out(rig, tcp_out("S", ENV_ISN))
    send_and_assert_no_replies(rig.pipeline, rig.eni, frame, rig.outs(), "tcp_rst_out_of_window")
    assert state(rig) == "SYN_SENT"


def test_exact_rst_from_the_vpc_closes(rig: Rig) -> None:
    handshake(rig)
    back(rig, tcp_in("R", REMOTE_ISN + 1), now=5.0)
    assert state(rig, 5.0) == "CLOSE"
    assert rig.eni.counters.get("tcp_rst_out_of_window", 0) == 0


def test_rst_anywhere_in_the_receive_window_is_accepted(rig: Rig) -> None:
    handshake(rig, window=1000)
    back(rig, tcp_in("R", REMOTE_ISN + 1 + 999))
    assert state(rig) == "CLOSE"


@pytest.mark.parametrize("offset", [1000, 70000, -1, 2**31], ids=str)
def test_out_of_window_rst_is_dropped_and_the_connection_goes_on(rig: Rig, offset: int) -> None:
    handshake(rig, window=1000)
    expires = only_session(rig).expires
    rst = tcp_in("R", (REMOTE_ISN + 1 + offset) % 2**32)
    send_and_assert_no_replies(rig.pipeline, rig.eni, rst, rig.outs(), "tcp_rst_out_of_window",
                               now=10.0)
    assert rig.eni.counters["tcp_rst_out_of_window"] == 1
    assert state(rig, 10.0) == "ESTABLISHED" and only_session(rig).expires == expires
    out(rig, tcp_out("PA", ENV_ISN + 1, REMOTE_ISN + 1, payload=b"still here"), now=11.0)
    back(rig, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 11), now=11.0)


def test_rst_from_the_env_is_checked_against_the_peer_window(rig: Rig) -> None:
    handshake(rig, window=500)
    send_and_assert_no_replies(rig.pipeline, rig.env, tcp_out("R", ENV_ISN + 1 + 70000),
                               rig.outs(), "tcp_rst_out_of_window")
    out(rig, tcp_out("R", ENV_ISN + 1))
    assert state(rig) == "CLOSE"


def test_env_aborting_its_own_connect_is_in_window(rig: Rig) -> None:
    out(rig, tcp_out("S", ENV_ISN))
    out(rig, tcp_out("R", ENV_ISN + 1))
    assert state(rig) == "CLOSE"


def test_window_scale_widens_the_rst_window_only_when_both_offer_it(rig: Rig) -> None:
    handshake(rig, window=100, syn_options=[("WScale", 7)], synack_options=[("WScale", 7)])
    back(rig, tcp_in("R", REMOTE_ISN + 1 + 100 * 128 - 1))
    assert state(rig) == "CLOSE"
    other = make_rig()
    handshake(other, window=100, synack_options=[("WScale", 7)])  # the env offered none
    send_and_assert_no_replies(other.pipeline, other.eni, tcp_in("R", REMOTE_ISN + 1 + 200),
                               other.outs(), "tcp_rst_out_of_window")


def test_rst_window_wraps_around_the_sequence_space(rig: Rig) -> None:
    isn = 2**32 - 10
    out(rig, tcp_out("S", ENV_ISN))
    back(rig, tcp_in("SA", isn, ENV_ISN + 1))
    out(rig, tcp_out("A", ENV_ISN + 1, (isn + 1) % 2**32, window=100))
    back(rig, tcp_in("R", 50))  # 2**32 - 9 + 59: inside the window across the wrap
    assert state(rig) == "CLOSE"


# -- closing --------------------------------------------------------------------------------------


def test_close_initiated_by_the_env(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    handshake(rig)
    out(rig, tcp_out("FA", ENV_ISN + 1, REMOTE_ISN + 1), now=10.0)
    assert state(rig, 10.0) == "FIN_WAIT"
    back(rig, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 2), now=11.0)
    assert state(rig, 11.0) == "CLOSE_WAIT"
    assert only_session(rig).expires == 11.0 + t.tcp_established  # half-closed: still alive
    back(rig, tcp_in("FA", REMOTE_ISN + 1, ENV_ISN + 2), now=12.0)
    assert state(rig, 12.0) == "LAST_ACK"
    assert only_session(rig).expires == 12.0 + t.tcp_transitory
    out(rig, tcp_out("A", ENV_ISN + 2, REMOTE_ISN + 2), now=13.0)
    assert state(rig, 13.0) == "TIME_WAIT"
    assert only_session(rig).expires == 12.0 + t.tcp_transitory  # lingers, not refreshed


def test_close_initiated_by_the_vpc(rig: Rig) -> None:
    handshake(rig)
    back(rig, tcp_in("FA", REMOTE_ISN + 1, ENV_ISN + 1))
    assert state(rig) == "FIN_WAIT"
    out(rig, tcp_out("FA", ENV_ISN + 1, REMOTE_ISN + 2))
    assert state(rig) == "LAST_ACK"
    back(rig, tcp_in("A", REMOTE_ISN + 2, ENV_ISN + 2))
    assert state(rig) == "TIME_WAIT"


def test_simultaneous_close(rig: Rig) -> None:
    handshake(rig)
    out(rig, tcp_out("FA", ENV_ISN + 1, REMOTE_ISN + 1))
    back(rig, tcp_in("FA", REMOTE_ISN + 1, ENV_ISN + 1))
    assert state(rig) == "LAST_ACK"
    out(rig, tcp_out("A", ENV_ISN + 2, REMOTE_ISN + 2))
    assert state(rig) == "LAST_ACK"
    back(rig, tcp_in("A", REMOTE_ISN + 2, ENV_ISN + 2))
    assert state(rig) == "TIME_WAIT"


def test_fin_carrying_data_is_acknowledged_past_the_data(rig: Rig) -> None:
    handshake(rig)
    out(rig, tcp_out("FPA", ENV_ISN + 1, REMOTE_ISN + 1, payload=b"bye!"))
    back(rig, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 5))  # acks the data, not the FIN
    assert state(rig) == "FIN_WAIT"
    back(rig, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 6))
    assert state(rig) == "CLOSE_WAIT"


def test_half_closed_connection_stays_while_data_flows(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    handshake(rig)
    out(rig, tcp_out("FA", ENV_ISN + 1, REMOTE_ISN + 1))
    back(rig, tcp_in("A", REMOTE_ISN + 1, ENV_ISN + 2))
    for step in range(1, 5):  # the server streams for four established timeouts
        back(rig, tcp_in("PA", REMOTE_ISN + 1, ENV_ISN + 2, payload=b"more"),
             now=step * (t.tcp_established - 1))
    assert state(rig, step * (t.tcp_established - 1)) == "CLOSE_WAIT"


def test_closed_session_lingers_for_the_transitory_timeout_then_goes(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    handshake(rig)
    back(rig, tcp_in("R", REMOTE_ISN + 1), now=100.0)
    out(rig, tcp_out("A", ENV_ISN + 1, REMOTE_ISN + 1), now=100.0 + t.tcp_transitory - 1)
    assert only_session(rig).expires == 100.0 + t.tcp_transitory
    send_and_assert_no_replies(rig.pipeline, rig.eni, tcp_in("A", REMOTE_ISN + 1),
                               rig.outs(), "no_session", now=100.0 + t.tcp_transitory + 1)


def test_a_new_syn_reopens_a_closed_session_with_the_same_mapping(rig: Rig) -> None:
    t = rig.pipeline.timeouts
    handshake(rig)
    back(rig, tcp_in("R", REMOTE_ISN + 1), now=10.0)
    first = only_session(rig, 10.0)
    reopened = out(rig, tcp_out("S", 77000), now=20.0)
    assert parse(reopened)[TCP].sport == 40000
    assert only_session(rig, 20.0) is first and state(rig, 20.0) == "SYN_SENT"
    assert first.expires == 20.0 + t.tcp_syn and not first.replied
    assert rig.pipeline.counters["sessions_created"] == 1
    back(rig, tcp_in("SA", 9, 77001), now=21.0)
    out(rig, tcp_out("A", 77001, 10), now=21.0)
    assert state(rig, 21.0) == "ESTABLISHED"


def test_inbound_syn_does_not_reopen_a_closed_session(rig: Rig) -> None:
    handshake(rig)
    back(rig, tcp_in("R", REMOTE_ISN + 1))
    back(rig, tcp_in("S", 123))
    assert state(rig) == "CLOSE"


# -- helpers ----------------------------------------------------------------------------------


def test_seq_geq_is_modular() -> None:
    assert tcpstate.seq_geq(5, 5) and tcpstate.seq_geq(6, 5) and not tcpstate.seq_geq(4, 5)
    assert tcpstate.seq_geq(3, 2**32 - 3) and not tcpstate.seq_geq(2**32 - 3, 3)


def _syn_with_options(options: bytes) -> tuple[bytearray, int]:
    doff = (20 + len(options) + 3) // 4
    header = bytearray(20) + bytearray(options) + bytearray(doff * 4 - 20 - len(options))
    header[12] = doff << 4
    return bytearray(24) + header, 24


@pytest.mark.parametrize(("options", "scale"), [
    (b"", -1),
    (b"\x03\x03\x07\x00", 7),
    (b"\x01\x01\x01\x03\x03\x0e", 14),
    (b"\x03\x03\x0f\x00", 14),  # capped
    (b"\x02\x04\x05\xb4\x04\x02\x03\x03\x02", 2),
    (b"\x08\x00\x03\x03\x07", -1),  # a zero length ends the walk
    (b"\x00\x03\x03\x07", -1),  # end of options
    (b"\x02\x09\x05\xb4", -1),  # an option running past the header
])
def test_window_scale_option_parsing(options: bytes, scale: int) -> None:
    buf, l4 = _syn_with_options(options)
    assert tcpstate.window_scale(buf, l4, len(buf)) == scale


@given(st.binary(max_size=40))
def test_window_scale_never_fails_on_garbage(options: bytes) -> None:
    buf, l4 = _syn_with_options(options)
    for end in (len(buf), l4 + 22):
        assert -1 <= tcpstate.window_scale(buf, l4, end) <= 14


def test_unreplied_syn_sent_session_expires_even_with_replies_missing(rig: Rig) -> None:
    send(rig.pipeline, rig.env, tcp_out("S", ENV_ISN), now=0.0)
    send_and_assert_no_replies(rig.pipeline, rig.eni, tcp_in("SA", REMOTE_ISN, ENV_ISN + 1),
                               rig.outs(), "no_session", now=rig.pipeline.timeouts.tcp_syn + 1)
