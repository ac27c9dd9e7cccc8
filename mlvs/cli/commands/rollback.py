"""`mlvs rollback [NAME]`: restore a snapshot, verified."""

from __future__ import annotations

import json

import click

from mlvs.cli.menu import choose_from_menu, require_terminal, snapshot_groups
from mlvs.cli.render import (
    emit_json,
    report_text,
)
from mlvs.errors import BadInputError
from mlvs.ops.reports_index import refresh_index
from mlvs.ops.rollback.plan import VerificationError, parse_parts
from mlvs.ops.rollback.restore import rollback
from mlvs.ops.snapshot.read import list_snapshots
from mlvs.paths import project


def _choose_snapshot() -> str:
    """Offer the snapshots in a terminal; refuse elsewhere (a script must name one)."""

    require_terminal("give a snapshot name: `mlvs rollback NAME` (`mlvs snapshot list` shows them)")
    manifests = list_snapshots(project())
    if not manifests:
        raise BadInputError(
            "there are no snapshots to roll back to; create one with `mlvs snapshot create NAME`"
        )
    groups = snapshot_groups(manifests)
    newest = groups[0][1][0].name
    return choose_from_menu(
        "Snapshots, newest first:", groups, "Roll back to", "snapshot", default=newest
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
