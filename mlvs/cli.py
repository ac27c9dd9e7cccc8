"""The `mlvs` command line. Commands are thin: parse, call the core, map errors to exit codes.

Exit status: 0 success, 1 the work failed (a notebook, a verification), 2 bad input.
Errors are printed as one line on stderr; a traceback only with `--debug`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlvs.errors import MlvsError
from mlvs.logs import get_logger, setup_logging
from mlvs.paths import project

log = get_logger("cli")


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


class _Group(click.Group):
    """Maps every mlvs error to its exit code and one line, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlvsError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"mlvs: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("mlvs: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="mlvs")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """mlvs: snapshots, verified rollback and incident drills for notebook-driven ML."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # Models are only ever loaded by mlvs itself, hash first, with its own skops trust list.
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    log_dir = None
    try:
        log_dir = project().logs
    except MlvsError:
        pass
    setup_logging(log_dir, verbose=debug)


@cli.command("run")
@click.argument("notebook")
@click.option("-p", "--parameter", "pairs", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a notebook parameter (a single value; repeatable).")
@click.option("-f", "--parameters-file", "files", multiple=True, type=click.Path(path_type=Path),
              help="YAML file of parameters (keeps lists and mappings; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run_command(notebook: str, pairs: tuple[tuple[str, str], ...], files: tuple[Path, ...], as_json: bool) -> None:
    """Execute NOTEBOOK with papermill, keep it as a report and log it to MLflow."""
    from mlvs.runner import collect_parameters, run_notebook

    paths = project()
    parameters = collect_parameters(list(pairs), list(files))
    result = run_notebook(paths, notebook, parameters, progress=sys.stderr.isatty())
    if as_json:
        _emit_json({"notebook": result.notebook, "report": str(result.output), "html": str(result.html),
                    "run_id": result.run_id, "seconds": round(result.seconds, 2)})


@cli.command("pipeline")
@click.option("--force", is_flag=True, help="Re-run every stage even if nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def pipeline_command(force: bool, as_json: bool) -> None:
    """Run prepare -> train through DVC (`dvc repro`), skipping unchanged stages."""
    from mlvs.orchestrate import run_pipeline

    summary = run_pipeline(project(), force=force)
    if as_json:
        _emit_json(summary)
    else:
        click.echo(summary["text"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlvs` console script."""
    try:
        cli.main(args=argv, prog_name="mlvs", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
