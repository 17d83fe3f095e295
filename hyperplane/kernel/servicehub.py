"""The services process (``services.hub``) kept serving what the topology declares
(side effects).

``listeners(topology)`` (no side effects) is what the process must serve: every host
whose service is ``http`` (in the host's namespace, on all its addresses), every VPC's
resolver (in the router namespace, on VPC base + 2, with the VPC's records) and, when
the topology has an internet, the public server ``www`` in ``hp-inet``.  The real servers
of hosts (MariaDB, PostgreSQL, Redis, memcached, listeners, proxies) stay processes of
their own (``emulator.run``), as does what a user runs with ``exec``.

``sync(data, topology)`` writes the list to ``STATE_DIR/services.json`` (atomically),
starts the process if it does not run (recorded under ``procs["services"]`` and
``supervise["services"]`` before it is waited for, so ``down`` finds it and the
supervisor restarts it), then asks it to ``sync``: new listeners open at once, gone ones
close.  ``partial=True`` leaves out listeners whose namespace does not exist (yet): the
listeners of a namespace about to be removed are closed first, since an open socket
would keep a removed namespace alive.
"""

from __future__ import annotations

import json
import os

from hyperplane import jsonline
from hyperplane.fabric import egress
from hyperplane.fabric.desired import host_netns, router_netns
from hyperplane.kernel import netlink, procs, state, supervision
from hyperplane.model import ipam, names
from hyperplane.model.topology import Topology
from hyperplane.services import dnsmsg

NAME = "services"
READY_TIMEOUT = 30.0


def listeners(topology: Topology) -> list[dict]:
    found = []
    for vpc in topology.vpcs:
        found.append({"kind": "dns", "ns": router_netns(topology, vpc.id),
                      "address": ipam.resolver(vpc.cidr), "port": 53,
                      "records": dnsmsg.vpc_records(vpc), "name": f"dns:{vpc.id}"})
        for host in vpc.hosts:
            if host.service is not None and host.service.kind == "http":
                found.append({"kind": "http", "ns": host_netns(topology, host.name),
                              "address": "0.0.0.0", "port": host.service.port,
                              "name": host.name})
    if egress.needs_internet(topology):
        found.append({"kind": "http", "ns": names.INET_NS, "address": "0.0.0.0",
                      "port": names.PUBLIC_PORT, "name": "www"})
    return found


def config_path() -> str:
    return str(state.path("services.json"))


def socket_path() -> str:
    return str(state.path("services.sock"))


def spec() -> dict:
    return supervision.spec(names.PLANE_NS, procs.python_module(
        "hyperplane.services.hub", "--config", config_path(), "--control", socket_path()),
        state.log(NAME), {"ping": socket_path()})


def _write(found: list[dict]) -> None:
    path = config_path()
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"listeners": found}, fh)
    os.replace(tmp, path)


def running(data: dict) -> bool:
    """Whether the services process runs: the supervisor's pid for it (read afresh: it
    may have restarted it since ``data`` was loaded), else the one ``up`` recorded."""
    restarted = (state.load_row("services") or {}).get(NAME) or {}
    pid = restarted.get("pid") or data.get("procs", {}).get(NAME)
    return bool(pid) and procs.alive(pid) and procs.is_ours(pid)


def ensure(data: dict) -> None:
    """Start the services process unless it runs (it reads its configuration at start)."""
    if running(data):
        return
    entry = spec()
    pid = supervision.spawn(entry)
    data["procs"][NAME] = pid
    data.setdefault("supervise", {})[NAME] = entry
    state.save(data)
    supervision.wait_ready(entry, pid, "the services process", READY_TIMEOUT)


def request(message: dict) -> dict:
    return jsonline.request(socket_path(), message, timeout=READY_TIMEOUT)


def sync(data: dict, topology: Topology, partial: bool = False) -> dict:
    """Make the services process serve ``topology``'s listeners; its reply."""
    found = listeners(topology)
    if partial:
        found = [f for f in found if netlink.netns_exists(f["ns"])]
    _write(found)
    if partial and not running(data):
        return {"ok": True}
    ensure(data)
    reply = request({"op": "sync"})
    if not reply.get("ok") or reply.get("failed"):
        raise RuntimeError(f"the services process could not open every listener: "
                           f"{reply.get('failed') or reply.get('error')}; see "
                           f"{state.log(NAME)}")
    return reply
