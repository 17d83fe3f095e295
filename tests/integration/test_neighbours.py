"""Address resolution as the VPC does it, at scale, and ``up``'s look at the machine's limits.

* ``up`` refuses a topology past a machine limit, naming it and the number needed, and
  builds nothing: the limit is this test's own (the open files limit of the ``up`` child
  process lowered with ``setrlimit`` before exec; the machine's settings are untouched);
  ``--tune-host`` raises that limit (for that process only) and the same ``up`` works.
* 1,200 hosts (3 VPCs x 20 subnets x 20 hosts, ``model.generate``), past the kernel's old
  neighbour limit (``gc_thresh3`` 1024 here): every host pings every same-subnet peer
  (22,800 pairs, real ICMP echoes from raw sockets opened in the hosts' namespaces), every
  neighbour entry of a sample of hosts and of the routers is permanent (nothing was
  resolved by ARP), and the kernel log says no ``neighbor table overflow`` meanwhile
  (read from /dev/kmsg, from the moment before ``up``).
* an ENI made at run time (a function created in one subnet) is in every neighbour table
  of its subnet before the function is Active: the first invocation reaches a host of the
  subnet, which answers the ENI without ARP; its entries go when the ENI is deleted.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hyperplane.kernel import netlink
from hyperplane.model import names
from hyperplane.model.generate import generate
from tests.integration import hp
from tests.integration.test_control_plane import functions, get, until, wait_state

VPCS, SUBNETS, HOSTS = 3, 20, 20  # 1,200 host addresses
UP_TIMEOUT = 600.0
SERVED = "h1-0-0"  # the one host with a service (HTTP 8080), in subnet-1-0
NUD_PERMANENT = 0x80
LOW_NOFILE = 100  # below what ``up`` needs (fabric.limits: the build's netlink sockets)


def document() -> dict:
    doc = generate(VPCS, SUBNETS, HOSTS, 0)
    for vpc in doc["vpcs"]:
        for host in vpc["hosts"]:
            if host["name"] != SERVED:
                del host["service"]
    doc["settings"] = {"timing": {"eni_create": "1s", "eni_delete": "2s"}}
    return doc


class Kmsg:
    """The kernel log from now on (/dev/kmsg, read without blocking)."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read(self) -> list[str]:
        lines: list[str] = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return lines
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten meanwhile: go on
                    continue
                raise
            lines.append(record.decode(errors="replace").split(";", 1)[-1].strip())

    def close(self) -> None:
        os.close(self.fd)


def up_child(path: str, state_dir: Path, *extra: str, nofile: int | None = None,
             timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
    """``hyperplane up`` in a child whose open files limit is ``nofile`` (soft; hard kept)."""
    def lower() -> None:
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
    return subprocess.run(hp.CLI + ["up", path, "--json", *extra], cwd=hp.REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=lower)


def down(state_dir: Path) -> None:
    hp.run("down", state_dir=state_dir, check=False, timeout=300)
    hp.run("cleanup", state_dir=state_dir, check=False, timeout=300)


def test_up_refuses_past_a_machine_limit_and_tune_host_raises_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    try:
        refused = up_child("examples/quickstart.yaml", state_dir, nofile=LOW_NOFILE)
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert "RLIMIT_NOFILE is 100" in refused.stderr, refused.stderr
        assert "needs 160" in refused.stderr and "--tune-host" in refused.stderr
        assert hp.our_namespaces() == [] and hp.recorded(state_dir) == {}
        tuned = up_child("examples/quickstart.yaml", state_dir, "--tune-host",
                         nofile=LOW_NOFILE)
        assert tuned.returncode == 0, (tuned.stdout, tuned.stderr)
        assert "changed RLIMIT_NOFILE from 100 to 160" in tuned.stderr, tuned.stderr
        assert json.loads(tuned.stdout)["host_tuned"]
        assert "hp-h-db" in hp.our_namespaces()
    finally:
        down(state_dir)
    assert hp.our_namespaces() == []


# -- 1,200 hosts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict, Kmsg]]:
    base = tmp_path_factory.mktemp("big")
    path = base / "big.yaml"
    path.write_text(yaml.safe_dump(document()))
    state_dir = base / "state"
    state_dir.mkdir()
    kmsg = Kmsg()
    try:
        result = up_child(str(path), state_dir)
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
        yield state_dir, json.loads(result.stdout), kmsg
    finally:
        down(state_dir)
        kmsg.close()


def subnets(status: dict) -> dict[str, list[dict]]:
    by_subnet: dict[str, list[dict]] = {}
    for host in status["hosts"]:
        by_subnet.setdefault(host["subnet"], []).append(host)
    return by_subnet


def host_ns(state_dir: Path, name: str) -> str:
    all_hosts = [h["name"] for v in hp.recorded(state_dir)["document"]["vpcs"]
                 for h in v.get("hosts", [])]
    return names.host_ns(all_hosts.index(name), name)


def icmp_socket(ns: str) -> socket.socket:
    with netlink.inside(ns):
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header), ident, seq)


def ping_subnet(sockets: dict[str, socket.socket], ips: list[str],
                rounds: int = 3) -> set[tuple[str, str]]:
    """Echo from every host to every other (by address); the pairs never answered."""
    missing = {(a, b) for a in ips for b in ips if a != b}
    ident = {ip: (os.getpid() + i) & 0xFFFF for i, ip in enumerate(ips)}
    by_fd = {s.fileno(): ip for ip, s in sockets.items()}
    for _ in range(rounds):
        for src, dst in sorted(missing):
            sockets[src].sendto(echo(ident[src], ips.index(dst)), (dst, 0))
        deadline = 2.0
        while missing and deadline > 0:
            ready, _, _ = select.select(list(sockets.values()), [], [], 0.2)
            if not ready:
                deadline -= 0.2
                continue
            for sock in ready:
                data, (peer, _) = sock.recvfrom(2048)
                src = by_fd[sock.fileno()]
                header = (data[0] & 0x0F) * 4
                kind, _, _, got_id, _ = struct.unpack("!BBHHH", data[header:header + 8])
                if kind == 0 and got_id == ident[src]:
                    missing.discard((src, peer))
        if not missing:
            break
    return missing


def entries(ns: str) -> list[dict]:
    return [n for n in netlink.neighbours(ns) if n["ip"]]


def test_every_host_reaches_every_same_subnet_peer_without_arp(big) -> None:
    state_dir, status, kmsg = big
    by_subnet = subnets(status)
    assert sum(len(h) for h in by_subnet.values()) == VPCS * SUBNETS * HOSTS
    unanswered: set = set()
    pairs = 0
    for hosts in by_subnet.values():
        sockets = {h["ip"]: icmp_socket(host_ns(state_dir, h["name"])) for h in hosts}
        try:
            ips = sorted(sockets)
            pairs += len(ips) * (len(ips) - 1)
            unanswered |= ping_subnet(sockets, ips)
        finally:
            for sock in sockets.values():
                sock.close()
    assert pairs == VPCS * SUBNETS * HOSTS * (HOSTS - 1)
    assert not unanswered, sorted(unanswered)[:20]
    # nothing was resolved by ARP: every entry of these hosts and of every router is permanent
    sample = [hosts[i]["name"] for hosts in list(by_subnet.values())[::7] for i in (0, -1)]
    for ns in [host_ns(state_dir, n) for n in sample] + [names.router_ns(v) for v in
                                                        range(VPCS)]:
        found = entries(ns)
        assert found, ns
        assert all(n["state"] == NUD_PERMANENT for n in found), (ns, found)
    host = entries(host_ns(state_dir, sample[0]))
    assert len(host) == HOSTS  # its gateway and its 19 peers
    overflow = [line for line in kmsg.read() if "neighbor table overflow" in line]
    assert not overflow, overflow


def eni_entries(state_dir: Path, status: dict, eni_ip: str) -> dict[str, dict | None]:
    """The neighbour entry for ``eni_ip`` in each host of subnet-1-0 and in its router."""
    spaces = [host_ns(state_dir, h["name"]) for h in subnets(status)["subnet-1-0"]]
    spaces.append(names.router_ns(0))
    return {ns: next((n for n in entries(ns) if n["ip"] == eni_ip), None) for ns in spaces}


def test_an_eni_made_at_run_time_is_resolved_at_once_and_forgotten_when_deleted(big) -> None:
    state_dir, status, kmsg = big
    served = next(h for h in status["hosts"] if h["name"] == SERVED)
    with functions(state_dir, "probe"):
        hp.run_json("function", "create", "probe", "--code", "examples/functions",
                    "--handler", "whoami.handler", "--subnet-ids", "subnet-1-0",
                    "--security-group-ids", "sg-fn-1", state_dir=state_dir)
        wait_state(state_dir, "probe", "Active")
        [eni] = [e for e in hp.run_json("eni", "list", state_dir=state_dir)
                 if "probe" in e.get("functions", [])]
        for ns, entry in eni_entries(state_dir, status, eni["ip"]).items():
            assert entry is not None, ns
            assert (entry["mac"], entry["state"]) == (eni["mac"], NUD_PERMANENT), (ns, entry)
        url = f"http://{served['ip']}:8080/whoami"
        reply = hp.run_json("invoke", "probe", "--payload", json.dumps({"url": url}),
                            state_dir=state_dir)
        assert reply["result"]["saw"]["client"] == eni["ip"], reply
        assert get(state_dir, "probe")["State"] == "Active"
    # deleted with its function (after settings.timing.eni_delete): its entries go with it
    until(lambda: hp.run_json("eni", "list", state_dir=state_dir),
          lambda rows: all(r["id"] != eni["id"] for r in rows))
    assert all(entry is None for entry in eni_entries(state_dir, status, eni["ip"]).values())
    assert not [line for line in kmsg.read() if "neighbor table overflow" in line]
