"""`mlvs registry history`: every recorded move of the registered model's aliases."""

from __future__ import annotations

import click

from mlvs.cli.render import emit_json, history_text
from mlvs.cli.style import note
from mlvs.errors import ExternalToolError
from mlvs.ops.history import alias_history
from mlvs.paths import project


@click.group("registry")
def registry_group() -> None:
    """The model registry's aliases and their history."""


@registry_group.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
def registry_history_command(as_json: bool) -> None:
    """Every alias move: when, which command, alias, from and to version, snapshot, reason."""
    history = alias_history(project())
    if history.error:
        raise ExternalToolError(
            f"the alias history of {history.model_name!r} cannot be read ({history.error}); start the "
            "tracking server (or run `mlvs recover` for the embedded mlflow.db)"
        )
    for problem in history.problems:
        click.echo(f"{note('mlvs: note:')} {problem}", err=True)
    if as_json:
        emit_json(history.to_dict())
    else:
        click.echo(history_text(history))
