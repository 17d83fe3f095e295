"""The running emulator: up, down, and the CLI's side of the controller (side effects).

``up`` validates a topology and builds what does not change at run time: the
Hyperplane namespace, the VPCs (routers, subnets, hosts and their services,
gateways), the dataplane and the environment zygote.  Everything made is
recorded in the state database first, so ``down`` and ``cleanup`` can always
find it.  Then it starts the controller (``controller.daemon``), which creates
the file's functions as the API would (Pending while their ENIs are made) and
owns functions, ENIs and environments from then on; ``up`` returns once no
function is Pending.

The rest is the controller's client: ``controller_request`` for the API
(an AWS-named error is raised as ``LambdaApiError``), ``invoke``, ``acquire_env``
(an environment held through a lease connection), ``start_envs`` (a burst).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, replace

import yaml

from hyperplane import (
    build,
    client,
    fabric,
    names,
    netlink,
    procs,
    settings,
    state,
    timing,
    vpcnet,
)
from hyperplane.controller.enis import Eni
from hyperplane.controller.envs import Env
from hyperplane.controller.functions import FunctionRecord
from hyperplane.topology import Function, Topology, VpcConfig, load_topology, parse_topology

READY_TIMEOUT = 15.0


class UsageError(Exception):
    """A request that cannot be served as asked (reported without a traceback)."""


@dataclass
class Running:
    """What the state database records, with the topology parsed again."""

    data: dict
    topology: Topology

    @property
    def enis(self) -> list[Eni]:
        return [Eni.from_dict(e) for e in self.data["enis"]]

    @property
    def envs(self) -> list[Env]:
        return [Env.from_dict(e) for e in self.data["envs"]]

    @property
    def functions(self) -> list[FunctionRecord]:
        return [FunctionRecord.from_dict(f) for f in self.data.get("functions", [])]

    def active_topology(self) -> Topology:
        """The topology with the functions as they run now (Active, their applied VPC)."""
        active = []
        for fn in self.functions:
            if fn.state != "Active":
                continue
            config = None
            if fn.vpc is not None and fn.vpc_id is not None:
                config = VpcConfig(fn.vpc.subnet_ids, fn.vpc.security_group_ids, fn.vpc_id,
                                   fn.vpc.ipv6_allowed_for_dual_stack)
            active.append(Function(fn.name, fn.code, fn.handler, config, fn.memory,
                                   fn.timeout))
        return replace(self.topology, functions=tuple(active))


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


def up(path: str, wait: bool = True) -> dict:
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
        objs = fabric.desired(topology, [], [])
        data = {"source": os.path.abspath(path), "document": _document(path, topology),
                "enis": [], "envs": [], "procs": {}, "namespaces": fabric.namespaces(objs)}
        state.forget()
        state.save(data)
        try:
            build.apply(fabric.plan(frozenset(), objs))
            vpcnet.start(data, topology, [])
            _start_dataplane(data)
            _start_zygote(data)
            _start_hosts(data, topology)
            state.save(data)
            start_controller(data)
        except BaseException:
            _teardown(data)
            raise
    if wait:
        wait_settled(topology)
    return status()


def start_controller(data: dict | None = None) -> int:
    """Start the controller process (at ``up``, or again after it died)."""
    sock = state.controller_socket()
    data = data if data is not None else state.load()
    if data is None:
        raise UsageError("nothing is up; start with `hyperplane up FILE`")
    old = data["procs"].get("controller")
    if old and procs.alive(old) and procs.is_ours(old):
        raise UsageError(f"the controller is running (pid {old})")
    pid = procs.spawn(names.PLANE_NS, procs.python_module(
        "hyperplane.controller.daemon", "--socket", sock), state.log("controller"))
    # the controller records its own pid when it starts; this copy is for `up`'s tear-down
    # if it fails (and `cleanup` finds it in hp-plane anyway)
    data["procs"]["controller"] = pid

    def answering() -> bool:
        try:
            return client.request(sock, {"op": "ping"}, timeout=1).get("pid") == pid
        except (client.UnreachableError, OSError):
            return False
    if not client.wait_until(lambda: answering() or not procs.alive(pid), READY_TIMEOUT) \
            or not procs.alive(pid):
        raise RuntimeError(f"the controller did not start; see {state.log('controller')}")
    return pid


def wait_settled(topology: Topology) -> None:
    """Until no function is Pending (their ENIs exist): ``up`` returns Active functions."""
    limit = timing.timing(topology.settings).eni_create[1] + READY_TIMEOUT

    def settled() -> bool:
        functions = controller_request({"op": "function.list"})["Functions"]
        return all(f["State"] != "Pending" for f in functions)
    if not client.wait_until(settled, limit, 0.05):
        raise RuntimeError(f"functions still Pending after {limit:.0f} s; see "
                           "`hyperplane function list`")


class LambdaApiError(Exception):
    """The controller answered with an AWS-named error (``errorType``, ``errorMessage``)."""

    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('errorType')}: {error.get('errorMessage')}")
        self.error = error


def controller_request(message: dict, timeout: float = 60.0) -> dict:
    """One request to the controller: its result, or the error it answered with raised."""
    try:
        reply = client.request(state.controller_socket(), message, timeout=timeout)
    except client.UnreachableError:
        if state.load() is None:
            raise UsageError("nothing is up (no state in "
                             f"{state.state_dir()}); start with `hyperplane up FILE`") from None
        raise RuntimeError("the controller does not answer; `hyperplane controller start` "
                           f"starts it again (its log: {state.log('controller')})") from None
    if reply.get("ok"):
        return reply["result"]
    if "error" in reply:
        raise LambdaApiError(reply["error"])
    if "usage" in reply:
        raise UsageError(reply["usage"])
    raise RuntimeError(f"the controller failed: {reply.get('failure')}; see "
                       f"{state.log('controller')}")


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


def dataplane_request(message: dict) -> dict:
    return client.request(state.control_socket(), message)


def down() -> bool:
    """Stop every process and remove every object of the running topology."""
    with state.locked():
        data = state.load()
        if data is None:
            return False
        _teardown(data)
    return True


def _teardown(data: dict) -> None:
    pids = dict(data.get("procs", {}))
    if pids.get("controller"):
        procs.stop(pids["controller"])  # first: nothing may make objects meanwhile
    # what the controller recorded until it stopped (it records before it makes)
    final = _reload() or {}
    pids.update(final.get("procs", {}))
    for pid in pids.values():
        procs.stop(pid)
    namespaces = sorted(set(data.get("namespaces", [])) | set(final.get("namespaces", [])))
    procs.kill_in_namespaces(namespaces)
    for ns in namespaces:
        netlink.remove_netns(ns)
    forget_state()


def _reload() -> dict | None:
    try:
        return state.load()
    except Exception:  # noqa: BLE001 - a damaged database: what we have must do
        return None


def forget_state() -> None:
    state.forget()
    for name in ("dataplane.sock", "zygote.sock", "natgw.sock", "controller.sock"):
        state.path(name).unlink(missing_ok=True)
    for sub in ("envs", "ready", "resolv"):
        shutil.rmtree(state.path(sub), ignore_errors=True)


# -- execution environments (through the controller) ------------------------------------
def _name(function: Function | str) -> str:
    return function if isinstance(function, str) else function.name


def acquire_env(function: Function | str) -> tuple[Env, socket.socket, bool]:
    """An environment held for the caller until ``release(lease)``: (env, lease, cold)."""
    lease = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lease.connect(state.controller_socket())
        lease.sendall(json.dumps({"op": "lease", "name": _name(function)}).encode() + b"\n")
        reply = json.loads(lease.makefile("rb").readline() or b"{}")
    except (OSError, ValueError) as exc:
        lease.close()
        raise RuntimeError(f"the controller does not answer ({exc}); see "
                           "`hyperplane controller start`") from None
    if not reply.get("ok"):
        lease.close()
        if "error" in reply:
            raise LambdaApiError(reply["error"])
        raise RuntimeError(f"could not hold an environment: {reply}")
    return Env.from_dict(reply["result"]["env"]), lease, reply["result"]["cold"]


def release(lease: socket.socket) -> None:
    lease.close()


def start_envs(name: str, count: int) -> list[Env]:
    """Scale ``name`` out by ``count`` environments at once (a burst), ready when returned."""
    result = controller_request({"op": "scale", "name": name, "count": count}, timeout=600)
    return [Env.from_dict(e) for e in result["envs"]]


def invoke_env(env: Env, payload: object, timeout: float = 30) -> dict:
    """One invocation on a given environment (no controller: the caller owns it)."""
    return client.request(state.env_socket(env.index),
                          {"payload": payload, "request_id": str(uuid.uuid4())}, timeout=timeout)


def invoke(name: str, payload: object) -> dict:
    """Run the function's handler in an environment; the agent's reply, annotated."""
    return controller_request({"op": "invoke", "name": name, "payload": payload}, timeout=1000)


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
    running = require()
    env, lease, _cold = acquire_env(name)
    os.set_inheritable(lease.fileno(), True)  # the command holds the environment until it ends
    vpc_id = running.topology.subnet(env.subnet_id).vpc_id if env.subnet_id else None
    return procs.exec_in(env.netns, argv, vpcnet.resolv_file(vpc_id))


def env_vpc(function: Function) -> str | None:
    return function.vpc_config.vpc_id if function.vpc_config else None


# -- views ------------------------------------------------------------------------------
def eni_rows(running: Running) -> list[dict]:
    return [{"id": e.id, "vpc": e.key.vpc_id, "subnet": e.key.subnet_id,
             "security_groups": list(e.key.security_group_ids), "ip": e.ip, "mac": e.mac,
             "interface_type": "lambda", "description": e.description,
             "functions": list(e.functions), "interface": e.plane_link, "status": e.status,
             "spill": e.spill, "legacy_environment": e.legacy_env,
             "delete_at": e.delete_at}
            for e in running.enis]


def status() -> dict:
    running = current()
    if running is None:
        return {"up": False, "state_dir": str(state.state_dir())}
    data, topology = running.data, running.topology
    dp_pid = data["procs"].get("dataplane")
    ctl_pid = data["procs"].get("controller")
    try:
        stats = dataplane_request({"op": "stats"})["stats"]["global"]
    except (client.UnreachableError, OSError):
        stats = None
    envs = running.envs
    functions = [{"name": f.name, "state": f.state, "reason_code": f.state_reason_code,
                  "last_update_status": f.last_update_status, "networking": f.networking,
                  "vpc_id": f.vpc_id,
                  "enis": [e.id for e in running.enis if f.name in e.functions],
                  "environments": sum(1 for e in envs if e.function == f.name)}
                 for f in running.functions]
    hosts = [{"name": h.name, "vpc": h.vpc_id, "subnet": h.subnet, "ip": h.ip,
              "namespace": fabric.host_netns(topology, h.name)}
             for v in topology.vpcs for h in v.hosts]
    return {"up": True, "topology": data["source"], "state_dir": str(state.state_dir()),
            "dataplane": {"pid": dp_pid, "alive": bool(dp_pid and procs.alive(dp_pid)),
                          "sessions_active": stats["sessions_active"] if stats else None},
            "controller": {"pid": ctl_pid, "alive": bool(ctl_pid and procs.alive(ctl_pid))},
            "timing": timing.timing(topology.settings).summary(),
            "functions": functions, "hosts": hosts, "enis": len(data["enis"]),
            "environments": len(envs), "namespaces": sorted(data["namespaces"])}
