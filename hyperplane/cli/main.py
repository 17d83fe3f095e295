"""The ``hyperplane`` command line (click).

Every command but ``validate`` and ``graph FILE`` needs root (namespaces, raw sockets);
without it the command prints one line saying so and exits with code 2.  Errors in a
topology file or in a request exit with code 2 and one line; a failure of the
emulator itself exits with code 1.
"""

from __future__ import annotations

import base64
import json
import os
import sys

import click

from hyperplane.cli import conntrack, control, measure, network, observe, scale, template
from hyperplane.cli.output import emit, fail
from hyperplane.cli.progress import UpProgress
from hyperplane.emulator import cleanup as clean
from hyperplane.emulator import requests, run, running, stacks
from hyperplane.errors import ApiError, TopologyError, UnreachableError, UsageError

NO_ROOT = ("validate", "graph", "generate")  # graph FILE; graph alone says it needs root


class Group(click.Group):
    """Turns the project's known errors into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (TopologyError, UsageError) as exc:
            fail(str(exc), 2)
        except ApiError as exc:
            fail(str(exc), 1)
        except UnreachableError as exc:
            fail(f"a process of the emulator does not answer ({exc}); "
                  "see `hyperplane status`, or `hyperplane cleanup` after a crash", 1)
        except RuntimeError as exc:
            fail(str(exc), 1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hyperplane")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Emulate AWS Lambda functions reaching a VPC through shared Hyperplane ENIs."""
    help_asked = any(a in ("-h", "--help") for a in sys.argv[1:])
    if ctx.invoked_subcommand not in NO_ROOT and not help_asked and os.geteuid() != 0:
        fail("must run as root (namespaces and raw sockets); use sudo", 2)


def template_options(command):  # noqa: ANN001, ANN201 - a click command
    """The options of a CloudFormation/SAM template (``up`` and ``validate``)."""
    command = click.option("--code", "code", multiple=True, metavar="LogicalId=DIR",
                           help="a function's code directory (for Code.S3Bucket/S3Key, "
                                "or instead of the template's)")(command)
    command = click.option("--stack-name", help="the stack's name (default: the file's "
                                                "stem)")(command)
    return click.option("--parameter-overrides", "overrides", multiple=True,
                        metavar="Key=Value ...",
                        help="template parameters, as `sam deploy` takes them")(command)


def _options(overrides: tuple[str, ...], stack_name: str | None,
             code: tuple[str, ...]) -> stacks.Options:
    return stacks.Options(stack_name, template.parse_overrides(overrides),
                          template.parse_pairs(code, "--code"))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@template_options
def validate(file: str, overrides: tuple[str, ...], stack_name: str | None,
             code: tuple[str, ...]) -> None:
    """Check a topology file or a CloudFormation/SAM template without building anything
    (no root needed)."""
    loaded = running.load_source(file, _options(overrides, stack_name, code))
    topology = loaded.topology
    for line in template.stack_lines(loaded.stack, brief=True):
        click.echo(line)
    click.echo(f"{file}: ok ({len(topology.vpcs)} VPCs, {len(topology.functions)} functions)")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
@click.option("--no-wait", is_flag=True, help="return while functions are still Pending")
@click.option("--api-port", type=click.IntRange(1, 65535),
              help="the AWS endpoint's port on 127.0.0.1 (default: settings.api.port, 4566)")
@click.option("--no-api", is_flag=True, help="start no AWS-compatible endpoint")
@click.option("--tune-host", is_flag=True,
              help="raise the machine limits this topology exceeds (only those; see "
                   "docs/cli.md for each and how to undo it)")
@template_options
def up(file: str, as_json: bool, no_wait: bool, api_port: int | None, no_api: bool,
       tune_host: bool, overrides: tuple[str, ...], stack_name: str | None,
       code: tuple[str, ...]) -> None:
    """Validate FILE (a topology file, or a CloudFormation/SAM template), check the
    machine's limits, build it, start the daemons; return when no function is Pending."""
    result = run.up(file, wait=not no_wait, api_port=api_port, api=not no_api,
                    options=_options(overrides, stack_name, code),
                    progress=None if as_json else UpProgress(), tune_host=tune_host)
    for line in result.get("host_tuned", []):
        click.echo(f"up: {line}", err=True)
    emit(result, as_json, _status_text(result))


@main.command()
@click.option("--json", "as_json", is_flag=True)
def api(as_json: bool) -> None:
    """The AWS endpoint's URL, and the environment variables that point boto3 and the AWS
    CLI at it."""
    result = running.api_settings(running.require())
    emit(result, as_json, f"{result['url']}\n" + "\n".join(
        f"export {k}={v}" for k, v in result["environment"].items()))


@main.command()
def down() -> None:
    """Stop the processes and remove every object of the running topology."""
    if run.down():
        click.echo("down: every namespace, link and process removed")
    else:
        click.echo("down: nothing was up")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def cleanup(as_json: bool) -> None:
    """Remove what a killed run left (hp-* namespaces, recorded processes), nothing else."""
    result = clean.cleanup()
    emit(result, as_json, f"cleanup: removed {len(result['namespaces'])} namespaces, "
                           f"ended {len(result['processes'])} processes")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """What is up: functions, ENIs, environments, hosts, the dataplane."""
    result = running.status()
    emit(result, as_json, _status_text(result))


def _supervision_lines(view: dict) -> list[str]:
    sup = view.get("supervisor") or {}
    lines = [f"supervisor  pid {sup.get('pid')} "
             f"{'running' if sup.get('alive') else 'NOT RUNNING: nothing is restarted'}"]
    for name, proc in (view.get("processes") or {}).items():
        if proc.get("down"):
            lines.append(f"down        {name}: {proc['down']}")
        elif proc.get("restarts"):
            lines.append(f"restarted   {name} {proc['restarts']} times (pid {proc['pid']})")
    return lines


def _worker_lines(workers: list[dict]) -> list[str]:
    """A group's workers (``dataplane.workers``): one line each."""
    return [f"  worker {w['index']}  pid {w['pid']}, ports {w['ports'][0]}-{w['ports'][1]}, "
            f"restarts {w['restarts']}" + (f", DOWN: {w['down']}" if w.get("down") else "")
            for w in workers]


def _status_text(s: dict) -> str:
    if not s.get("up"):
        return "nothing is up"
    dp, ctl = s["dataplane"], s["controller"]
    endpoint = s.get("api") or {}
    lines = [f"topology    {s['topology']}",
             f"dataplane   pid {dp['pid']} {'running' if dp['alive'] else 'NOT RUNNING'}, "
             f"{dp['sessions_active']} sessions, restarts {dp.get('restarts', 0)}, "
             f"fast path {dp.get('fast_path') or '-'}",
             *_worker_lines(dp.get("workers") or []),
             f"controller  pid {ctl['pid']} {'running' if ctl['alive'] else 'NOT RUNNING'}, "
             f"timing profile {s['timing']['profile']}, restarts {ctl.get('restarts', 0)}",
             *_supervision_lines(s.get("supervision") or {}),
             f"ENIs        {s['enis']}    environments {s['environments']}",
             f"AWS API     {endpoint.get('url') or 'not started (--no-api)'}"]
    for f in s["functions"]:
        lines.append(f"function    {f['name']:<16} {f['state']:<8} {f['vpc_id'] or '(no VPC)'} "
                     f"ENIs {', '.join(f['enis']) or '-'}  envs {f['environments']}")
    for h in s["hosts"]:
        service = f"  {h['service']}:{h['port']}" if h.get("service") else ""
        lines.append(f"host        {h['name']:<16} {h['ip']:<15} {h['subnet']} "
                     f"({h['namespace']}){service}")
    lines += [f"warning     {w.removeprefix('warning: ')}" for w in s.get("warnings", [])]
    lines += template.stack_lines(s.get("stack") or {}, s.get("eni_sets"))
    return "\n".join(lines)


@main.group()
def eni() -> None:
    """Hyperplane ENIs."""


@eni.command("list")
@click.option("--json", "as_json", is_flag=True)
def eni_list(as_json: bool) -> None:
    """One row per ENI: one per (subnet, security-group set), shared by functions."""
    rows = running.eni_rows(running.require())
    text = [f"{'ID':<22} {'VPC':<10} {'SUBNET':<10} {'IP':<15} {'STATUS':<9} "
            f"{'SECURITY GROUPS':<20} FUNCTIONS"]
    for r in rows:
        text.append(f"{r['id']:<22} {r['vpc']:<10} {r['subnet']:<10} {r['ip']:<15} "
                    f"{r['status']:<9} {','.join(r['security_groups']):<20} "
                    f"{','.join(r['functions'])}")
    emit(rows, as_json, "\n".join(text))


@main.command()
@click.argument("function")
@click.option("--payload", default="{}", help="the event, as JSON")
@click.option("--json", "as_json", is_flag=True,
              help="print the whole reply: result, cold, durations, environment, ENI")
@click.option("--stream/--no-stream", default=True,
              help="print a streamed response's bytes as they arrive (the default); "
                   "--no-stream waits for the whole body and prints it as JSON")
def invoke(function: str, payload: str, as_json: bool, stream: bool) -> None:
    """Run FUNCTION's handler in an execution environment and print its JSON result
    (a streamed response: its bytes, as the function sends them)."""
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from None
    streamed = [False]
    try:
        if as_json or not stream:
            reply = requests.invoke(function, event)
        else:
            reply = _print_stream(function, event, streamed)
    except ApiError as exc:  # the Lambda API refused: e.g. not ready, throttled
        click.echo(json.dumps(exc.error, indent=2 if as_json else None))
        click.echo(f"hyperplane: {exc}", err=True)
        sys.exit(1)
    failed = "errorType" in reply
    if streamed[0]:  # the body is out; an error after it began goes to stderr
        if failed:
            click.echo(f"hyperplane: {reply['errorType']}: {reply.get('errorMessage', '')}",
                       err=True)
    elif as_json:
        click.echo(json.dumps(reply, indent=2))
    elif failed:
        click.echo(json.dumps({k: reply[k] for k in ("errorMessage", "errorType")}))
    else:
        click.echo(json.dumps(reply["result"]))
    if failed:
        sys.exit(1)


def _print_stream(function: str, event: object, streamed: list[bool]) -> dict:
    """Invoke with the stream relayed: each chunk to stdout as it arrives; the reply."""
    out = sys.stdout.buffer
    for line in requests.invoke_stream({"op": "invoke", "name": function, "payload": event}):
        if "reply" in line:
            return line["reply"]
        streamed[0] = True
        if "chunk" in line:
            out.write(base64.b64decode(line["chunk"]))
            out.flush()
    return {}


@main.command("exec", context_settings={"ignore_unknown_options": True,
                                        "allow_interspersed_args": False})
@click.option("--function", "function", help="run in an execution environment of FUNCTION")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def exec_(function: str | None, args: tuple[str, ...]) -> None:
    """Run a command in a host's namespace (HOST -- CMD) or a function's environment."""
    argv = list(args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if function:
        if not argv:
            raise UsageError("usage: hyperplane exec --function NAME -- CMD...")
        sys.exit(requests.exec_in_function(function, running.require().vpc_of_subnet, argv))
    if len(argv) < 2:
        raise UsageError("usage: hyperplane exec HOST -- CMD...")
    host, command = argv[0], argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("usage: hyperplane exec HOST -- CMD...")
    sys.exit(running.exec_in_host(host, command))


@main.command()
@click.option("--json", "as_json", is_flag=True)
def stats(as_json: bool) -> None:
    """Dataplane counters: per ENI and global, every drop reason by name."""
    recorded = running.require()
    result = requests.dataplane_request({"op": "stats"})["stats"]
    lines = [f"{k:<24} {v}" for k, v in sorted(result["global"].items())]
    for eni_id, counters in sorted(result["enis"].items()):
        lines.append(f"[{eni_id}]")
        lines += [f"  {k:<22} {v}" for k, v in sorted(counters.items())]
    if "natgw" in recorded.data["procs"]:  # the NAT gateway role's own counters
        natgw = requests.natgw_stats()
        result["nat_gateways"] = natgw
        for gateway_id, counters in sorted(natgw["gateways"].items()):
            lines.append(f"[{gateway_id}]")
            lines += [f"  {k:<22} {v}" for k, v in sorted(counters.items())]
            metrics = natgw["cloudwatch"].get(gateway_id, {})
            lines.append(f"[{gateway_id}] CloudWatch AWS/NATGateway")
            lines += [f"  {k:<26} {v}" for k, v in metrics.items()]
    emit(result, as_json, "\n".join(lines))


for _command in (*network.COMMANDS, *control.COMMANDS, *measure.COMMANDS, *observe.COMMANDS,
                 *scale.COMMANDS, *conntrack.COMMANDS):
    main.add_command(_command)


if __name__ == "__main__":
    main()
