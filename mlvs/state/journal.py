"""The crash journal of the command that holds the state lock."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_bytes, fsync_dir, write_all
from mlvs.boundary import UnsafeInputError, md5_value, workspace_file
from mlvs.errors import IntegrityError, MlvsError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.testing.faults import fault_point

log = get_logger("snapshots")


JOURNAL_FILE = "journal.json"

# (field, accepted types, what the error line says is allowed) of a journal's first line.
_RECORD_FIELDS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("operation", str, "an operation name"),
    ("data", dict, "an object"),
    ("steps", list, "a list of step names"),
    ("step", (str, type(None)), "a step name or null"),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    """The record of the one state-changing operation in progress, kept on disk.

    The record is a dict: `operation`, `data` (merged from `begin` and every
    `update`), `step` (the last step reached), `steps` (all, in order), `pid`,
    `started_at` and `updated_at`. Call `begin` under `state_lock`.

    On disk it is JSON lines, a write-ahead log: `begin` writes the whole record
    atomically (a rename), each `update` appends one line and flushes it (one
    `fdatasync`, where a rewrite-and-rename needs a file and a directory flush). A
    line is counted once its newline is there: a last line cut short by a power cut
    is a step not reached.
    """

    def __init__(self, paths: ProjectPaths) -> None:
        self.path = paths.state / JOURNAL_FILE
        self.root = paths.root

    def _unreadable(self, problem: str = "") -> IntegrityError:
        what = f" ({problem})" if problem else ""
        return IntegrityError(
            f"the mlvs journal at {self.path} is unreadable{what}; inspect it, then delete it "
            "and run `mlvs verify`"
        )

    def _checked(self, record: Any, updates: list[Any]) -> dict[str, Any]:
        """The record with its updates applied, each field checked for the type recovery relies on.

        Plain checks rather than a pydantic model: every state-changing command reads the
        journal first, and importing pydantic would cost each of them a tenth of a second.
        """
        if not isinstance(record, dict):
            raise self._unreadable("its first line is not an object")
        for name, kinds, allowed in _RECORD_FIELDS:
            if not isinstance(record.get(name), kinds):
                raise self._unreadable(f"field {name!r} must be {allowed}")
        if not all(isinstance(step, str) for step in record["steps"]):
            raise self._unreadable("field 'steps' must be a list of step names")
        for number, update in enumerate(updates, start=2):
            if not isinstance(update, dict) or not isinstance(update.get("step"), str):
                raise self._unreadable(f"line {number} must be an object with a 'step' name")
            if not isinstance(update.get("data") or {}, dict):
                raise self._unreadable(f"line {number} field 'data' must be an object")
            record["step"] = update["step"]
            record["steps"].append(update["step"])
            record["data"].update(update.get("data") or {})
            if isinstance(update.get("updated_at"), str):
                record["updated_at"] = update["updated_at"]
        return record

    def current(self) -> dict[str, Any] | None:
        """Return the recorded operation, or None when none is in progress."""
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise self._unreadable("it is not UTF-8 text") from None
        *complete, _torn = text.split("\n")
        try:
            record = json.loads(complete[0]) if complete else None
            updates = [json.loads(line) for line in complete[1:] if line]
        except json.JSONDecodeError:
            raise self._unreadable() from None
        except RecursionError:
            raise self._unreadable("nested too deeply") from None
        if record is None:
            raise self._unreadable("it is empty")
        record = self._checked(record, updates)
        _check_names(self.root, record.get("data"), f".mlvs/{self.path.name}")
        return record

    def begin(self, operation: str, data: dict[str, Any]) -> None:
        """Record that `operation` starts; refuse while another one is recorded."""
        unfinished = self.current()
        if unfinished is not None:
            # Overwriting it would lose what recovery needs to finish that operation.
            raise MlvsError(
                f"an interrupted {unfinished['operation']!r} is recorded in {self.path}; "
                "run `mlvs recover` first"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = _now()
        record: dict[str, Any] = {
            "operation": operation,
            "data": dict(data),
            "step": None,
            "steps": [],
            "pid": os.getpid(),
            "started_at": now,
            "updated_at": now,
        }
        atomic_write_bytes(self.path, (json.dumps(record, sort_keys=True) + "\n").encode())

    def update(self, step: str, **data: Any) -> None:
        """Record that the operation reached `step`, merging `data` into its data."""
        line = (
            json.dumps({"step": step, "data": data, "updated_at": _now()}, sort_keys=True) + "\n"
        ).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise RuntimeError(f"Journal.update({step!r}) called with no operation begun") from None
        try:
            write_all(fd, line)
            getattr(os, "fdatasync", os.fsync)(fd)
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Forget the operation: it finished, or recovery finished or undid it."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.path.parent)


def _check_names(root: Path, data: Any, source: str) -> None:
    """Refuse a journal whose file names or object names would lead a replay outside the project.

    Recovery writes the `kept` files back and deletes the `added_*` objects; the
    journal is a file under `.mlvs/` that anything may have written, so its names
    are checked here, once, before any finisher acts on them.
    """
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        where = f"{source} field {key}"
        if key == "kept":
            if not isinstance(value, dict):
                raise UnsafeInputError(f"{where}: is not an object of files; delete the journal")
            for relative in value:
                workspace_file(root, relative, where)
        elif key.endswith(("added_cache", "added_remote")):
            if not isinstance(value, list):
                raise UnsafeInputError(f"{where}: is not a list of objects; delete the journal")
            for md5 in value:
                md5_value(md5, where)


Record = Callable[..., None]  # record(step, **data): one journal step


def journal_recorder(
    journal: Journal, operation: str, step_prefix: str = "", key_prefix: str = ""
) -> Record:
    """A `record(step, **data)` that writes one journal step, then passes its fault point."""

    def record(step: str, **data: Any) -> None:
        full = step_prefix + step
        journal.update(full, **{key_prefix + key: value for key, value in data.items()})
        fault_point(f"{operation}:{full}")

    return record
