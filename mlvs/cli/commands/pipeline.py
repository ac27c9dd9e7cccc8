"""`mlvs pipeline`: prepare -> train through DVC, skipping unchanged stages."""

from __future__ import annotations

import click

from mlvs.cli.render import (
    emit_json,
    pipeline_text,
)
from mlvs.ops.pipeline import run_pipeline
from mlvs.paths import project


@click.command("pipeline")
@click.option("--force", is_flag=True, help="Re-run every stage even if nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def pipeline_command(force: bool, as_json: bool) -> None:
    """Run prepare -> train through DVC (`dvc repro`), skipping unchanged stages."""
    result = run_pipeline(project(), force=force)
    if as_json:
        # The document's copy of the summary is plain text, whatever the console shows.
        emit_json({**result.to_dict(), "text": click.unstyle(pipeline_text(result))})
    else:
        click.echo(pipeline_text(result))
