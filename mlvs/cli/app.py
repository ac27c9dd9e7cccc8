"""The `mlvs` command line. Commands are thin: parse, call the core, map errors to exit codes.

Exit status: 0 success, 1 the work failed (a notebook, a verification), 2 bad input.
Errors are printed as one line on stderr; a traceback only with `--debug`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import Any

import click

from mlvs.cli.style import bad, console_color
from mlvs.errors import MlvsError, storage_error, storage_failure
from mlvs.logs import get_logger, setup_logging
from mlvs.paths import project

log = get_logger("cli")


def _one_line(error: Exception) -> str:
    # A tool's message (git's "error: ...\nfatal: ...") still makes one line of ours.
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


class _Group(click.Group):
    """Maps every mlvs error to its exit code and one line, in one place; loads commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlvsError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"{bad('mlvs: error:')} {_one_line(exc)}", err=True)
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
            click.echo(f"{bad('mlvs: error:')} {_one_line(storage_error(exc, what))}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="mlvs")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """mlvs: snapshots, verified rollback and incident drills for notebook-driven ML."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # Every command's context inherits it: click.echo then keeps or strips the styles.
    ctx.color = console_color()
    # Models are only ever loaded by mlvs itself, hash first, with its own skops trust list.
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    # MLflow logs a database error with its traceback, then raises it; mlvs reports the raised one in one line.
    # (A filter, not a level: MLflow's logging set-up resets the levels of its loggers on import.)
    logging.getLogger("mlflow.store.db.utils").addFilter(
        lambda record: record.levelno < logging.ERROR
    )
    log_dir = None
    with contextlib.suppress(MlvsError):
        log_dir = project().logs
    setup_logging(log_dir, verbose=debug)


# Every command, registered from this one list: name -> "module:function". A command's
# module (and the operation it imports) is loaded only when that command runs, so
# `mlvs rollback` does not pay for importing papermill, pydantic or the drills.
COMMANDS: dict[str, str] = {
    "run": "mlvs.cli.commands.run:run_command",
    "pipeline": "mlvs.cli.commands.pipeline:pipeline_command",
    "snapshot": "mlvs.cli.commands.snapshot:snapshot_group",
    "rollback": "mlvs.cli.commands.rollback:rollback_command",
    "recover": "mlvs.cli.commands.recover:recover_command",
    "verify": "mlvs.cli.commands.verify:verify_command",
    "incidents": "mlvs.cli.commands.incidents:incidents_command",
    "drill": "mlvs.cli.commands.drill:drill_command",
    "reproduce": "mlvs.cli.commands.reproduce:reproduce_command",
    "deploy": "mlvs.cli.commands.deploy:deploy_command",
    "registry": "mlvs.cli.commands.registry:registry_group",
    "serve": "mlvs.cli.commands.serve:serve_command",
    "batches": "mlvs.cli.commands.batches:batches_group",
    "monitor": "mlvs.cli.commands.monitor:monitor_command",
    "alerts": "mlvs.cli.commands.monitor:alerts_command",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlvs` console script."""
    try:
        cli.main(args=argv, prog_name="mlvs", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
