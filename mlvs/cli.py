"""The `mlvs` command line. Commands are thin: parse, call the core, map errors to exit codes.

Exit status: 0 success, 1 the work failed (a notebook, a verification), 2 bad input.
Errors are printed as one line on stderr; a traceback only with `--debug`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlvs.errors import MlvsError, storage_error, storage_failure
from mlvs.logs import get_logger, setup_logging
from mlvs.paths import project

log = get_logger("cli")


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def _one_line(error: Exception) -> str:
    # A tool's message (git's "error: ...\nfatal: ...") still makes one line of ours.
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


class _Group(click.Group):
    """Maps every mlvs error to its exit code and one line, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlvsError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"mlvs: error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("mlvs: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            # A full disk or an unwritable directory is the machine's problem, not a bug: one line, no traceback.
            if (ctx.obj and ctx.obj.get("debug")) or storage_failure(exc) is None:
                raise
            command = f"mlvs {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "mlvs"
            what = f"`{command}` could not finish"
            click.echo(f"mlvs: error: {_one_line(storage_error(exc, what))}", err=True)
            ctx.exit(1)


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
    # MLflow logs a database error with its traceback, then raises it; mlvs reports the raised one in one line.
    # (A filter, not a level: MLflow's logging set-up resets the levels of its loggers on import.)
    logging.getLogger("mlflow.store.db.utils").addFilter(lambda record: record.levelno < logging.ERROR)
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
    from mlvs.rollback import recover_interrupted
    from mlvs.snapshots import lock_timeout
    from mlvs.statelock import state_lock

    paths = project()
    # The pipeline changes data, models and the registry: never beside a rollback or snapshot.
    with state_lock(paths, lock_timeout()):
        recover_interrupted(paths)
        summary = run_pipeline(paths, force=force)
    if as_json:
        _emit_json(summary)
    else:
        click.echo(summary["text"])


@cli.group("snapshot")
def snapshot_group() -> None:
    """Capture, list, inspect and compare whole-system snapshots."""


@snapshot_group.command("create")
@click.argument("name")
@click.option("-m", "--message", default="", help="What this snapshot is.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_create_command(name: str, message: str, as_json: bool) -> None:
    """Snapshot code, params, data, models and registry as NAME."""
    from mlvs.reports_index import refresh_index
    from mlvs.snapshots import create_snapshot

    paths = project()
    manifest = create_snapshot(paths, name, message)
    refresh_index(paths)
    if as_json:
        _emit_json(manifest.to_dict())
    else:
        click.echo(f"Snapshot {name!r} saved: commit {str(manifest.commit)[:12]}, "
                   f"{len(manifest.files)} DVC-tracked file(s), model version {manifest.model_version or '-'}.")


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshots as JSON.")
def snapshot_list_command(as_json: bool) -> None:
    """List the snapshots, oldest first."""
    from mlvs.snapshots import list_snapshots, snapshots_table

    manifests = list_snapshots(project())
    if as_json:
        _emit_json([m.to_dict() for m in manifests])
    else:
        click.echo(snapshots_table(manifests))


@snapshot_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_show_command(name: str, as_json: bool) -> None:
    """Show what snapshot NAME recorded."""
    from mlvs.snapshots import manifest_text, show_snapshot

    manifest = show_snapshot(project(), name)
    if as_json:
        _emit_json(manifest.to_dict())
    else:
        click.echo(manifest_text(manifest))


@snapshot_group.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def snapshot_diff_command(a: str, b: str | None, as_json: bool) -> None:
    """Compare snapshot A with snapshot B (default: the current state)."""
    from mlvs.snapshots import diff_snapshots, diff_text

    diff = diff_snapshots(project(), a, b)
    if as_json:
        _emit_json(diff.to_dict())
    else:
        click.echo(diff_text(diff))


def _choose_snapshot() -> str:
    """Offer the snapshots in a terminal; refuse elsewhere (a script must name one)."""
    from mlvs.errors import BadInputError
    from mlvs.snapshots import list_snapshots, snapshots_table

    if not sys.stdin.isatty():
        raise BadInputError("give a snapshot name: `mlvs rollback NAME` (`mlvs snapshot list` shows them)")
    manifests = list_snapshots(project())
    if not manifests:
        raise BadInputError("there are no snapshots to roll back to; create one with `mlvs snapshot create NAME`")
    click.echo(snapshots_table(manifests), err=True)
    names = [m.name for m in manifests]
    return str(click.prompt("Roll back to", type=click.Choice(names), default=names[-1], show_choices=False, err=True))


@cli.command("rollback")
@click.argument("name", required=False)
@click.option("--only", "only", metavar="PARTS",
              help="Restore only these parts, comma-separated: code,params,data,models,registry.")
@click.option("--dry-run", is_flag=True, help="List what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rollback_command(name: str | None, only: str | None, dry_run: bool, as_json: bool) -> None:
    """Restore the whole state of snapshot NAME (or some parts of it), verified."""
    from mlvs.reports_index import refresh_index
    from mlvs.rollback import VerificationError, parse_parts, report_text, rollback

    parts = parse_parts(only)
    chosen = name or _choose_snapshot()
    paths = project()
    try:
        report = rollback(paths, chosen, parts, dry_run=dry_run)
    except VerificationError as failed:
        refresh_index(paths)  # the automatic snapshot it took is listed
        click.echo(json.dumps(failed.report.to_dict(), indent=2, sort_keys=True) if as_json
                   else report_text(failed.report))
        raise
    if not dry_run:
        refresh_index(paths)
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(report_text(report))


@cli.command("recover")
@click.option("--interrupted-only", is_flag=True,
              help="Only finish or undo an interrupted snapshot or rollback; repair nothing else.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def recover_command(interrupted_only: bool, as_json: bool) -> None:
    """Finish or undo an interrupted command, then repair what `verify` finds (the recovery ladder)."""
    from mlvs.recovery import recover
    from mlvs.rollback import recover_interrupted
    from mlvs.snapshots import lock_timeout
    from mlvs.statelock import state_lock

    paths = project()
    with state_lock(paths, lock_timeout()):
        interrupted = recover_interrupted(paths)
        if interrupted_only:
            if as_json:
                _emit_json({"interrupted": interrupted.to_dict()})
            else:
                click.echo(f"Interrupted operations: {interrupted.detail}.")
            return
        outcome = recover(paths)
    if as_json:
        _emit_json({"interrupted": interrupted.to_dict(), **outcome.to_dict()})
    else:
        click.echo(f"Interrupted operations: {interrupted.detail}.")
        if not outcome.before:
            click.echo("healthy: nothing to repair")
        for repair in outcome.repairs:
            click.echo(f"  repaired {repair.artifact} from {repair.rung}")
        for finding in outcome.after:
            click.echo(f"  still wrong: {finding}")
        if outcome.evidence:
            click.echo(f"damaged files kept in {Path(outcome.evidence[0]).parent}")
    sys.exit(0 if outcome.healthy else 1)


# Commands about project health (verify, incidents, drill) register themselves on `cli`.
import mlvs.cli_health  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlvs` console script."""
    try:
        cli.main(args=argv, prog_name="mlvs", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
