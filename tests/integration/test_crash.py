"""A dataplane killed with SIGKILL loses no flow (examples/nat-gateway.yaml).

A 20-second upload from an execution environment runs through Hyperplane (to the host
``app``) or through Hyperplane and the NAT gateway (to the emulated internet); the
process is killed 5 s in.  The supervisor starts it again, it re-attaches its
shared-memory session table, and the upload completes with no reset and the same bytes
(the server's SHA-256 of what it received), through the same ENI (or NAT) port; a UDP
flow keeps its mapping; the restart is counted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

PROBE = [sys.executable, "-m", "hyperplane.services.reachprobe"]
SECONDS, CHUNKS, CHUNK = 20, 200, 16384
CLIENT = r"""
import hashlib, http.client, json, socket, sys, time
host, port, seconds, chunks, size, echo = sys.argv[1:7]
seconds, chunks, size = float(seconds), int(chunks), int(size)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(5)
udp.connect((echo, 5005))
def mapping(text):
    for _ in range(5):
        udp.send(text.encode())
        try:
            return udp.recv(2048).decode().split(" ", 1)[0]
        except OSError:
            continue
    return None
before = mapping("before")
digest = hashlib.sha256()
conn = http.client.HTTPConnection(host, int(port), timeout=60)
conn.putrequest("POST", "/sha256")
conn.putheader("Content-Length", str(chunks * size))
conn.endheaders()
print("started", flush=True)
for i in range(chunks):
    chunk = bytes((i + j) % 251 for j in range(256)) * (size // 256)
    conn.send(chunk)
    digest.update(chunk)
    time.sleep(seconds / chunks)
reply = json.loads(conn.getresponse().read())
print(json.dumps({"sent": digest.hexdigest(), "reply": reply, "udp": [before, mapping("after")]}))
"""


@pytest.fixture(scope="module")
def natgw(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "examples/nat-gateway.yaml")


@pytest.fixture(scope="module")
def udp_echo(natgw: dict, state_dir: Path, tmp_path_factory) -> Iterator[None]:
    ready = tmp_path_factory.mktemp("echo") / "ready"
    proc = hp.start("exec", "app", "--", *PROBE, "--udp-echo", "5005", "--ready", str(ready),
                    state_dir=state_dir)
    assert hp.wait_for(ready.exists), "the UDP echo server did not start"
    yield
    proc.terminate()
    proc.wait(timeout=10)


def sessions(state_dir: Path, dport: int) -> list[dict]:
    return [s for s in hp.run_json("conntrack", state_dir=state_dir)
            if s["original"]["dport"] == dport and s["protocol"] == "tcp"]


def status_of(state_dir: Path, name: str) -> dict:
    return hp.run_json("status", state_dir=state_dir)["supervision"]["processes"][name]


def upload_while_killing(state_dir: Path, target: tuple[str, int], victim: str,
                         port_of) -> tuple[dict, list, list]:  # noqa: ANN001
    """Start the upload, kill ``victim`` 5 s in; (the client's report, the ports before,
    after)."""
    client = hp.start_capture("exec", "--function", "fetch", "--", sys.executable, "-c",
                              CLIENT, target[0], str(target[1]), str(SECONDS), str(CHUNKS),
                              str(CHUNK), "10.0.1.20", state_dir=state_dir)
    try:
        assert client.stdout.readline().strip() == "started", client.stderr.read()
        time.sleep(5)
        before = port_of()
        victim_pid = status_of(state_dir, victim)["pid"]
        os.kill(victim_pid, signal.SIGKILL)
        assert hp.wait_for(lambda: status_of(state_dir, victim)["restarts"] == 1, 5)
        assert hp.wait_for(lambda: status_of(state_dir, victim)["alive"], 5)
        after = port_of()
        out, err = client.communicate(timeout=SECONDS + 60)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), before, after


def test_hyperplane_killed_mid_transfer_loses_nothing(natgw: dict, udp_echo: None,
                                                      state_dir: Path) -> None:
    def eni_ports() -> list:
        return sorted(s["reply"]["dport"] for s in sessions(state_dir, 8080))
    report, before, after = upload_while_killing(state_dir, ("10.0.1.20", 8080), "dataplane",
                                                 eni_ports)
    assert report["reply"] == {"sha256": report["sent"], "length": CHUNKS * CHUNK}
    assert before and before == after  # the same ENI port, before and after the restart
    assert report["udp"][0] is not None and report["udp"][0] == report["udp"][1]
    stats = hp.run_json("stats", state_dir=state_dir)
    assert stats["global"]["restarts"] == 1


def test_the_nat_gateway_killed_mid_transfer_loses_nothing(natgw: dict, udp_echo: None,
                                                           state_dir: Path) -> None:
    def nat_ports() -> list:
        table = hp.run_json("conntrack", "--nat-gateway", state_dir=state_dir)
        return sorted(s["reply"]["dport"] for s in table if s["original"]["dport"] == 80)
    report, before, after = upload_while_killing(state_dir, ("203.0.113.10", 80), "natgw",
                                                 nat_ports)
    assert report["reply"] == {"sha256": report["sent"], "length": CHUNKS * CHUNK}
    assert before and before == after
