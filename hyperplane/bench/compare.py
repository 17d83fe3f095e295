"""``hyperplane compare``: cold starts in Hyperplane mode and in legacy mode, side by side.

The question Hyperplane answered in 2019: what does a burst of N concurrent cold
starts cost when every execution environment needs its own ENI (legacy: created
and attached at cold start, one subnet address each) compared with ENIs shared per
(subnet, security groups) and made when the function is created?

For each N and each mode a fresh function is created (so every environment is
cold), invoked N times at once from N threads (each holding its environment until
the burst is done, so that none finds another's free), measured, and deleted.
Figures per run: cold-start latency as the caller sees it (median and p99 of the
invocations that were cold), ENIs created by the cold starts, ENIs the function
used, and the subnet addresses Lambda's ENIs held at the end of the burst (the
shared ENI stays; a deleted function's own ENIs are waited out before the next run).
Hyperplane mode's ENI count stays put as N grows; legacy mode's grows with N.

It brings up its own topology (``compare.yaml``) and needs the machine to itself,
like ``bench``; ``--profile aws`` uses AWS's timings (a 10 s ENI attach per legacy
cold start) and moves the emulated clock past function creation.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from hyperplane.bench import workloads
from hyperplane.emulator import requests, running
from hyperplane.emulator.run import down, up
from hyperplane.errors import UsageError
from hyperplane.kernel import netlink
from hyperplane.model import names

HERE = Path(__file__).resolve().parent
SUBNET = "subnet-1"
MODES = ("hyperplane", "legacy")


def topology_file(profile: str) -> str:
    document = yaml.safe_load((HERE / "compare.yaml").read_text())
    document["settings"] = {"timing": {"profile": profile}}
    out = workloads.scratch() / "compare-topology.yaml"
    out.write_text(yaml.safe_dump(document))
    return str(out)


def _enis() -> list[dict]:
    return running.eni_rows(running.require())


def _wait_active(name: str, profile: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        state = requests.controller_request({"op": "function.get", "name": name})["State"]
        if state == "Active":
            return
        if state != "Pending" or time.monotonic() > deadline:
            raise RuntimeError(f"{name} is {state}, not Active")
        if profile == "aws":  # creation takes 60-90 s there: not what is compared
            requests.controller_request({"op": "clock", "advance": "2m"})
        time.sleep(0.05)


def _invoke(name: str, leases: list) -> tuple[float, dict]:
    """One invocation on an environment held until the whole burst is done, so that no
    invocation of the burst finds another's environment free (all N are concurrent)."""
    started = time.monotonic()
    env, lease, cold = requests.acquire_env(name)
    leases.append(lease)
    reply = requests.invoke_env(env, {})
    reply["cold"] = cold
    return (time.monotonic() - started) * 1000, reply


def burst(mode: str, count: int, profile: str) -> dict:
    """One fresh function of ``mode``, ``count`` concurrent invocations, its figures."""
    name = f"cmp-{mode[0]}{count}"
    requests.controller_request({
        "op": "function.create", "name": name, "handler": "handlers.echo",
        "code": str(HERE), "networking": mode, "subnet_ids": [SUBNET],
        "security_group_ids": ["sg-fn"], "timeout": 30})
    _wait_active(name, profile)
    before = {e["id"] for e in _enis()}
    leases: list = []
    try:
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda _i: _invoke(name, leases), range(count)))
    finally:
        for lease in leases:
            requests.release(lease)
    rows = _enis()
    failed = [r for _ms, r in results if "result" not in r]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} invocations failed: {failed[0]}")
    cold = [ms for ms, r in results if r.get("cold")]
    used = [e for e in rows if name in e["functions"]]
    figures = {
        "mode": mode, "concurrency": count, "cold": len(cold),
        "cold_start_ms": {"median": statistics.median(cold) if cold else None,
                          "p99": workloads.percentile(cold, 99) if cold else None},
        "enis_created_by_cold_starts": len({e["id"] for e in rows} - before),
        "enis_used": len(used),
        "subnet_addresses_used": sum(1 for e in rows if e["subnet"] == SUBNET),
    }
    requests.controller_request({"op": "function.delete", "name": name})
    _wait_deleted(profile)
    return figures


def _wait_deleted(profile: str) -> None:
    """Until the deleted function's own ENIs are gone, so the next run counts afresh."""
    deadline = time.monotonic() + 120
    while any(e["status"] == "deleting" for e in _enis()):
        if time.monotonic() > deadline:
            raise RuntimeError("ENIs still deleting after 120 s")
        if profile == "aws":  # up to 20 minutes there
            requests.controller_request({"op": "clock", "advance": "21m"})
        time.sleep(0.1)


def run(concurrency: list[int], profile: str = "fast", log=print) -> dict:
    if running.current() is not None or netlink.list_netns(names.NS_PREFIX):
        raise UsageError("compare needs the machine to itself: run `hyperplane down` "
                                "(or `hyperplane cleanup`) first")
    rows = []
    started = time.monotonic()
    try:
        up(topology_file(profile), wait=False)
        for count in concurrency:
            for mode in MODES:
                log(f"{mode}: {count} concurrent cold starts...")
                row = burst(mode, count, profile)
                rows.append(row)
    finally:
        if running.current() is not None:
            down()
        workloads.remove_scratch()
    return {"profile": profile, "runs": rows, "seconds": time.monotonic() - started}


HEADER = (f"{'MODE':<11} {'N':>4} {'COLD':>5} {'MEDIAN ms':>10} {'P99 ms':>9} "
          f"{'ENIS CREATED':>13} {'ENIS USED':>10} {'SUBNET IPS':>11}")


def text_row(row: dict) -> str:
    cs = row["cold_start_ms"]
    median = "-" if cs["median"] is None else f"{cs['median']:.0f}"
    p99 = "-" if cs["p99"] is None else f"{cs['p99']:.0f}"
    return (f"{row['mode']:<11} {row['concurrency']:>4} {row['cold']:>5} {median:>10} "
            f"{p99:>9} {row['enis_created_by_cold_starts']:>13} {row['enis_used']:>10} "
            f"{row['subnet_addresses_used']:>11}")


def table_text(result: dict) -> str:
    return "\n".join([f"profile {result['profile']}", HEADER,
                      *(text_row(r) for r in result["runs"])])
