"""Command-line commands of VPC Flow Logs (click): ``flow-logs`` (show the records),
``flow-logs enable|disable|list``.

Registered with ``observe``'s commands; errors become one line and an exit code in
``cli.main`` (an unknown resource or a bad format exits 2).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import click

from hyperplane.emulator import flowlogs, running
from hyperplane.errors import UsageError
from hyperplane.kernel import flowfiles
from hyperplane.model import flowlogs as fl

FOLLOW_POLL = 0.5


def _target(vpc: str | None, subnet: str | None, eni: str | None) -> flowlogs.Target:
    given = [(kind, value) for kind, value in (("VPC", vpc), ("Subnet", subnet),
                                                ("NetworkInterface", eni)) if value]
    if len(given) != 1:
        raise UsageError("name exactly one of --vpc ID, --subnet ID, --eni ID")
    return flowlogs.Target(*given[0])


def _spec(traffic_type: str | None, fmt: str | None, interval: int | None) -> fl.FlowLogSpec:
    try:
        return fl.check_spec(traffic_type, fmt, interval)
    except ValueError as exc:
        field, reason = exc.args
        raise UsageError(f"--{field.replace('_', '-')}: {reason}") from None


def _show_fields(fmt: str | None) -> tuple[str, ...] | None:
    if fmt is None:
        return None
    try:
        return fl.parse_format(fmt)
    except ValueError as exc:
        raise UsageError(f"--format: {exc}") from None


class Printer:
    """Records of log files, filtered, as text lines or JSON rows; remembers the files it
    has shown (``--follow`` shows only the new ones)."""

    def __init__(self, eni: str | None, vpc: str | None, fields: tuple[str, ...] | None,
                 as_json: bool) -> None:
        self.eni, self.vpc, self.fields, self.as_json = eni, vpc, fields, as_json
        self.seen: set[Path] = set()
        self.header = ""
        self.found = flowlogs.interfaces(running.require())

    def rows(self, path: Path) -> list[tuple[tuple[str, ...], str, dict]]:
        header, lines = flowlogs.read_file(path)
        fields = tuple(header.split())
        flow_log = path.name.split("_")[3] if path.name.count("_") >= 5 else None
        out = []
        for line in lines:
            row = flowlogs.parse_line(fields, line)
            if flowlogs.matches(row, self.eni, self.vpc, self.found):
                out.append((fields, line, {"flow_log_id": flow_log, **row}))
        return out

    def show_new(self) -> None:
        rows = flowlogs.definitions()
        for path in flowfiles.log_files(flowlogs.roots(rows)):
            if path in self.seen:
                continue
            self.seen.add(path)
            for fields, line, row in self.rows(path):
                self.emit(fields, line, row)

    def emit(self, fields: tuple[str, ...], line: str, row: dict) -> None:
        if self.as_json:
            click.echo(json.dumps(row))
            return
        if self.fields is not None:
            values = dict(zip(fields, line.split(" "), strict=False))
            fields, line = self.fields, fl.line(self.fields, values)
        header = fl.header(fields)
        if header != self.header:
            self.header = header
            click.echo(header)
        click.echo(line)


@click.group("flow-logs", invoke_without_command=True)
@click.option("--eni", "eni_id", metavar="ID", help="only this network interface's records")
@click.option("--vpc", "vpc_id", metavar="ID", help="only the records of this VPC's interfaces")
@click.option("--follow", is_flag=True, help="then print the records of each new log file")
@click.option("--pending", is_flag=True,
              help="the records of the windows still open (not written yet)")
@click.option("--format", "fmt", metavar="FORMAT",
              help='the fields to print ("${srcaddr} ${dstaddr} ..."; "-" where a file '
                   "has not the field)")
@click.option("--json", "as_json", is_flag=True,
              help="one JSON object per record (snake_case keys), one per line")
@click.pass_context
def flow_logs(ctx: click.Context, eni_id: str | None, vpc_id: str | None, follow: bool,
              pending: bool, fmt: str | None, as_json: bool) -> None:
    """VPC Flow Logs: the records written so far (oldest window first), and with a
    subcommand, which flow logs exist (enable, disable, list)."""
    if ctx.invoked_subcommand:
        return
    printer = Printer(eni_id, vpc_id, _show_fields(fmt), as_json)
    if pending:
        _show_pending(printer)
        return
    stopped: list[int] = []
    if follow:  # SIGINT (Ctrl-C) or SIGTERM ends it with exit 0; set explicitly, as a
        for signum in (signal.SIGINT, signal.SIGTERM):  # background process ignores SIGINT
            signal.signal(signum, lambda number, _frame: stopped.append(number))
    printer.show_new()
    if follow:
        _follow(printer, stopped)


def _follow(printer: Printer, stopped: list[int]) -> None:
    """The records of each new file, until a signal lands in ``stopped``."""
    while not stopped:
        time.sleep(FOLLOW_POLL)
        if not stopped:
            printer.show_new()


def _show_pending(printer: Printer) -> None:
    view = flowfiles.read_pending()
    for flow_log_id, window in sorted((view.get("flow_logs") or {}).items()):
        fields = tuple(window["fields"])
        for line in window["records"]:
            row = flowlogs.parse_line(fields, line)
            if flowlogs.matches(row, printer.eni, printer.vpc, printer.found):
                printer.emit(fields, line, {"flow_log_id": flow_log_id,
                                            "window": window["window"], **row})


def _describe(row: dict) -> str:
    return (f"{row['id']}  {row['resource_type']:<16} {row['resource_id']:<24} "
            f"{row['traffic_type']:<6} {row['max_aggregation_interval']:>3} s  "
            f"{row['origin']:<8} {row['log_format']}")


@flow_logs.command("enable")
@click.option("--vpc", "vpc_id", metavar="ID")
@click.option("--subnet", "subnet_id", metavar="ID")
@click.option("--eni", "eni_id", metavar="ID", help="a Lambda ENI or a host's interface")
@click.option("--format", "fmt", metavar="FORMAT",
              help="the record's fields (default: version 2's fourteen)")
@click.option("--max-aggregation-interval", "interval", type=click.Choice(["60", "600"]),
              help="seconds per window on the emulated clock (default 600)")
@click.option("--traffic-type", type=click.Choice(fl.TRAFFIC_TYPES),
              help="ACCEPT, REJECT or ALL (default)")
@click.option("--json", "as_json", is_flag=True)
def enable(vpc_id: str | None, subnet_id: str | None, eni_id: str | None, fmt: str | None,
           interval: str | None, traffic_type: str | None, as_json: bool) -> None:
    """A flow log for a VPC, a subnet or one interface (its id is printed)."""
    target = _target(vpc_id, subnet_id, eni_id)
    spec = _spec(traffic_type, fmt, int(interval) if interval else None)
    made = flowlogs.create([target], spec, "cli")
    click.echo(json.dumps(made, indent=2) if as_json else
               "\n".join(f"flow-logs: {r['id']} enabled on {r['resource_id']}" for r in made))


@flow_logs.command("disable")
@click.option("--vpc", "vpc_id", metavar="ID")
@click.option("--subnet", "subnet_id", metavar="ID")
@click.option("--eni", "eni_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
def disable(vpc_id: str | None, subnet_id: str | None, eni_id: str | None,
            as_json: bool) -> None:
    """Delete the flow logs of a VPC, a subnet or an interface (files already written
    stay)."""
    target = _target(vpc_id, subnet_id, eni_id)
    running.require()
    gone = flowlogs.disable(target)
    if not gone:
        raise UsageError(f"no flow log on {target.resource_id}")
    click.echo(json.dumps(gone) if as_json else
               "\n".join(f"flow-logs: {i} deleted" for i in gone))


@flow_logs.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """The flow logs defined: id, resource, traffic type, interval, origin, format."""
    running.require()
    rows = flowlogs.definitions()
    click.echo(json.dumps(rows, indent=2) if as_json else "\n".join(map(_describe, rows)))


COMMANDS = (flow_logs,)
