"""Issue 4 acceptance: port exhaustion and session expiry, with real namespaces.

Topology ``tests/integration/topologies/tiny.yaml``: the ENI hands out 4 ports per
protocol (40000-40003) and the timeouts are seconds (tcp_transitory 1, icmp 2, tcp_syn 2,
udp 3, tcp_established 4, udp_replied 5).  The expiry test runs first: it ends with every
session gone, so the exhaustion test starts with all 4 ports free.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration import packets as pk
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/topologies/tiny.yaml"
DB = "10.0.1.10"
SILENT = "10.0.1.99"  # in db's subnet, nobody has it: a SYN there is never answered
TIMEOUTS = {"tcp_transitory": 1, "icmp": 2, "tcp_syn": 2, "udp": 3, "tcp_established": 4,
            "udp_replied": 5}
STATES = {"tcp_established": {"ESTABLISHED"}, "tcp_transitory": {"LAST_ACK", "TIME_WAIT"},
          "tcp_syn": {"SYN_SENT"}}
PORTS = set(range(40000, 40004))
SLACK = 0.5  # seconds either side of the expected expiry (polls are 50 ms apart)


@pytest.fixture(scope="module")
def up(state_dir: Path) -> dict:
    yield from bring_up(state_dir, TOPOLOGY)


@pytest.fixture(scope="module")
def eni(up: dict, state_dir: Path) -> dict:
    [row] = hp.run_json("eni", "list", state_dir=state_dir)
    return row


def _find(rows: list[dict], me: str, flow: dict) -> list[dict]:
    match = {k: flow[k] for k in ("protocol", "sport", "dport") if k in flow}
    if flow["protocol"] == "icmp":
        match.pop("sport", None)
    return pk.sessions(rows, src=me, dst=flow.get("dst", DB), **match)


def test_sessions_expire_at_their_configured_timeouts(
        state_dir: Path, eni: dict, tmp_path: Path) -> None:
    """One flow of each kind from one environment: UDP never answered (udp, 3 s), UDP
    answered (udp_replied, 5 s from the reply), TCP established then idle
    (tcp_established, 4 s), TCP closed by both FINs (tcp_transitory, 1 s from the second
    FIN), a SYN to an address that never answers, retransmitted once after 1 s
    (tcp_syn, 2 s: the retransmission does not extend it), one ping (icmp, 2 s).

    Each session is listed with its state and ``timeout``, and disappears within
    0.5 s of the moment its timeout started + its configured value (the flows report
    that moment on the shared monotonic clock; the sessions are polled every 50 ms on
    the dataplane's control socket, the data ``hyperplane conntrack --json`` prints).
    After expiry, a datagram from db to the expired UDP mapping is not delivered: it
    is ``inbound-to-eni``."""
    with pk.serving(state_dir, pk.host("db"), tmp_path, tcp="7001", udp="7000:echo,7004:sink"):
        job = pk.Job(*pk.function("near"), *pk.MODULE, "flows", "--dst", DB, "--tcp", "7001",
                     "--echo", "7000", "--sink", "7004", "--silent", SILENT, "--hold", "9",
                     state_dir=state_dir)
        try:
            made = job.readline(20)
            assert made, job.stderr_text()
            me, flows = made["ip"], made["flows"]
            first = pk.conntrack_now(state_dir)
            cli_began = time.monotonic()
            listed = pk.conntrack(state_dir)  # the CLI shows the same sessions
            cli_ended = time.monotonic()
            polls: list[tuple[float, float, dict[str, dict]]] = []
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                t_before = time.monotonic()
                rows = pk.conntrack_now(state_dir)
                present = {kind: found[0] for kind, flow in flows.items()
                           if (found := _find(rows, me, flow))}
                polls.append((t_before, time.monotonic(), present))
                if not present:
                    break
                time.sleep(0.05)
            before = pk.stats(state_dir)
            hp.run(*pk.host("db"), *pk.MODULE, "inject", "--proto", "udp", "--dst", eni["ip"],
                   "--sport", "7000", "--dport",
                   str(_find(first, me, flows["udp_replied"])[0]["reply"]["dport"]),
                   state_dir=state_dir)
            assert pk.wait_for(lambda: pk.delta(before, pk.stats(state_dir),
                                                "inbound_to_eni") == 1, 5, 0.1)
        finally:
            job.stop()
    for kind, flow in flows.items():
        [s] = _find(first, me, flow)
        assert s["eni"] == eni["id"] and s["reply"]["dport"] in PORTS, (kind, s)
        assert s["timeout"] <= TIMEOUTS[kind], (kind, s)
        assert s["replied"] == (kind in ("udp_replied", "tcp_established", "tcp_transitory",
                                         "icmp")), (kind, s)
        if kind in STATES:
            assert s["state"] in STATES[kind], (kind, s)
    for kind in ("udp_replied", "tcp_established", "udp"):  # the CLI's "timeout" left
        [s] = _find(listed, me, flows[kind])
        expiry = flows[kind]["t"] + TIMEOUTS[kind]
        assert expiry - cli_ended - 1 <= s["timeout"] <= expiry - cli_began + 1, (kind, s)
    assert not polls[-1][2], f"still there after 8 s: {polls[-1][2]}"
    syn = [(round(t0 - flows["tcp_syn"]["t"], 2), p["tcp_syn"]["packets"]["original"])
           for t0, _t1, p in polls if "tcp_syn" in p]
    assert syn[-1][1] == 2, syn  # the retransmitted SYN did not extend it
    for kind, flow in flows.items():
        expiry = flow["t"] + TIMEOUTS[kind]
        early = [round(t1 - expiry, 2) for t0, t1, p in polls if kind not in p
                 and t1 < expiry - SLACK]
        late = [round(t0 - expiry, 2) for t0, t1, p in polls if kind in p
                and t0 > expiry + SLACK]
        assert not early, f"{kind} gone {early} s before its timeout"
        assert not late, f"{kind} still there {late} s after its timeout"


def test_port_exhaustion_refuses_with_icmp_13_and_recovers_after_expiry(
        state_dir: Path, eni: dict, tmp_path: Path) -> None:
    """4 connections take the ENI's 4 TCP ports; a 5th is refused: the environment's
    connect fails with EHOSTUNREACH and its capture shows Hyperplane's destination
    unreachable code 13 (from 169.254.0.1, quoting the refused SYN, checksums valid);
    ``out-of-ports`` +1 globally and on the ENI; the 4 held connections still work.
    Then, retrying every 0.25 s, a new connection is accepted only once the idle held
    sessions have expired (tcp_established 4 s after their last segment): every refusal
    before that is another ``out-of-ports`` and another code 13."""
    env_pcap = tmp_path / "env.pcap"
    assert pk.wait_for(lambda: not pk.conntrack_now(state_dir), 10, 0.1), "sessions left"
    with pk.serving(state_dir, pk.host("db"), tmp_path, tcp="7001"):
        before = pk.stats(state_dir)
        job = pk.Job(*pk.function("near"), *pk.MODULE, "with-capture", "--out", str(env_pcap),
                     "--", *pk.MODULE, "exhaust", "--dst", DB, "--port", "7001",
                     state_dir=state_dir, stdin=True)
        try:
            held = job.readline(20)
            assert held and len(held["sports"]) == 4, (held, job.lines)
            refused = job.readline(10)
            mid = pk.stats(state_dir)
            rows = pk.conntrack(state_dir)
            held_ok = job.ask("go on", 10)
            recovered = job.readline(20)
            after = pk.stats(state_dir)
            job.finish(30)
        finally:
            job.stop()
    assert refused["connected"] is False and refused["error"] == "EHOSTUNREACH", refused
    assert pk.drops(before, mid) == {"out_of_ports": 1}
    assert pk.delta(before, mid, "out_of_ports", eni["id"]) == 1
    taken = pk.sessions(rows, protocol="tcp", dst=DB, dport=7001)
    assert {s["original"]["sport"] for s in taken} == set(held["sports"])
    assert {s["reply"]["dport"] for s in taken} == PORTS
    assert {s["state"] for s in taken} == {"ESTABLISHED"}
    assert held_ok == {"step": "held-ok", "ok": True}
    assert recovered["connected"] is True, recovered
    # the held sessions' last segments were the round trips just before ``began``
    assert TIMEOUTS["tcp_established"] - 0.5 <= recovered["after"] \
        <= TIMEOUTS["tcp_established"] + 1.5, recovered
    assert set(recovered["errors"]) == {"EHOSTUNREACH"}
    refusals = 1 + len(recovered["errors"])
    assert pk.drops(before, after) == {"out_of_ports": refusals}
    assert pk.delta(before, after, "out_of_ports", eni["id"]) == refusals
    frames = pk.read_pcap(env_pcap)
    me = next(f["src"] for f in pk.flows(frames, 6) if f["dst"] == DB)
    # one code 13 per refused SYN (the capture goes on while the held sockets close: their
    # FINs, on sessions that expired, may be refused too; they are not counted here)
    refused_sports = [refused["sport"], *recovered["refused_sports"]]
    errors = [e for e in pk.icmp_errors(frames) if e.get("quoted_sport") in refused_sports]
    assert sorted(e["quoted_sport"] for e in errors) == sorted(refused_sports)
    assert {(e["src"], e["dst"], e["type"], e["code"]) for e in errors} == \
        {("169.254.0.1", me, 3, 13)}
    assert {(e["quoted_src"], e["quoted_dst"], e["quoted_dport"]) for e in errors} == \
        {(me, DB, 7001)}
    assert pk.checksum_problems(pk.addressed_to(frames, me, proto=1)) == []
