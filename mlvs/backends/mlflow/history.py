"""The alias history: every move of a registered model's aliases, as tags on the model itself.

MLflow keeps no history of its aliases. mlvs records each move it makes (pipeline
promotion, deploy, rollback, recover) as one tag on the registered model, its key
`mlvs.alias_move.<nanoseconds>.<n>.<alias>` and its value a JSON record: when, which
command, which alias, from and to which version, the snapshot taken before it,
why, and whether it was forced past the gate. Tags live in the registry, not in the
workspace: a rollback of the workspace leaves them alone, and they work the same
against a tracking server. (A restore of the embedded `mlflow.db` from its backup,
the recovery of a destroyed database, brings back the history as that backup had it.)

What is read back is untrusted: a tag that is not such a record is named, never
crashed on, and never counted as a move.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

TAG_PREFIX = "mlvs.alias_move."
# MLflow's SQL stores keep a registered model tag's value in 5000 characters.
_MAX_VALUE = 5000
_MAX_REASON = 2000
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
_VERSION = re.compile(r"^[0-9]{1,12}$")
_FIELDS = ("time", "command", "alias", "from_version", "to_version", "snapshot", "reason", "forced")


@dataclass(frozen=True)
class MoveReason:
    """Why aliases move: the command that moves them, the snapshot taken before, and the reason."""

    command: str
    reason: str
    snapshot: str | None = None
    forced: bool = False


@dataclass(frozen=True)
class AliasMove:
    """One alias move as recorded (and as read back, checked field by field)."""

    time: str
    command: str
    alias: str
    from_version: str | None
    to_version: str | None
    snapshot: str | None
    reason: str
    forced: bool = False

    def when(self) -> datetime:
        """The time of the move, as an aware datetime (UTC)."""
        return parse_time(self.time)

    def to_dict(self) -> dict[str, Any]:
        """The record as its tag holds it."""
        return asdict(self)

    @classmethod
    def from_document(cls, document: Any) -> AliasMove:
        """A record read back; ValueError naming the first field that is wrong."""
        if not isinstance(document, dict):
            raise ValueError(f"a JSON object is needed, not {type(document).__name__}")
        unknown = sorted(set(document) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0][:40]!r}")
        for name in ("time", "command", "alias", "reason"):
            value = document.get(name)
            if not isinstance(value, str) or not value or len(value) > _MAX_VALUE:
                raise ValueError(f"field {name!r} must be a non-empty text")
        if not _TIME.match(document["time"]):
            raise ValueError("field 'time' must be an ISO 8601 UTC time")
        for name in ("from_version", "to_version"):
            value = document.get(name)
            if value is not None and not (isinstance(value, str) and _VERSION.match(value)):
                raise ValueError(f"field {name!r} must be a version number or null")
        snapshot = document.get("snapshot")
        if snapshot is not None and not (isinstance(snapshot, str) and 0 < len(snapshot) <= 256):
            raise ValueError("field 'snapshot' must be a snapshot name or null")
        forced = document.get("forced", False)
        if not isinstance(forced, bool):
            raise ValueError("field 'forced' must be true or false")
        try:
            parse_time(document["time"])
        except ValueError:
            raise ValueError("field 'time' is not a real time") from None
        return cls(
            time=document["time"],
            command=document["command"],
            alias=document["alias"],
            from_version=document.get("from_version"),
            to_version=document.get("to_version"),
            snapshot=snapshot,
            reason=document["reason"],
            forced=forced,
        )


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a naive one is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def now_text() -> str:
    """The current time as the history writes it (UTC, microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_counter = 0


def move_tags(
    moves: list[tuple[str, str | None, str | None]], why: MoveReason, after_stamp: int = 0
) -> dict[str, str]:
    """The tags recording `moves` (alias, from, to), one per move, keyed in the order they happen.

    `after_stamp` is the newest key stamp already recorded (`last_stamp`): the new keys sort
    after it even when this machine's clock is behind the one that wrote it, so the
    order of the keys is the order of the moves across clones.
    """
    global _counter
    stamp, when = max(time.time_ns(), after_stamp + 1), now_text()
    tags = {}
    for alias, before, after in moves:
        _counter += 1
        record = AliasMove(
            time=when,
            command=why.command,
            alias=alias,
            from_version=before,
            to_version=after,
            snapshot=why.snapshot,
            reason=why.reason[:_MAX_REASON],
            forced=why.forced,
        )
        key = f"{TAG_PREFIX}{stamp:020d}.{_counter % 10_000:04d}.{alias}"
        tags[key] = json.dumps(record.to_dict(), sort_keys=True)
    return tags


@dataclass
class AliasHistory:
    """Every recorded move, oldest first, and what could not be read as one."""

    model_name: str
    moves: list[AliasMove] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None  # the registry itself could not be read

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "model_name": self.model_name,
            "moves": [m.to_dict() for m in self.moves],
            "problems": list(self.problems),
            "error": self.error,
        }

    def version_at(self, alias: str, moment: datetime) -> str | None:
        """The version `alias` pointed at, at `moment` (None: none, or before the first record)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        pointed: str | None = None
        for move in self.moves:
            if move.alias != alias:
                continue
            if move.when() > moment:
                break
            pointed = move.to_version
        return pointed

    def last_move(self, alias: str) -> AliasMove | None:
        """The newest recorded move of `alias`."""
        found = [m for m in self.moves if m.alias == alias]
        return found[-1] if found else None


_KEY = re.compile(r"^" + re.escape(TAG_PREFIX) + r"(\d{20})\.(\d{4})\.(.+)$")


def _problem(key: str, what: str) -> str:
    return (
        f"registered model tag {key[:120]!r} is not an alias move ({what}); "
        "delete the tag or put back the registry from a backup"
    )


def parse_history(model_name: str, tags: dict[str, str]) -> AliasHistory:
    """The moves held by `tags` (only keys with the history's prefix), each checked; bad ones named."""
    history = AliasHistory(model_name)
    ordered: list[tuple[tuple[int, int], AliasMove]] = []
    for key, value in tags.items():
        if not key.startswith(TAG_PREFIX):
            continue
        match = _KEY.match(key)
        if match is None:
            history.problems.append(_problem(key, "its key has no time and alias"))
            continue
        try:
            document = json.loads(value)
        except (TypeError, ValueError, RecursionError) as error:
            history.problems.append(_problem(key, f"its value is not JSON: {str(error)[:80]}"))
            continue
        try:
            move = AliasMove.from_document(document)
        except ValueError as error:
            history.problems.append(_problem(key, str(error)))
            continue
        if move.alias != match.group(3):
            history.problems.append(_problem(key, "its key and its record name different aliases"))
            continue
        ordered.append(((int(match.group(1)), int(match.group(2))), move))
    history.moves = [move for _, move in sorted(ordered, key=lambda pair: pair[0])]
    return history


def last_stamp(keys: Iterable[str]) -> int:
    """The newest stamp among history keys (0 when there is none); other keys are ignored."""
    matches = (_KEY.match(key) for key in keys if isinstance(key, str))
    return max((int(m.group(1)) for m in matches if m), default=0)


def broken_links(moves: list[AliasMove]) -> list[str]:
    """Where the history of an alias is not one chain: a move whose `from` is not the previous move's `to`.

    With every move made as a compare-and-set, each move starts where the one
    before it ended; a break means a move was made without one (by hand, or by a
    clone that outlived its lease) and another move may have been overwritten.
    """
    problems: list[str] = []
    last: dict[str, AliasMove] = {}
    for move in moves:
        before = last.get(move.alias)
        if before is not None and move.from_version != before.to_version:
            problems.append(
                f"{move.alias} moved from version {move.from_version} by {move.command} at {move.time}, "
                f"but the move before it ({before.command} at {before.time}) had left it at version "
                f"{before.to_version}"
            )
        last[move.alias] = move
    return problems
