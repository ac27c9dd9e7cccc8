"""`mlvs verify`: check the current state."""

from __future__ import annotations

import sys

import click

from mlvs.cli.render import (
    emit_json,
    verify_text,
)
from mlvs.ops.verify import parse_checks, verify
from mlvs.paths import project


@click.command("verify")
@click.option("--only", "only", default=None, help="Comma-separated checks to run (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify_command(only: str | None, as_json: bool) -> None:
    """Check every tracked file, the data schema, the model, metrics, registry and stores."""
    report = verify(project(), parse_checks(only))
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(verify_text(report))
    sys.exit(0 if report.healthy else 1)
