"""Colour on the console: status words stand out on a terminal; pipes, CI logs and --json stay plain.

Text is styled where it is rendered and click decides once per process whether the styles
reach the stream: `console_color()` is the context's colour switch, and click strips the
escapes from every line written to a stream that is not a terminal (or when switched off).
"""

from __future__ import annotations

import os

import click

from mlvs.settings import COLOR


def console_color() -> bool | None:
    """click's colour switch: True or False when forced, None to colour only streams that are terminals.

    `NO_COLOR` (https://no-color.org) turns colour off unless `MLVS_COLOR=always` asks for it.
    """
    choice = COLOR.get()
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return None


def good(text: str) -> str:
    """A status that means all is well: healthy, verified, recovered, reproduces."""
    return click.style(text, fg="green", bold=True)


def bad(text: str) -> str:
    """A status that needs the reader: findings, errors, not recovered, differences."""
    return click.style(text, fg="red", bold=True)


def note(text: str) -> str:
    """Advice beside the result: a dry run, an undo command, a note."""
    return click.style(text, fg="yellow")


def choice_number(text: str) -> str:
    """The number to type in a menu."""
    return click.style(text, fg="cyan", bold=True)
