"""The controller's requests: the Lambda and EC2 calls the CLI makes (side effects).

Each ``op_*`` function takes the ``Controller`` and one decoded request and returns
the reply's body; an ``ApiError`` becomes ``{"ok": false, "error": {...}}`` with
AWS's exception name (``daemon`` does that).  Names follow the AWS CLI:
``function.create`` is ``aws lambda create-function``, ``vpc.delete_subnet`` is
``aws ec2 delete-subnet`` (which fails with ``DependencyViolation`` while a Lambda
ENI is left in the subnet), and so on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from hyperplane.controller import ec2, sgchange
from hyperplane.controller.functions import (
    DEFAULT_RUNTIME,
    HYPERPLANE,
    LEGACY,
    FunctionRecord,
    VpcSpec,
    describe,
)
from hyperplane.controller.service import READY_TIMEOUT, Controller
from hyperplane.errors import ApiError
from hyperplane.kernel import codestore, procs, state
from hyperplane.model import durations
from hyperplane.model.parse_functions import FUNCTION_NAME, valid_handler


def _spec(request: dict) -> VpcSpec | None | bool:
    """The request's VPC configuration: False when it names none (update keeps it)."""
    if request.get("subnet_ids") is None and request.get("security_group_ids") is None:
        return False
    return VpcSpec(tuple(request.get("subnet_ids") or ()),
                   tuple(request.get("security_group_ids") or ()))


def _check_fields(request: dict) -> None:
    """The fields' own limits, as Lambda checks them (InvalidParameterValueException)."""
    name = request.get("name")
    if name is not None and not FUNCTION_NAME.fullmatch(str(name)):
        raise ApiError("InvalidParameterValueException", f"function name {name!r} must match "
                       f"^{FUNCTION_NAME.pattern}$")
    handler = request.get("handler")
    if handler is not None and not valid_handler(handler, request.get("runtime")):
        raise ApiError("InvalidParameterValueException",
                       f"handler {handler!r} must be 'module.function'")
    for key, low, high, what in (("memory", 128, 10240, "MemorySize"),
                                 ("timeout", 1, 900, "Timeout"),
                                 ("reserved_concurrency", 0, 1000,
                                  "ReservedConcurrentExecutions")):
        value = request.get(key)
        if value is not None and not (isinstance(value, int) and low <= value <= high):
            raise ApiError("InvalidParameterValueException",
                           f"{what} must be an integer from {low} to {high}, not {value!r}")
    code = request.get("code")
    if code is not None and not os.path.isdir(str(code)):
        raise ApiError("InvalidParameterValueException",
                       f"--code {code!r} is not a directory")
    networking = request.get("networking")
    if networking is not None and networking not in (HYPERPLANE, LEGACY):
        raise ApiError("InvalidParameterValueException",
                       f"networking must be {HYPERPLANE} or {LEGACY}, not {networking!r}")
    environment = request.get("environment")
    if environment is not None and (not isinstance(environment, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in environment.items())):
        raise ApiError("InvalidParameterValueException",
                       "Environment.Variables must map names to strings")


def _code(request: dict) -> dict:
    """CodeSha256 and CodeSize of the request's code (given by the endpoint for a zip)."""
    if request.get("code") is None:
        return {}
    if request.get("code_sha256"):
        return {"code_sha256": request["code_sha256"], "code_size": request.get("code_size")}
    sha, size = codestore.digest_dir(request["code"])
    return {"code_sha256": sha, "code_size": size}


def _who(ctl: Controller, request: dict) -> str:
    """The caller's account; the model echoes the caller's region in ARNs."""
    ctl.model.region = request.get("region") or "us-east-1"
    return request.get("account") or ""


def op_function_create(ctl: Controller, request: dict) -> dict:
    _check_fields(request)
    for key in ("name", "handler", "code"):
        if not request.get(key):
            raise ApiError("InvalidParameterValueException", f"--{key} is required")
    spec = _spec(request)
    record = FunctionRecord(request["name"], request["handler"], request["code"],
                            int(request.get("memory") or 128), int(request.get("timeout") or 3),
                            request.get("reserved_concurrency"), request.get("networking") or "",
                            vpc=spec or None, runtime=request.get("runtime") or DEFAULT_RUNTIME,
                            environment=dict(request.get("environment") or {}),
                            role=request.get("role") or "",
                            description=request.get("description") or "",
                            region=request.get("region") or "us-east-1", **_code(request))
    with ctl.changing() as now:
        record.account = _who(ctl, request)
        fn = ctl.model.create(record, now)
        return _view(ctl, fn)


UPDATABLE = ("handler", "code", "memory", "timeout", "reserved_concurrency", "runtime",
             "environment", "role", "description", "code_sha256", "code_size")


def op_function_update(ctl: Controller, request: dict) -> dict:
    _check_fields(request)
    request = {**request, **_code(request)}
    changes = {k: request.get(k) for k in UPDATABLE}
    with ctl.changing() as now:
        account = _who(ctl, request)
        ctl.model.function(request["name"], account)
        fn = ctl.model.update(request["name"], now, vpc=_spec(request), **changes)
        return _view(ctl, fn)


def op_function_concurrency(ctl: Controller, request: dict) -> dict:
    """Put (``reserved``: N) or delete (``reserved``: null) a function's reservation; it
    changes no configuration, so no update is in progress."""
    _check_fields({"reserved_concurrency": request.get("reserved")})
    with ctl.changing():
        fn = ctl.model.function(request["name"], _who(ctl, request))
        fn.reserved_concurrency = request.get("reserved")
        return {"ReservedConcurrentExecutions": fn.reserved_concurrency}


def op_account_settings(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        account = request.get("account") or ctl.topology.account
        mine = [f for f in ctl.model.functions.values() if (f.account or account) == account]
        reserved = sum(f.reserved_concurrency or 0 for f in mine)
        size = sum(f.code_size for f in mine)
    return {"AccountLimit": {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000,
                             "CodeSizeZipped": 52428800, "ConcurrentExecutions": 1000,
                             "UnreservedConcurrentExecutions": 1000 - reserved},
            "AccountUsage": {"TotalCodeSize": size, "FunctionCount": len(mine)}}


def op_accounts(ctl: Controller, request: dict) -> dict:
    """Every account of the topology (the file's, and each VPC's owner)."""
    with ctl.lock:
        topology = ctl.topology
        owners = {topology.vpc_account(v.id) for v in topology.vpcs}
    return {"default": topology.account, "accounts": sorted({topology.account} | owners)}


def op_function_delete(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        ctl.model.function(request["name"], _who(ctl, request))
        effects = ctl.model.delete(request["name"])
        ctl.commit(effects)
        ctl.commit(ctl.model.tick(ctl.clock.now(), set(ctl.busy), {}))
    codestore.forget(request["name"])
    return {"FunctionName": request["name"], "deleted": True}


def op_function_get(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        fn = ctl.model.function(request["name"], _who(ctl, request))
        return _view(ctl, fn)


def op_function_list(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        account = _who(ctl, request)
        return {"Functions": [_view(ctl, fn) for fn in ctl.model.functions.values()
                              if not account or fn.account in ("", account)]}


def _view(ctl: Controller, fn: FunctionRecord) -> dict:
    view = describe(fn, ctl.topology.account, ctl.model.region)
    view["Enis"] = [e.id for e in ctl.model.enis if fn.name in e.functions]
    view["Environments"] = sum(1 for e in ctl.model.envs if e.function == fn.name)
    view["LastInvoked"] = fn.last_invoked
    return view


def op_invoke(ctl: Controller, request: dict,
              on_line: Callable[[dict], None] | None = None) -> dict:
    """``mode``: RequestResponse (the default), Event (202 at once, run meanwhile) or
    DryRun (204, nothing run); ``log_tail``: the last 4 KB of the invocation's log;
    ``client_context``: the JSON the runtime gets as ``Lambda-Runtime-Client-Context``.
    With ``on_line`` (``"stream": true``, see ``daemon``) a streamed response's lines
    are relayed there as the agent sends them."""
    mode = request.get("mode") or "RequestResponse"
    name = request["name"]
    with ctl.lock:
        account = _who(ctl, request)
        ctl.model.function(name, account)
    if mode == "DryRun":
        return {"status": 204}
    if mode == "Event":
        ctl.serial(ctl.admit, name)  # not ready: refused now, as AWS does
        threading.Thread(target=ctl.invoke_quietly, args=(name, request.get("payload")),
                         daemon=True).start()
        return {"status": 202}
    return ctl.invoke(name, request.get("payload"), bool(request.get("log_tail")),
                      request.get("client_context"), on_line)


def op_scale(ctl: Controller, request: dict) -> dict:
    """Start ``count`` environments of a function at once (a burst), ready when returned."""
    def make() -> list:
        with ctl.lock:
            now = ctl.clock.now()
            fn = ctl.model.admit(request["name"], now)
            return ctl.new_envs(fn, int(request["count"]), now)
    made = ctl.serial(make)
    for env in made:
        if not procs.wait_until(lambda e=env: os.path.exists(state.env_socket(e.index)),
                                 READY_TIMEOUT, 0.002):
            raise RuntimeError(f"environment {env.id} did not start; see {state.log(env.id)}")
    return {"envs": [e.to_dict() for e in made]}


def op_clock(ctl: Controller, request: dict) -> dict:
    if request.get("advance") is not None:
        try:
            seconds = durations.parse(request["advance"])
        except ValueError as exc:
            raise ApiError("InvalidParameterValueException", str(exc)) from None
        result = ctl.advance(seconds)
    else:
        result = {"now": ctl.clock.now(), "offset": ctl.clock.offset, "events": []}
    result["timing"] = ctl.model.timing.summary()
    return result


def op_status(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        return {"functions": [_view(ctl, fn) for fn in ctl.model.functions.values()],
                "enis": [e.to_dict() for e in ctl.model.enis],
                "envs": len(ctl.model.envs), "busy": sorted(ctl.busy),
                "orphan_leases": sorted(ctl.orphans),
                "clock": {"now": ctl.clock.now(), "offset": ctl.clock.offset},
                "timing": ctl.model.timing.summary()}


def op_sg_change(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        return sgchange.change(ctl, request)


def op_resync(ctl: Controller, request: dict) -> dict:
    """The whole configuration to the dataplane now (the supervisor asks after it
    restarted the dataplane, which re-attached its sessions and waits for its ports)."""
    with ctl.lock:
        ctl.push()
    return {"pushed": True}


OPS = {
    "resync": op_resync,
    "function.create": op_function_create, "function.update": op_function_update,
    "function.delete": op_function_delete, "function.get": op_function_get,
    "function.list": op_function_list, "invoke": op_invoke, "scale": op_scale,
    "clock": op_clock, "status": op_status, "sg.change": op_sg_change,
    "function.concurrency": op_function_concurrency, "account.settings": op_account_settings,
    "accounts": op_accounts,
    **ec2.OPS,
}
