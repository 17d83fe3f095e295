"""Issue 4 acceptance, UDP, ICMP, MTU and fragments through Hyperplane, with real tools.

Topology ``tests/integration/topologies/dataplane.yaml``: db 10.0.1.10 in subnet-a;
``near`` (subnet-a) reaches db on the bridge, ``far`` and ``narrow`` (subnet-b) through
the VPC router, ``jumbo`` (subnet-a) gets a link MTU above the ENI's.  Captures run on
eth0 inside the environment (``packets with-capture``) and inside db; every test checks
what was seen there and the deltas of ``hyperplane stats --json`` / sessions of
``hyperplane conntrack --json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration import packets as pk
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/topologies/dataplane.yaml"
DB = "10.0.1.10"


@pytest.fixture(scope="module")
def up(state_dir: Path) -> dict:
    yield from bring_up(state_dir, TOPOLOGY)


@pytest.fixture(scope="module")
def enis(up: dict, state_dir: Path) -> dict[str, dict]:
    return {e["subnet"]: e for e in hp.run_json("eni", "list", state_dir=state_dir)}


def in_env(state_dir: Path, fn: str, pcap: Path, *command: str,
           check: bool = True) -> subprocess.CompletedProcess:
    """COMMAND in an environment of FN while its eth0 is captured to PCAP."""
    return hp.run(*pk.function(fn), *pk.MODULE, "with-capture", "--out", str(pcap), "--",
                  *command, state_dir=state_dir, check=check)


# -- UDP mapping -------------------------------------------------------------------------
def test_udp_mapping_keeps_one_eni_port_across_1000_packets(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """1,000 datagrams from one environment port to db's UDP echo, each echoed: db sees
    them all from one ENI address and port (the environment's own, kept because it was
    free), conntrack has one replied session that carried them, one session created."""
    eni = enis["subnet-a"]
    before = pk.stats(state_dir)
    with pk.serving(state_dir, pk.host("db"), tmp_path, udp="7000:echo") as server:
        out = hp.run(*pk.function("near"), *pk.MODULE, "udp-burst", "--dst", DB, "--port",
                     "7000", "--sport", "47000", "--count", "1000", state_dir=state_dir).stdout
        rows = pk.conntrack_flushed(state_dir)
    after = pk.stats(state_dir)
    result = json.loads(out)
    assert result["echoed"] == 1000
    assert list(server.result["udp_peers"]) == [f"{eni['ip']}:47000"]
    assert server.result["udp_peers"][f"{eni['ip']}:47000"] == 1000 + result["retries"]
    [s] = pk.sessions(rows, protocol="udp", src=result["ip"], sport=47000, dst=DB, dport=7000)
    assert s["replied"] and s["eni"] == eni["id"] and s["reply"]["dport"] == 47000
    assert s["packets"]["original"] >= 1000 and s["packets"]["reply"] >= 1000
    assert pk.delta(before, after, "sessions_created", eni["id"]) == 1
    assert pk.delta(before, after, "forwarded") >= 2000
    assert pk.drops(before, after) == {}


# -- port unreachable ----------------------------------------------------------------------
@pytest.mark.parametrize("offloads", ["off", "on"])
def test_udp_to_a_closed_port_gives_port_unreachable_quoting_the_environment(
        offloads: str, state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """A datagram to a port of db where nothing listens: the environment's socket gets
    ECONNREFUSED, and its capture shows db's port unreachable addressed to the
    environment's own 169.254 address, quoting the environment's address and port (not
    the ENI's: the environment's port is below 1024, so its ENI port differs).

    Checksums of what Hyperplane delivered: the IPv4 header and the ICMP message always,
    the quoted IPv4 header always; the quoted UDP checksum only with offloads off (with
    them on, the environment sent a partial checksum, which db quotes as it received it).
    The error does not end the session (still listed, unreplied); nothing is dropped."""
    # a port below 1024: the default range (1024-65535) has none of that class, so the ENI
    # port differs and the quoted port shows that Hyperplane restored it
    pcap, sport = tmp_path / "env.pcap", 900 if offloads == "off" else 901
    before = pk.stats(state_dir)
    probe = [*pk.MODULE, "udp-probe", "--dst", DB, "--port", "9", "--sport", str(sport)]
    if offloads == "off":
        out = hp.run(*pk.function("near"), "sh", "-c",
                     "ethtool -K eth0 tx off >/dev/null && "
                     "trap 'ethtool -K eth0 tx on >/dev/null' EXIT && "
                     f"{' '.join(pk.MODULE)} with-capture --out {pcap} -- {' '.join(probe)}",
                     state_dir=state_dir).stdout
    else:
        out = in_env(state_dir, "near", pcap, *probe).stdout
    rows = pk.conntrack(state_dir)
    after = pk.stats(state_dir)
    result = json.loads(out)
    assert result["error"] == "ECONNREFUSED"
    frames = pk.addressed_to(pk.read_pcap(pcap), result["ip"])
    [error] = pk.icmp_errors(frames)
    assert (error["type"], error["code"]) == (3, 3)
    assert (error["src"], error["dst"]) == (DB, result["ip"])
    assert (error["quoted_src"], error["quoted_sport"]) == (result["ip"], sport)
    assert (error["quoted_dst"], error["quoted_dport"]) == (DB, 9)
    assert pk.checksum_problems(frames, quoted_l4=offloads == "off") == []
    [s] = pk.sessions(rows, protocol="udp", src=result["ip"], sport=sport, dport=9)
    assert s["replied"] is False and s["reply"]["dport"] != sport
    assert pk.drops(before, after) == {}


# -- traceroute --------------------------------------------------------------------------------
METHODS = {  # traceroute options, probe protocol, what db answers the probe that reaches it
    "udp": (["--sport=902"], 17, (DB, 3)),
    "icmp": (["-I"], 1, None),
    "tcp": (["-T", "-p", "8080", "--sport=903"], 6, None),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_traceroute_shows_hyperplane_the_vpc_router_and_db(
        method: str, state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """``traceroute -n`` (UDP probes, ICMP echo with ``-I``, TCP SYN with ``-T``) from an
    environment of subnet-b to db in subnet-a: hop 1 is Hyperplane (169.254.0.1: it
    decrements TTL and sends time exceeded itself), hop 2 the VPC router on subnet-b
    (10.0.2.1: its time exceeded is translated back), hop 3 db (a port unreachable, an
    echo reply or a SYN-ACK, translated).  Each ICMP error in the capture is addressed to
    the environment, quotes one of its own probes, and has valid checksums.  UDP and TCP
    probes leave from a port below 1024 whose ENI port differs, so the quoted port shows
    that Hyperplane restored it.  ``ttl-expired`` +1 on subnet-b's ENI, one error sent."""
    options, proto, last = METHODS[method]
    eni = enis["subnet-b"]
    pcap = tmp_path / "env.pcap"
    before = pk.stats(state_dir)
    out = in_env(state_dir, "far", pcap, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "6",
                 *options, DB).stdout
    rows = pk.conntrack(state_dir)
    after = pk.stats(state_dir)
    hops = re.findall(r"^\s*(\d+)\s+(\S+)", out, re.M)
    assert hops == [("1", "169.254.0.1"), ("2", "10.0.2.1"), ("3", DB)], out
    frames = pk.read_pcap(pcap)
    me = pk.ipv4_src(next(f for f in frames if pk.ipv4_dst(f) == DB))
    errors = pk.icmp_errors(pk.addressed_to(frames, me, proto=1))
    wanted = {("169.254.0.1", 11), ("10.0.2.1", 11)} | ({last} if last else set())
    assert {(e["src"], e["type"]) for e in errors} >= wanted
    for e in errors:
        assert (e["quoted_src"], e["quoted_dst"], e["quoted_proto"]) == (me, DB, proto)
    if proto != 1:
        sport = int(options[-1].split("=")[1])
        probes = {(f["sport"], f["dport"]) for f in pk.flows(frames, proto) if f["src"] == me}
        assert {port for port, _ in probes} == {sport}
        assert {(e["quoted_sport"], e["quoted_dport"]) for e in errors} <= probes
        mapped = {s["reply"]["dport"] for s in pk.sessions(rows, sport=sport)}
        assert len(mapped) == 1 and mapped != {sport}  # one ENI port (endpoint-independent)
    assert pk.checksum_problems(pk.addressed_to(frames, me, proto=1)) == []
    assert pk.delta(before, after, "ttl_expired", eni["id"]) == 1
    assert pk.delta(before, after, "icmp_errors_sent") == 1
    assert pk.drops(before, after) == {"ttl_expired": 1}


# -- MTU ---------------------------------------------------------------------------------------
def test_ping_past_the_eni_mtu_is_fragmented_without_df_and_refused_with_df(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """The ``jumbo`` environment's link is set to MTU 9000 (its eth0 and hp-plane's side,
    with ``ip``), above the ENI link's 1500.  ``ping -M dont -s 3000``: Hyperplane
    fragments the 3028-byte packet for the ENI link (db's capture: fragments from the ENI,
    none over 1500, checksum valid once reassembled) and the reply comes back.  ``ping -M
    do -s 2000``: Hyperplane answers fragmentation needed with MTU 1500, from 169.254.0.1,
    quoting the environment's packet; the environment then caches path MTU 1500."""
    eni = enis["subnet-a"]
    me = pk.env_address(state_dir, "jumbo")
    _ns, link = pk.env_link(state_dir, me)
    env_pcap = tmp_path / "env.pcap"
    subprocess.run(["ip", "-n", "hp-plane", "link", "set", link, "mtu", "9000"], check=True)
    try:
        before = pk.stats(state_dir)
        with pk.capturing(state_dir, pk.host("db"), tmp_path / "db.pcap") as db_pcap:
            out = hp.run(*pk.function("jumbo"), "sh", "-c",
                         "ip link set eth0 mtu 9000 && "
                         "trap 'ip link set eth0 mtu 1500' EXIT && "
                         "ip -4 -o addr show dev eth0 && "
                         f"{' '.join(pk.MODULE)} with-capture --out {env_pcap} -- sh -c '"
                         f"ping -c 1 -W 2 -M dont -s 3000 {DB}; "
                         f"ping -c 1 -W 2 -M do -s 2000 {DB}; ip route get {DB}'",
                         state_dir=state_dir).stdout
        after = pk.stats(state_dir)
    finally:
        subprocess.run(["ip", "-n", "hp-plane", "link", "set", link, "mtu", "1500"],
                       check=True)
    assert f"inet {me}/32" in out  # the same environment
    assert "1 received" in out, out
    assert re.search(r"From 169\.254\.0\.1 icmp_seq=1 Frag needed and DF set \(mtu = 1500\)",
                     out), out
    assert re.search(r"\bmtu 1500\b", out.split(DB)[-1]), out  # the route cache learnt it
    frames = pk.read_pcap(env_pcap)
    [error] = pk.icmp_errors(pk.addressed_to(frames, me))
    assert (error["src"], error["type"], error["code"], error["mtu"]) == \
        ("169.254.0.1", 3, 4, 1500)
    assert (error["quoted_src"], error["quoted_dst"]) == (me, DB)
    assert pk.checksum_problems(frames, quoted_l4=True) == []
    db_frames = pk.read_pcap(db_pcap)
    pieces = [f for f in pk.fragments_of(db_frames) if f["src"] == eni["ip"]]
    assert len(pieces) >= 3 and max(f["len"] for f in pieces) <= 1500
    assert pk.checksum_problems(db_frames) == []
    assert pk.drops(before, after) == {"mtu_exceeded": 1}
    assert pk.delta(before, after, "mtu_exceeded", eni["id"]) == 1
    assert pk.delta(before, after, "fragmented") == 1
    assert pk.delta(before, after, "icmp_errors_sent") == 1


def _bridge_of(router_ns: str, address: str) -> str:
    links = json.loads(subprocess.run(["ip", "-n", router_ns, "-j", "addr", "show"],
                                      check=True, capture_output=True, text=True).stdout)
    return next(link["ifname"] for link in links
                if any(a.get("local") == address for a in link.get("addr_info", [])))


def test_path_mtu_discovery_through_a_smaller_mtu_router_link(
        state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """The VPC router's link into subnet-a is set to MTU 1280.  From ``narrow`` (subnet-b):
    ``ping -M do -s 1400`` gets the router's fragmentation needed (mtu 1280), translated
    back by Hyperplane to the environment (quoted source = the environment); a second one
    fails locally (the environment learnt the path MTU); a 2 MB TCP upload still arrives
    byte-identical.  No ICMP error is dropped by Hyperplane."""
    eni = enis["subnet-b"]
    bridge = _bridge_of("hp-r0", "10.0.1.1")
    payload = bytes((i * 13 + 5) & 0xFF for i in range(2 * 1024 * 1024))
    upload = tmp_path / "up.bin"
    upload.write_bytes(payload)
    pcap = tmp_path / "env.pcap"
    subprocess.run(["ip", "-n", "hp-r0", "link", "set", bridge, "mtu", "1280"], check=True)
    try:
        before = pk.stats(state_dir)
        run = in_env(state_dir, "narrow", pcap, "sh", "-c",
                     f"ping -c 1 -W 2 -M do -s 1400 {DB}; ping -c 1 -W 2 -M do -s 1400 {DB}; "
                     f"ip route get {DB}; curl -sS --max-time 30 --data-binary @{upload} "
                     f"-H 'Content-Type: application/octet-stream' http://{DB}:8080/sha256")
        after = pk.stats(state_dir)
    finally:
        subprocess.run(["ip", "-n", "hp-r0", "link", "set", bridge, "mtu", "1500"], check=True)
    out = run.stdout
    assert re.search(r"From 10\.0\.\d\.1 icmp_seq=1 Frag needed and DF set \(mtu = 1280\)",
                     out), out
    assert "message too long, mtu=1280" in run.stderr, run.stderr  # ping's local error
    assert re.search(r"\bmtu 1280\b", out), out
    assert json.loads(out.strip().splitlines()[-1]) == {
        "sha256": hashlib.sha256(payload).hexdigest(), "length": len(payload)}
    frames = pk.read_pcap(pcap)
    me = next(f["src"] for f in pk.flows(frames, 6) if f["dst"] == DB)
    errors = [e for e in pk.icmp_errors(pk.addressed_to(frames, me)) if e["type"] == 3]
    assert errors and {(e["code"], e["mtu"]) for e in errors} == {(4, 1280)}
    assert {e["quoted_src"] for e in errors} == {me}
    assert {e["src"] for e in errors} <= {"10.0.1.1", "10.0.2.1"}
    assert pk.checksum_problems(pk.addressed_to(frames, me), l4=False) == []
    assert pk.drops(before, after) == {}
    assert pk.delta(before, after, "rx_packets", eni["id"]) > 0


# -- fragments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["in-order", "reversed"])
def test_4kb_fragmented_udp_datagram_arrives_byte_identical(
        order: str, state_dir: Path, enis: dict, tmp_path: Path) -> None:
    """A 4,096-byte UDP datagram crafted with scapy inside an environment and sent as 3
    IPv4 fragments through a raw socket, in order or last fragment first.  db receives it
    whole and byte-identical from the ENI; the echo comes back as fragments too (db's
    kernel, in order; or, for ``reversed``, crafted by db and sent last first) and the
    environment's socket gets it byte-identical.  Every captured fragment on both sides
    has a valid IPv4 checksum and each reassembled datagram a valid UDP checksum;
    Hyperplane drops no fragment."""
    eni = enis["subnet-a"]
    port, sport = (7002, 48000) if order == "in-order" else (7003, 48001)
    env_pcap = tmp_path / "env.pcap"
    before = pk.stats(state_dir)
    with pk.serving(state_dir, pk.host("db"), tmp_path, udp="7002:echo,7003:refrag") as server, \
            pk.capturing(state_dir, pk.host("db"), tmp_path / "db.pcap") as db_pcap:
        out = in_env(state_dir, "near", env_pcap, *pk.MODULE, "frag-send", "--dst", DB,
                     "--port", str(port), "--sport", str(sport), "--order", order,
                     "--ident", str(0x1100 + sport % 256)).stdout
    after = pk.stats(state_dir)
    result = json.loads(out)
    assert result["fragments"] == 3 and result["length"] == 4096
    assert (result["echo_length"], result["echo_sha256"]) == (4096, result["sha256"])
    assert result["echo_from"] == f"{DB}:{port}"
    [got] = server.result["udp_datagrams"]
    assert got == {"peer": f"{eni['ip']}:{sport}", "length": 4096, "sha256": result["sha256"]}
    db_frames = pk.read_pcap(db_pcap)
    sent = [f for f in pk.fragments_of(db_frames) if f["src"] == eni["ip"]]
    assert sorted(f["offset"] for f in sent) == [0, 1480, 2960]
    env_frames = pk.read_pcap(env_pcap)
    out_order = [f["offset"] for f in pk.fragments_of(env_frames) if f["src"] == result["ip"]]
    assert out_order == ([0, 1480, 2960] if order == "in-order" else [2960, 1480, 0])
    back = [f for f in pk.fragments_of(env_frames) if f["dst"] == result["ip"]]
    assert sorted(f["offset"] for f in back) == [0, 1480, 2960]
    assert pk.checksum_problems(db_frames) == []
    assert pk.checksum_problems(env_frames) == []
    assert pk.drops(before, after) == {}
    assert pk.delta(before, after, "sessions_created", eni["id"]) == 1
