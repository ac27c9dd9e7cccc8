"""`mlvs deploy [VERSION]`: gate a candidate against the champion; snapshot, then move `champion`."""

from __future__ import annotations

import sys

import click

from mlvs.cli.render import deploy_text, emit_json
from mlvs.cli.style import bad
from mlvs.ops.deploy import deploy
from mlvs.ops.reports_index import refresh_index
from mlvs.paths import project


@click.command("deploy")
@click.argument("version", required=False)
@click.option("--dry-run", is_flag=True, help="Decide and say what would happen; change nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Deploy even if the gate refuses; recorded as forced, and `mlvs verify` names it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def deploy_command(version: str | None, dry_run: bool, force: bool, as_json: bool) -> None:
    """Make VERSION (default: the challenger) the champion if it beats it on the test set.

    Exit status: 0 deployed (or would be, with --dry-run), 1 the gate refused, 2 bad input.
    """
    paths = project()
    result = deploy(paths, version, dry_run=dry_run, force=force)
    if not dry_run:
        refresh_index(paths)
    if result.forced:
        # Loud on purpose, on stderr too, so a log that keeps only errors still shows it.
        verb = "would be deployed" if dry_run else "DEPLOYED"
        click.echo(
            f"{bad('mlvs: warning:')} version {result.candidate} {verb} with --force past the gate's "
            f"refusal ({result.decision.reason}); `mlvs verify` will name it",
            err=True,
        )
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(deploy_text(result))
    sys.exit(result.exit_code)
