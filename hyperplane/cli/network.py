"""Command-line commands about the VPC side (click): ``sg`` and ``reach``.

Registered on the main group by ``cli``; errors are turned into one line and an exit code
there (an invalid rule or unknown group exits 2 and changes nothing).
"""

from __future__ import annotations

import click

from hyperplane.cli.output import emit
from hyperplane.emulator import reach, running, security
from hyperplane.policy.groups import rule_text
from hyperplane.policy.reachability import MATRIX_LIMIT, render, render_summary


def _group_text(g: dict) -> list[str]:
    lines = [f"{g['id']:<16} {g['vpc']:<12} members {', '.join(g['members']) or '-'}"]
    for direction in ("ingress", "egress"):
        for rule in g[direction]:
            lines.append(f"  {direction:<8} {rule_text(rule)}")
        if not g[direction]:
            lines.append(f"  {direction:<8} (no rule: nothing allowed)")
    for host, counters in g.get("host_drops", {}).items():
        drops = "  ".join(f"{k} {v}" for k, v in sorted(counters.items()))
        lines.append(f"  host {host}: {drops}")
    return lines


@click.group()
def sg() -> None:
    """Security groups: list them, authorize or revoke rules at run time."""


@sg.command("list")
@click.option("--json", "as_json", is_flag=True)
def sg_list(as_json: bool) -> None:
    """Every group: members (ENIs and hosts), rules, hosts' drop counters."""
    groups = security.describe(running.require())
    emit(groups, as_json, "\n".join(line for g in groups for line in _group_text(g)))


def _rule_options(fn):
    options = [
        click.option("--group", "group_id", required=True, help="the security group id"),
        click.option("--direction", required=True, type=click.Choice(["ingress", "egress"])),
        click.option("--protocol", required=True,
                     type=click.Choice(["tcp", "udp", "icmp", "all"], case_sensitive=False)),
        click.option("--ports", help="N or N-M (tcp and udp only)"),
        click.option("--cidr", help="the peer as a CIDR"),
        click.option("--source-group", "peer_group",
                     help="the peer as another security group (its members); for egress "
                          "it is the destination group"),
        click.option("--destination-group", "peer_group", hidden=True),
        click.option("--json", "as_json", is_flag=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _change(action: str, group_id: str, direction: str, protocol: str, ports: str | None,
            cidr: str | None, peer_group: str | None, as_json: bool) -> None:
    group = security.change(action, group_id, direction, protocol.lower(), ports, cidr,
                            peer_group)
    emit(group, as_json, "\n".join(_group_text(group)))


@sg.command()
@_rule_options
def authorize(**kwargs) -> None:
    """Add a rule to a group; applied at once, without restarting anything."""
    _change("authorize", **kwargs)


@sg.command()
@_rule_options
def revoke(**kwargs) -> None:
    """Remove a rule from a group; tracked flows keep going, new flows are refused."""
    _change("revoke", **kwargs)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=float, default=reach.PROBE_TIMEOUT, show_default=True,
              help="seconds each probe waits for an answer")
def reach_(as_json: bool, timeout: float) -> None:
    """Probe every (function or host) -> (host:port) pair with real packets: a matrix of
    allowed / denied / unreachable, with the rule set or route that stops each flow
    (past 40 targets: the counts and the pairs worth a look).  ``machine``: the probe
    could not be made (a descriptor limit, a full kernel table), named."""
    result = reach.run(timeout)
    if as_json:
        emit(result, True, "")
    elif len(result["targets"]) > MATRIX_LIMIT:
        click.echo(render_summary(result["results"], result.get("probes")))
    else:
        click.echo(render(result["results"]))


reach_.name = "reach"


COMMANDS = (sg, reach_)
