"""Runs the benchmark: three paths, interleaved rounds, ratios (side effects).

Paths, all in namespaces of ours:
    hyperplane   an execution environment -> userspace Hyperplane -> ENI -> VPC router -> server
    kernel-nat   client -> kernel forwarding + nftables masquerade (conntrack) -> router -> server
    routing      the same namespaces without NAT rules: plain kernel routing, the machine's limit
    hyperplane-python   when the dataplane runs its compiled fast path: the same path with
                 the dataplane switched to its pure-Python walk (``fast_path`` op) for
                 each of its measurements, so both walks are measured in the same run

Within each round the order of the paths rotates, so slow drifts of a noisy
machine spread over all of them.  Every figure is the median over rounds
with its spread (min and max), and the headline is the ratio of the
Hyperplane path to the kernel NAT path measured in the same run.
"""

from __future__ import annotations

import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path as FsPath

import yaml

from hyperplane.bench import api, reference, workloads
from hyperplane.bench.workloads import Path
from hyperplane.emulator import requests, running
from hyperplane.emulator.run import down, up
from hyperplane.errors import UsageError
from hyperplane.fabric.desired import host_netns
from hyperplane.kernel import netlink, procs, state
from hyperplane.model import names, timing

HERE = FsPath(__file__).resolve().parent
PYTHON_PATH = "hyperplane-python"
LEGACY_SAMPLES = 10  # legacy cold starts wait for their ENI: a second each with `fast`


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``quick`` for development, full for the reference run."""

    rounds: int
    seconds: float
    ping_count: int
    concurrent: int
    environments: int
    invoke_seconds: float
    cold_starts: int
    dataplane: dict = field(default_factory=dict)  # settings.dataplane overrides (--workers)

    @classmethod
    def quick(cls) -> Plan:
        return cls(rounds=2, seconds=2, ping_count=150, concurrent=5000, environments=100,
                   invoke_seconds=2, cold_starts=5)

    @classmethod
    def full(cls) -> Plan:
        return cls(rounds=5, seconds=5, ping_count=400, concurrent=65000, environments=1000,
                   invoke_seconds=5, cold_starts=20)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": values}


def check_ready() -> None:
    if running.current() is not None or netlink.list_netns(names.NS_PREFIX):
        raise UsageError("the benchmark needs the machine to itself: run "
                                "`hyperplane down` (or `hyperplane cleanup`) first")
    for tool in ("iperf3", "nft"):
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is missing: run `make install`")


def topology_file(dataplane: dict | None = None) -> str:
    """The benchmark topology with its code directory made absolute, and ``dataplane``
    settings (``bench --workers``, ``--fast-path``) over its own."""
    document = yaml.safe_load((HERE / "topology.yaml").read_text())
    document["settings"]["dataplane"].update(dataplane or {})
    for function in document["functions"]:
        function["code"] = str(HERE)
    out = workloads.scratch() / "bench-topology.yaml"
    out.write_text(yaml.safe_dump(document))
    return str(out)


class Bench:
    def __init__(self, plan: Plan, log=print) -> None:
        self.plan = plan
        self.log = log
        self.results: dict = {"workloads": {}, "extra": {}}
        self.paths: list[Path] = []
        self.locks: list = []
        self.mode: str | None = None  # the dataplane's walk now (``fast_path``)

    # -- set-up and tear-down ----------------------------------------------------------
    def setup(self) -> None:
        started = time.monotonic()
        up(topology_file(self.plan.dataplane))
        topology = running.require().topology
        env, lock, _cold = requests.acquire_env("bench")
        self.locks.append(lock)
        server_ns = host_netns(topology, "srv")
        self.mode = requests.dataplane_request({"op": "stats"})["stats"]["fast_path"]["mode"]
        hyperplane = Path("hyperplane", env.netns, server_ns, "10.0.1.10",
                          fast_path=self.mode)
        reference.build_reference()
        k_client, _k_nat, _k_router, k_server = reference.chain(reference.NAT_CHAIN)
        p_client, _p_nat, _p_router, p_server = reference.chain(reference.ROUTING_CHAIN)
        kernel = Path("kernel-nat", k_client, k_server, reference.SERVER_IP)
        routing = Path("routing", p_client, p_server, reference.SERVER_IP)
        self.paths = [hyperplane, kernel, routing]
        if self.mode == "compiled":  # and the pure-Python walk of the same dataplane
            self.paths.append(Path(PYTHON_PATH, env.netns, server_ns, "10.0.1.10",
                                   fast_path="python", alias=True))
        self.results["extra"]["fast_path"] = {p.name: p.fast_path for p in self.paths
                                              if p.fast_path}
        self.results["extra"]["workers"] = len(requests.dataplane_request(
            {"op": "stats"})["stats"].get("workers") or [None])
        for path in self.paths:
            if not path.alias:
                workloads.start_servers(path)
        self.log(f"set-up done in {time.monotonic() - started:.1f} s")

    def teardown(self) -> None:
        for path in self.paths:
            workloads.stop_servers(path)
        for lock in self.locks:
            requests.release(lock)
        self.locks.clear()
        reference.remove_reference()
        down()
        workloads.remove_scratch()

    # -- measurements ----------------------------------------------------------------------
    def walk(self, mode: str | None) -> None:
        """The dataplane's walk switched to ``mode`` (the ``fast_path`` control op)."""
        if mode is not None and mode != self.mode:
            requests.dataplane_request({"op": "fast_path", "mode": mode})
            self.mode = mode

    def interleaved(self, key: str, unit: str, measure, higher_is_better: bool = True) -> None:
        samples: dict[str, list[float]] = {p.name: [] for p in self.paths}
        for round_index in range(self.plan.rounds):
            shift = round_index % len(self.paths)
            for path in self.paths[shift:] + self.paths[:shift]:
                self.walk(path.fast_path)
                samples[path.name].append(measure(path))
        self.walk(self.paths[0].fast_path)  # the other workloads: the dataplane's own walk
        self.results["workloads"][key] = {
            "unit": unit, "higher_is_better": higher_is_better,
            "paths": {name: summary(values) for name, values in samples.items()}}
        medians = {n: round(v["median"], 3) for n, v in
                   self.results["workloads"][key]["paths"].items()}
        self.log(f"{key:<22} {medians}")

    def tcp_1_stream(self) -> None:
        seconds = self.plan.seconds
        self.interleaved("tcp_1_stream", "Gbit/s", lambda p: workloads.tcp_bulk(p, 1, seconds))

    def tcp_4_streams(self) -> None:
        seconds = self.plan.seconds
        self.interleaved("tcp_4_streams", "Gbit/s",
                         lambda p: workloads.tcp_bulk(p, 4, seconds))

    def udp_64b(self) -> None:
        seconds = self.plan.seconds
        self.interleaved("udp_64b", "packets/s", lambda p: workloads.udp_small(p, seconds))

    def ping(self) -> None:
        rtts: dict[str, list] = {}

        def ping(path: Path) -> float:
            p50, p99, lost = workloads.ping_rtt(path, self.plan.ping_count)
            rtts.setdefault(path.name, []).append((p50, p99, lost))
            return p50
        self.interleaved("ping_p50", "us", ping, higher_is_better=False)
        w = self.results["workloads"]
        w["ping_p99"] = {"unit": "us", "higher_is_better": False, "paths": {
            name: summary([r[1] for r in values]) for name, values in rtts.items()}}
        self.results["extra"]["ping_lost"] = {n: sum(r[2] for r in v) for n, v in rtts.items()}

    def connections(self) -> None:
        """Last of the traffic workloads: its closed sessions linger for the TCP timeouts."""
        self.interleaved("connections_per_s", "conn/s",
                         lambda p: workloads.connection_rate(p, self.plan.seconds))

    def concurrent(self) -> None:
        count = self.plan.concurrent
        hyperplane, kernel = self.paths[0], self.paths[1]
        dp_pid = running.pid_of(running.require().data, "dataplane")

        def ours() -> dict:  # honest: the process's own memory and the shared table's
            stats = requests.dataplane_request({"op": "stats"})["stats"]["global"]
            return {"rss": workloads.private_bytes(dp_pid), "shm": workloads.shm_bytes(),
                    "sessions": stats["sessions_active"]}

        def kernels() -> dict:
            return {"entries": int(workloads.read_sysctl(
                reference.chain(reference.NAT_CHAIN)[1], "net.netfilter.nf_conntrack_count")),
                "available": workloads.mem_available()}

        held = workloads.hold_connections(hyperplane, count, ours)
        sessions = held["after"]["sessions"] - held["before"]["sessions"]
        grown = {k: held["after"][k] - held["before"][k] for k in ("rss", "shm")}
        per_session = (grown["rss"] + grown["shm"]) / max(sessions, 1)
        kheld = workloads.hold_connections(kernel, count, kernels)
        entries = kheld["after"]["entries"] - kheld["before"]["entries"]
        kernel_measured = (kheld["before"]["available"] - kheld["after"]["available"]) / \
            max(entries, 1)
        self.results["workloads"]["bytes_per_session"] = {
            "unit": "bytes", "higher_is_better": False, "paths": {
                "hyperplane": summary([per_session]),
                "kernel-nat": summary([float(reference.conntrack_object_size() or 0)])}}
        self.results["extra"]["concurrent"] = {
            "asked": count, "hyperplane_open": held["opened"]["open"],
            "hyperplane_sessions": sessions, "kernel_open": kheld["opened"]["open"],
            "kernel_entries": entries, "kernel_slab_object_bytes":
                reference.conntrack_object_size(),
            "kernel_memavailable_delta_per_entry": kernel_measured,
            "hyperplane_rss_before": held["before"]["rss"],
            "hyperplane_rss_after": held["after"]["rss"],
            "hyperplane_rss_growth": grown["rss"], "hyperplane_shm_growth": grown["shm"]}
        self.log(f"concurrent             {sessions} sessions, {per_session:.0f} B/session "
                 f"(private +{grown['rss']:,} B, shared table +{grown['shm']:,} B); "
                 f"kernel {entries} entries")

    def environments(self) -> None:
        """A burst of environments of one function: start rate, unique memory (USS, from
        smaps_rollup) of each agent, invocations per second across them, ENIs before and
        after; then the round trip of a 2 MB response from a curl custom runtime."""
        count = self.plan.environments
        enis_before = len(running.require().enis)
        before = workloads.mem_available()
        started = time.monotonic()
        envs = requests.start_envs("fleet", count)
        elapsed = time.monotonic() - started
        per_env = (before - workloads.mem_available()) / count
        procs = running.require().data["procs"]
        pids = [procs[e.id] for e in envs if e.id in procs]
        uss = [workloads.uss_bytes(pid) for pid in pids]
        per_second = self.invocation_rate(envs)
        uss_after = [workloads.uss_bytes(pid) for pid in pids]
        enis = len(running.require().enis)
        big = workloads.big_response_ms(5 if self.plan.rounds > 2 else 3)
        self.results["extra"]["environments"] = {
            "count": count, "seconds": elapsed, "per_second": count / elapsed,
            "uss_per_env_bytes": summary(uss), "uss_after_invocations_bytes":
                summary(uss_after), "memory_per_env_bytes": per_env,
            "invocations_per_second": per_second, "enis": enis, "enis_before": enis_before,
            "response_2mb_ms": summary(big)}
        self.log(f"environments           {count} in {elapsed:.1f} s ({count / elapsed:.0f}/s), "
                 f"USS {statistics.median(uss) / 2**20:.2f} MiB each (after invocations "
                 f"{statistics.median(uss_after) / 2**20:.2f}; MemAvailable "
                 f"{per_env / 2**20:.1f} MiB), {per_second:.0f} invocations/s, "
                 f"{enis_before} -> {enis} ENIs; 2 MB response round trip "
                 f"{statistics.median(big):.0f} ms")

    def invocation_rate(self, envs: list) -> float:
        deadline = time.monotonic() + self.plan.invoke_seconds
        workers = 8

        def work(share: list) -> int:
            done = 0
            while time.monotonic() < deadline:
                for env in share:
                    if "result" in requests.invoke_env(env, {"n": done}):
                        done += 1
            return done
        shares = [envs[i::workers] for i in range(workers)]
        started = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            total = sum(pool.map(work, shares))
        return total / (time.monotonic() - started)

    def cold_starts(self) -> None:
        function = "cold"
        samples = []
        for _ in range(self.plan.cold_starts):
            started = time.monotonic()
            env, lock, cold = requests.acquire_env(function)
            self.locks.append(lock)  # held, so the next one is cold too
            reply = requests.invoke_env(env, {})
            if not cold or "result" not in reply:
                raise RuntimeError(f"cold start sample failed: {reply}")
            samples.append((time.monotonic() - started) * 1000)
        legacy = self.legacy_cold_starts(min(self.plan.cold_starts, LEGACY_SAMPLES))
        self.results["extra"]["cold_start_ms"] = {
            "hyperplane": {"median": statistics.median(samples),
                           "p99": workloads.percentile(samples, 99), "samples": samples},
            "legacy": legacy}
        self.log(f"cold start             median {statistics.median(samples):.1f} ms "
                 f"(legacy mode {legacy['median']:.1f} ms)")

    def api_invokes(self) -> None:
        """A warm Invoke through the AWS endpoint, the controller and the CLI."""
        count = 200 if self.plan.rounds > 2 else 50
        figures = api.measure(count, 20 if self.plan.rounds > 2 else 5)
        self.results["extra"]["api_invoke_ms"] = figures
        self.log("warm invoke            " + ", ".join(
            f"{k} p50 {v['p50']:.1f} ms p99 {v['p99']:.1f} ms" for k, v in figures.items()))

    def legacy_cold_starts(self, count: int) -> dict:
        """The same function in legacy mode: an ENI created and attached per cold start."""
        requests.controller_request({
            "op": "function.create", "name": "cold-legacy", "handler": "handlers.echo",
            "code": str(HERE), "networking": "legacy", "subnet_ids": ["subnet-1"],
            "security_group_ids": ["sg-fn"]})
        if not procs.wait_until(lambda: requests.controller_request({
                "op": "function.get", "name": "cold-legacy"})["State"] == "Active", 30, 0.05):
            raise RuntimeError("cold-legacy did not become Active")
        samples = []
        for _ in range(count):
            started = time.monotonic()
            env, lock, cold = requests.acquire_env("cold-legacy")
            self.locks.append(lock)
            reply = requests.invoke_env(env, {})
            if not cold or "result" not in reply:
                raise RuntimeError(f"legacy cold start sample failed: {reply}")
            samples.append((time.monotonic() - started) * 1000)
        span = timing.timing(running.require().topology.settings).legacy_eni_attach
        return {"median": statistics.median(samples), "p99": workloads.percentile(samples, 99),
                "samples": samples, "attach_s": span[1],
                "profile": timing.timing(running.require().topology.settings).profile}


# the workloads in the order a full run takes them (connections after concurrent: its
# closed sessions linger for the TCP timeouts)
WORKLOADS = ("tcp_1_stream", "tcp_4_streams", "udp_64b", "ping", "concurrent", "connections",
             "environments", "cold_starts", "api_invokes")


def chosen(names: str | None) -> tuple[str, ...]:
    """``--workload a,b``: those, in the plan's order; every one when None."""
    if not names:
        return WORKLOADS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in WORKLOADS]
    if unknown or not wanted:
        raise UsageError(f"unknown workload {', '.join(unknown) or repr(names)} (known: "
                         f"{', '.join(WORKLOADS)})")
    return tuple(n for n in WORKLOADS if n in wanted)


def run(plan: Plan, log=print, names: tuple[str, ...] = WORKLOADS) -> dict:
    check_ready()
    state.ensure_dirs()
    bench = Bench(plan, log)
    started = time.monotonic()
    try:
        bench.setup()
        for name in names:
            getattr(bench, name)()
    finally:
        bench.teardown()
    bench.results["machine"] = workloads.machine()
    bench.results["plan"] = {**plan.__dict__, "workloads": list(names)}
    bench.results["seconds"] = time.monotonic() - started
    return bench.results
