"""One services process for every host (issue 18), with real namespaces and packets.

A generated account (2 VPCs x 2 subnets x 3 hosts with HTTP, 2 functions) is up: every
host's HTTP service and both VPC resolvers are listeners of one process, and no process
runs in any host's namespace; a listener added while everything runs (a host's namespace
the test makes) serves at once; the process killed with SIGKILL is started again by the
supervisor and serves everything again; ``reach`` names a descriptor limit of the probing
process instead of calling a pair unreachable.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hyperplane import jsonline
from hyperplane.kernel import netlink, procs
from hyperplane.model.generate import generate
from hyperplane.services import reachprobe
from tests.integration import hp
from tests.integration.conftest import bring_up

HOSTS = 12
NEW_NS = "hp-tsvcnew"  # a host's namespace made by this test, removed by it


@pytest.fixture(scope="module")
def account(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    document = generate(vpcs=2, subnets=2, hosts=3, functions=2,
                        code=str(hp.REPO / "examples" / "functions"))
    path = tmp_path_factory.mktemp("topology") / "account.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    yield from bring_up(state_dir, str(path))


def _hub_pids(state_dir: Path) -> list[int]:
    config = str(state_dir / "services.json")
    return [p for p in hp.our_processes()
            if "hyperplane.services.hub" in procs.cmdline(p) and config in procs.cmdline(p)]


def _host_namespaces(state_dir: Path) -> list[str]:
    return [n for n in hp.recorded(state_dir)["namespaces"] if n.startswith("hp-h")]


def _reach(state_dir: Path) -> list[dict]:
    return hp.run_json("reach", state_dir=state_dir)["results"]


def _all_served(state_dir: Path) -> None:
    rows = _reach(state_dir)
    allowed = [r for r in rows if r["verdict"] == "allowed"]
    # each host reaches the 5 others of its VPC, each function the 6 hosts of its VPC
    assert len(allowed) == HOSTS * 5 + 2 * 6, [r for r in rows if "although" in r["reason"]]
    assert not [r for r in rows if "although" in r["reason"] or r["verdict"] == "machine"]


def test_every_host_is_served_by_one_process(account: dict, state_dir: Path) -> None:
    namespaces = _host_namespaces(state_dir)
    assert len(namespaces) == HOSTS
    assert procs.pids_in_namespaces(namespaces) == []  # no process per host
    assert len(_hub_pids(state_dir)) == 1
    _all_served(state_dir)
    for vpc in (1, 2):  # each VPC's resolver answers from the same process
        out = hp.run("exec", f"h{vpc}-0-0", "--", "getent", "ahostsv4",
                     f"h{vpc}-1-2.vpc-{vpc}.internal", state_dir=state_dir).stdout
        assert out.split()[0] == f"10.{vpc}.1.12"


def _whoami_inside(ns: str, port: int) -> dict:
    script = ("import json, socket, sys; s = socket.create_connection(('127.0.0.1', "
              f"{port}), timeout=5); s.sendall(b'GET /whoami HTTP/1.0\\r\\n\\r\\n'); d = b''\n"
              "while c := s.recv(4096): d += c\n"
              "print(d.partition(b'\\r\\n\\r\\n')[2].decode())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, preexec_fn=lambda: netlink.enter_netns(ns),
                            timeout=30).stdout
    return json.loads(out)


def test_a_host_added_at_run_time_serves_at_once(account: dict, state_dir: Path) -> None:
    config = state_dir / "services.json"
    before = json.loads(config.read_text())
    try:
        netlink.ensure_netns(NEW_NS)
        added = dict(before, listeners=before["listeners"] + [
            {"kind": "http", "ns": NEW_NS, "address": "0.0.0.0", "port": 8080,
             "name": "late"}])
        config.write_text(json.dumps(added))
        reply = jsonline.request(str(state_dir / "services.sock"), {"op": "sync"})
        assert (reply["opened"], reply["failed"]) == (1, {})
        assert _whoami_inside(NEW_NS, 8080)["host"] == "late"  # no wait, no restart
        assert len(_hub_pids(state_dir)) == 1
    finally:
        config.write_text(json.dumps(before))
        jsonline.request(str(state_dir / "services.sock"), {"op": "sync"})
        netlink.remove_netns(NEW_NS)
    assert not netlink.netns_exists(NEW_NS)


def test_services_survive_a_kill_of_their_process(account: dict, state_dir: Path) -> None:
    [old] = _hub_pids(state_dir)
    os.kill(old, signal.SIGKILL)
    assert hp.wait_for(lambda: len(_hub_pids(state_dir)) == 1 and
                       _hub_pids(state_dir) != [old], timeout=20)
    status = hp.run_json("status", state_dir=state_dir)
    restarted = status["supervision"]["processes"]["services"]
    assert restarted["alive"] and restarted["restarts"] >= 1
    assert hp.wait_for(lambda: _pinged(state_dir), timeout=20)
    _all_served(state_dir)  # every host's HTTP service answers again


def _pinged(state_dir: Path) -> bool:
    try:
        return bool(jsonline.request(str(state_dir / "services.sock"), {"op": "ping"})["ok"])
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_reach_names_a_descriptor_limit(account: dict, state_dir: Path) -> None:
    """The probing process (this test's, with its RLIMIT_NOFILE lowered) cannot open a
    socket: the probes say so, and the verdict is ``machine``, not ``unreachable``."""
    source = _host_namespaces(state_dir)[0]
    jobs = [reachprobe.Job(source, "http", f"10.1.0.{10 + k}", 8080) for k in range(3)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[socket.socket] = []
    opener = reachprobe.Opener()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        while True:
            try:
                held.append(socket.socket())
            except OSError:
                break
        held.pop().close()  # one left: the prober's selector, none for a probe
        results = reachprobe.probe_many(jobs, 1.5, opener)
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        opener.close()
    assert [r["result"] for r in results] == ["machine"] * 3
    assert "EMFILE" in results[0]["detail"]
    # with its descriptors back, the same probes connect
    assert [r["result"] for r in reachprobe.probe_many(jobs, 1.5)] == ["connected"] * 3
