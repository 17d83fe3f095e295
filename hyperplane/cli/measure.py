"""Measuring commands (click): ``bench`` and ``compare``.

Each parses its options and calls the ``bench`` package; the figures are
printed as a table, or as JSON with ``--json``.
"""

from __future__ import annotations

import json

import click

from hyperplane.cli.output import emit
from hyperplane.errors import UsageError


@click.command()
@click.option("--quick", is_flag=True, help="a short run (under 3 minutes) for development")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="where to write results.json, report.md, ratios.svg "
                   "(default bench/results/<time>)")
@click.option("--workload", "workload", metavar="NAME[,NAME...]",
              help="only these workloads (tcp_1_stream, tcp_4_streams, udp_64b, ping, "
                   "concurrent, connections, environments, cold_starts, api_invokes)")
@click.option("--workers", metavar="N|auto", default=None,
              help="the dataplane's worker processes (settings.dataplane.workers; default 1)")
@click.option("--fast-path", "fast_path", default=None,
              type=click.Choice(["sockets", "python", "compiled", "auto"]),
              help="the dataplane's receive path (settings.dataplane.fast_path)")
def bench(quick: bool, as_json: bool, out_dir: str | None, workload: str | None,
          workers: str | None, fast_path: str | None) -> None:
    """Measure Hyperplane side by side with the kernel's NAT, as ratios, against targets."""
    import dataclasses
    import time
    from pathlib import Path

    from hyperplane.bench import report, runner

    plan = runner.Plan.quick() if quick else runner.Plan.full()
    plan = dataclasses.replace(plan, dataplane=_dataplane_options(workers, fast_path))
    log = (lambda _msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    results = report.evaluate(runner.run(plan, log, runner.chosen(workload)))
    directory = Path(out_dir or Path("bench") / "results" / time.strftime("%Y%m%d-%H%M%S"))
    files = report.write(results, directory)
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        click.echo(report.table_text(results))
        click.echo(f"\nwritten: {', '.join(str(f) for f in files.values())}")


def _dataplane_options(workers: str | None, fast_path: str | None) -> dict:
    out: dict = {}
    if workers is not None:
        if workers != "auto" and not (workers.isdigit() and 1 <= int(workers) <= 16):
            raise UsageError(f"--workers: expected auto or 1 to 16, got {workers!r}")
        out["workers"] = workers if workers == "auto" else int(workers)
    if fast_path is not None:
        out["fast_path"] = fast_path
    return out


@click.command()
@click.option("--concurrency", default="1,10,50", show_default=True,
              help="comma-separated burst sizes (concurrent cold starts)")
@click.option("--profile", type=click.Choice(["fast", "aws"]), default="fast",
              show_default=True, help="timing profile (aws: 10 s legacy ENI attach)")
@click.option("--json", "as_json", is_flag=True)
def compare(concurrency: str, profile: str, as_json: bool) -> None:
    """Cold starts of N concurrent invocations: Hyperplane mode vs legacy (ENI per env)."""
    from hyperplane.bench import compare as comparison

    try:
        sizes = [int(n) for n in concurrency.split(",") if n.strip()]
    except ValueError:
        raise UsageError(f"--concurrency: expected numbers like 1,10,50, got "
                         f"{concurrency!r}") from None
    if not sizes or any(n < 1 or n > 200 for n in sizes):
        raise UsageError("--concurrency: each size must be 1 to 200")
    log = (lambda _msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    result = comparison.run(sizes, profile, log)
    emit(result, as_json, comparison.table_text(result))


COMMANDS = (bench, compare)
