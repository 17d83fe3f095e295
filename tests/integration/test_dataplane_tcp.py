"""Issue 4 acceptance, TCP through Hyperplane with real namespaces and real tools.

Topology ``tests/integration/topologies/dataplane.yaml`` (db 10.0.1.10 in subnet-a;
``near`` shares db's subnet, ``far`` crosses the VPC router, ``fleet`` is scaled to 100
environments).  Every test asserts what was seen on the wire or by the endpoints and the
deltas of ``hyperplane stats --json`` / the sessions of ``hyperplane conntrack --json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from hyperplane.services.httpwire import pattern_bytes
from tests.integration import hp
from tests.integration import packets as pk
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/topologies/dataplane.yaml"
DB = "10.0.1.10"
ECHO_TCP = 7001
CLOSING = {"FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"}


@pytest.fixture(scope="module")
def up(state_dir: Path) -> dict:
    yield from bring_up(state_dir, TOPOLOGY)


@pytest.fixture(scope="module")
def enis(up: dict, state_dir: Path) -> dict[str, dict]:
    """subnet -> ENI row (``hyperplane eni list --json``)."""
    return {e["subnet"]: e for e in hp.run_json("eni", "list", state_dir=state_dir)}


def subnet_of(fn: str) -> str:
    return "subnet-b" if fn == "far" else "subnet-a"


# -- bulk transfer, offloads on ----------------------------------------------------------
@pytest.mark.parametrize("fn", ["near", "far"])
def test_bulk_tcp_both_directions_byte_identical_offloads_on(
        fn: str, state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """6 MB down and 6 MB up with curl, default offloads (TSO/GSO, partial checksums).

    With offloads on, Hyperplane forwards GSO super-frames whose TCP checksum is only a
    partial sum, which nothing completes on veth, so a capture here cannot check L4
    checksums (``test_checksums_valid_on_every_captured_packet[on]`` does, by making the
    kernel complete them at Hyperplane's egress).  Checked here, with nothing changed on
    any link: both payloads arrive byte-identical; the receiving kernels (environment and
    db) count no checksum error (``/proc/net/snmp`` ``InCsumErrors``) and retransmit under
    5 % of their segments (a bad checksum would have every segment retransmitted; a few
    spurious retransmissions after reordering are normal here); the dataplane counts no
    drop; db's capture shows super-frames (> 1514 bytes) leaving the ENI whole, each with
    a valid IPv4 header checksum; the session (conntrack) carried the bytes each way.
    """
    eni = enis[subnet_of(fn)]
    size = 6 * 1024 * 1024 + 321
    upload = tmp_path / "up.bin"
    payload = bytes((i * 7 + i // 251) & 0xFF for i in range(6 * 1024 * 1024 + 17))
    upload.write_bytes(payload)
    down = tmp_path / "down.bin"
    db_snmp = pk.snmp(hp.run(*pk.host("db"), "cat", "/proc/net/snmp",
                             state_dir=state_dir).stdout)
    before = pk.stats(state_dir)
    with pk.capturing(state_dir, pk.host("db"), tmp_path / "db.pcap") as pcap:
        out = hp.run(*pk.function(fn), "sh", "-c",
                     "cat /proc/net/snmp; echo ==; "
                     f"curl -sS --max-time 60 -o {down} -w '%{{local_ip}} %{{local_port}}' "
                     f"'http://{DB}:8080/bytes?n={size}'; echo; echo ==; cat /proc/net/snmp",
                     state_dir=state_dir).stdout
        rows_down = pk.conntrack_flushed(state_dir)
        result = hp.run(*pk.function(fn), "curl", "-sS", "--max-time", "60", "--data-binary",
                        f"@{upload}", "-H", "Content-Type: application/octet-stream", "-w",
                        "\n%{local_ip} %{local_port}", f"http://{DB}:8080/sha256",
                        state_dir=state_dir).stdout
        rows_up = pk.conntrack_flushed(state_dir)
    after = pk.stats(state_dir)
    db_after = pk.snmp(hp.run(*pk.host("db"), "cat", "/proc/net/snmp",
                              state_dir=state_dir).stdout)

    # byte-identical both ways
    assert hashlib.sha256(down.read_bytes()).digest() == hashlib.sha256(
        pattern_bytes(size)).digest()
    body, where_up = result.rsplit("\n", 1)
    assert json.loads(body) == {"sha256": hashlib.sha256(payload).hexdigest(),
                                "length": len(payload)}
    # the kernels on both ends: no checksum error, no retransmission storm
    env_before, where_down, env_after = (part.strip() for part in out.split("=="))
    env_before, env_after = pk.snmp(env_before), pk.snmp(env_after)
    for a, b in ((env_before, env_after), (db_snmp, db_after)):
        assert b["Tcp.InCsumErrors"] == a["Tcp.InCsumErrors"]
        sent = b["Tcp.OutSegs"] - a["Tcp.OutSegs"]
        assert b["Tcp.RetransSegs"] - a["Tcp.RetransSegs"] <= max(20, sent // 20), (a, b)
    # counters: nothing dropped; the ENI carried both payloads
    assert pk.drops(before, after) == {}
    assert pk.delta(before, after, "rx_bytes", eni["id"]) >= size
    assert pk.delta(before, after, "tx_bytes", eni["id"]) >= len(payload)
    assert pk.delta(before, after, "sessions_created", eni["id"]) >= 2
    # conntrack: each transfer's session, translated to the ENI, closing after curl ended
    for rows, where, field, n in ((rows_down, where_down, "reply", size),
                                  (rows_up, where_up, "original", len(payload))):
        ip, port = where.split()
        [s] = pk.sessions(rows, protocol="tcp", src=ip, sport=int(port), dst=DB, dport=8080)
        assert s["eni"] == eni["id"] and s["reply"]["dst"] == eni["ip"]
        assert s["bytes"][field] >= n
        assert s["state"] in CLOSING | {"ESTABLISHED"}
    # on the wire (db's side): super-frames left the ENI whole, IPv4 headers valid
    frames = pk.read_pcap(pcap)
    from_eni = [f for f in frames if (ip := pk.ipv4_of(f)) and ip[12:16] == _aton(eni["ip"])]
    assert any(len(f) > 1514 for f in from_eni), "no GSO super-frame seen"
    assert pk.checksum_problems(frames, l4=False) == []


def _aton(ip: str) -> bytes:
    return socket.inet_aton(ip)


# -- checksums, offloads off and on ---------------------------------------------------------
def _ethtool_tx(ns: str, link: str, state: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", link, "tx", state],
                   check=True, capture_output=True, timeout=10)


@pytest.mark.parametrize("offloads", ["off", "on"])
def test_checksums_valid_on_every_captured_packet(
        offloads: str, state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """Traffic between ``near`` and db: 1 MB each way over TCP, a UDP echo, a ping,
    captured on the environment's eth0 and on db's eth0; every checksum recomputed.

    ``off``: TX checksum offload off at both ends (``ethtool -K eth0 tx off`` in the
    environment and in db), so every packet carries a full checksum and Hyperplane updates
    full checksums: every IPv4, TCP, UDP and ICMP checksum in both captures is checked,
    what each end sent as well as what Hyperplane delivered.

    ``on``: both ends keep their offloads, so they send GSO super-frames with partial
    checksums and Hyperplane adjusts the partial sums (the NEEDS_CSUM rule).  On veth a
    partial checksum is never completed, so to check what Hyperplane wrote, its two egress
    links in hp-plane (the environment's ``hpeN`` and the ENI's ``hpiM``) get ``tx off``:
    the kernel then completes each partial sum (and segments the super-frames) as it
    leaves Hyperplane.  Every packet Hyperplane delivered (to the environment in its
    capture, from the ENI in db's) is checked in full; what the two ends sent is a partial
    sum there and is left out."""
    eni = enis["subnet-a"]
    me = pk.env_address(state_dir, "near")
    _ns, env_link = pk.env_link(state_dir, me)
    if offloads == "off":
        hp.run(*pk.host("db"), "ethtool", "-K", "eth0", "tx", "off", state_dir=state_dir)
        prefix = "ethtool -K eth0 tx off >/dev/null && trap 'ethtool -K eth0 tx on " \
                 ">/dev/null' EXIT && "
    else:
        _ethtool_tx("hp-plane", env_link, "off")
        _ethtool_tx("hp-plane", eni["interface"], "off")
        prefix = ""
    try:
        before = pk.stats(state_dir)
        with pk.serving(state_dir, pk.host("db"), tmp_path, udp="7000:echo"), \
                pk.capturing(state_dir, pk.host("db"), tmp_path / "db.pcap") as db_pcap:
            env_pcap = tmp_path / "env.pcap"
            module = " ".join(pk.MODULE)
            script = tmp_path / "traffic.sh"
            script.write_text(
                "set -e\n"
                "ip -4 -o addr show dev eth0\n"
                f"curl -sS --max-time 30 -o /dev/null 'http://{DB}:8080/bytes?n=1000000'\n"
                "head -c 1000000 /dev/zero | curl -sS --max-time 30 --data-binary @- "
                f"'http://{DB}:8080/sha256'\n"
                f"{module} udp-probe --dst {DB} --port 7000\n"
                f"ping -c 2 -i 0.2 -W 2 {DB} >/dev/null\n")
            out = hp.run(*pk.function("near"), "sh", "-c",
                         f"{prefix}{module} with-capture --out {env_pcap} -- sh {script}",
                         state_dir=state_dir).stdout
        after = pk.stats(state_dir)
    finally:
        if offloads == "off":
            hp.run(*pk.host("db"), "ethtool", "-K", "eth0", "tx", "on", state_dir=state_dir)
        else:
            _ethtool_tx("hp-plane", env_link, "on")
            _ethtool_tx("hp-plane", eni["interface"], "on")
    assert f"inet {me}/32" in out  # the environment whose link was set
    assert '"length": 1000000' in out and '"reply": "probe"' in out
    assert pk.drops(before, after) == {}
    env_frames, db_frames = pk.read_pcap(env_pcap), pk.read_pcap(db_pcap)
    delivered = pk.addressed_to(env_frames, me)
    from_eni = [f for f in db_frames if (ip := pk.ipv4_of(f)) and ip[12:16] == _aton(eni["ip"])]
    for frames in (delivered, from_eni):  # TCP, UDP and ICMP went through, both ways
        assert {pk.ipv4_of(f)[9] for f in frames} == {1, 6, 17}
        assert len(pk.flows(frames, 6)) > 100
    if offloads == "off":
        checked = {"environment": env_frames, "db": db_frames}
    else:
        checked = {"environment": delivered, "db": from_eni}
        assert max(len(f) for f in delivered + from_eni) <= 1514  # segmented on the way out
    for side, frames in checked.items():
        assert pk.checksum_problems(frames, quoted_l4=True) == [], side


# -- 100 environments, one source port ------------------------------------------------------
def test_hundred_environments_same_source_port_all_connect_distinct_eni_ports(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """100 environments of ``fleet`` (one subnet, one ENI) each bind port 40000 and
    connect to db at the same moment (they all wait for one go file); all connect, db
    sees 100 distinct ENI ports on the ENI's address, conntrack holds 100 ESTABLISHED
    sessions from port 40000, one of which kept 40000 on the ENI.

    The environments are made first in one burst (``requests.start_envs``, as the bench
    does), then the 100 ``hyperplane exec --function fleet`` take one each (warm)."""
    eni = enis["subnet-a"]
    subprocess.run([hp.CLI[0], "-c", "from hyperplane.emulator import requests; "
                    "requests.start_envs('fleet', 100)"], cwd=hp.REPO, check=True, timeout=120,
                   env=dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir)))
    sync = tmp_path / "sync"
    sync.mkdir()
    jobs: list[pk.Job] = []
    before = pk.stats(state_dir)
    with pk.serving(state_dir, pk.host("db"), tmp_path, tcp="7100") as server:
        try:
            for n in range(100):
                jobs.append(pk.Job(*pk.function("fleet"), *pk.MODULE, "tcp-hold", "--dst", DB,
                                   "--port", "7100", "--sport", "40000", "--dir", str(sync),
                                   "--name", str(n), state_dir=state_dir))
            assert pk.wait_for(lambda: len(list(sync.glob("ready-*"))) == 100, 150, 0.1), \
                [j.proc.poll() for j in jobs]
            (sync / "go").touch()
            assert pk.wait_for(lambda: len(list(sync.glob("result-*[0-9]"))) == 100, 30, 0.05)
            results = [json.loads((sync / f"result-{n}").read_text()) for n in range(100)]
            rows = pk.conntrack(state_dir)
        finally:
            (sync / "release").touch()
            pk.wait_for(lambda: all(j.proc.poll() is not None for j in jobs), 20, 0.1)
            for job in jobs:
                job.stop()
    after = pk.stats(state_dir)
    assert all(r["connected"] for r in results), [r for r in results if not r["connected"]]
    assert {r["sport"] for r in results} == {40000}
    assert len({r["ip"] for r in results}) == 100  # 100 environments
    seen = [r["server_saw"] for r in results]
    assert {s["client"] for s in seen} == {eni["ip"]}
    ports = {s["port"] for s in seen}
    assert len(ports) == 100 and 40000 in ports
    assert len(set(server.result["tcp_peers"])) == 100
    held = pk.sessions(rows, protocol="tcp", sport=40000, dst=DB, dport=7100)
    assert len(held) == 100 and {s["state"] for s in held} == {"ESTABLISHED"}
    assert {s["reply"]["dport"] for s in held} == ports
    assert {s["original"]["src"] for s in held} == {r["ip"] for r in results}
    assert pk.delta(before, after, "sessions_created", eni["id"]) == 100
    assert pk.drops(before, after) == {}


# -- a burst larger than one group ------------------------------------------------------------
BURST = """
import json, sys
from hyperplane.emulator import requests
envs = requests.start_envs("fleet", 300)
picked = [envs[0], envs[255], envs[256], envs[-1]]
json.dump({"envs": [e.to_dict() for e in envs],
           "answers": [requests.invoke_env(e, {"n": e.index}) for e in picked]}, sys.stdout)
"""


def test_a_burst_of_three_hundred_is_built_and_started_a_group_at_a_time(
        state_dir: Path, enis: dict) -> None:
    """300 environments in one burst: two groups (``service.GROUP`` = 256), the second built
    while the zygote forks the first one's agents.  Every environment is distinct and ready
    when the burst returns, and environments of both groups reach db through the ENI (the
    dataplane had each group's links before its agents ran)."""
    from hyperplane.controller.service import GROUP
    assert GROUP < 300
    eni = enis["subnet-a"]
    before = pk.stats(state_dir)
    out = subprocess.run([hp.CLI[0], "-c", BURST], cwd=hp.REPO, check=True, timeout=180,
                         capture_output=True, text=True,
                         env=dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir)))
    result = json.loads(out.stdout)
    envs = result["envs"]
    assert len(envs) == 300
    assert len({e["index"] for e in envs}) == len({e["ip"] for e in envs}) == 300
    assert {e["eni_id"] for e in envs} == {eni["id"]}
    for env, answer in zip([envs[0], envs[255], envs[256], envs[-1]], result["answers"],
                           strict=True):
        body = answer["result"]
        assert body["environment_ip"] == env["ip"], answer
        assert body["database_saw"] == eni["ip"], answer
        assert body["event"] == {"n": env["index"]}
    assert pk.drops(before, pk.stats(state_dir)) == {}


# -- RST ------------------------------------------------------------------------------------
def _open(state_dir: Path, eni: dict, pcap: Path) -> tuple[pk.Job, dict, dict]:
    """A connection near -> db:ECHO_TCP (interactive, its environment's eth0 captured to
    ``pcap`` until the client ends), its first answer, its session."""
    client = pk.Job(*pk.function("near"), *pk.MODULE, "with-capture", "--out", str(pcap),
                    "--", *pk.MODULE, "tcp-client", "--dst", DB, "--port", str(ECHO_TCP),
                    state_dir=state_dir, stdin=True)
    hello = client.readline(15)
    assert hello and hello["connected"], (hello, client.stderr_text())
    assert client.ask("roundtrip") == {"ok": True}
    [session] = pk.sessions(pk.conntrack(state_dir), protocol="tcp", src=hello["ip"],
                            sport=hello["sport"], dst=DB, dport=ECHO_TCP)
    assert session["state"] == "ESTABLISHED"
    assert session["reply"]["dport"] == hello["server_saw"]["port"]
    assert hello["server_saw"]["client"] == eni["ip"]
    return client, hello, session


def _rst_from_db(state_dir: Path, tmp_path: Path, client: pk.Job, eni: dict, eni_port: int,
                 offset: int) -> dict:
    """Watch the flow on db's eth0 during one round trip, then send db's RST with
    seq = the environment's last ACK + offset (scapy, raw socket, from db's namespace)."""
    ready = tmp_path / f"rst{offset}.ready"
    job = pk.Job(*pk.host("db"), *pk.MODULE, "rst-after", "--peer", eni["ip"], "--peer-port",
                 str(eni_port), "--port", str(ECHO_TCP), "--offset", str(offset), "--ready",
                 str(ready), state_dir=state_dir)
    try:
        pk.started(job, ready, "rst-after")
        assert client.ask("roundtrip") == {"ok": True}
        sent = job.readline(15)
    finally:
        job.stop()
    assert sent and sent["sent"], sent
    return sent


def _rsts(pcap: Path, me: str) -> list[dict]:
    return [f for f in pk.flows(pk.read_pcap(pcap), 6) if f["dst"] == me and f["flags"] & 4]


def test_out_of_window_rst_is_dropped_and_the_connection_goes_on(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """A RST from db's side with the right addresses and ports but a sequence number 2**30
    past the environment's last ACK: Hyperplane drops it (``tcp-rst-out-of-window`` +1
    globally and on the ENI; the environment's capture shows no RST), the session stays
    ESTABLISHED and the connection still echoes."""
    eni = enis["subnet-a"]
    pcap = tmp_path / "env.pcap"
    with pk.serving(state_dir, pk.host("db"), tmp_path, tcp=str(ECHO_TCP)):
        client, hello, session = _open(state_dir, eni, pcap)
        try:
            before = pk.stats(state_dir)
            _rst_from_db(state_dir, tmp_path, client, eni, session["reply"]["dport"], 1 << 30)
            assert pk.wait_for(lambda: pk.delta(before, pk.stats(state_dir),
                                                "tcp_rst_out_of_window") >= 1, 5, 0.1)
            assert client.ask("roundtrip") == {"ok": True}
            after = pk.stats(state_dir)
            [now] = pk.sessions(pk.conntrack_flushed(state_dir), protocol="tcp", src=hello["ip"],
                                sport=hello["sport"], dport=ECHO_TCP)
            client.finish()
        finally:
            client.stop()
    assert _rsts(pcap, hello["ip"]) == []
    assert pk.drops(before, after) == {"tcp_rst_out_of_window": 1}
    assert pk.delta(before, after, "tcp_rst_out_of_window", eni["id"]) == 1
    assert now["state"] == "ESTABLISHED"
    assert now["packets"]["reply"] > session["packets"]["reply"]


def test_exact_rst_closes_and_the_session_lingers_transitory(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """A RST from db's side whose sequence number is exactly the environment's last ACK:
    Hyperplane forwards it (the environment's connection is reset), the session goes to
    CLOSE with the transitory timeout (3 s in this topology), still listed a second later,
    and gone after the timeout; the environment's capture shows that one RST, translated
    to its address and port; nothing is counted as dropped."""
    eni = enis["subnet-a"]
    pcap = tmp_path / "env.pcap"
    with pk.serving(state_dir, pk.host("db"), tmp_path, tcp=str(ECHO_TCP)):
        client, hello, session = _open(state_dir, eni, pcap)
        try:
            before = pk.stats(state_dir)
            sent = _rst_from_db(state_dir, tmp_path, client, eni, session["reply"]["dport"], 0)
            match = {"protocol": "tcp", "src": hello["ip"], "sport": hello["sport"],
                     "dport": ECHO_TCP}
            closed: list[dict] = []
            assert pk.wait_for(lambda: closed.extend(
                s for s in pk.sessions(pk.conntrack(state_dir), **match)
                if s["state"] == "CLOSE") or closed, 5, 0.05)
            reset = client.ask("roundtrip")
            after = pk.stats(state_dir)
            assert pk.sessions(pk.conntrack(state_dir), **match), "gone before its timeout"
            assert pk.wait_for(lambda: not pk.sessions(pk.conntrack(state_dir), **match),
                               6, 0.2), "still there after the transitory timeout"
            client.finish()
        finally:
            client.stop()
    [rst] = _rsts(pcap, hello["ip"])
    assert (rst["src"], rst["sport"], rst["dport"]) == (DB, ECHO_TCP, hello["sport"])
    rst_frames = [f for f in pk.addressed_to(pk.read_pcap(pcap), hello["ip"], proto=6)
                  if (ip := pk.ipv4_of(f))[(ip[0] & 15) * 4 + 13] & 4]
    assert len(rst_frames) == 1 and pk.checksum_problems(rst_frames) == [], sent
    assert reset["ok"] is False and reset["error"] in ("ECONNRESET", "EPIPE"), reset
    assert closed[0]["timeout"] <= 3
    assert pk.drops(before, after) == {}


# -- unsolicited inbound ----------------------------------------------------------------------
def test_unsolicited_inbound_syn_and_udp_reach_no_environment_and_get_no_answer(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """While an environment holds a UDP flow to db (so its ENI port is mapped), db's
    namespace sends the ENI, with scapy: 3 SYNs and 3 UDP datagrams to that mapped port
    from other db ports, and 3 + 3 to an unmapped port.  Hyperplane counts 12
    ``inbound-to-eni`` (globally and on the ENI) and makes no session; db's capture shows
    no packet from the ENI; the environment receives nothing more than its own echo.

    Then two forged port unreachables: one quoting a flow that does not exist
    (``icmp-error-no-session``), one quoting the live flow with a wrong ICMP checksum
    (``icmp-bad-checksum``).  Neither reaches the environment: its connected socket would
    report ECONNREFUSED, and its capture would show them."""
    eni = enis["subnet-a"]
    env_pcap = tmp_path / "env.pcap"
    with pk.serving(state_dir, pk.host("db"), tmp_path, udp="7000:echo"):
        listener = pk.Job(*pk.function("near"), *pk.MODULE, "with-capture", "--out",
                          str(env_pcap), "--", *pk.MODULE, "udp-probe", "--dst", DB,
                          "--port", "7000", "--sport", "45000", "--more", "8",
                          state_dir=state_dir)
        try:
            # the first answer (the echo) arrives at once; then the probe waits for more
            assert pk.wait_for(lambda: pk.sessions(pk.conntrack(state_dir), protocol="udp",
                                                   sport=45000, replied=True), 10, 0.1)
            [flow] = pk.sessions(pk.conntrack(state_dir), protocol="udp", sport=45000)
            mapped = flow["reply"]["dport"]
            before = pk.stats(state_dir)
            with pk.capturing(state_dir, pk.host("db"), tmp_path / "db.pcap") as db_pcap:
                hp.run(*pk.host("db"), *pk.MODULE, "inject", "--proto", "tcp,udp", "--dst",
                       eni["ip"], "--sport", "7777", "--dport", f"{mapped},23456", "--count",
                       "3", state_dir=state_dir)
                assert pk.wait_for(lambda: pk.delta(before, pk.stats(state_dir),
                                                    "inbound_to_eni") >= 12, 5, 0.1)
                for quoted, bad in ((23456, []), (mapped, ["--bad-checksum"])):
                    hp.run(*pk.host("db"), *pk.MODULE, "icmp-error", "--dst", eni["ip"],
                           "--quoted-sport", str(quoted), "--quoted-dport", "7000", *bad,
                           state_dir=state_dir)
                assert pk.wait_for(lambda: len(pk.drops(before, pk.stats(state_dir))) >= 3,
                                   5, 0.1)
                after = pk.stats(state_dir)
            code, out, err = listener.finish(timeout=20)
        finally:
            listener.stop()
    assert pk.drops(before, after) == {"inbound_to_eni": 12, "icmp_error_no_session": 1,
                                       "icmp_bad_checksum": 1}
    assert pk.drops(before, after, eni["id"]) == pk.drops(before, after)
    assert pk.delta(before, after, "sessions_created") == 0
    db_frames = pk.read_pcap(db_pcap)
    assert [f for f in db_frames if (ip := pk.ipv4_of(f)) and ip[12:16] == _aton(eni["ip"])] \
        == [], "the ENI answered"
    injected = [f for f in pk.flows(db_frames, 6) + pk.flows(db_frames, 17) if f["sport"] == 7777]
    assert len(injected) == 12
    assert code == 0, err
    probe = json.loads(out.strip().splitlines()[-1])
    assert probe["reply"] == "probe" and probe["more"] == []
    env_frames = pk.read_pcap(env_pcap)
    received = [f for f in pk.flows(env_frames, 6) + pk.flows(env_frames, 17)
                if f["dst"] != DB]
    assert [(f["src"], f["sport"]) for f in received] == [(DB, 7000)]  # the echo only
    assert pk.icmp_errors(env_frames) == []
