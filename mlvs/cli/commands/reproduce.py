"""`mlvs reproduce NAME`: re-run a snapshot's pipeline and compare."""

from __future__ import annotations

import sys

import click

from mlvs.cli.render import (
    emit_json,
    reproduction_text,
)
from mlvs.ops.reproduce import expected_from_manifest, reproduce
from mlvs.ops.snapshot.read import show_snapshot
from mlvs.paths import project


@click.command("reproduce")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def reproduce_command(name: str, as_json: bool) -> None:
    """Re-run snapshot NAME's pipeline in isolation; compare data bytes, metrics, golden predictions."""
    paths = project()
    manifest = show_snapshot(paths, name)
    result = reproduce(paths, name, expected_from_manifest(paths, manifest))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(reproduction_text(result))
    sys.exit(0 if result.reproduces else 1)
