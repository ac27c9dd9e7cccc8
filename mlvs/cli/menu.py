"""Interactive choices as numbered menus: pick an entry by its number or by its name.

Only commands run in a terminal offer a menu (a script must name what it wants). The
menu and its prompt go to stderr, so that stdout keeps only the command's result.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from mlvs.cli.style import choice_number
from mlvs.errors import BadInputError

if TYPE_CHECKING:
    from mlvs.ops.drill.incidents import Scenario
    from mlvs.ops.snapshot.manifest import Manifest

# Families in the order the catalog's own comment names them; an unknown one goes last.
FAMILIES = ("data", "model", "pipeline", "store")


@dataclass(frozen=True)
class Entry:
    """One line of a menu: the name it stands for and what to show after the name."""

    name: str
    detail: str


def stdin_is_terminal() -> bool:
    """Whether someone can answer a menu: stdin is a terminal."""
    return sys.stdin.isatty()


def require_terminal(refusal: str) -> None:
    """Refuse with `refusal` (exit 2) when nobody can answer a menu: a script must name its choice."""
    if not stdin_is_terminal():
        raise BadInputError(refusal)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def menu_lines(groups: list[tuple[str | None, list[Entry]]]) -> list[str]:
    """The menu's lines: each group under its heading, entries numbered from 1 across groups."""
    entries = [entry for _, group in groups for entry in group]
    number_width = len(str(len(entries)))
    name_width = max(len(entry.name) for entry in entries)
    # One line per entry, even on a narrow terminal: the detail is cut, never wrapped.
    room = shutil.get_terminal_size().columns - (number_width + name_width + 6) - 1
    lines, number = [], 0
    for heading, group in groups:
        if heading:
            lines.append(f"{heading}:")
        for entry in group:
            number += 1
            lines.append(
                f"  {choice_number(f'{number:>{number_width}}')}  {entry.name:<{name_width}}  "
                + _fit(entry.detail, room)
            )
    return lines


def chooser(names: list[str], what: str) -> Callable[[str], str]:
    """Turn an answer into one of `names`: a name as it is, else its number in the menu.

    A name wins over a number, so a snapshot called `2` is still chosen by typing `2`.
    A bad answer raises click.BadParameter, which click.prompt prints in one line before asking again.
    """
    span = f"a number from 1 to {len(names)} or a {what} name from the list"

    def choose(answer: str) -> str:
        text = answer.strip()
        if text in names:
            return text
        if text.isdigit():
            if 1 <= int(text) <= len(names):
                return names[int(text) - 1]
            raise click.BadParameter(f"{text} is not in the list; type {span}")
        close = difflib.get_close_matches(text, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise click.BadParameter(f"there is no {what} {text!r}{hint}; type {span}")

    return choose


def choose_from_menu(
    title: str,
    groups: list[tuple[str | None, list[Entry]]],
    prompt: str,
    what: str,
    default: str | None = None,
) -> str:
    """Show a numbered menu on stderr and ask until the answer is a number or a name in it."""
    click.echo(title, err=True)
    for line in menu_lines(groups):
        click.echo(line, err=True)
    names = [entry.name for _, group in groups for entry in group]
    return str(
        click.prompt(
            f"{prompt} (number or name)",
            default=default,
            value_proc=chooser(names, what),
            err=True,
        )
    )


def scenario_groups(catalog: dict[str, Scenario]) -> list[tuple[str | None, list[Entry]]]:
    """The incident catalog grouped by family, then `all`."""
    families = sorted(
        {s.family for s in catalog.values()},
        key=lambda f: FAMILIES.index(f) if f in FAMILIES else len(FAMILIES),
    )
    groups: list[tuple[str | None, list[Entry]]] = [
        (family, [Entry(n, s.description) for n, s in catalog.items() if s.family == family])
        for family in families
    ]
    groups.append((None, [Entry("all", "every scenario above that can break something here")]))
    return groups


def snapshot_groups(manifests: list[Manifest]) -> list[tuple[str | None, list[Entry]]]:
    """The snapshots, newest first, each with when it was taken, its kind and its message."""
    newest_first = sorted(manifests, key=lambda m: m.created_at, reverse=True)
    entries = [
        Entry(
            m.name,
            f"{m.created_at[:19].replace('T', ' ')}  {'auto' if m.automatic else 'manual':<6}  "
            + (m.message.splitlines()[0] if m.message else "-"),
        )
        for m in newest_first
    ]
    return [(None, entries)]
