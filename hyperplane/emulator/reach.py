"""``hyperplane reach``: probe every declared pair with real packets (side effects).

For each function it takes one execution environment (warm, or cold-started like an
``invoke``) and holds it while probing; each host probes from its own namespace.  Every
source runs ``services.reachprobe`` once, inside its namespace (with the VPC resolver as
its resolv.conf), against all its targets at once; all sources probe concurrently, so the
whole matrix takes about one probe timeout.  ``reachability`` turns each probe result and
the topology's meaning into the cell and its reason.
"""

from __future__ import annotations

import json

from hyperplane.emulator.requests import acquire_env, release
from hyperplane.emulator.running import Running, require
from hyperplane.fabric.desired import host_netns
from hyperplane.fabric.egress import needs_internet
from hyperplane.kernel import procs
from hyperplane.kernel.vpcservices import resolv_file
from hyperplane.policy import reachability

PROBE_TIMEOUT = 1.5
Job = tuple[reachability.Source, str, "str | None"]  # source, namespace, resolv.conf


def _jobs(running: Running, leases: list) -> list[Job]:
    """Where each source probes from: a held environment per function, each host."""
    topology = running.active_topology()  # the functions as they run now
    enis = running.enis
    jobs: list[Job] = []
    for function in topology.functions:
        env, lease, _cold = acquire_env(function)
        leases.append(lease)
        eni = next((e for e in enis if e.id == env.eni_id), None)
        vpc_id = function.vpc_config.vpc_id if function.vpc_config else None
        jobs.append((reachability.function_source(topology, function.name, eni),
                     env.netns, resolv_file(vpc_id)))
    for source in reachability.host_sources(topology):
        jobs.append((source, host_netns(topology, source.name), resolv_file(source.vpc_id)))
    return jobs


def _rows(running: Running, source: reachability.Source, targets: list, probes: list) -> list:
    topology = running.active_topology()
    rows = []
    for target, probe in zip(targets, probes, strict=True):
        expected = reachability.explain(topology, running.enis, source, target)
        verdict, reason = reachability.verdict(probe["result"], expected,
                                               probe.get("detail"), target)
        rows.append({"source": source.name, "kind": source.kind, "vpc": source.vpc_id,
                     "subnet": source.subnet_id, "address": source.address,
                     "target": target.label, "target_ip": target.ip, "port": target.port,
                     "verdict": verdict, "reason": reason, "probe": probe["result"]})
    return rows


def run(timeout: float = PROBE_TIMEOUT) -> dict:
    running = require()
    topology = running.active_topology()
    targets = reachability.targets(topology, needs_internet(topology))
    leases: list = []
    try:
        started = []
        for source, ns, resolv in _jobs(running, leases):
            mine = [t for t in targets if not (source.kind == "host" and t.name == source.name)]
            if not mine:
                continue
            argv = procs.python_module("hyperplane.services.reachprobe", "--timeout",
                                       str(timeout), *(f"{t.probe}:{t.ip}:{t.port}" for t in mine))
            started.append((source, mine, procs.start_in(ns, argv, resolv)))
        rows = []
        for source, mine, proc in started:
            out, err = proc.communicate(timeout=timeout + 30)
            if proc.returncode != 0:
                raise RuntimeError(f"the probe from {source.name} failed: {err.strip()}")
            rows += _rows(running, source, mine, json.loads(out))
    finally:
        for lease in leases:
            release(lease)
    return {"targets": [t.label for t in targets], "results": rows}
