"""The `mlvs` command line: parse, call one operation, render its result, map errors to exit codes."""

import mlvs._fastimport  # noqa: F401  (first: it keeps a slow import out of every command)
from mlvs.cli.app import cli, main

__all__ = ["cli", "main"]
