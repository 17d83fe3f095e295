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

from hyperplane.controller import sgchange
from hyperplane.controller.functions import HYPERPLANE, LEGACY, FunctionRecord, VpcSpec, describe
from hyperplane.controller.lifecycle import Effects
from hyperplane.controller.service import READY_TIMEOUT, Controller
from hyperplane.errors import ApiError
from hyperplane.kernel import procs, state
from hyperplane.model import durations
from hyperplane.model.parse_functions import FUNCTION_NAME, valid_handler
from hyperplane.policy.groups import peers


def _spec(request: dict) -> VpcSpec | None | bool:
    """The request's VPC configuration: False when it names none (update keeps it)."""
    if request.get("subnet_ids") is None and request.get("security_group_ids") is None:
        return False
    return VpcSpec(tuple(request.get("subnet_ids") or ()),
                   tuple(request.get("security_group_ids") or ()))


def _check_fields(request: dict) -> None:
    name = request.get("name")
    if name is not None and not FUNCTION_NAME.fullmatch(str(name)):
        raise ApiError("InvalidParameterValueException", f"function name {name!r} must match "
                       f"^{FUNCTION_NAME.pattern}$")
    handler = request.get("handler")
    if handler is not None and not valid_handler(handler):
        raise ApiError("InvalidParameterValueException",
                       f"handler {handler!r} must be 'module.function'")
    memory = request.get("memory")
    if memory is not None and not 128 <= int(memory) <= 10240:
        raise ApiError("InvalidParameterValueException", "MemorySize must be 128 to 10240 MB")
    timeout = request.get("timeout")
    if timeout is not None and not 1 <= int(timeout) <= 900:
        raise ApiError("InvalidParameterValueException", "Timeout must be 1 to 900 seconds")
    reserved = request.get("reserved_concurrency")
    if reserved is not None and not 0 <= int(reserved) <= 1000:
        raise ApiError("InvalidParameterValueException",
                       "ReservedConcurrentExecutions must be 0 to 1000")
    code = request.get("code")
    if code is not None and not os.path.isdir(str(code)):
        raise ApiError("InvalidParameterValueException",
                       f"--code {code!r} is not a directory")
    networking = request.get("networking")
    if networking is not None and networking not in (HYPERPLANE, LEGACY):
        raise ApiError("InvalidParameterValueException",
                       f"networking must be {HYPERPLANE} or {LEGACY}, not {networking!r}")


def op_function_create(ctl: Controller, request: dict) -> dict:
    _check_fields(request)
    for key in ("name", "handler", "code"):
        if not request.get(key):
            raise ApiError("InvalidParameterValueException", f"--{key} is required")
    spec = _spec(request)
    record = FunctionRecord(request["name"], request["handler"], request["code"],
                            int(request.get("memory") or 128), int(request.get("timeout") or 3),
                            request.get("reserved_concurrency"), request.get("networking") or "",
                            vpc=spec or None)
    with ctl.changing() as now:
        fn = ctl.model.create(record, now)
    return describe(fn, ctl.topology.account)


def op_function_update(ctl: Controller, request: dict) -> dict:
    _check_fields(request)
    changes = {k: request.get(k) for k in ("handler", "code", "memory", "timeout",
                                            "reserved_concurrency")}
    with ctl.changing() as now:
        fn = ctl.model.update(request["name"], now, vpc=_spec(request), **changes)
    return describe(fn, ctl.topology.account)


def op_function_delete(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        effects = ctl.model.delete(request["name"])
        ctl.commit(effects)
        ctl.commit(ctl.model.tick(ctl.clock.now(), set(ctl.busy), {}))
    return {"FunctionName": request["name"], "deleted": True}


def op_function_get(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        fn = ctl.model.function(request["name"])
        return _view(ctl, fn)


def op_function_list(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        return {"Functions": [_view(ctl, fn) for fn in ctl.model.functions.values()]}


def _view(ctl: Controller, fn: FunctionRecord) -> dict:
    view = describe(fn, ctl.topology.account)
    view["Enis"] = [e.id for e in ctl.model.enis if fn.name in e.functions]
    view["Environments"] = sum(1 for e in ctl.model.envs if e.function == fn.name)
    view["LastInvoked"] = fn.last_invoked
    return view


def op_invoke(ctl: Controller, request: dict) -> dict:
    return ctl.invoke(request["name"], request.get("payload"))


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
                "clock": {"now": ctl.clock.now(), "offset": ctl.clock.offset},
                "timing": ctl.model.timing.summary()}


# -- EC2: deleting what Lambda ENIs depend on --------------------------------------------------
def _deleted(ctl: Controller, kind: str, ident: str, lookup, error: str,  # noqa: ANN001
             what: str) -> dict:
    """The record of deletions, after checking ``ident`` exists (else AWS's NotFound)."""
    deleted = ctl.data.setdefault("deleted", {"subnets": [], "groups": []})
    try:
        lookup(ident)
    except KeyError:
        missing = True
    else:
        missing = ident in deleted[kind]
    if missing:
        raise ApiError(error, f"The {what} '{ident}' does not exist")
    return deleted


def _dependency(what: str, ident: str, holder: str, **extra: str) -> ApiError:
    return ApiError("DependencyViolation", f"The {what} '{ident}' has dependencies and "
                    f"cannot be deleted: {holder}.", **extra)


def op_delete_subnet(ctl: Controller, request: dict) -> dict:
    subnet_id = request["id"]
    with ctl.lock:
        deleted = _deleted(ctl, "subnets", subnet_id, ctl.topology.subnet,
                           "InvalidSubnetID.NotFound", "subnet ID")
        for eni in ctl.model.enis:
            if eni.key.subnet_id == subnet_id:
                raise _dependency("subnet", subnet_id, f"network interface {eni.id} "
                                  f"({eni.status}) is in it", eni=eni.id)
        for host in (h for vpc in ctl.topology.vpcs for h in vpc.hosts):
            if host.subnet == subnet_id:
                raise _dependency("subnet", subnet_id, f"host {host.name} ({host.ip}) is in it")
        deleted["subnets"].append(subnet_id)
        ctl.model.deleted_subnets.add(subnet_id)
        ctl.commit(Effects())
    return {"deleted": subnet_id}


def op_delete_security_group(ctl: Controller, request: dict) -> dict:
    group_id = request["id"]
    with ctl.lock:
        deleted = _deleted(ctl, "groups", group_id, ctl.topology.security_group,
                           "InvalidGroup.NotFound", "security group")
        for eni in ctl.model.enis:
            if group_id in eni.key.security_group_ids:
                raise _dependency("security group", group_id, f"network interface {eni.id} "
                                  f"({eni.status}) uses it", eni=eni.id)
        for vpc in ctl.topology.vpcs:
            for host in vpc.hosts:
                if group_id in host.security_groups:
                    raise _dependency("security group", group_id, f"host {host.name} uses it")
            for group in vpc.security_groups:
                if group.id != group_id and group.id not in deleted["groups"] and \
                        group_id in peers(group):
                    raise _dependency("security group", group_id,
                                      f"a rule of {group.id} names it")
        deleted["groups"].append(group_id)
        ctl.model.deleted_groups.add(group_id)
        ctl.commit(Effects())
    return {"deleted": group_id}


def op_sg_change(ctl: Controller, request: dict) -> dict:
    with ctl.lock:
        return sgchange.change(ctl, request)


OPS = {
    "function.create": op_function_create, "function.update": op_function_update,
    "function.delete": op_function_delete, "function.get": op_function_get,
    "function.list": op_function_list, "invoke": op_invoke, "scale": op_scale,
    "clock": op_clock, "status": op_status, "vpc.delete_subnet": op_delete_subnet,
    "vpc.delete_security_group": op_delete_security_group, "sg.change": op_sg_change,
}
