"""`mlvs recover`: finish interrupted commands, then repair through the ladder."""

from __future__ import annotations

import sys

import click

from mlvs.cli.render import (
    emit_json,
    interrupted_text,
    recovery_text,
)
from mlvs.ops.recover import recover_project
from mlvs.paths import project


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
            click.echo(interrupted_text(interrupted))
        return
    if as_json:
        emit_json({"interrupted": interrupted.to_dict(), **outcome.to_dict()})
    else:
        click.echo(recovery_text(interrupted, outcome))
    sys.exit(0 if outcome.healthy else 1)
