"""The `mlvs` command line: parse, call one operation, render its result, map errors to exit codes."""

from mlvs.cli.app import cli, main

__all__ = ["cli", "main"]
