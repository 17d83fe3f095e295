"""The running emulator: up, down, cleanup, invoke and exec (side effects).

``up`` validates a topology, plans its ENIs (``controller.enis``), builds
the fabric (``fabric`` + ``build``), starts the Hyperplane dataplane and the
hosts' services, hands the dataplane its configuration snapshot and returns
once every ENI can reach its subnet (the functions are Active).  Everything
made is recorded in the state directory first, so ``down`` and ``cleanup``
can always find it.

Execution environments are made on demand: ``acquire_env`` takes an idle
environment of the function (its lock file is free: a warm start) or makes a
new one (a cold start) in the subnet with the fewest of them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import IO

import yaml

from hyperplane import (
    build,
    client,
    fabric,
    fabric_egress,
    names,
    netlink,
    procs,
    secgroups,
    settings,
    state,
    topology_egress,
    vpcnet,
)
from hyperplane.controller import ipam
from hyperplane.controller.enis import Eni, plan_enis
from hyperplane.controller.envs import Env, new_env
from hyperplane.topology import Function, Topology, load_topology, parse_topology

READY_TIMEOUT = 15.0
BUILD_CHUNK = 64  # environments built per plan (fewer than netlink.SOCKET_CACHE namespaces)


class UsageError(Exception):
    """A request that cannot be served as asked (reported without a traceback)."""


@dataclass
class Running:
    """What ``state.json`` records, with the topology parsed again."""

    data: dict
    topology: Topology

    @property
    def enis(self) -> list[Eni]:
        return [Eni.from_dict(e) for e in self.data["enis"]]

    @property
    def envs(self) -> list[Env]:
        return [Env.from_dict(e) for e in self.data["envs"]]


def current() -> Running | None:
    data = state.load()
    if data is None:
        return None
    return Running(data, parse_topology(data["document"], data["source"]))


def require() -> Running:
    running = current()
    if running is None:
        raise UsageError("nothing is up (no state in "
                         f"{state.state_dir()}); start with `hyperplane up FILE`")
    return running


# -- up / down --------------------------------------------------------------------
def _document(path: str, topology: Topology) -> dict:
    """The file's document with code directories made absolute."""
    with open(path) as fh:
        document = yaml.safe_load(fh)
    for raw, function in zip(document.get("functions") or [], topology.functions, strict=True):
        raw["code"] = function.code
    return document


def load(path: str) -> Topology:
    """Load and validate a topology file, settings included."""
    topology = load_topology(path)
    settings.check(topology.settings, path)
    return topology


def up(path: str) -> dict:
    topology = load(path)
    with state.locked():
        if state.load() is not None:
            raise UsageError(f"a topology is already up (state in {state.state_dir()}); "
                             "run `hyperplane down` first, or `hyperplane cleanup` after a crash")
        leftovers = netlink.list_netns(names.NS_PREFIX)
        if leftovers:
            raise UsageError(f"hp- namespaces already exist ({', '.join(leftovers[:3])}...): "
                             "another topology is up or a run crashed; see `hyperplane "
                             "cleanup`")
        try:
            enis = plan_enis(topology, [])
        except ipam.AddressExhaustedError as exc:
            raise UsageError(f"{path}: {exc}") from exc
        objs = fabric.desired(topology, enis, [])
        data = {"source": os.path.abspath(path), "document": _document(path, topology),
                "enis": [e.to_dict() for e in enis], "envs": [], "procs": {},
                "namespaces": fabric.namespaces(objs)}
        state.save(data)
        try:
            build.apply(fabric.plan(frozenset(), objs))
            vpcnet.start(data, topology, enis)
            _start_dataplane(data)
            _start_zygote(data)
            _start_hosts(data, topology)
            push_config(Running(data, topology))
            _wait_enis_ready(enis)
        except BaseException:
            _teardown(data)
            raise
        state.save(data)
    return status()


def _start_dataplane(data: dict) -> None:
    sock = state.control_socket()
    pid = procs.spawn(names.PLANE_NS, procs.python_module(
        "hyperplane.dataplane", "--control", sock), state.log("dataplane"))
    data["procs"]["dataplane"] = pid
    state.save(data)

    def answering() -> bool:
        try:
            return client.request(sock, {"op": "ping"}, timeout=1).get("ok", False)
        except (client.UnreachableError, OSError):
            return False
    if not client.wait_until(lambda: answering() or not procs.alive(pid), READY_TIMEOUT) \
            or not procs.alive(pid):
        raise RuntimeError("the Hyperplane dataplane did not start; see "
                           f"{state.log('dataplane')}")


def _start_zygote(data: dict) -> None:
    sock = state.zygote_socket()
    pid = procs.spawn(names.PLANE_NS, procs.python_module("lambda_vm.zygote", "--socket", sock),
                      state.log("zygote"))
    data["procs"]["zygote"] = pid
    state.save(data)
    if not client.wait_until(lambda: os.path.exists(sock) or not procs.alive(pid),
                             READY_TIMEOUT) or not procs.alive(pid):
        raise RuntimeError(f"the environment zygote did not start; see {state.log('zygote')}")


def _start_hosts(data: dict, topology: Topology) -> None:
    waiting = []
    for vpc in topology.vpcs:
        for host in vpc.hosts:
            if host.http_port is None:
                continue
            ready = state.ready_file(host.name)
            ready.unlink(missing_ok=True)
            pid = procs.spawn(fabric.host_netns(topology, host.name), procs.python_module(
                "hyperplane.services.httpd", "--port", str(host.http_port),
                "--name", host.name, "--ready", str(ready)), state.log(f"host-{host.name}"))
            data["procs"][f"host:{host.name}"] = pid
            waiting.append((host.name, ready, pid))
    state.save(data)
    for name, ready, pid in waiting:
        if not client.wait_until(lambda r=ready, p=pid: r.exists() or not procs.alive(p),
                                 READY_TIMEOUT) or not ready.exists():
            raise RuntimeError(f"the service of host {name} did not start; see "
                               f"{state.log('host-' + name)}")


def _wait_enis_ready(enis: list[Eni]) -> None:
    """Every ENI has resolved its subnet router's MAC (it can reach its VPC)."""
    def resolved() -> bool:
        stats = dataplane_request({"op": "stats"})["stats"]["enis"]
        return all(stats.get(e.id, {}).get("arp_resolved", 0) > 0 for e in enis)
    if not client.wait_until(resolved, READY_TIMEOUT, 0.02):
        raise RuntimeError("the ENIs could not reach their subnets' routers")


def dataplane_request(message: dict) -> dict:
    return client.request(state.control_socket(), message)


def snapshot(running: Running) -> dict:
    """The dataplane's whole desired configuration."""
    dataplane = settings.dataplane(running.topology.settings)
    membership = secgroups.members(running.topology, running.enis)
    enis = [{"id": e.id, "ifname": e.plane_link, "ip": e.ip, "mac": e.mac,
             "cidr": e.subnet_cidr, "gateway": ipam.gateway(e.subnet_cidr),
             "connection_limit": dataplane["eni_connection_limit"],
             "port_range": dataplane["port_range"], "mtu": names.LINK_MTU,
             "egress": secgroups.eni_egress(running.topology, e, membership)}
            for e in running.enis]
    egress = fabric_egress.has_egress_port(running.topology)  # Lambda's own, for no-VPC envs
    if egress:
        enis.append({"id": names.EGRESS_ID, "ifname": names.EGRESS_PLANE_LINK,
                     "ip": names.EGRESS_IP, "mac": names.mac(names.MAC_EGRESS, 0),
                     "cidr": names.EGRESS_NET, "gateway": names.EGRESS_GATEWAY,
                     "connection_limit": dataplane["eni_connection_limit"],
                     "port_range": dataplane["port_range"], "mtu": names.LINK_MTU,
                     "egress": None})
    envs = [{"ifname": e.plane_link, "ip": e.ip, "mac": e.mac, "gateway_ip": names.ENV_GATEWAY,
             "gateway_mac": e.gateway_mac,
             "eni": e.eni_id or (names.EGRESS_ID if egress else None)} for e in running.envs]
    return {"enis": enis, "envs": envs, "timeouts": dataplane["timeouts"],
            "max_sessions": dataplane["max_sessions"]}


def push_config(running: Running) -> None:
    reply = dataplane_request({"op": "config", "config": snapshot(running)})
    if not reply.get("ok"):
        raise RuntimeError(f"the dataplane refused its configuration: {reply.get('error')}")
    # hosts' rules naming a group follow its members: re-render when ENIs came or went
    vpcnet.follow_membership(running.data, running.topology, running.enis)


def down() -> bool:
    """Stop every process and remove every object of the running topology."""
    with state.locked():
        data = state.load()
        if data is None:
            return False
        _teardown(data)
    return True


def _teardown(data: dict) -> None:
    for pid in data.get("procs", {}).values():
        procs.stop(pid)
    namespaces = sorted(set(data.get("namespaces", [])))
    procs.kill_in_namespaces(namespaces)
    for ns in namespaces:
        netlink.remove_netns(ns)
    forget_state()


def forget_state() -> None:
    for name in ("state.json", "dataplane.sock", "zygote.sock", "natgw.sock"):
        state.path(name).unlink(missing_ok=True)
    for sub in ("envs", "ready", "resolv"):
        shutil.rmtree(state.path(sub), ignore_errors=True)


# -- execution environments -------------------------------------------------------------
def acquire_env(function: Function) -> tuple[Env, IO, bool]:
    """An environment of ``function`` held for the caller: (env, lock, cold)."""
    with state.locked():
        running = require()
        for env in running.envs:
            if env.function != function.name:
                continue
            lock = _try_lock(env)
            if lock is not None:
                return env, lock, False
        env = _make_env(running, function)
        lock = _try_lock(env)
    assert lock is not None
    if not client.wait_until(lambda: os.path.exists(state.env_socket(env.index)), READY_TIMEOUT,
                             0.002):
        release(lock)
        raise RuntimeError(f"environment {env.id} did not start; see {state.log(env.id)}")
    return env, lock, True


def _try_lock(env: Env) -> IO | None:
    fh = open(state.env_lock(env.index), "a")  # noqa: SIM115 - held until release()
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def release(lock: IO) -> None:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


def _make_env(running: Running, function: Function) -> Env:
    return _make_envs(running, function, 1)[0]


def _make_envs(running: Running, function: Function, count: int) -> list[Env]:
    """Record, build and start ``count`` new environments of ``function``."""
    data = running.data
    made: list[Env] = []
    for _ in range(count):
        env = new_env(function, running.envs, running.enis)
        data["envs"].append(env.to_dict())
        data["namespaces"].append(env.netns)
        made.append(env)
    state.save(data)  # recorded before anything exists, so cleanup always finds it
    for start in range(0, len(made), BUILD_CHUNK):  # chunks keep netlink sockets cached
        objs = frozenset(o for env in made[start:start + BUILD_CHUNK]
                         for o in fabric.env_objects(env))
        build.apply(fabric.plan(frozenset(), objs))
    push_config(running)
    for env in made:
        data["procs"][env.id] = _spawn_agent(running, function, env)
    state.save(data)
    return made


def _spawn_agent(running: Running, function: Function, env: Env) -> int:
    args = ["--socket", state.env_socket(env.index), "--code", function.code,
            "--handler", function.handler, "--function", function.name,
            "--memory", str(function.memory), "--timeout", str(function.timeout),
            "--account", topology_egress.function_account(running.topology, function)]
    reply = client.request(state.zygote_socket(), {
        "op": "spawn", "netns": env.netns, "args": args, "log": str(state.log(env.id)),
        "cwd": function.code, "resolv": vpcnet.resolv_file(env_vpc(function))})
    if not reply.get("ok"):
        raise RuntimeError(f"could not start environment {env.id}: {reply.get('error')}")
    return reply["pid"]


def start_envs(name: str, count: int) -> list[Env]:
    """Scale ``name`` out by ``count`` environments at once (a burst), ready when returned."""
    with state.locked():
        running = require()
        made = _make_envs(running, function_of(running, name), count)
    for env in made:
        if not client.wait_until(lambda e=env: os.path.exists(state.env_socket(e.index)),
                                 READY_TIMEOUT, 0.002):
            raise RuntimeError(f"environment {env.id} did not start; see {state.log(env.id)}")
    return made


def invoke_env(env: Env, payload: object, timeout: float = 30) -> dict:
    """One invocation on a given environment (no locking: the caller owns it)."""
    return client.request(state.env_socket(env.index),
                          {"payload": payload, "request_id": str(uuid.uuid4())}, timeout=timeout)


def function_of(running: Running, name: str) -> Function:
    try:
        return running.topology.function(name)
    except KeyError:
        raise UsageError(f"no function named {name!r} in {running.data['source']}") from None


def invoke(name: str, payload: object) -> dict:
    """Run the function's handler in an environment; the agent's reply, annotated."""
    function = function_of(require(), name)
    env, lock, cold = acquire_env(function)
    try:
        # an environment being reset (after a timeout) opens its socket again shortly
        client.wait_until(lambda: os.path.exists(state.env_socket(env.index)), READY_TIMEOUT,
                          0.002)
        reply = client.request(state.env_socket(env.index),
                               {"payload": payload, "request_id": str(uuid.uuid4())},
                               timeout=function.timeout + 10)
    except (client.UnreachableError, OSError) as exc:
        raise RuntimeError(f"environment {env.id} of {name} did not answer ({exc}); "
                           f"see {state.log(env.id)}") from None
    finally:
        release(lock)
    reply.update(cold=cold, environment=env.id, eni=env.eni_id, subnet=env.subnet_id)
    return reply


def exec_in_host(name: str, argv: list[str]) -> int:
    running = require()
    try:
        running.topology.host(name)
    except KeyError:
        raise UsageError(f"no host named {name!r} in {running.data['source']}") from None
    host = running.topology.host(name)
    return procs.exec_in(fabric.host_netns(running.topology, name), argv,
                         vpcnet.resolv_file(host.vpc_id))


def exec_in_function(name: str, argv: list[str]) -> int:
    function = function_of(require(), name)
    env, lock, _cold = acquire_env(function)
    os.set_inheritable(lock.fileno(), True)  # the command holds the environment until it ends
    return procs.exec_in(env.netns, argv, vpcnet.resolv_file(env_vpc(function)))


def env_vpc(function: Function) -> str | None:
    return function.vpc_config.vpc_id if function.vpc_config else None


# -- views ------------------------------------------------------------------------------
def eni_rows(running: Running) -> list[dict]:
    return [{"id": e.id, "vpc": e.key.vpc_id, "subnet": e.key.subnet_id,
             "security_groups": list(e.key.security_group_ids), "ip": e.ip, "mac": e.mac,
             "interface_type": "lambda", "description": e.description,
             "functions": list(e.functions), "interface": e.plane_link, "status": "in-use"}
            for e in running.enis]


def status() -> dict:
    running = current()
    if running is None:
        return {"up": False, "state_dir": str(state.state_dir())}
    data, topology = running.data, running.topology
    dp_pid = data["procs"].get("dataplane")
    try:
        stats = dataplane_request({"op": "stats"})["stats"]["global"]
    except (client.UnreachableError, OSError):
        stats = None
    envs = running.envs
    functions = [{"name": f.name, "state": "Active" if stats is not None else "Failed",
                  "vpc_id": f.vpc_config.vpc_id if f.vpc_config else None,
                  "enis": [e.id for e in running.enis if f.name in e.functions],
                  "environments": sum(1 for e in envs if e.function == f.name)}
                 for f in topology.functions]
    hosts = [{"name": h.name, "vpc": h.vpc_id, "subnet": h.subnet, "ip": h.ip,
              "namespace": fabric.host_netns(topology, h.name)}
             for v in topology.vpcs for h in v.hosts]
    return {"up": True, "topology": data["source"], "state_dir": str(state.state_dir()),
            "dataplane": {"pid": dp_pid, "alive": bool(dp_pid and procs.alive(dp_pid)),
                          "sessions_active": stats["sessions_active"] if stats else None},
            "functions": functions, "hosts": hosts, "enis": len(data["enis"]),
            "environments": len(envs), "namespaces": sorted(data["namespaces"])}
