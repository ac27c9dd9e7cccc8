"""`mlvs incidents`: the incident catalog."""

from __future__ import annotations

import click

from mlvs.cli.render import (
    emit_json,
    incidents_table,
)
from mlvs.ops.drill.incidents import load_catalog
from mlvs.paths import project


@click.command("incidents")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def incidents_command(as_json: bool) -> None:
    """List the incident scenarios of params/incidents.yaml."""
    catalog = load_catalog(project().root)
    if as_json:
        emit_json([s.model_dump(exclude_none=True) for s in catalog.values()])
    else:
        click.echo(incidents_table(catalog))
