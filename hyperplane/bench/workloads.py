"""Benchmark workloads: one measurement of one workload through one path.

A ``Path`` names the client namespace, the server's address and namespace,
and what to do before measuring (load or remove the kernel's NAT rules).
Each workload function runs real tools inside the namespaces (iperf3 with
``--json``, the project's ``probe`` clients) and returns numbers; nothing
here compares paths (that is ``runner``'s job).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath

from hyperplane.kernel import netlink, state

SCRATCH: list[FsPath] = []  # temporary directories of this run, removed by ``remove_scratch``
IPERF_PORT = 5201
CONNRATE_PORT = 7000
# one server process and one client process per port: a process may hold at most
# RLIMIT_NOFILE sockets (20,000 here, and the hard limit cannot be raised without
# CAP_SYS_RESOURCE), so 65,000 connections are spread over four of each
HOLD_PORTS = (7001, 7002, 7003, 7004)
DRAIN = 0.5  # seconds after a UDP flood before the next run (udp_small)


@dataclass
class Path:
    name: str
    client_ns: str
    server_ns: str
    server_ip: str
    servers: list[subprocess.Popen] = field(default_factory=list)
    fast_path: str | None = None  # the dataplane's walk while measuring this path
    alias: bool = False           # the same namespaces as another path (its servers too)


def scratch() -> FsPath:
    """A new temporary directory, removed with the others at the end of the run."""
    path = FsPath(tempfile.mkdtemp(prefix="hp-bench-"))
    SCRATCH.append(path)
    return path


def remove_scratch() -> None:
    while SCRATCH:
        shutil.rmtree(SCRATCH.pop(), ignore_errors=True)


def run_json(ns: str, argv: list[str], timeout: float) -> dict:
    """Run a command inside ``ns`` and parse its JSON output."""
    result = subprocess.run(argv, capture_output=True, timeout=timeout,
                            preexec_fn=lambda: netlink.enter_netns(ns))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} in {ns} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[-400:]}"
                           f"{result.stdout.decode(errors='replace')[-400:]}")
    return json.loads(result.stdout)


def probe(*args: str) -> list[str]:
    return [sys.executable, "-m", "hyperplane.bench.probe", *args]


def start_servers(path: Path) -> None:
    """iperf3 and the probe server in the path's server namespace."""
    ready = scratch() / "ready"
    enter = lambda: netlink.enter_netns(path.server_ns)  # noqa: E731
    path.servers.append(subprocess.Popen(
        ["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=enter))
    readies = []
    for port in (CONNRATE_PORT, *HOLD_PORTS):
        readies.append(ready.with_name(f"ready-{port}"))
        path.servers.append(subprocess.Popen(
            probe("serve", "--ports", str(port), "--ready", str(readies[-1]),
                  "--close-ports", str(CONNRATE_PORT)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=enter))
    deadline = time.monotonic() + 10
    while not all(r.exists() for r in readies) and time.monotonic() < deadline:
        time.sleep(0.01)
    _wait_port(path, IPERF_PORT)


def _wait_port(path: Path, port: int) -> None:
    """Poll until the server's port accepts connections (from inside its namespace)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with netlink.inside(path.server_ns):
            sock = socket.socket()
        try:
            sock.settimeout(0.2)
            sock.connect((path.server_ip, port))
            return
        except OSError:
            time.sleep(0.02)
        finally:
            sock.close()
    raise RuntimeError(f"iperf3 did not start in {path.server_ns}")


def stop_servers(path: Path) -> None:
    for proc in path.servers:
        proc.terminate()
    for proc in path.servers:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    path.servers.clear()


def tcp_bulk(path: Path, streams: int, seconds: float) -> float:
    """iperf3 TCP throughput received at the server, Gbit/s."""
    data = run_json(path.client_ns, ["iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT),
                                     "-t", str(seconds), "-P", str(streams), "--json"],
                    timeout=seconds + 30)
    return _iperf_end(path, data, "sum_received")["bits_per_second"] / 1e9


def _iperf_end(path: Path, data: dict, key: str) -> dict:
    """iperf3's summary ``key``, or a clear error naming the path and iperf3's own."""
    found = (data.get("end") or {}).get(key)
    if found is None:
        raise RuntimeError(f"iperf3 on path {path.name} gave no result: "
                           f"{data.get('error') or 'no ' + key + ' in its report'}")
    return found


def udp_small(path: Path, seconds: float) -> float:
    """64-byte UDP datagrams delivered per second (sent minus lost)."""
    data = run_json(path.client_ns, ["iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT),
                                     "-u", "-b", "0", "-l", "64", "-t", str(seconds), "--json"],
                    timeout=seconds + 30)
    # a path that queues (the userspace dataplane's rings) still delivers the flood's last
    # datagrams after the run: iperf3's next UDP test would take one of them for its
    # client's first datagram and answer the old port.  Let the queues drain first.
    time.sleep(DRAIN)
    total = _iperf_end(path, data, "sum")
    return (total["packets"] - total["lost_packets"]) / total["seconds"]


def ping_rtt(path: Path, count: int) -> tuple[float, float, int]:
    """ICMP echo RTT p50 and p99 in microseconds, and probes lost."""
    data = run_json(path.client_ns, probe("rtt", "--dst", path.server_ip, "--count",
                                          str(count), "--interval", "0.01"),
                    timeout=count * 1.1 + 30)
    samples = sorted(data["samples_us"])
    if not samples:
        raise RuntimeError(f"no echo reply through {path.name}")
    return percentile(samples, 50), percentile(samples, 99), data["lost"]


def connection_rate(path: Path, seconds: float) -> float:
    data = run_json(path.client_ns, probe("connrate", "--dst", path.server_ip, "--port",
                                          str(CONNRATE_PORT), "--seconds", str(seconds)),
                    timeout=seconds + 30)
    return data["per_second"]


def hold_connections(path: Path, count: int, measure: Callable[[], dict]) -> dict:
    """Open ``count`` connections through the path; ``measure`` runs while they are held."""
    tmp = scratch()
    before = measure()
    shares = [count // len(HOLD_PORTS) + (i < count % len(HOLD_PORTS))
              for i in range(len(HOLD_PORTS))]
    procs = []
    try:
        for port, share in zip(HOLD_PORTS, shares, strict=True):
            procs.append(subprocess.Popen(
                probe("hold", "--dst", path.server_ip, "--ports", str(port), "--count",
                      str(share), "--ready", str(tmp / f"held-{port}"), "--seconds", "600"),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                preexec_fn=lambda: netlink.enter_netns(path.client_ns)))
        readies = [tmp / f"held-{port}" for port in HOLD_PORTS]
        deadline = time.monotonic() + 600
        while not all(r.exists() for r in readies) and time.monotonic() < deadline and \
                all(p.poll() is None for p in procs):
            time.sleep(0.1)
        if not all(r.exists() for r in readies):
            raise RuntimeError(f"holding {count} connections through {path.name} failed")
        held = [json.loads(r.read_text()) for r in readies]
        opened = {"open": sum(h["open"] for h in held), "failed": sum(h["failed"] for h in held),
                  "seconds": max(h["seconds"] for h in held)}
        after = measure()
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"opened": opened, "before": before, "after": after}


def percentile(samples: list[float], pct: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def private_bytes(pid: int) -> int:
    """The process's own memory: its resident anonymous pages (``RssAnon``).  Its RSS also
    holds the pages of the shared session table it touched (``RssShmem``); those are
    counted once, by ``shm_bytes``."""
    return rss_bytes(pid, "RssAnon")


def shm_bytes() -> int:
    """The shared memory our session tables use (pages touched, not their size)."""
    return sum(f.stat().st_blocks * 512 for f in state.shm_files())


def uss_bytes(pid: int) -> int:
    """A process's unique memory (Private_Clean + Private_Dirty of smaps_rollup): what it
    alone holds, not the pages it shares copy-on-write with the zygote."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


BIG_RESPONSE = """#!/bin/sh
# A custom runtime in shell with curl answering 2 MB (curl sends it after Expect: 100-continue)
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
WORK="$(mktemp -d)"
{ printf '"'; head -c 2097152 /dev/zero | tr '\\0' 'a'; printf '"'; } > "$WORK/big"
while true; do
  curl -sS -D "$WORK/headers" -o /dev/null "$API/invocation/next"
  ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$WORK/headers" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -o /dev/null --data-binary @"$WORK/big" "$API/invocation/$ID/response"
done
"""


def big_response_ms(samples: int) -> list[float]:
    """Warm invocations of a function whose curl runtime answers 2 MB, through the
    controller: each round trip in milliseconds (the cold start not counted).  The function
    uses the benchmark topology's subnet and group, so no ENI is added."""
    from hyperplane.emulator import requests  # the bench's own layer: imported when used
    code = scratch() / "big-response"
    code.mkdir()
    (code / "bootstrap").write_text(BIG_RESPONSE)
    (code / "bootstrap").chmod(0o755)
    requests.controller_request({"op": "function.create", "name": "big-response",
                                 "handler": "big", "code": str(code),
                                 "runtime": "provided.al2023", "subnet_ids": ["subnet-1"],
                                 "security_group_ids": ["sg-fn"]})  # the ENIs there are
    deadline = time.monotonic() + 30
    while requests.controller_request({"op": "function.get", "name": "big-response"}
                                      )["State"] != "Active":
        if time.monotonic() > deadline:
            raise RuntimeError("big-response did not become Active")
        time.sleep(0.05)
    times = []
    for n in range(samples + 1):
        started = time.monotonic()
        reply = requests.invoke("big-response", {})
        if len(reply.get("result") or "") != 2097152:
            raise RuntimeError(f"the 2 MB response came back wrong: {str(reply)[:200]}")
        if n:
            times.append((time.monotonic() - started) * 1000)
    return times


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def read_sysctl(ns: str, key: str) -> str:
    with netlink.inside(ns), open("/proc/sys/" + key.replace(".", "/")) as fh:
        return fh.read().strip()


def machine() -> dict:
    """What the figures were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": os.uname().release,
            "python": sys.version.split()[0], "memory_gb": round(_mem_total() / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _mem_total() -> int:
    with open("/proc/meminfo") as fh:
        return int(fh.readline().split()[1]) * 1024
