"""conntrack like conntrack-tools, and the NAT gateway's idle reset, on real namespaces.

One ``up`` of the nat-gateway example for the module, with two short timeouts (the
settings the tests use, documented in docs/observability.md): the NAT gateway's
``idle_timeout`` 3 s, so its idle reset comes in seconds, and the dataplane's
``tcp_transitory`` 2 s, so a closed flow's DESTROY does too.  The function ``fetch``
(subnet-private) reaches a line echo server on the host ``app`` (10.0.1.20:9391) through a
Hyperplane ENI; ``app`` reaches the emulated internet (203.0.113.10) through the NAT
gateway nat-a, where the test runs the other end of an idle connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration import hp
from tests.integration.conftest import bring_up

pytestmark = pytest.mark.integration

APP = "10.0.1.20"
INTERNET = "203.0.113.10"
IDLE_PORT = 9390
ECHO_PORT = 9391
# a line echo server on the host app (its group admits everything from the function's)
ECHO = """
import socket, sys, threading
lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("0.0.0.0", int(sys.argv[1])))
lsock.listen(16)
print("listening", flush=True)
def serve(conn):
    with conn:
        for line in conn.makefile("rb"):
            conn.sendall(line)
while True:
    conn, _ = lsock.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
# a client in the function's environment: one round trip per stdin line on one connection
CLIENT = """
import json, socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
reader = sock.makefile("rb")
for line in sys.stdin:
    sock.sendall(line.encode())
    back = reader.readline().decode()
    print(json.dumps({"echoed": back == line, "sport": sock.getsockname()[1]}), flush=True)
sock.close()
"""
# the emulated internet's side of an idle connection: accept, read, wait for the reset
SERVER = """
import json, socket, sys
lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("0.0.0.0", int(sys.argv[1])))
lsock.listen(1)
lsock.settimeout(60)
print("listening", flush=True)
conn, _ = lsock.accept()
conn.settimeout(30)
first = conn.recv(100)
try:
    more = conn.recv(100)
    print(json.dumps({"got": first.decode(), "then": "eof" if not more else "data"}))
except ConnectionResetError:
    print(json.dumps({"got": first.decode(), "then": "ECONNRESET"}))
except TimeoutError:
    print(json.dumps({"got": first.decode(), "then": "timeout"}))
"""
# the inside host's side: connect through the NAT gateway, send, then wait idle
IDLE_CLIENT = """
import json, socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.sendall(b"hi")
sock.settimeout(30)
start = time.monotonic()
try:
    more = sock.recv(100)
    then = "eof" if not more else "data"
except ConnectionResetError:
    then = "ECONNRESET"
except TimeoutError:
    then = "timeout"
print(json.dumps({"then": then, "after": round(time.monotonic() - start, 1),
                  "sport": sock.getsockname()[1]}))
"""


@pytest.fixture(scope="module")
def natgw(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    document = yaml.safe_load((hp.REPO / "examples" / "nat-gateway.yaml").read_text())
    document["settings"] = {"nat_gateway": {"idle_timeout": 3},
                            "dataplane": {"timeouts": {"tcp_transitory": 2}}}
    path = tmp_path_factory.mktemp("topology") / "conntrack.yaml"
    path.write_text(yaml.safe_dump(document))
    topology = bring_up(state_dir, str(path))
    try:
        status = next(topology)
        echo = hp.start_capture("exec", "app", "--", sys.executable, "-c", ECHO, str(ECHO_PORT),
                                state_dir=state_dir)
        try:
            assert echo.stdout.readline().strip() == "listening"
            yield status
        finally:
            echo.kill()
            echo.communicate(timeout=10)
    finally:
        topology.close()  # down and cleanup, whatever happened


class Lines:
    """A background process's stdout and stderr, read line by line by threads."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                        for stream, into in ((proc.stdout, self.out), (proc.stderr, self.err))]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        return hp.wait_for(lambda: predicate() or self.proc.poll() is not None, timeout) \
            and predicate()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        for thread in self.threads:
            thread.join(timeout=5)


def run_with_input(state_dir: Path, text: str, *args: str) -> str:
    """``hyperplane ARGS`` with ``text`` on its stdin; its stdout."""
    done = subprocess.run([*hp.CLI, *args], cwd=hp.REPO, input=text, capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir)))
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(state_dir: Path, *args: str) -> list[dict]:
    return hp.run_json("conntrack", *args, state_dir=state_dir)


def fetch_eni(state_dir: Path) -> str:
    [eni] = [e["id"] for e in hp.run_json("eni", "list", state_dir=state_dir)
             if "fetch" in e["functions"]]
    return eni


def test_follow_shows_new_and_destroy_of_a_real_flow(natgw: dict, state_dir: Path) -> None:
    follower = Lines(hp.start_capture("conntrack", "--follow", "--proto", "tcp", "--dport",
                                      str(ECHO_PORT), state_dir=state_dir))
    try:
        assert follower.wait_for(lambda: any("following events" in x for x in follower.err)), \
            follower.err
        done = run_with_input(state_dir, "hello\n", "exec", "--function", "fetch", "--",
                              sys.executable, "-c", CLIENT, APP, str(ECHO_PORT))
        [reply] = [json.loads(x) for x in done.splitlines() if x.startswith("{")]
        assert reply["echoed"]
        sport = f"sport={reply['sport']} dport={ECHO_PORT}"

        def seen(event: str) -> list[str]:
            return [x for x in follower.out if x.lstrip().startswith(f"[{event}]") and sport in x]
        assert follower.wait_for(lambda: seen("DESTROY"), timeout=15), follower.out
        [new] = seen("NEW")
        assert new.split()[1:3] == ["tcp", "6"] and f"dst={APP}" in new
        assert new.endswith(f"eni={fetch_eni(state_dir)}")
        [destroy] = seen("DESTROY")
        assert destroy.split()[3].startswith("src=")  # no timeout, no state: as conntrack -E
        assert "[ASSURED]" in destroy
        assert follower.out.index(new) < follower.out.index(destroy)
        assert all(f"dport={ECHO_PORT}" in x for x in follower.out)  # the filters hold
    finally:
        follower.stop()
    assert any("flow events have been shown." in x for x in follower.err), follower.err


def test_filters_delete_and_flush(natgw: dict, state_dir: Path) -> None:
    eni = fetch_eni(state_dir)
    client = subprocess.Popen(
        [*hp.CLI, "exec", "--function", "fetch", "--", sys.executable, "-c", CLIENT, APP,
         str(ECHO_PORT)],
        cwd=hp.REPO, env=dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client.stdin.write("one\n")
        client.stdin.flush()
        first = json.loads(client.stdout.readline())
        assert first["echoed"]
        sport = str(first["sport"])
        mine = ("--proto", "tcp", "--dport", str(ECHO_PORT), "--sport", sport)
        [held] = rows(state_dir, *mine, "--state", "ESTABLISHED", "--eni", eni)
        assert held["original"]["dst"] == APP and held["assured"] and held["eni"] == eni
        assert rows(state_dir, *mine, "--state", "TIME_WAIT") == []
        assert rows(state_dir, "--dport", str(ECHO_PORT + 1)) == []
        assert rows(state_dir, "--src", "10.0.0.0/8") == []  # the original source: 169.254.x
        [same] = rows(state_dir, *mine, "--src", "169.254.0.0/16", "--dst", f"{APP}/32")
        assert same["original"] == held["original"]
        assert rows(state_dir, "--proto", "udp", "--sport", sport) == []
        assert rows(state_dir, *mine, "--eni", "eni-00000000000000000") == []
        listed = hp.run("conntrack", *mine, state_dir=state_dir)
        assert listed.stdout.startswith("tcp      6 ") and " ESTABLISHED src=169.254." in \
            listed.stdout and "[ASSURED]" in listed.stdout
        assert "1 flow entries have been shown." in listed.stderr

        before = hp.run_json("stats", state_dir=state_dir)
        deleted = hp.run("conntrack", "--delete", *mine, state_dir=state_dir)
        assert "1 flow entries have been deleted." in deleted.stderr
        assert f"sport={sport} dport={ECHO_PORT}" in deleted.stdout
        after = hp.run_json("stats", state_dir=state_dir)
        assert after["global"]["sessions_deleted"] - before["global"].get(
            "sessions_deleted", 0) == 1
        assert after["enis"][eni]["sessions_deleted"] - before["enis"][eni].get(
            "sessions_deleted", 0) == 1
        assert rows(state_dir, *mine) == []
        nothing = hp.run("conntrack", "--delete", *mine, state_dir=state_dir)
        assert "0 flow entries have been deleted." in nothing.stderr

        # the next packet of the deleted flow, from the environment: picked up mid-stream
        # (as Linux with nf_conntrack_tcp_loose=1), on the same ENI port: the connection
        # goes on
        client.stdin.write("two\n")
        client.stdin.flush()
        second = json.loads(client.stdout.readline())
        assert second == {"echoed": True, "sport": first["sport"]}
        [again] = rows(state_dir, *mine)
        assert again["state"] == "ESTABLISHED" and again["replied"]
        assert again["reply"]["dport"] == held["reply"]["dport"]  # the same ENI port
        created = hp.run_json("stats", state_dir=state_dir)["global"]["sessions_created"]
        assert created >= after["global"]["sessions_created"] + 1

        flushed = hp.run("conntrack", "--flush", state_dir=state_dir)
        assert "connection tracking table has been emptied" in flushed.stderr
        count = int(flushed.stderr.split("(")[1].split()[0])
        assert count >= 1
        assert rows(state_dir, *mine) == []
        final = hp.run_json("stats", state_dir=state_dir)["global"]
        assert final["sessions_deleted"] - after["global"]["sessions_deleted"] == count
    finally:
        client.stdin.close()
        client.wait(timeout=20)


def test_nat_gateway_resets_an_idle_connection_on_both_sides(natgw: dict,
                                                             state_dir: Path) -> None:
    from hyperplane.kernel import procs

    def gateway() -> dict:
        return hp.run_json("stats", state_dir=state_dir)["nat_gateways"]

    before = gateway()
    server = procs.start_in("hp-inet", [sys.executable, "-c", SERVER, str(IDLE_PORT)])
    try:
        assert server.stdout.readline().strip() == "listening"
        done = hp.run("exec", "app", "--", sys.executable, "-c", IDLE_CLIENT, INTERNET,
                      str(IDLE_PORT), state_dir=state_dir, timeout=60)
        client = json.loads(done.stdout)
        out, _ = server.communicate(timeout=40)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert client["then"] == "ECONNRESET" and 2.5 <= client["after"] < 15, client
    assert json.loads(out) == {"got": "hi", "then": "ECONNRESET"}
    after = gateway()
    counters = after["gateways"]["nat-a"]
    metrics = after["cloudwatch"]["nat-a"]
    assert metrics["IdleTimeoutCount"] - before["cloudwatch"]["nat-a"]["IdleTimeoutCount"] == 1
    assert counters["idle_resets_sent"] - before["gateways"]["nat-a"].get(
        "idle_resets_sent", 0) == 2
    assert metrics["ConnectionEstablishedCount"] >= 1 and metrics["PacketsInFromSource"] >= 3
    assert metrics["BytesOutToDestination"] >= metrics["PacketsOutToDestination"] * 40
    text = hp.run("stats", state_dir=state_dir).stdout
    assert "[nat-a] CloudWatch AWS/NATGateway" in text and "ActiveConnectionCount" in text
