"""The services process and the batched prober, on loopback in the test's own namespace
(no root): one process serves several listeners; the prober reports each target's fate,
and a descriptor limit as the machine's, not the network's."""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperplane.services import httpwire, reachprobe
from hyperplane.services.hub import Hub, listener_key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Hub, Path]]:
    config = tmp_path / "services.json"
    hub = Hub(config)
    yield hub, config
    for listener in list(hub.listeners.values()):
        listener.close()
    hub.selector.close()
    hub.opener.close()


def _write(config: Path, listeners: list[dict]) -> None:
    config.write_text(json.dumps({"listeners": listeners}))


def _serve(hub: Hub, until: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not until.is_set():
            for key, mask in hub.selector.select(0.05):
                key.data(mask)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_one_process_serves_many_listeners_and_follows_its_configuration(hub) -> None:
    hub, config = hub
    ports = [_free_port() for _ in range(3)]
    specs = [{"kind": "http", "ns": None, "address": "127.0.0.1", "port": p, "name": f"h{k}"}
             for k, p in enumerate(ports)]
    _write(config, specs)
    assert hub.sync() == {"ok": True, "opened": 3, "closed": 0, "listeners": 3, "failed": {}}
    done = threading.Event()
    thread = _serve(hub, done)
    try:
        jobs = [reachprobe.Job(None, "http", "127.0.0.1", p) for p in ports]
        results = reachprobe.probe_many(jobs, 2.0)
        assert [(r["result"], r["detail"]) for r in results] == \
            [("connected", "h0"), ("connected", "h1"), ("connected", "h2")]
        done.set()
        thread.join()
        _write(config, specs[:1])  # two hosts gone: their sockets close
        reply = hub.sync()
        assert (reply["closed"], reply["listeners"]) == (2, 1)
        assert set(hub.listeners) == {listener_key(specs[0])}
        done.clear()
        thread = _serve(hub, done)
        results = reachprobe.probe_many(jobs, 2.0)
        assert [r["result"] for r in results] == ["connected", "refused", "refused"]
        assert hub.counters["requests"] >= 4
    finally:
        done.set()
        thread.join()


def test_a_listener_that_cannot_open_is_named(hub) -> None:
    hub, config = hub
    _write(config, [{"kind": "http", "ns": "hp-no-such-namespace", "address": "0.0.0.0",
                     "port": 80, "name": "x"}])
    reply = hub.sync()
    assert reply["listeners"] == 0 and "No such file" in next(iter(reply["failed"].values()))
    assert hub.counters["listeners_failed"] == 1


def test_a_probe_without_a_descriptor_reports_the_machine() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opener = reachprobe.Opener()
    jobs = [reachprobe.Job(None, "tcp", "127.0.0.1", _free_port()) for _ in range(3)]
    held = []
    try:  # every descriptor taken but the selector's: no probe socket can be opened
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        while True:
            try:
                held.append(socket.socket())
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        held.pop().close()  # room for the engine's selector only
        results = reachprobe.probe_many(jobs, 1.0, opener)
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        opener.close()
    assert {r["result"] for r in results} == {"machine"}
    assert "EMFILE" in results[0]["detail"]


def test_classify_tells_the_machine_from_the_network() -> None:
    assert reachprobe.classify(OSError(errno.ENOBUFS, "x"))[0] == "machine"
    assert reachprobe.classify(OSError(errno.ECONNREFUSED, "x"))[0] == "refused"
    assert reachprobe.classify(OSError(errno.EHOSTUNREACH, "x"))[0] == "unreachable"
    assert reachprobe.classify(OSError(errno.EINVAL, "x"))[0] == "error"


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
    return received


def test_keep_alive_bodies_and_big_transfers(hub) -> None:
    hub, config = hub
    port = _free_port()
    _write(config, [{"kind": "http", "ns": None, "address": "127.0.0.1", "port": port,
                     "name": "web"}])
    hub.sync()
    done = threading.Event()
    thread = _serve(hub, done)
    try:
        two = _exchange(port, b"GET /health HTTP/1.1\r\n\r\n"
                              b"GET /whoami HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert two.count(b"HTTP/1.1 200 OK") == 2 and b'"host": "web"' in two
        posted = _exchange(port, b"POST /sha256 HTTP/1.1\r\nContent-Length: 5\r\n"
                                 b"Connection: close\r\n\r\nhello")
        assert json.loads(posted.partition(b"\r\n\r\n")[2]) == {
            "sha256": hashlib.sha256(b"hello").hexdigest(), "length": 5}
        n = 3_000_000
        big = _exchange(port, f"GET /bytes?n={n} HTTP/1.0\r\n\r\n".encode())
        assert big.partition(b"\r\n\r\n")[2] == httpwire.pattern_bytes(n)
    finally:
        done.set()
        thread.join()
