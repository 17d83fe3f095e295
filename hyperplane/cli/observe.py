"""Command-line commands to see the network (click): ``graph`` and ``capture`` (and
``flow-logs``, from ``cli.flowlogs``).

Registered on the main group by ``cli.main``; errors become one line and an exit code
there (an unknown ENI, host, function or environment exits 2).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hyperplane.cli import flowlogs
from hyperplane.emulator import capture as captures
from hyperplane.emulator import graphs, running
from hyperplane.errors import UsageError


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(graphs.FORMATS),
              help="dot (Graphviz source), svg (drawn by Graphviz's dot) or mermaid "
                   "(flowchart LR); default: from -o's suffix (.svg, .mmd, .dot), else dot")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write the picture to this file instead of stdout")
def graph(file: str | None, fmt: str | None, output: str | None) -> None:
    """The running topology as a picture (or FILE's, ENIs predicted, with nothing up):
    accounts, VPCs, subnets, ENIs, hosts, gateways, functions, security-group references."""
    if file is None and os.geteuid() != 0:
        raise UsageError("graph without FILE draws the running topology and must run as "
                         "root; `hyperplane graph FILE` draws a file without root")
    fmt = graphs.format_for(fmt, output)
    text = graphs.render(graphs.view(file), fmt)
    if output:
        Path(output).write_text(text)
        click.echo(f"graph: {output} ({fmt})")
    else:
        click.echo(text, nl=False)


@click.command()
@click.option("--eni", "eni_id", metavar="ID", help="an ENI's VPC side (source: its address)")
@click.option("--host", metavar="NAME", help="a host's interface")
@click.option("--function", metavar="NAME",
              help="an environment of the function (169.254.x side); one is started if "
                   "it has none")
@click.option("--env", metavar="ENV", help="an execution environment's eth0: env-N or N")
@click.option("-w", "--write", "write", type=click.Path(dir_okay=False),
              help="write the packets to this pcap file instead of printing them")
@click.option("-c", "--count", type=click.IntRange(min=1), help="stop after N packets")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="stop after S seconds (SIGINT, as Ctrl-C)")
@click.argument("words", nargs=-1, metavar="[FILTER]...")
def capture(eni_id: str | None, host: str | None, function: str | None, env: str | None,
            write: str | None, count: int | None, duration: float | None,
            words: tuple[str, ...]) -> None:
    """tcpdump on an ENI, a host, a function's environment or an environment, by name:
    FILTER is tcpdump's (`tcp port 8080`)."""
    recorded = running.require()
    where = captures.target(recorded, eni_id, host, function, env)
    argv = captures.tcpdump_argv(where.link, os.path.abspath(write) if write else None,
                                 count, duration, words)
    click.echo(f"capture: {where.what}", err=True)
    sys.exit(captures.run(where, argv))


COMMANDS = (graph, capture, *flowlogs.COMMANDS)
