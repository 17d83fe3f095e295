"""Command-line commands of the control plane (click): ``function``, ``clock``,
``controller`` and ``vpc``.

Each is one request to the controller process (``emulator.requests``).
The function commands mirror ``aws lambda create-function`` and friends and
``function get --json`` prints Lambda's field names (``State``,
``StateReasonCode``, ``LastUpdateStatus``, ``VpcConfig``...).  An error the
emulated AWS API answers with (``ResourceNotReadyException``,
``DependencyViolation``...) prints one line naming it and exits 1; with
``--json`` the error is also printed on stdout as ``{"errorType", "errorMessage",
"statusCode"}``.  Registered on the main group by ``cli``.
"""

from __future__ import annotations

import json
import os
import sys

import click

from hyperplane.cli.output import emit
from hyperplane.emulator import requests, run
from hyperplane.errors import ApiError


def request(message: dict, as_json: bool = False, timeout: float = 60.0) -> dict:
    """The controller's result; an AWS-named error is printed and exits 1."""
    try:
        return requests.controller_request(message, timeout=timeout)
    except ApiError as exc:
        if as_json:
            click.echo(json.dumps(exc.error, indent=2))
        click.echo(f"hyperplane: {exc.kind}: {exc.message}", err=True)
        sys.exit(1)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item for item in value.replace(" ", "").split(",") if item]


# -- function ------------------------------------------------------------------------------
@click.group()
def function() -> None:
    """Lambda functions at run time: create, update, delete, get, list."""


def _function_options(creating: bool):
    def wrap(fn):
        options = [
            click.option("--subnet-ids", help="comma-separated subnet ids ('' for no VPC)"),
            click.option("--security-group-ids", help="comma-separated security group ids"),
            click.option("--handler", required=creating, help="module.function"),
            click.option("--code", required=creating, type=click.Path(file_okay=False),
                         help="the code directory"),
            click.option("--memory", type=int, help="MB (128-10240)"),
            click.option("--timeout", type=int, help="seconds (1-900)"),
            click.option("--reserved-concurrency", type=int,
                         help="at most this many concurrent invocations (0 throttles all)"),
            click.option("--json", "as_json", is_flag=True,
                         help="print the function's configuration as JSON"),
        ]
        if creating:
            options.append(click.option("--networking",
                                        type=click.Choice(["hyperplane", "legacy"]),
                                        help="legacy: an ENI per environment at cold start"))
        for option in reversed(options):
            fn = option(fn)
        return fn
    return wrap


def _fields(kwargs: dict) -> dict:
    code = kwargs.get("code")
    return {"handler": kwargs.get("handler"), "code": os.path.abspath(code) if code else None,
            "memory": kwargs.get("memory"), "timeout": kwargs.get("timeout"),
            "reserved_concurrency": kwargs.get("reserved_concurrency"),
            "networking": kwargs.get("networking"),
            "subnet_ids": _csv(kwargs.get("subnet_ids")),
            "security_group_ids": _csv(kwargs.get("security_group_ids"))}


def _function_text(f: dict) -> str:
    vpc = f["VpcConfig"]
    reason = f" ({f['StateReasonCode']}: {f['StateReason']})" if f.get("StateReasonCode") else ""
    update = f["LastUpdateStatus"] + (f" ({f['LastUpdateStatusReasonCode']})"
                                      if f.get("LastUpdateStatusReasonCode") else "")
    reserved = f["ReservedConcurrentExecutions"]
    return "\n".join([
        f"FunctionName      {f['FunctionName']}",
        f"State             {f['State']}{reason}",
        f"LastUpdateStatus  {update}",
        f"VpcConfig         {vpc['VpcId'] or '(no VPC)'} subnets "
        f"{','.join(vpc['SubnetIds']) or '-'} groups {','.join(vpc['SecurityGroupIds']) or '-'}",
        f"Handler           {f['Handler']}  memory {f['MemorySize']} MB  timeout "
        f"{f['Timeout']} s  networking {f['Networking']}  reserved "
        f"{'-' if reserved is None else reserved}",
    ])


@function.command("create")
@click.argument("name")
@_function_options(creating=True)
def function_create(name: str, as_json: bool, **kwargs) -> None:
    """Create NAME: Pending while its ENIs are made, then Active."""
    result = request({"op": "function.create", "name": name, **_fields(kwargs)}, as_json)
    emit(result, as_json, _function_text(result))


@function.command("update")
@click.argument("name")
@_function_options(creating=False)
def function_update(name: str, as_json: bool, **kwargs) -> None:
    """Change NAME; a new VPC configuration is InProgress while the old one serves."""
    result = request({"op": "function.update", "name": name, **_fields(kwargs)}, as_json)
    emit(result, as_json, _function_text(result))


@function.command("delete")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def function_delete(name: str, as_json: bool) -> None:
    """Delete NAME; its ENIs are deleted later if no other function uses them."""
    result = request({"op": "function.delete", "name": name}, as_json)
    emit(result, as_json, f"deleted {name}")


@function.command("get")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Lambda's field names, as JSON")
def function_get(name: str, as_json: bool) -> None:
    """NAME's configuration and state."""
    result = request({"op": "function.get", "name": name}, as_json)
    emit(result, as_json, _function_text(result))


@function.command("list")
@click.option("--json", "as_json", is_flag=True)
def function_list(as_json: bool) -> None:
    """Every function with its state."""
    result = request({"op": "function.list"}, as_json)
    lines = [f"{'NAME':<20} {'STATE':<9} {'REASON':<24} {'UPDATE':<11} {'VPC':<12} "
             f"{'NETWORKING':<10} ENVS"]
    for f in result["Functions"]:
        lines.append(f"{f['FunctionName']:<20} {f['State']:<9} "
                     f"{f.get('StateReasonCode') or '-':<24} {f['LastUpdateStatus']:<11} "
                     f"{f['VpcConfig']['VpcId'] or '-':<12} {f['Networking']:<10} "
                     f"{f['Environments']}")
    emit(result, as_json, "\n".join(lines))


# -- clock -----------------------------------------------------------------------------------
@click.group()
def clock() -> None:
    """The controller's emulated clock (every control-plane timer runs on it)."""


@clock.command("advance")
@click.argument("duration")
@click.option("--json", "as_json", is_flag=True)
def clock_advance(duration: str, as_json: bool) -> None:
    """Move the clock forward by DURATION (90s, 20m, 14d) and run what fell due."""
    result = request({"op": "clock", "advance": duration}, as_json)
    emit(result, as_json, f"clock advanced by {duration}; offset {result['offset']:.0f} s"
          + "".join(f"\n  {e}" for e in result["events"]))


@clock.command("show")
@click.option("--json", "as_json", is_flag=True)
def clock_show(as_json: bool) -> None:
    """The emulated time, the offset and the timing profile."""
    result = request({"op": "clock"}, as_json)
    t = result["timing"]
    emit(result, as_json, f"offset {result['offset']:.0f} s, profile {t['profile']}: "
          + ", ".join(f"{k} {v}" for k, v in t.items() if k != "profile"))


# -- controller ---------------------------------------------------------------------------------
@click.group()
def controller() -> None:
    """The controller process (the control plane)."""


@controller.command("start")
def controller_start() -> None:
    """Start the controller again (after a crash or kill); it recovers its state."""
    pid = run.start_controller()
    click.echo(f"controller started (pid {pid})")


@controller.command("stop")
def controller_stop() -> None:
    """Stop the controller (the supervisor leaves it stopped until `controller start`);
    the dataplane and environments keep running."""
    pid = run.stop_controller()
    if pid:
        click.echo(f"controller stopped (pid {pid})")
    else:
        click.echo("the controller is not running")


@controller.command("status")
@click.option("--json", "as_json", is_flag=True)
def controller_status(as_json: bool) -> None:
    """The controller's pid, clock and records."""
    result = request({"op": "status"}, as_json)
    emit(result, as_json, f"{len(result['functions'])} functions, {len(result['enis'])} "
          f"ENIs, {result['envs']} environments ({len(result['busy'])} busy); clock offset "
          f"{result['clock']['offset']:.0f} s, profile {result['timing']['profile']}")


# -- vpc -------------------------------------------------------------------------------------------
@click.group()
def vpc() -> None:
    """EC2 calls that Lambda ENIs get in the way of."""


@vpc.command("delete-subnet")
@click.argument("subnet_id")
@click.option("--json", "as_json", is_flag=True)
def delete_subnet(subnet_id: str, as_json: bool) -> None:
    """Delete SUBNET_ID (DependencyViolation while a Lambda ENI is in it)."""
    result = request({"op": "vpc.delete_subnet", "id": subnet_id}, as_json)
    emit(result, as_json, f"deleted {subnet_id}")


@vpc.command("delete-security-group")
@click.argument("group_id")
@click.option("--json", "as_json", is_flag=True)
def delete_security_group(group_id: str, as_json: bool) -> None:
    """Delete GROUP_ID (DependencyViolation while a Lambda ENI uses it)."""
    result = request({"op": "vpc.delete_security_group", "id": group_id}, as_json)
    emit(result, as_json, f"deleted {group_id}")


COMMANDS = (function, clock, controller, vpc)
