"""``up`` and ``down``: a topology made real, and removed (side effects).

``up`` validates a topology and builds what does not change at run time: the
Hyperplane namespace, the VPCs (routers, subnets, hosts and their services,
gateways), the dataplane and the environment zygote.  Everything made is
recorded in the state database first, so ``down`` and ``cleanup`` can always
find it.  Then it starts the controller (``controller.daemon``), which creates
the file's functions as the API would (Pending while their ENIs are made) and
owns functions, ENIs and environments from then on; ``up`` returns once no
function is Pending.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from hyperplane.emulator import flowlogs, machine, stacks
from hyperplane.emulator.requests import controller_request
from hyperplane.emulator.running import load_source, pid_of, status
from hyperplane.errors import TopologyError, UsageError
from hyperplane.fabric import desired
from hyperplane.fabric.objects import plan
from hyperplane.kernel import build, flowfiles, netlink, procs, state, supervision, vpcservices
from hyperplane.model import names, settings, timing
from hyperplane.model.topology import Host, Topology

READY_TIMEOUT = 15.0
HOST_READY_TIMEOUT = 90.0  # a database initialises its data directory first


def _refuse_if_up() -> None:
    if state.load() is not None:
        raise UsageError(f"a topology is already up (state in {state.state_dir()}); "
                         "run `hyperplane down` first, or `hyperplane cleanup` after a crash")
    leftovers = netlink.list_netns(names.NS_PREFIX)
    if leftovers:
        raise UsageError(f"hp- namespaces already exist ({', '.join(leftovers[:3])}...): "
                         "another topology is up or a run crashed; see `hyperplane cleanup`")


def check_port(port: int) -> None:
    """The endpoint's port is free on 127.0.0.1 (checked before anything is built)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as exc:
        raise UsageError(f"port {port} on 127.0.0.1 is not free for the AWS endpoint "
                         f"({exc.strerror}); choose another with --api-port or "
                         "settings.api.port, or run without it (--no-api)") from None
    finally:
        probe.close()


def up(path: str, wait: bool = True, api_port: int | None = None, api: bool = True,
       options: stacks.Options | None = None,
       progress: Callable[[dict], None] | None = None, tune_host: bool = False) -> dict:
    """Build ``path``'s topology (a topology file, or a template with ``options``) and
    start everything; ``api_port`` overrides the file's ``settings.api.port``;
    ``api=False`` starts no AWS endpoint; ``progress``: see ``wait_settled``; the machine's
    limits are checked first (``machine.check``; ``tune_host`` raises those exceeded, and
    the status's ``host_tuned`` says what changed)."""
    with state.locked():
        _refuse_if_up()
        try:
            loaded = load_source(path, options, state.path("stacks"), build=True)
        except BaseException:
            shutil.rmtree(state.path("stacks"), ignore_errors=True)
            raise
        topology = loaded.topology
        dataplane_overrides()  # a bad value: refused before anything is built
        port = api_port or settings.api_port(topology.settings)
        if api:
            check_port(port)
        objs = desired.desired(topology, [], [])
        tuned = machine.check(topology, objs, tune_host)
        data = {"source": os.path.abspath(path), "document": loaded.document,
                "enis": [], "envs": [], "procs": {}, "namespaces": desired.namespaces(objs)}
        if loaded.stack:
            data["stack"] = loaded.stack
        state.forget()
        for stale in state.shm_files():  # a table of a run that is gone: never attached to
            stale.unlink(missing_ok=True)
        state.save(data)
        try:
            build.apply(plan(frozenset(), objs))
            vpcservices.start(data, topology, [])
            _start_dataplane(data, topology)
            _start_zygote(data)
            _start_hosts(data, topology)
            _start_flowlogs(data, topology)
            if api:  # before the controller, which is the state's only writer from then on
                start_endpoint(data, port)
            start_supervisor(data)
            start_controller(data)
        except BaseException:
            _teardown(data)
            raise
    if wait:
        wait_settled(topology, progress)
    result = status()
    if tuned:
        result["host_tuned"] = tuned
    return result


def start_controller(data: dict | None = None) -> int:
    """Start the controller process (at ``up``, or again after it died)."""
    data = data if data is not None else state.load()
    if data is None:
        raise UsageError("nothing is up; start with `hyperplane up FILE`")
    old = data["procs"].get("controller")
    if old and procs.alive(old) and procs.is_ours(old):
        raise UsageError(f"the controller is running (pid {old})")
    entry = data.get("supervise", {}).get("controller") or controller_spec()
    # the controller records its own pid when it starts; this copy is for `up`'s tear-down
    # if it fails (and `cleanup` finds it in hp-plane anyway)
    pid = supervision.spawn(entry)
    data["procs"]["controller"] = pid
    supervision.wait_ready(entry, pid, "the controller", controller_timeout(data))
    _pause("controller", False)
    return pid


def controller_timeout(data: dict) -> float:
    """How long a starting controller may take to answer: it seeds the file's functions
    (their ENIs, every host's firewall again) before it listens, longer with more hosts."""
    hosts = sum(len(v.get("hosts") or []) for v in data.get("document", {}).get("vpcs", []))
    return READY_TIMEOUT + hosts * 0.06


def stop_controller() -> int | None:
    """Stop the controller and keep it stopped (the supervisor leaves a paused process
    alone) until ``controller start``; its pid, None if it was not running."""
    data = state.load()
    if data is None:
        raise UsageError("nothing is up; start with `hyperplane up FILE`")
    _pause("controller", True)
    pid = pid_of(data, "controller")
    if pid and procs.alive(pid) and procs.is_ours(pid):
        procs.stop(pid)
        return pid
    return None


def _pause(name: str, paused: bool) -> None:
    names = set(state.load_row("paused") or [])
    if (name in names) != paused:
        state.save_row("paused", sorted(names ^ {name}))


def start_supervisor(data: dict) -> int:
    """The supervisor (``emulator.supervisor``), before the controller: ``up`` records
    the controller's spec first, so that the supervisor knows it once it runs."""
    data.setdefault("supervise", {})["controller"] = controller_spec()
    pid = procs.spawn_here(procs.python_module("hyperplane.emulator.supervisor"),
                           state.log("supervisor"))
    data["procs"]["supervisor"] = pid
    state.save(data)
    return pid


def controller_spec() -> dict:
    sock = state.controller_socket()
    return supervision.spec(names.PLANE_NS, procs.python_module(
        "hyperplane.controller.daemon", "--socket", sock), state.log("controller"),
        {"controller": sock})


def start_endpoint(data: dict, port: int) -> int:
    """The AWS-compatible endpoint, in this namespace, on 127.0.0.1:``port``."""
    entry = supervision.spec(None, procs.python_module("hyperplane.endpoint", "--port",
                                                       str(port)),
                             state.log("endpoint"), {"tcp": port})
    pid = supervision.spawn(entry)
    data["procs"]["endpoint"] = pid
    data.setdefault("supervise", {})["endpoint"] = entry
    data["api"] = {"url": f"http://127.0.0.1:{port}", "port": port}
    state.save(data)
    supervision.wait_ready(entry, pid, "the AWS endpoint")
    return pid


def wait_settled(topology: Topology, progress: Callable[[dict], None] | None = None) -> None:
    """Until no function is Pending (their ENIs exist): ``up`` returns Active functions.

    ``progress`` (the CLI's display) is given the controller's ``status`` reply (functions,
    ENIs with their state and ``ready_at``, the emulated clock) at every look, the last
    one included; the emulator itself prints nothing.
    """
    limit = timing.timing(topology.settings).eni_create[1] + READY_TIMEOUT

    def settled() -> bool:
        if progress is None:
            functions = controller_request({"op": "function.list"})["Functions"]
        else:
            view = controller_request({"op": "status"})
            progress(view)
            functions = view["functions"]
        return all(f["State"] != "Pending" for f in functions)
    if not procs.wait_until(settled, limit, 0.05):
        raise RuntimeError(f"functions still Pending after {limit:.0f} s; see "
                           "`hyperplane function list`")


def _start(data: dict, name: str, entry: dict, what: str) -> int:
    """Spawn a supervised process, record it (before waiting: ``down`` finds it), wait."""
    pid = supervision.spawn(entry)
    data["procs"][name] = pid
    data.setdefault("supervise", {})[name] = entry
    state.save(data)
    supervision.wait_ready(entry, pid, what)
    return pid


def _start_dataplane(data: dict, topology: Topology) -> None:
    sock = state.control_socket()
    _start(data, "dataplane", supervision.spec(
        names.PLANE_NS, procs.python_module(
            "hyperplane.dataplane", "--control", sock, *dataplane_table("dataplane", topology),
            "--fast-path", dataplane_setting(topology, "fast_path"),
            "--workers", str(dataplane_workers(topology))),
        state.log("dataplane"), {"ping": sock}, after="resync"), "the Hyperplane dataplane")


OVERRIDES = {"HYPERPLANE_FAST_PATH": "fast_path", "HYPERPLANE_WORKERS": "workers"}


def dataplane_overrides() -> dict:
    """``settings.dataplane`` keys the environment sets over the file's (CI runs the
    packet tests once per receive path this way): ``HYPERPLANE_FAST_PATH``,
    ``HYPERPLANE_WORKERS``; a bad value is a ``UsageError`` naming the variable."""
    out: dict = {}
    for variable, key in OVERRIDES.items():
        value = os.environ.get(variable)
        if not value:
            continue
        if key == "workers" and value.isdigit():
            value = int(value)
        try:
            settings.check({"dataplane": {key: value}}, variable)
        except TopologyError as exc:
            raise UsageError(f"{variable}: {exc.reason}") from None
        out[key] = value
    return out


def dataplane_setting(topology: Topology, key: str):  # noqa: ANN201 - a setting's value
    """``settings.dataplane.KEY`` as the environment (``dataplane_overrides``) or the
    topology sets it."""
    return {**settings.dataplane(topology.settings), **dataplane_overrides()}[key]


def dataplane_workers(topology: Topology) -> int:
    """``settings.dataplane.workers``: ``auto`` is one a core (at most ``MAX_WORKERS``)."""
    workers = dataplane_setting(topology, "workers")
    return min(os.cpu_count() or 1, settings.MAX_WORKERS) if workers == "auto" else workers


def dataplane_table(role: str, topology: Topology) -> list[str]:
    """The shared-memory session table of a dataplane process (it survives the process),
    sized by ``settings.dataplane.max_sessions`` (a sparse file: pages come with use)."""
    capacity = settings.dataplane(topology.settings)["max_sessions"]
    return ["--table", state.shm_path(role), "--capacity", str(capacity)]


def _start_zygote(data: dict) -> None:
    sock = state.zygote_socket()
    _start(data, "zygote", supervision.spec(
        names.PLANE_NS, procs.python_module("lambda_vm.zygote", "--socket", sock),
        state.log("zygote"), {"socket": sock}), "the environment zygote")


def _host_argv(topology: Topology, host: Host) -> list[str]:
    """The process serving ``host``'s real server (``services.servers``)."""
    service = host.service
    args = [service.kind, "--address", host.ip, "--port", str(service.port),
            "--name", host.name, "--data", str(state.path("hosts", host.name))]
    for option in ("user", "password", "database"):
        if getattr(service, option):
            args += [f"--{option}", getattr(service, option)]
    if service.target:
        target = topology.host(service.target)
        args += ["--target", f"{target.ip}:{target.service.port}"]
    return procs.python_module("hyperplane.services.servers", *args)


def _start_hosts(data: dict, topology: Topology) -> None:
    """Every host's real server, proxies last (their targets answer first); the warning
    of a server that fell back to a plain listener is kept in ``data["warnings"]``.  HTTP
    services are listeners of the one services process (``kernel.servicehub``)."""
    hosts = [h for v in topology.vpcs for h in v.hosts
             if h.service is not None and h.service.kind != "http"]
    for batch in ([h for h in hosts if h.service.kind != "proxy"],
                  [h for h in hosts if h.service.kind == "proxy"]):
        waiting = []
        for host in batch:
            ready = state.ready_file(host.name)
            state.path("hosts", host.name).mkdir(parents=True, exist_ok=True)
            entry = supervision.spec(desired.host_netns(topology, host.name),
                                     _host_argv(topology, host) + ["--ready", str(ready)],
                                     state.log(f"host-{host.name}"), {"file": str(ready)})
            pid = supervision.spawn(entry)
            data["procs"][f"host:{host.name}"] = pid
            data.setdefault("supervise", {})[f"host:{host.name}"] = entry
            waiting.append((host, entry, pid))
        state.save(data)
        for host, entry, pid in waiting:
            supervision.wait_ready(entry, pid, f"the {host.service.kind} service of host "
                                   f"{host.name}", HOST_READY_TIMEOUT)
            _note_warning(data, Path(entry["ready"]["file"]))


def _note_warning(data: dict, ready) -> None:  # noqa: ANN001 - a Path
    try:
        warning = json.loads(ready.read_text() or "{}").get("warning", "")
    except ValueError:
        return
    if warning:
        data.setdefault("warnings", []).append(warning)


def _start_flowlogs(data: dict, topology: Topology) -> None:
    """The topology's flow logs recorded (those of a previous run forgotten), and the
    flow-log collector (``emulator.flowlogd``), in this namespace."""
    flowfiles.update(lambda _old: flowlogs.topology_definitions(topology))
    ready = state.ready_file("flowlogs")
    _start(data, "flowlogs", supervision.spec(
        None, procs.python_module("hyperplane.emulator.flowlogd", "--ready", str(ready)),
        state.log("flowlogs"), {"file": str(ready)}), "the flow-log collector")


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
    if pids.get("supervisor"):
        procs.stop(pids["supervisor"])  # first: nothing may be started again meanwhile
    for record in (data.get("services") or {}).values():  # pids of restarted processes
        if record.get("pid"):
            pids.setdefault(f"pid:{record['pid']}", record["pid"])
    if pids.get("controller"):
        procs.stop(pids["controller"])  # then: nothing may make objects meanwhile
    # what the controller recorded until it stopped (it records before it makes)
    final = _reload() or {}
    pids.update(final.get("procs", {}))
    pids.update({f"pid:{r['pid']}": r["pid"] for r in (final.get("services") or {}).values()
                 if r.get("pid")})
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
    for name in state.SOCKETS:
        state.path(name).unlink(missing_ok=True)
    for shm in state.shm_files():  # the session tables (ours only: by the state's id)
        shm.unlink(missing_ok=True)
    for sub in ("envs", "ready", "resolv", "code", "hosts", "efs", "stacks"):
        shutil.rmtree(state.path(sub), ignore_errors=True)
