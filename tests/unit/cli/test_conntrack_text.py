"""``hyperplane conntrack``'s lines, as conntrack-tools prints them (pure parts)."""

from __future__ import annotations

from click.testing import CliRunner

from hyperplane.cli.conntrack import conntrack, event_text, json_row, row_text


def row(protocol: str = "tcp", state: str | None = "ESTABLISHED", replied: bool = True,
        sport: int = 40000, dport: int = 8080) -> dict:
    return {"protocol": protocol, "state": state, "timeout": 431, "replied": replied,
            "original": {"src": "169.254.128.1", "sport": sport, "dst": "10.0.1.10",
                         "dport": dport},
            "reply": {"src": "10.0.1.10", "sport": dport, "dst": "10.0.1.4", "dport": sport},
            "packets": {"original": 3, "reply": 2}, "bytes": {"original": 180, "reply": 120},
            "eni": "eni-1"}


def test_a_listing_line_is_conntracks() -> None:
    assert row_text(row()) == (
        "tcp      6 431 ESTABLISHED src=169.254.128.1 dst=10.0.1.10 sport=40000 dport=8080 "
        "packets=3 bytes=180 src=10.0.1.10 dst=10.0.1.4 sport=8080 dport=40000 packets=2 "
        "bytes=120 [ASSURED] eni=eni-1")
    assert row_text(row("udp", None, replied=False), nat=True) == (
        "udp      17 431 src=169.254.128.1 dst=10.0.1.10 sport=40000 dport=8080 packets=3 "
        "bytes=180 [UNREPLIED] src=10.0.1.10 dst=10.0.1.4 sport=8080 dport=40000 packets=2 "
        "bytes=120 gateway=eni-1")


def test_icmp_shows_type_code_and_id() -> None:
    text = row_text(row("icmp", None, sport=77, dport=0) | {
        "reply": {"src": "10.0.1.10", "sport": 0, "dst": "10.0.1.4", "dport": 1077}})
    assert text.startswith("icmp     1 431 src=169.254.128.1 dst=10.0.1.10 type=8 code=0 id=77 ")
    assert "src=10.0.1.10 dst=10.0.1.4 type=0 code=0 id=1077 " in text


def test_events_are_conntrack_e_lines() -> None:
    assert event_text("new", row(state="SYN_SENT", replied=False)).startswith(
        "    [NEW] tcp      6 431 SYN_SENT src=169.254.128.1 ")
    assert event_text("update", row()).startswith(" [UPDATE] tcp      6 431 ESTABLISHED ")
    destroy = event_text("destroy", row())
    assert destroy.startswith("[DESTROY] tcp      6 src=169.254.128.1 ")  # no timeout, state
    assert destroy.endswith("[ASSURED] eni=eni-1")


def test_json_rows_are_snake_case_with_assured_and_the_event() -> None:
    assert json_row(row())["assured"] is True
    assert json_row(row(), "destroy")["event"] == "destroy"


def test_options_are_checked_before_anything_is_asked() -> None:
    runner = CliRunner()
    for args, says in ((["--follow", "--flush"], "one at a time"),
                       (["--flush", "--proto", "tcp"], "--flush deletes every session"),
                       (["--dport", "http"], "--dport"), (["--state", "OPEN"], "--state"),
                       (["--delete", "--ask"], "--ask is for listing")):
        result = runner.invoke(conntrack, args)
        assert result.exit_code != 0 and says in str(result.exception), (args, result)
