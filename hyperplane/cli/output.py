"""How every command prints: JSON or text, and one line on failure (click)."""

from __future__ import annotations

import json
import sys

import click


def emit(data: object, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


def fail(message: str, code: int) -> None:
    click.echo(f"hyperplane: {message}", err=True)
    sys.exit(code)
