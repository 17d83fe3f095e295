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

from hyperplane import engine, fabric, fabric_egress, procs, reachability, vpcnet

PROBE_TIMEOUT = 1.5


def run(timeout: float = PROBE_TIMEOUT) -> dict:
    running = engine.require()
    topology = running.active_topology()  # the functions as they run now
    enis = running.enis
    targets = reachability.targets(topology, fabric_egress.needs_internet(topology))
    jobs: list[tuple[reachability.Source, str, str | None]] = []
    locks = []
    try:
        for function in topology.functions:
            env, lock, _cold = engine.acquire_env(function)
            locks.append(lock)
            eni = next((e for e in enis if e.id == env.eni_id), None)
            jobs.append((reachability.function_source(topology, function.name, eni),
                         env.netns, vpcnet.resolv_file(engine.env_vpc(function))))
        for source in reachability.host_sources(topology):
            jobs.append((source, fabric.host_netns(topology, source.name),
                         vpcnet.resolv_file(source.vpc_id)))
        started = []
        for source, ns, resolv in jobs:
            mine = [t for t in targets if not (source.kind == "host" and t.name == source.name)]
            if not mine:
                continue
            argv = procs.python_module("hyperplane.services.reachprobe", "--timeout",
                                       str(timeout), *(f"http:{t.ip}:{t.port}" for t in mine))
            started.append((source, mine, procs.start_in(ns, argv, resolv)))
        rows = []
        for source, mine, proc in started:
            out, err = proc.communicate(timeout=timeout + 30)
            if proc.returncode != 0:
                raise RuntimeError(f"the probe from {source.name} failed: {err.strip()}")
            for target, probe in zip(mine, json.loads(out), strict=True):
                expected = reachability.explain(topology, enis, source, target)
                verdict, reason = reachability.verdict(probe["result"], expected,
                                                       probe.get("detail"), target)
                rows.append({"source": source.name, "kind": source.kind,
                             "vpc": source.vpc_id, "subnet": source.subnet_id,
                             "address": source.address, "target": target.label,
                             "target_ip": target.ip, "port": target.port,
                             "verdict": verdict, "reason": reason, "probe": probe["result"]})
    finally:
        for lock in locks:
            engine.release(lock)
    return {"targets": [t.label for t in targets], "results": rows}
