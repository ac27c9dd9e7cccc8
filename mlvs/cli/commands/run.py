"""`mlvs run NOTEBOOK`: execute one notebook with papermill and keep its report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlvs.cli.render import emit_json, out_of_step_text
from mlvs.ops.run import collect_parameters, outputs_out_of_step, run_notebook
from mlvs.paths import project


@click.command("run")
@click.argument("notebook")
@click.option(
    "-p",
    "--parameter",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a notebook parameter (a single value; repeatable).",
)
@click.option(
    "-f",
    "--parameters-file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="YAML file of parameters (keeps lists and mappings; repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run_command(
    notebook: str, pairs: tuple[tuple[str, str], ...], files: tuple[Path, ...], as_json: bool
) -> None:
    """Execute NOTEBOOK with papermill, keep it as a report and log it to MLflow."""

    paths = project()
    parameters = collect_parameters(list(pairs), list(files))
    result = run_notebook(paths, notebook, parameters, progress=sys.stderr.isatty())
    differ = outputs_out_of_step(paths)
    if as_json:
        emit_json(
            {
                "notebook": result.notebook,
                "report": str(result.output),
                "html": str(result.html),
                "run_id": result.run_id,
                "seconds": round(result.seconds, 2),
                "outputs_matching_dvc_lock": not differ,
            }
        )
    if differ:
        # The last line: the state is not what dvc.lock records, and how to bring them together.
        click.echo(out_of_step_text(differ), err=True)
