"""Printing: pretty JSON for scripts, or a plain aligned table for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["json", "table"]),
    default=None,
    help="json or table",
)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
