"""Two dataplane workers on one fanout group (topologies/workers.yaml).

* Four TCP streams from one execution environment, two steered to each worker (the
  client picks its source ports with the fanout program's own model, ``bpf.steer``);
  worker 1 is killed with SIGKILL mid-transfer.  The group starts it again onto its
  own fanout member; the other worker's streams never stall (the server sees bytes
  of each at least every ``STALL`` seconds through the kill), the dead worker's
  streams resume, and every stream completes with the same bytes, through the same
  ENI port, with one restart counted.
* A mixed run (TCP bulk, UDP flows, ping, new connections) with both workers: every
  return frame reaches the worker that owns its session (``no_session`` stays 0).
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

SINK_PORT, STREAMS, SECONDS, CHUNK = 9000, 4, 12.0, 16384
STALL = 0.5
SINK = r"""
import hashlib, json, socket, sys, threading, time
out, ready, streams = sys.argv[1], sys.argv[2], int(sys.argv[3])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.0.1.10", 9000))
srv.listen(16)
open(ready, "w").close()
seen = {}
def serve(conn, peer):
    digest, total, marks = hashlib.sha256(), 0, []
    while True:
        data = conn.recv(65536)
        if not data:
            break
        digest.update(data)
        total += len(data)
        marks.append(time.time())
    seen[peer[1]] = {"bytes": total, "sha256": digest.hexdigest(), "marks": marks}
threads = []
for _ in range(streams):
    conn, peer = srv.accept()
    t = threading.Thread(target=serve, args=(conn, peer))
    t.start()
    threads.append(t)
for t in threads:
    t.join()
open(out, "w").write(json.dumps(seen))
"""
CLIENT = r"""
import hashlib, json, socket, sys, threading, time
from hyperplane.dataplane.bpf import steer
seconds, size, streams = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect(("10.0.1.10", 9))
me = socket.inet_aton(probe.getsockname()[0])
def worker(port):  # a TCP segment from (me, port), as the fanout program reads it
    return steer(bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + me + bytes(4)
                 + port.to_bytes(2, "big") + bytes(18), 2)
ports, wanted = [], {0: streams // 2, 1: streams - streams // 2}
for port in range(41000, 60000):
    w = worker(port)
    if wanted[w]:
        ports.append((port, w))
        wanted[w] -= 1
socks = []
for port, _w in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.connect(("10.0.1.10", 9000))
    socks.append(s)
print(json.dumps({"ports": ports}), flush=True)
sent = {}
def stream(i, s):
    digest, chunks = hashlib.sha256(), int(seconds * 100)
    for n in range(chunks):
        chunk = bytes((i + n + j) % 251 for j in range(256)) * (size // 256)
        s.sendall(chunk)
        digest.update(chunk)
        time.sleep(0.01)
    s.close()
    sent[i] = digest.hexdigest()
threads = [threading.Thread(target=stream, args=(i, s)) for i, s in enumerate(socks)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"sent": [sent[i] for i in range(len(socks))]}), flush=True)
"""


@pytest.fixture(scope="module")
def workers(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, "tests/integration/topologies/workers.yaml")


def dataplane_stats(state_dir: Path) -> dict:
    return hp.run_json("stats", state_dir=state_dir)


def group_workers(state_dir: Path) -> list[dict]:
    return hp.run_json("status", state_dir=state_dir)["dataplane"]["workers"]


def eni_ports(state_dir: Path) -> dict[int, int]:
    """Inside port -> ENI port of the TCP sessions to the sink."""
    return {s["original"]["sport"]: s["reply"]["dport"]
            for s in hp.run_json("conntrack", state_dir=state_dir)
            if s["protocol"] == "tcp" and s["original"]["dport"] == SINK_PORT}


def start_sink(state_dir: Path, tmp: Path) -> tuple:
    out, ready = tmp / "sink.json", tmp / "sink.ready"
    proc = hp.start("exec", "db", "--", sys.executable, "-c", SINK, str(out), str(ready),
                    str(STREAMS), state_dir=state_dir)
    assert hp.wait_for(ready.exists), "the sink did not start"
    return proc, out


def test_two_workers_share_the_flows(workers: dict, state_dir: Path) -> None:
    # the topology's walk, or the one `make test-packets` sets for every packet test
    walk = hp.run_json("status", state_dir=state_dir)["dataplane"]["fast_path"]
    assert walk == os.environ.get("HYPERPLANE_FAST_PATH", "python")
    rows = group_workers(state_dir)
    assert [w["index"] for w in rows] == [0, 1]
    assert rows[0]["ports"] == [0, 32767] and rows[1]["ports"] == [32768, 65535]
    assert all(w["pid"] and w["restarts"] == 0 for w in rows)


def test_killing_one_worker_leaves_the_other_flows_alone(workers: dict, state_dir: Path,
                                                        tmp_path: Path) -> None:
    sink, out = start_sink(state_dir, tmp_path)
    client = hp.start_capture("exec", "--function", "near", "--", sys.executable, "-c",
                              CLIENT, str(SECONDS), str(CHUNK), str(STREAMS),
                              state_dir=state_dir)
    try:
        ports = json.loads(client.stdout.readline())["ports"]
        assert sorted(w for _p, w in ports) == [0, 0, 1, 1]
        time.sleep(3)
        before = eni_ports(state_dir)
        # each stream's ENI port is in the slice of the worker the program chose
        assert {p: before[p] * 2 >> 16 for p, _w in ports} == {p: w for p, w in ports}
        victim = group_workers(state_dir)[1]
        killed_at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        assert hp.wait_for(lambda: group_workers(state_dir)[1]["restarts"] == 1, 5)
        reply, err = client.communicate(timeout=SECONDS + 60)
        assert client.returncode == 0, err
        sent = json.loads(reply.strip().splitlines()[-1])["sent"]
        after = eni_ports(state_dir)
        assert sink.wait(timeout=30) == 0
    finally:
        for proc in (client, sink):
            if proc.poll() is None:
                proc.kill()
    seen = {int(k): v for k, v in json.loads(out.read_text()).items()}
    for (port, owner), digest in zip(ports, sent, strict=True):
        eni_port = before[port]
        assert after.get(port, eni_port) == eni_port  # the same ENI port throughout
        stream = seen[eni_port]
        assert stream["sha256"] == digest and stream["bytes"] == int(SECONDS * 100) * CHUNK
        if owner == 0:  # the surviving worker's streams never stalled through the kill
            marks = [t for t in stream["marks"] if killed_at - 1 <= t <= killed_at + 3]
            gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
            assert marks and max(gaps, default=0) < STALL, (port, max(gaps, default=0))
    rows = group_workers(state_dir)
    assert rows[0]["restarts"] == 0 and rows[1]["restarts"] == 1
    assert rows[1]["pid"] != victim["pid"]


MIXED = r"""
import json, socket, subprocess, sys, threading, time
seconds = float(sys.argv[1])
end = time.monotonic() + seconds
report = {"udp": 0, "udp_lost": 0, "connections": 0, "failed": 0}
def udp_flows():
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    for s in socks:
        s.settimeout(1)
        s.connect(("10.0.1.10", 5005))
    while time.monotonic() < end:
        for s in socks:
            s.send(b"x" * 64)
            try:
                s.recv(2048)
                report["udp"] += 1
            except OSError:
                report["udp_lost"] += 1
def connections():
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("10.0.1.10", 8080), timeout=2)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.recv(100)
            s.close()
            report["connections"] += 1
        except OSError:
            report["failed"] += 1
def bulk():
    s = socket.create_connection(("10.0.1.10", 9000))
    while time.monotonic() < end:
        s.sendall(b"y" * 65536)
    s.close()
threads = [threading.Thread(target=f) for f in (udp_flows, connections, connections, bulk)]
for t in threads:
    t.start()
ping = subprocess.run(["ping", "-q", "-c", str(int(seconds * 10)), "-i", "0.1",
                       "10.0.1.10"], capture_output=True, text=True)
for t in threads:
    t.join()
report["ping_ok"] = ping.returncode == 0
print(json.dumps(report))
"""
MIXED_SECONDS = 15


def test_a_mixed_run_has_no_session_misses(workers: dict, state_dir: Path,
                                           tmp_path: Path) -> None:
    echo_ready = tmp_path / "echo.ready"
    echo = hp.start("exec", "db", "--", sys.executable, "-m", "hyperplane.services.reachprobe",
                    "--udp-echo", "5005", "--ready", str(echo_ready), state_dir=state_dir)
    sink, _out = start_sink(state_dir, tmp_path)
    try:
        assert hp.wait_for(echo_ready.exists), "the UDP echo server did not start"
        before = dataplane_stats(state_dir)["global"]
        run = hp.run("exec", "--function", "near", "--", sys.executable, "-c", MIXED,
                     str(MIXED_SECONDS), state_dir=state_dir, timeout=MIXED_SECONDS + 60)
        report = json.loads(run.stdout.strip().splitlines()[-1])
        after = dataplane_stats(state_dir)["global"]
    finally:
        for proc in (echo, sink):
            proc.terminate()
            proc.wait(timeout=10)
    assert report["ping_ok"] and report["udp"] > 1000 and report["connections"] > 100
    assert report["failed"] == 0 and report["udp_lost"] == 0
    for counter in ("no_session", "icmp_error_no_session", "rx_unknown_link"):
        assert after[counter] - before[counter] == 0, counter
    # sessions made (a connection may reopen a TIME_WAIT session of its 4-tuple)
    assert after["sessions_created"] - before["sessions_created"] > 100
