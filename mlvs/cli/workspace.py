"""Commands that change the workspace: run, pipeline, snapshot, rollback, recover."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlvs.cli.render import diff_text, emit_json, manifest_text, report_text, snapshots_table
from mlvs.errors import BadInputError
from mlvs.ops.pipeline import run_pipeline
from mlvs.ops.recover import recover_project
from mlvs.ops.reports_index import refresh_index
from mlvs.ops.rollback.plan import VerificationError, parse_parts
from mlvs.ops.rollback.restore import rollback
from mlvs.ops.run import collect_parameters, run_notebook
from mlvs.ops.snapshot.create import create_snapshot
from mlvs.ops.snapshot.diff import diff_snapshots
from mlvs.ops.snapshot.read import list_snapshots, show_snapshot
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

    summary = run_pipeline(project(), force=force)
    if as_json:
        emit_json(summary)
    else:
        click.echo(summary["text"])


@click.group("snapshot")
def snapshot_group() -> None:
    """Capture, list, inspect and compare whole-system snapshots."""


@snapshot_group.command("create")
@click.argument("name")
@click.option("-m", "--message", default="", help="What this snapshot is.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_create_command(name: str, message: str, as_json: bool) -> None:
    """Snapshot code, params, data, models and registry as NAME."""

    paths = project()
    manifest = create_snapshot(paths, name, message)
    refresh_index(paths)
    if as_json:
        emit_json(manifest.to_dict())
    else:
        click.echo(
            f"Snapshot {name!r} saved: commit {str(manifest.commit)[:12]}, "
            f"{len(manifest.files)} DVC-tracked file(s), model version {manifest.model_version or '-'}."
        )


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshots as JSON.")
def snapshot_list_command(as_json: bool) -> None:
    """List the snapshots, oldest first."""

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

    diff = diff_snapshots(project(), a, b)
    if as_json:
        emit_json(diff.to_dict())
    else:
        click.echo(diff_text(diff))


def _choose_snapshot() -> str:
    """Offer the snapshots in a terminal; refuse elsewhere (a script must name one)."""

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

    interrupted, outcome = recover_project(project(), interrupted_only)
    if outcome is None:
        if as_json:
            emit_json({"interrupted": interrupted.to_dict()})
        else:
            click.echo(f"Interrupted operations: {interrupted.detail}.")
        return
    if as_json:
        emit_json({"interrupted": interrupted.to_dict(), **outcome.to_dict()})
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
