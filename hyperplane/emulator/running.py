"""The running topology as recorded, and the views the CLI prints (side effects: reads).

``current()`` reads the state database and parses the recorded topology again
(``Running``); ``require()`` is the same or a ``UsageError`` when nothing is up.
``load`` validates a topology file with its settings; ``load_source`` a topology file or
a template (``stacks``) (``validate``, ``up``).
``status`` and ``eni_rows`` are the project's own views (snake_case keys).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from hyperplane.controller.functions import FunctionRecord
from hyperplane.dataplane import shm
from hyperplane.emulator import stacks
from hyperplane.emulator.requests import dataplane_request, nothing_up
from hyperplane.errors import UnreachableError, UsageError
from hyperplane.fabric.desired import host_netns
from hyperplane.kernel import procs, state
from hyperplane.kernel.vpcservices import resolv_file
from hyperplane.model import settings, timing
from hyperplane.model.document import load_topology
from hyperplane.model.enis import Eni
from hyperplane.model.envs import Env
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Function, Topology, VpcConfig


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

    def vpc_of_subnet(self, subnet_id: str) -> str:
        return self.topology.subnet(subnet_id).vpc_id


def current() -> Running | None:
    data = state.load()
    if data is None:
        return None
    return Running(data, parse_topology(data["document"], data["source"]))


def require() -> Running:
    running = current()
    if running is None:
        raise nothing_up()
    return running


def load(path: str) -> Topology:
    """Load and validate a topology file, settings included."""
    topology = load_topology(path)
    settings.check(topology.settings, path)
    return topology


def load_source(path: str, options: stacks.Options | None = None, code_root: Path | None = None,
                build: bool = False) -> stacks.Loaded:
    """A topology file or a CloudFormation/SAM template (``stacks``), as the topology, the
    document the state keeps (code directories absolute) and the stack's view (None for
    a topology file).  ``code_root``: where a template's inline code is written (a
    temporary directory when None, removed before returning: ``validate``)."""
    if not stacks.is_template_file(path):
        if options and (options.overrides or options.code or options.stack_name):
            raise UsageError("--parameter-overrides, --stack-name and --code are for "
                             f"CloudFormation/SAM templates; {path} is a topology file")
        topology = load(path)
        return stacks.Loaded(topology, _document(path, topology), {})
    if code_root is not None:
        return stacks.load_template(path, options or stacks.Options(), code_root, build)
    with tempfile.TemporaryDirectory(prefix="hp-validate-") as tmp:
        return stacks.load_template(path, options or stacks.Options(), Path(tmp), build)


def _document(path: str, topology: Topology) -> dict:
    """The file's document with code directories made absolute."""
    with open(path) as fh:
        document = yaml.safe_load(fh)
    for raw, function in zip(document.get("functions") or [], topology.functions, strict=True):
        raw["code"] = function.code
    return document


def exec_in_host(name: str, argv: list[str]) -> int:
    running = require()
    try:
        host = running.topology.host(name)
    except KeyError:
        raise UsageError(f"no host named {name!r} in {running.data['source']}") from None
    return procs.exec_in(host_netns(running.topology, name), argv, resolv_file(host.vpc_id))


# -- views ------------------------------------------------------------------------------
def eni_rows(running: Running) -> list[dict]:
    return [{"id": e.id, "vpc": e.key.vpc_id, "subnet": e.key.subnet_id,
             "security_groups": list(e.key.security_group_ids), "ip": e.ip, "mac": e.mac,
             "interface_type": "lambda", "description": e.description,
             "functions": list(e.functions), "interface": e.plane_link, "status": e.status,
             "spill": e.spill, "legacy_environment": e.legacy_env,
             "delete_at": e.delete_at}
            for e in running.enis]


def _function_rows(running: Running) -> list[dict]:
    envs, enis = running.envs, running.enis
    return [{"name": f.name, "state": f.state, "reason_code": f.state_reason_code,
             "last_update_status": f.last_update_status, "networking": f.networking,
             "vpc_id": f.vpc_id, "enis": [e.id for e in enis if f.name in e.functions],
             "environments": sum(1 for e in envs if e.function == f.name)}
            for f in running.functions]


def _process(pid: int | None, record: dict | None = None) -> dict:
    out = {"pid": pid, "alive": bool(pid and procs.alive(pid))}
    if record is not None:
        out.update(restarts=record.get("restarts", 0), down=record.get("down"))
    return out


def pid_of(data: dict, name: str) -> int | None:
    """A process's pid: the supervisor's (it restarted it), else the one recorded first."""
    record = (data.get("services") or {}).get(name)
    recorded = data["procs"].get(name)
    if not (record and record.get("pid")):
        return recorded
    if (recorded and recorded != record["pid"] and not procs.alive(record["pid"])
            and procs.alive(recorded)):
        return recorded  # started again by hand (`controller start`) since
    return record["pid"]


def supervision_view(data: dict) -> dict:
    """The supervisor, and every supervised process: pid, alive, restarts, why down."""
    services = data.get("services") or {}
    return {"supervisor": _process(data["procs"].get("supervisor")),
            "processes": {name: _process(pid_of(data, name), services.get(name, {}))
                          for name in sorted(data.get("supervise") or {})}}


def status() -> dict:
    running = current()
    if running is None:
        return {"up": False, "state_dir": str(state.state_dir())}
    data, topology = running.data, running.topology
    try:
        full = dataplane_request({"op": "stats"})["stats"]
        stats, fast_path = full["global"], (full.get("fast_path") or {}).get("mode")
        workers = full.get("workers") or []
    except (UnreachableError, OSError):
        stats, fast_path, workers = None, None, []
    hosts = [{"name": h.name, "vpc": h.vpc_id, "subnet": h.subnet, "ip": h.ip,
              "namespace": host_netns(topology, h.name),
              "service": h.service.kind if h.service else None,
              "port": h.service.port if h.service else None}
             for v in topology.vpcs for h in v.hosts]
    return {"up": True, "topology": data["source"], "state_dir": str(state.state_dir()),
            "dataplane": {**_process(pid_of(data, "dataplane"),
                                     (data.get("services") or {}).get("dataplane", {})),
                          "sessions_active": stats["sessions_active"] if stats else None,
                          "fast_path": fast_path, "workers": workers},
            "controller": _process(pid_of(data, "controller"),
                                   (data.get("services") or {}).get("controller", {})),
            "supervision": supervision_view(data),
            "timing": timing.timing(topology.settings).summary(),
            "functions": _function_rows(running), "hosts": hosts, "enis": len(data["enis"]),
            "environments": len(running.envs), "namespaces": sorted(data["namespaces"]),
            "api": {**(data.get("api") or {}), **_process(pid_of(data, "endpoint"))}
            if data.get("api") else None, "warnings": list(data.get("warnings", [])),
            "stack": data.get("stack"), "eni_sets": eni_sets(running)}


def eni_sets(running: Running) -> list[dict]:
    """The ENIs, one per (subnet, security-group set), named by the template's logical ids
    when a stack made them."""
    logical = {r["physical_id"]: r["logical_id"]
               for r in (running.data.get("stack") or {}).get("resources", [])}
    return [{"id": e.id, "subnet": e.key.subnet_id,
             "subnet_logical": logical.get(e.key.subnet_id, "-"),
             "security_groups": [f"{g} ({logical.get(g, '-')})"
                                 for g in e.key.security_group_ids],
             "ip": e.ip, "functions": list(e.functions)}
            for e in running.enis]


def sessions(eni_id: str | None = None, nat: bool = False, ask: bool = False) -> list[dict]:
    """The sessions of the dataplane (or of the NAT gateways' process): read from its
    shared-memory table, or asked of the process (``ask``)."""
    require()
    role = "natgw" if nat else "dataplane"
    if ask:
        if nat:
            raise UsageError("the NAT gateways' sessions are read from their table only "
                             "(without --ask)")
        return dataplane_request({"op": "conntrack", "eni": eni_id})["sessions"]
    try:
        rows = [row for path in state.shm_tables(role) for row in shm.read_sessions(path)]
    except FileNotFoundError:
        raise UsageError(f"no {role} session table ({state.shm_path(role)}): "
                         + ("the topology has no NAT gateway" if nat else
                            "is the dataplane running?")) from None
    return [r for r in rows if eni_id is None or r.get("eni") == eni_id]


def api_settings(running: Running) -> dict:
    """The endpoint's URL and the variables SDKs read (the access key selects the
    account: the file's own here; any secret is accepted)."""
    endpoint = running.data.get("api")
    if not endpoint:
        raise UsageError("the AWS endpoint was not started (`hyperplane up` without "
                         "--no-api starts it)")
    return {"url": endpoint["url"], "port": endpoint["port"],
            "environment": {"AWS_ENDPOINT_URL": endpoint["url"],
                            "AWS_ACCESS_KEY_ID": running.topology.account,
                            "AWS_SECRET_ACCESS_KEY": "hyperplane",
                            "AWS_DEFAULT_REGION": "us-east-1"}}
