"""The `mlvs` command line. Commands are thin: parse, call the core, map errors to exit codes.

Exit status: 0 success, 1 the work failed (a notebook, a verification), 2 bad input.
Errors are printed as one line on stderr; a traceback only with `--debug`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from mlvs.cli import health, workspace
from mlvs.errors import MlvsError, storage_error, storage_failure
from mlvs.logs import get_logger, setup_logging
from mlvs.paths import project

log = get_logger("cli")


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
    logging.getLogger("mlflow.store.db.utils").addFilter(
        lambda record: record.levelno < logging.ERROR
    )
    log_dir = None
    try:
        log_dir = project().logs
    except MlvsError:
        pass
    setup_logging(log_dir, verbose=debug)


# Every command, registered from this one list.
COMMANDS: tuple[click.Command, ...] = (
    workspace.run_command,
    workspace.pipeline_command,
    workspace.snapshot_group,
    workspace.rollback_command,
    workspace.recover_command,
    health.verify_command,
    health.incidents_command,
    health.drill_command,
    health.reproduce_command,
)
for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlvs` console script."""
    try:
        cli.main(args=argv, prog_name="mlvs", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
