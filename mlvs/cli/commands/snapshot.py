"""`mlvs snapshot create|list|show|diff`: whole-system snapshots."""

from __future__ import annotations

import importlib

import click

from mlvs.backends.git.tree import untracked_files
from mlvs.cli.render import (
    diff_text,
    emit_json,
    manifest_text,
    snapshot_saved_text,
    snapshots_table,
    untracked_text,
)
from mlvs.ops.reports_index import refresh_index
from mlvs.ops.snapshot.create import create_snapshot
from mlvs.ops.snapshot.diff import diff_snapshots
from mlvs.ops.snapshot.read import list_snapshots, show_snapshot
from mlvs.paths import project


@click.group("snapshot")
def snapshot_group() -> None:
    """Capture, list, inspect and compare whole-system snapshots."""


@snapshot_group.command("create")
@click.argument("name")
@click.option("-m", "--message", default="", help="What this snapshot is.")
@click.option(
    "--allow-unhealthy",
    is_flag=True,
    help="Take the snapshot even if the quick checks find damage or a stale pipeline; "
    "its manifest records the findings (without it, such a state is refused).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_create_command(name: str, message: str, allow_unhealthy: bool, as_json: bool) -> None:
    """Snapshot code, params, data, models and registry as NAME.

    The state is checked first (tracked files against dvc.lock, a stale pipeline, the
    deep checks verify remembers); an unhealthy one is refused unless --allow-unhealthy.
    """

    paths = project()
    manifest = create_snapshot(paths, name, message, allow_unhealthy=allow_unhealthy)
    refresh_index(paths)
    if as_json:
        emit_json(manifest.to_dict())
    else:
        click.echo(snapshot_saved_text(manifest))
        # Snapshot refs are shared with the team: say which files nobody committed went in.
        included, withheld = untracked_files(paths.root, manifest.commit)
        for line in untracked_text(included, withheld):
            click.echo(line)


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshots as JSON.")
def snapshot_list_command(as_json: bool) -> None:
    """List the snapshots, oldest first."""

    manifests = list_snapshots(project())
    if as_json:
        emit_json([m.to_dict() for m in manifests])
    else:
        click.echo(snapshots_table(manifests))


_MONITOR_STATE = "mlvs.ops.monitor_state"


@snapshot_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def snapshot_show_command(name: str, as_json: bool) -> None:
    """Show what snapshot NAME recorded."""

    paths = project()
    manifest = show_snapshot(paths, name)
    # The batches its model judged after deployment (from reports/monitoring/, not the snapshot).
    # Its module brings the monitoring rules and pydantic (~0.15 s): imported for `show` only.
    judged = importlib.import_module(_MONITOR_STATE).judged_batches(paths, manifest.model_version)
    if as_json:
        emit_json({**manifest.to_dict(), "monitored_batches": judged})
    else:
        click.echo(manifest_text(manifest))
        if judged:
            click.echo(
                f"monitored    batches {', '.join(map(str, judged))} judged with model version "
                f"{manifest.model_version} (reports/monitoring/)"
            )


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
