"""Commands that change the workspace: run, pipeline, snapshot, rollback, recover."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlvs.cli.render import emit_json
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
    from mlvs.ops.run import collect_parameters, run_notebook

    paths = project()
    parameters = collect_parameters(list(pairs), list(files))
    result = run_notebook(paths, notebook, parameters, progress=sys.stderr.isatty())
    if as_json:
        emit_json(
            {
                "notebook": result.notebook,
                "report": str(result.output),
                "html": str(result.html),
                "run_id": result.run_id,
                "seconds": round(result.seconds, 2),
            }
        )


@click.command("pipeline")
@click.option("--force", is_flag=True, help="Re-run every stage even if nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def pipeline_command(force: bool, as_json: bool) -> None:
    """Run prepare -> train through DVC (`dvc repro`), skipping unchanged stages."""
    from mlvs.cli.render import pipeline_text
    from mlvs.ops.pipeline import run_pipeline
    from mlvs.settings import lock_timeout
    from mlvs.state.interrupted import recover_interrupted
    from mlvs.state.lock import state_lock

    paths = project()
    # The pipeline changes data, models and the registry: never beside a rollback or snapshot.
    with state_lock(paths, lock_timeout()):
        recover_interrupted(paths)
        result = run_pipeline(paths, force=force)
    if as_json:
        emit_json({**result.to_dict(), "text": pipeline_text(result)})
    else:
        click.echo(pipeline_text(result))


@click.group("snapshot")
def snapshot_group() -> None:
    """Capture, list, inspect and compare whole-system snapshots."""


@snapshot_group.command("create")
@click.argument("name")
@click.option("-m", "--message", default="", help="What this snapshot is.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_create_command(name: str, message: str, as_json: bool) -> None:
    """Snapshot code, params, data, models and registry as NAME."""
    from mlvs.cli.render import snapshot_saved_text
    from mlvs.ops.reports_index import refresh_index
    from mlvs.ops.snapshot.create import create_snapshot

    paths = project()
    manifest = create_snapshot(paths, name, message)
    refresh_index(paths)
    if as_json:
        emit_json(manifest.to_dict())
    else:
        click.echo(snapshot_saved_text(manifest))


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshots as JSON.")
def snapshot_list_command(as_json: bool) -> None:
    """List the snapshots, oldest first."""
    from mlvs.cli.render import snapshots_table
    from mlvs.ops.snapshot.read import list_snapshots

    manifests = list_snapshots(project())
    if as_json:
        emit_json([m.to_dict() for m in manifests])
    else:
        click.echo(snapshots_table(manifests))


@snapshot_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_show_command(name: str, as_json: bool) -> None:
    """Show what snapshot NAME recorded."""
    from mlvs.cli.render import manifest_text
    from mlvs.ops.snapshot.read import show_snapshot

    manifest = show_snapshot(project(), name)
    if as_json:
        emit_json(manifest.to_dict())
    else:
        click.echo(manifest_text(manifest))


@snapshot_group.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def snapshot_diff_command(a: str, b: str | None, as_json: bool) -> None:
    """Compare snapshot A with snapshot B (default: the current state)."""
    from mlvs.cli.render import diff_text
    from mlvs.ops.snapshot.diff import diff_snapshots

    diff = diff_snapshots(project(), a, b)
    if as_json:
        emit_json(diff.to_dict())
    else:
        click.echo(diff_text(diff))


def _choose_snapshot() -> str:
    """Offer the snapshots in a terminal; refuse elsewhere (a script must name one)."""
    from mlvs.cli.render import snapshots_table
    from mlvs.errors import BadInputError
    from mlvs.ops.snapshot.read import list_snapshots

    if not sys.stdin.isatty():
        raise BadInputError(
            "give a snapshot name: `mlvs rollback NAME` (`mlvs snapshot list` shows them)"
        )
    manifests = list_snapshots(project())
    if not manifests:
        raise BadInputError(
            "there are no snapshots to roll back to; create one with `mlvs snapshot create NAME`"
        )
    click.echo(snapshots_table(manifests), err=True)
    names = [m.name for m in manifests]
    return str(
        click.prompt(
            "Roll back to",
            type=click.Choice(names),
            default=names[-1],
            show_choices=False,
            err=True,
        )
    )


@click.command("rollback")
@click.argument("name", required=False)
@click.option(
    "--only",
    "only",
    metavar="PARTS",
    help="Restore only these parts, comma-separated: code,params,data,models,registry.",
)
@click.option("--dry-run", is_flag=True, help="List what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rollback_command(name: str | None, only: str | None, dry_run: bool, as_json: bool) -> None:
    """Restore the whole state of snapshot NAME (or some parts of it), verified."""
    from mlvs.cli.render import report_text
    from mlvs.ops.reports_index import refresh_index
    from mlvs.ops.rollback.plan import VerificationError, parse_parts
    from mlvs.ops.rollback.restore import rollback

    parts = parse_parts(only)
    chosen = name or _choose_snapshot()
    paths = project()
    try:
        report = rollback(paths, chosen, parts, dry_run=dry_run)
    except VerificationError as failed:
        refresh_index(paths)  # the automatic snapshot it took is listed
        click.echo(
            json.dumps(failed.report.to_dict(), indent=2, sort_keys=True)
            if as_json
            else report_text(failed.report)
        )
        raise
    if not dry_run:
        refresh_index(paths)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report_text(report))


@click.command("recover")
@click.option(
    "--interrupted-only",
    is_flag=True,
    help="Only finish or undo an interrupted snapshot or rollback; repair nothing else.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def recover_command(interrupted_only: bool, as_json: bool) -> None:
    """Finish or undo an interrupted command, then repair what `verify` finds (the recovery ladder)."""
    from mlvs.cli.render import interrupted_text, recovery_text
    from mlvs.ops.recover import recover
    from mlvs.settings import lock_timeout
    from mlvs.state.interrupted import recover_interrupted
    from mlvs.state.lock import state_lock

    paths = project()
    with state_lock(paths, lock_timeout()):
        interrupted = recover_interrupted(paths)
        if interrupted_only:
            if as_json:
                emit_json({"interrupted": interrupted.to_dict()})
            else:
                click.echo(interrupted_text(interrupted))
            return
        outcome = recover(paths)
    if as_json:
        emit_json({"interrupted": interrupted.to_dict(), **outcome.to_dict()})
    else:
        click.echo(recovery_text(interrupted, outcome))
    sys.exit(0 if outcome.healthy else 1)
