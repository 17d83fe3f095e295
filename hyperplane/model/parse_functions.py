"""The topology file's ``functions:``: Lambda functions and their ``vpc_config`` (pure).

A function entry:

    name: orders                     ^[A-Za-z0-9_-]{1,64}$, unique in the file
    code: examples/functions         a directory (relative: cwd, then the file's folder
                                     and its parents)
    handler: orders.handler          module.function (the module may be dotted)
    memory: 128                      MB, 128..10240
    timeout: 3                       seconds, 1..900
    networking: hyperplane           hyperplane | legacy; absent: the file's
                                     ``settings.networking``, else hyperplane
    reserved_concurrency: 10         0..1000; absent: unreserved
    runtime: python3.12              python3.x (the built-in runtime) | provided.*
                                     (the code's ``bootstrap``) | another name
                                     (created; invoking it says the runtime is not run)
    environment: {TABLE: orders}     the runtime's variables, strings (4 KB in all)
    file_system_configs:             EFS through an access point (``parse_storage``)
      - {access_point: fsap-..., local_mount_path: /mnt/data}
    vpc_config:                      absent, null, {} or both lists empty: no VPC
      subnet_ids: [subnet-a]         at most 16, all in one VPC
      security_group_ids: [sg-a]     at most 5, in that VPC
      ipv6_allowed_for_dual_stack: false

``FunctionParser`` is a part of the one topology parser (``parser.Parser`` inherits it):
``function`` reads one entry once the VPCs are parsed and returns a frozen ``Function``
(``topology``), with the usual ``FILE: field.path: reason`` errors.  ``FUNCTION_NAME``
and ``valid_handler`` are also the API's checks (``controller.api``).
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from hyperplane.model.fields import Fields, key, shown
from hyperplane.model.timing import NETWORKING_MODES
from hyperplane.model.topology import Function, Subnet, VpcConfig

MAX_FUNCTION_SUBNETS = 16
MAX_SECURITY_GROUPS = 5  # per function, and per host (AWS: per network interface)
MEMORY_RANGE = (128, 10240)
TIMEOUT_RANGE = (1, 900)
RESERVED_CONCURRENCY_RANGE = (0, 1000)
FUNCTION_KEYS = ("vpc_config", "memory", "timeout", "networking", "reserved_concurrency",
                 "runtime", "environment", "file_system_configs")
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RUNTIME = re.compile(r"[a-z][a-z0-9.]{0,40}")
OTHER_HANDLER = re.compile(r"\S{1,128}")
VARIABLE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]{0,127}")
ENVIRONMENT_BYTES = 4096  # AWS: 4 KB for all of a function's variables


def valid_handler(handler: str, runtime: str | None = None) -> bool:
    """A Python runtime's ``module.function`` (identifiers; the module may be dotted);
    another runtime's (``file.export``, ``dir/file.export``, a custom runtime's own
    words): no whitespace, at most 128 characters, as AWS checks it."""
    if runtime and not runtime.startswith("python"):
        return bool(OTHER_HANDLER.fullmatch(handler))
    parts = handler.split(".")
    return len(parts) >= 2 and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


class FunctionParser(Fields):
    """The ``functions:`` part of ``parser.Parser`` (which owns these tables)."""

    base_dir: str | None
    subnets: dict[str, tuple[Subnet, str]]
    function_paths: dict[str, str]

    def check_group_ref(self, path: str, group_id: str, vpc_id: str, user: str = "") -> None:
        raise NotImplementedError  # the parser's

    def file_system_configs(self, raw: object, path: str,
                            vpc_config: VpcConfig | None) -> tuple:
        raise NotImplementedError  # parse_storage.StorageParser's

    def function(self, raw: object, path: str) -> Function:
        """One entry of ``functions:``; the VPCs, subnets and groups are already known."""
        m = self.mapping(raw, path, ("name", "code", "handler"), FUNCTION_KEYS)
        name = self.name(m["name"], key(path, "name"), FUNCTION_NAME, self.function_paths,
                         "function name")
        handler = self.string(m["handler"], key(path, "handler"))
        runtime = None
        if m.get("runtime") is not None:
            runtime = self.name(m["runtime"], key(path, "runtime"), RUNTIME, {}, "runtime")
        if not valid_handler(handler, runtime):
            self.fail(key(path, "handler"), f"handler {shown(handler)} must be "
                      "'module.function' (Python identifiers; the module may be dotted)"
                      if not runtime or runtime.startswith("python") else
                      f"handler {shown(handler)} must be 1-128 characters without spaces")
        vpc_config = self._vpc_config(m.get("vpc_config"), key(path, "vpc_config"))
        memory = self.integer(m.get("memory", 128), key(path, "memory"), MEMORY_RANGE)
        timeout = self.integer(m.get("timeout", 3), key(path, "timeout"), TIMEOUT_RANGE)
        networking = self._networking(m.get("networking"), key(path, "networking"))
        reserved = m.get("reserved_concurrency")
        if reserved is not None:
            reserved = self.integer(reserved, key(path, "reserved_concurrency"),
                                    RESERVED_CONCURRENCY_RANGE)
        code = self._code_dir(m["code"], key(path, "code"))
        environment = self._environment(m.get("environment"), key(path, "environment"))
        file_systems = self.file_system_configs(m.get("file_system_configs"),
                                                key(path, "file_system_configs"), vpc_config)
        return Function(name, code, handler, vpc_config, memory, timeout, networking,
                        reserved, runtime, environment, file_systems)

    def _environment(self, raw: object, path: str) -> tuple[tuple[str, str], ...]:
        if raw is None:
            return ()
        m = self.mapping(raw, path, (), tuple(raw) if isinstance(raw, dict) else ())
        variables = []
        for name, value in m.items():
            if not VARIABLE.fullmatch(name):
                self.fail(key(path, name), f"variable name {shown(name)} must match "
                          f"^{VARIABLE.pattern}$")
            if not isinstance(value, str):
                self.fail(key(path, name), f"expected a string, got {shown(value)} (quote it)")
            variables.append((name, value))
        if sum(len(k) + len(v) for k, v in variables) > ENVIRONMENT_BYTES:
            self.fail(path, f"the variables take more than {ENVIRONMENT_BYTES} bytes")
        return tuple(variables)

    def _networking(self, raw: object, path: str) -> str | None:
        if raw is not None and raw not in NETWORKING_MODES:
            self.fail(path, f"unknown networking mode {shown(raw)} "
                      f"(known: {', '.join(NETWORKING_MODES)})")
        return None if raw is None else str(raw)

    def _code_dir(self, raw: object, path: str) -> str:
        text = self.string(raw, path)
        given = Path(text).expanduser()
        # the current directory, then the file's directory and its parents (so that
        # `code: examples/functions` in examples/quickstart.yaml works from anywhere)
        bases = [Path.cwd()]
        if self.base_dir:
            base = Path(self.base_dir).resolve()
            bases += [base, *base.parents]
        candidates = [given] if given.is_absolute() else [base / given for base in bases]
        for candidate in candidates:
            if candidate.is_dir():
                return str(candidate.resolve())
        if any(candidate.exists() for candidate in candidates):
            self.fail(path, f"code {shown(text)} is not a directory")
        looked = ", ".join(str(candidate) for candidate in candidates)
        self.fail(path, f"code directory {shown(text)} does not exist (looked at {looked})")

    def _vpc_config(self, raw: object, path: str) -> VpcConfig | None:
        if raw is None:
            return None
        m = self.mapping(raw, path, (), ("subnet_ids", "security_group_ids",
                                         "ipv6_allowed_for_dual_stack"))
        subnets_path = key(path, "subnet_ids")
        groups_path = key(path, "security_group_ids")
        subnet_ids = self.ident_list(m.get("subnet_ids", []), subnets_path,
                                     MAX_FUNCTION_SUBNETS, "subnet id")
        group_ids = self.ident_list(m.get("security_group_ids", []), groups_path,
                                    MAX_SECURITY_GROUPS, "security group id")
        ipv6 = self.boolean(m.get("ipv6_allowed_for_dual_stack", False),
                            key(path, "ipv6_allowed_for_dual_stack"))
        if not subnet_ids and not group_ids:
            return None  # as in AWS: empty lists mean "not attached to a VPC"
        if not group_ids:
            self.fail(groups_path, "subnet_ids are given but no security group; give both")
        if not subnet_ids:
            self.fail(subnets_path, "security_group_ids are given but no subnet; give both")
        vpc_id = self._function_vpc(subnet_ids, subnets_path)
        for index, group_id in enumerate(group_ids):
            self.check_group_ref(f"{groups_path}[{index}]", group_id, vpc_id,
                                 " (the VPC of the function's subnets)")
        return VpcConfig(subnet_ids, group_ids, vpc_id, ipv6)

    def _function_vpc(self, subnet_ids: tuple[str, ...], path: str) -> str:
        first: Subnet | None = None
        for index, subnet_id in enumerate(subnet_ids):
            if subnet_id not in self.subnets:
                self.fail(f"{path}[{index}]", f"unknown subnet {shown(subnet_id)}")
            subnet = self.subnets[subnet_id][0]
            first = first or subnet
            if subnet.vpc_id != first.vpc_id:
                self.fail(f"{path}[{index}]", f"subnet {shown(subnet_id)} is in "
                          f"{subnet.vpc_id} but '{first.id}' is in {first.vpc_id}; a "
                          "function's subnets must all be in one VPC")
        assert first is not None
        return first.vpc_id
