"""`mlvs serve`: the HTTP scoring service of the alias's model, until stopped."""

from __future__ import annotations

import click

from mlvs.errors import BadInputError
from mlvs.ops.serve.service import (
    DEFAULT_ALIAS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    check_options,
    serve,
)
from mlvs.paths import project


def _port(text: str) -> int:
    # Parsed here rather than by click, so that a bad port is one line like every other mistake.
    if not text.strip().isdigit():
        raise BadInputError(
            f"--port {text[:40]!r} is not a number; choose one from 1 to 65535 (0: any free port)"
        )
    return int(text)


@click.command("serve")
@click.option(
    "--alias", default=DEFAULT_ALIAS, show_default=True, help="The alias to serve and follow."
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    default=str(DEFAULT_PORT),
    show_default=True,
    help="The TCP port to listen on (0: any free port, printed at start).",
)
def serve_command(alias: str, host: str, port: str) -> None:
    """Serve the model ALIAS points at over HTTP (/health, /model, /predict), following its moves."""
    options = check_options(alias, host, _port(port))
    serve(project(), options)
