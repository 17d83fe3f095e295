"""``hyperplane conntrack``: list, follow, delete and flush sessions like conntrack-tools (click).

Registered on the main group by ``cli.main``.  The lines are conntrack's (``-L``,
``-E``, ``-D``): ``tcp      6 431999 ESTABLISHED src=... dst=... sport=... dport=...
packets=... bytes=... src=... dst=... sport=... dport=... packets=... bytes=...
[ASSURED] eni=...``; the counts go to stderr as conntrack writes them ("N flow
entries have been shown."); ``--json`` prints snake_case objects (one list, or one
object a line for ``--follow``).  ``row_text`` and ``event_text`` are pure.
"""

from __future__ import annotations

import json
import signal
import sys

import click

from hyperplane.dataplane.ctevents import DESTROY
from hyperplane.dataplane.ctfilter import PROTOCOL_NUMBERS, Filter, assured
from hyperplane.emulator import conntrack as ct
from hyperplane.errors import UsageError

PROG = "hyperplane conntrack"


def _tuple(side: dict, protocol: str, reply: bool) -> str:
    if protocol == "icmp":  # echo: the identifier is the session's port
        ident = side["dport"] if reply else side["sport"]
        return (f"src={side['src']} dst={side['dst']} type={0 if reply else 8} code=0 "
                f"id={ident}")
    return f"src={side['src']} dst={side['dst']} sport={side['sport']} dport={side['dport']}"


def row_text(row: dict, nat: bool = False, event: str | None = None) -> str:
    """One session as conntrack prints it (``event``: as ``conntrack -E`` does)."""
    protocol = row["protocol"]
    head = f"{protocol:<8} {PROTOCOL_NUMBERS.get(protocol, protocol)} "
    if event != DESTROY:  # the kernel's DESTROY carries neither timeout nor state
        head += f"{row['timeout']} " + (f"{row['state']} " if row.get("state") else "")
    parts = [head + _tuple(row["original"], protocol, False),
             f"packets={row['packets']['original']} bytes={row['bytes']['original']}"]
    if not row.get("replied"):
        parts.append("[UNREPLIED]")
    parts += [_tuple(row["reply"], protocol, True),
              f"packets={row['packets']['reply']} bytes={row['bytes']['reply']}"]
    if assured(row):
        parts.append("[ASSURED]")
    parts.append(f"{'gateway' if nat else 'eni'}={row.get('eni')}")
    text = " ".join(parts)
    return f"{'[' + event.upper() + ']':>9} {text}" if event else text


def event_text(event: str, row: dict, nat: bool = False) -> str:
    return row_text(row, nat, event)


def json_row(row: dict, event: str | None = None) -> dict:
    out = dict(row, assured=assured(row))
    return {"event": event, **out} if event else out


def _filter(**values: object) -> Filter:
    try:
        return Filter.parse(values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _count(n: int, what: str) -> None:
    click.echo(f"{PROG}: {n} flow {what}.", err=True)


@click.command()
@click.option("-E", "--follow", is_flag=True,
              help="print NEW / UPDATE / DESTROY events as they happen (like conntrack -E)")
@click.option("-D", "--delete", is_flag=True,
              help="delete the sessions the filters match (by the dataplane itself)")
@click.option("-F", "--flush", is_flag=True, help="delete every session (no filters)")
@click.option("-s", "--src", metavar="ADDR[/LEN]", help="original source (the environment)")
@click.option("-d", "--dst", metavar="ADDR[/LEN]", help="original destination")
@click.option("--sport", metavar="PORT", help="original source port (ICMP: echo id)")
@click.option("--dport", metavar="PORT", help="original destination port")
@click.option("-p", "--proto", metavar="PROTO", help="tcp, udp or icmp (or 6, 17, 1)")
@click.option("--state", metavar="STATE[,STATE]", help="TCP states, e.g. ESTABLISHED")
@click.option("--eni", "eni", metavar="ID", help="only this ENI's (or NAT gateway's) sessions")
@click.option("--nat-gateway", "nat", is_flag=True, help="the NAT gateways' sessions")
@click.option("--ask", is_flag=True, help="list by asking the dataplane process instead of "
                                          "reading its shared-memory table")
@click.option("--interval", type=click.FloatRange(0.01, 10), default=ct.INTERVAL,
              show_default=True, help="--follow: seconds between two samples of the table")
@click.option("--json", "as_json", is_flag=True)
def conntrack(follow: bool, delete: bool, flush: bool, src: str | None, dst: str | None,
              sport: str | None, dport: str | None, proto: str | None, state: str | None,
              eni: str | None, nat: bool, ask: bool, interval: float, as_json: bool) -> None:
    """Sessions through Hyperplane (or the NAT gateways), like conntrack-tools: list
    (`conntrack -L`), --follow (`-E`), --delete (`-D`) and --flush (`-F`).

    Listing and following read the process's shared-memory session table (a busy or
    restarting dataplane is not asked); deleting asks the process, which alone writes
    its table."""
    if follow + delete + flush > 1:
        raise UsageError("--follow, --delete and --flush go one at a time")
    flt = _filter(src=src, dst=dst, sport=sport, dport=dport, proto=proto, state=state,
                  eni=eni)
    if ask and (follow or delete or flush):
        raise UsageError("--ask is for listing")
    if flush and not flt.is_empty():
        raise UsageError("--flush deletes every session; use --delete with filters")
    if follow:
        _follow(flt, nat, interval, as_json)
    elif delete or flush:
        rows = ct.delete(flt, nat)
        _print_rows(rows, nat, as_json)
        if flush:
            click.echo(f"{PROG}: connection tracking table has been emptied "
                       f"({len(rows)} flow entries deleted).", err=True)
        else:
            _count(len(rows), "entries have been deleted")
    else:
        rows = ct.listing(flt, nat, ask)
        _print_rows(rows, nat, as_json)
        _count(len(rows), "entries have been shown")


def _print_rows(rows: list[dict], nat: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([json_row(row) for row in rows], indent=2))
    elif rows:
        click.echo("\n".join(row_text(row, nat) for row in rows))


def _follow(flt: Filter, nat: bool, interval: float, as_json: bool) -> None:
    stopped = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    shown = 0
    try:
        for event, row in ct.follow(flt, nat, interval, stop=lambda: bool(stopped),
                                    ready=lambda: click.echo(f"{PROG}: following events "
                                                             "(Ctrl-C to stop)", err=True)):
            click.echo(json.dumps(json_row(row, event)) if as_json
                       else event_text(event, row, nat))
            sys.stdout.flush()
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    _count(shown, "events have been shown")


COMMANDS = (conntrack,)
