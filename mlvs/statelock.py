"""Serialising the commands that change a project's state, and their crash journal.

Snapshot, rollback, recover and drills each take `state_lock` for their whole run,
so two of them never interleave their writes; read-only commands never take it.
A state-changing command records what it is doing in the `Journal`, so that after
a crash (`kill -9`, a full disk) `mlvs recover` finds the interrupted operation
and finishes or undoes it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mlvs.errors import IntegrityError, LockTimeoutError, MlvsError
from mlvs.paths import ProjectPaths

LOCK_FILE = "state.lock"
JOURNAL_FILE = "journal.json"


@contextmanager
def state_lock(paths: ProjectPaths, timeout: float = 30.0) -> Iterator[None]:
    """Hold the project's state lock for the body; wait at most `timeout` seconds.

    A negative timeout waits forever, zero tries once. Nested use in the same
    thread re-enters the lock. Raises LockTimeoutError when another command
    (another process or thread) keeps it.
    """
    paths.state.mkdir(parents=True, exist_ok=True)
    lock_path = paths.state / LOCK_FILE
    # A singleton lock counts nested acquisitions in one thread, so a rollback
    # that takes its automatic snapshot does not wait for itself. The options
    # stay fixed (timeout goes to acquire) because a singleton refuses new ones.
    lock = FileLock(str(lock_path), is_singleton=True)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockTimeoutError(
            f"another mlvs command is changing this project (lock held at {lock_path}); "
            f"waited {timeout:g} s: wait for it to finish or try again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _fsync_directory(directory: Path) -> None:
    # Makes a rename or unlink durable; only POSIX can open a directory for it.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, document: Any) -> None:
    """Write `document` as JSON to `path` so that a crash leaves the old or the new file."""
    _write_atomically(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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

    def _unreadable(self) -> IntegrityError:
        return IntegrityError(
            f"the mlvs journal at {self.path} is unreadable; inspect it, then delete it and run `mlvs verify`"
        )

    def current(self) -> dict[str, Any] | None:
        """Return the recorded operation, or None when none is in progress."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        *complete, _torn = text.split("\n")
        try:
            record = json.loads(complete[0]) if complete else None
            updates = [json.loads(line) for line in complete[1:] if line]
        except json.JSONDecodeError:
            raise self._unreadable() from None
        if not isinstance(record, dict) or "operation" not in record:
            raise self._unreadable()
        for update in updates:
            if not isinstance(update, dict) or "step" not in update:
                raise self._unreadable()
            record["step"] = update["step"]
            record["steps"].append(update["step"])
            record["data"].update(update.get("data") or {})
            record["updated_at"] = update.get("updated_at", record["updated_at"])
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
        record = {
            "operation": operation,
            "data": dict(data),
            "step": None,
            "steps": [],
            "pid": os.getpid(),
            "started_at": now,
            "updated_at": now,
        }
        _write_atomically(self.path, (json.dumps(record, sort_keys=True) + "\n").encode())

    def update(self, step: str, **data: Any) -> None:
        """Record that the operation reached `step`, merging `data` into its data."""
        line = (json.dumps({"step": step, "data": data, "updated_at": _now()}, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise RuntimeError(f"Journal.update({step!r}) called with no operation begun") from None
        try:
            _write_all(fd, line)
            getattr(os, "fdatasync", os.fsync)(fd)
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Forget the operation: it finished, or recovery finished or undid it."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        _fsync_directory(self.path.parent)
