"""What a test checks in an alias history, with its own reading of the records.

Shared by the unit tests of the compare-and-set and the team race: the history is
replayed move by move, and two things must hold of every move:
- it starts where the previous move of its alias left it (one chain per alias);
- a move taken on a gate decision (pipeline promotion, deploy) was made while the
  champion was still the one its gate compared against, as the decision's reason
  names it ("version 5 beats version 3: ..."). A move that breaks this was decided
  on a stale read: another move came in between and was overwritten.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

_GATE_REASON = re.compile(r"^version (\d+) (?:beats|does not beat) version (\d+): ")
_FIRST = "there is no champion yet"
GATE_COMMANDS = ("pipeline", "deploy")
TAG_PREFIX = "mlvs.alias_move."


def read_moves(tags: dict[str, str]) -> list[Any]:
    """The alias moves recorded in a registered model's tags, in key order, parsed here (not by mlvs)."""
    keys = sorted(k for k in tags if k.startswith(TAG_PREFIX))
    moves = []
    for key in keys:
        record = json.loads(tags[key])
        assert key.endswith("." + record["alias"]), key
        moves.append(SimpleNamespace(**{"forced": False, **record}))
    return moves


def gate_champion(reason: str) -> tuple[bool, str | None]:
    """(whether `reason` is a gate decision, the champion version it compared against)."""
    if reason == _FIRST:
        return True, None
    match = _GATE_REASON.match(reason)
    return (True, match.group(2)) if match else (False, None)


def history_findings(moves: list[Any]) -> list[str]:
    """Every move that breaks its alias's chain or was decided against a champion no longer in place."""
    findings: list[str] = []
    current: dict[str, str | None] = {}
    for move in moves:
        where = f"{move.alias} -> {move.to_version} by {move.command} at {move.time}"
        if move.alias in current and move.from_version != current[move.alias]:
            findings.append(
                f"{where}: starts at {move.from_version}, the previous move left {current[move.alias]}"
            )
        gated, compared = gate_champion(move.reason)
        stale = current.get("champion") != compared
        if move.command in GATE_COMMANDS and gated and not move.forced and stale:
            findings.append(
                f"{where}: decided against champion {compared}, but {current.get('champion')} was "
                "champion: the move that put it there was overwritten"
            )
        current[move.alias] = move.to_version
    return findings


def accepted_champions(moves: list[Any]) -> list[str]:
    """The versions a gate (not forced) made champion, in the order of the history."""
    return [
        m.to_version
        for m in moves
        if m.alias == "champion"
        and m.command in GATE_COMMANDS
        and not m.forced
        and m.to_version is not None
        and gate_champion(m.reason)[0]
    ]
