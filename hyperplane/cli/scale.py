"""``hyperplane generate``: a large topology file, for scale figures anyone can reproduce.

The document comes from ``model.generate`` (pure); this command only prints it as YAML
(or writes it to ``-o FILE``).  No root needed.
"""

from __future__ import annotations

import click
import yaml

from hyperplane.errors import UsageError
from hyperplane.model.generate import generate as make


@click.command()
@click.option("--vpcs", type=int, default=20, show_default=True)
@click.option("--subnets", type=int, default=5, show_default=True, help="per VPC")
@click.option("--hosts", type=int, default=10, show_default=True,
              help="per subnet, each serving HTTP on 8080")
@click.option("--functions", type=int, default=100, show_default=True,
              help="spread over the VPCs, each in all its VPC's subnets")
@click.option("--accounts", type=int, default=1, show_default=True,
              help="owners of the VPCs, in turn")
@click.option("-o", "out", type=click.Path(dir_okay=False), help="write to FILE")
def generate(vpcs: int, subnets: int, hosts: int, functions: int, accounts: int,
             out: str | None) -> None:
    """Print a topology of VPCS x SUBNETS x HOSTS hosts and FUNCTIONS functions (YAML)."""
    try:
        document = make(vpcs, subnets, hosts, functions, accounts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    text = (f"# hyperplane generate --vpcs {vpcs} --subnets {subnets} --hosts {hosts} "
            f"--functions {functions} --accounts {accounts}\n"
            + yaml.safe_dump(document, sort_keys=False, width=100))
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


COMMANDS = (generate,)
