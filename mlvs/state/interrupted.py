"""Finishing or undoing the command that an earlier process left in the journal.

Each state-changing operation registers how to finish it (`finisher`). `mlvs.ops`
names the module that holds each operation's finisher (`finisher_home`), and that
module is imported only when a journal of its operation is found: most commands
find none, and importing every operation would cost them a tenth of a second."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlvs.backends.dvc.objects import TEMP_SUFFIX
from mlvs.backends.dvc.outputs import dvc_outputs
from mlvs.backends.git.refs import remove_stale_ref_locks
from mlvs.backends.git.run import run_git
from mlvs.errors import MlvsError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.state.journal import Journal
from mlvs.state.lock import state_lock
from mlvs.state.room import release_room
from mlvs.state.spares import settle_retired

log = get_logger("rollback")


STAGING = "staging"


@dataclass
class RecoveryReport:
    """What `recover_interrupted` found and did."""

    operation: str | None
    name: str | None
    action: str  # "none", "completed", "undone", "rolled forward", "rolled back"
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


Finisher = Callable[[ProjectPaths, Journal, dict[str, Any]], RecoveryReport]
_FINISHERS: dict[str, Finisher] = {}
_HOMES: dict[str, str] = {}


def finisher(operation: str) -> Callable[[Finisher], Finisher]:
    """Register the function that finishes or undoes an interrupted `operation`."""

    def register(function: Finisher) -> Finisher:
        _FINISHERS[operation] = function
        return function

    return register


def finisher_home(operation: str, module: str) -> None:
    """Name the module whose import registers the finisher of `operation`."""
    _HOMES[operation] = module


def _finisher_of(operation: str) -> Finisher | None:
    if operation not in _FINISHERS and operation in _HOMES:
        importlib.import_module(_HOMES[operation])
    return _FINISHERS.get(operation)


def staging_directory(paths: ProjectPaths) -> Path:
    """Where a rollback stages the files it is about to put in place."""
    return paths.state / STAGING


def remove_workspace_leftovers(paths: ProjectPaths) -> None:
    """Delete what an interrupted command left half-written: staging, temporary files, retired files."""
    shutil.rmtree(staging_directory(paths), ignore_errors=True)
    release_room(paths)  # a pipeline's reservation, when it was cut before its journal began
    settle_retired(paths)
    try:
        outputs = [o.path for o in dvc_outputs(paths)]
    except Exception:  # a broken dvc.yaml must not stop recovery
        outputs = []
    for output in outputs:
        top = paths.root / output
        if top.is_dir():
            for leftover in top.rglob(f"*{TEMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
        elif top.parent.is_dir():
            # A repair stages `.NAME.restore.mlvs-tmp` through its own `..NAME.restore.mlvs-tmp.PID.mlvs-tmp`.
            for leftover in top.parent.glob(f".*{top.name}.*{TEMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
    # restore_worktree's temporary files, beside git-tracked files (git ignores them).
    try:
        out = run_git(
            paths.root,
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
            "--directory",
        )
    except MlvsError:
        return
    for relative in out.split("\0"):
        if relative.endswith(TEMP_SUFFIX):
            (paths.root / relative).unlink(missing_ok=True)
    for lock in remove_stale_ref_locks(paths.root):
        log.info("removed %s, left by a git process killed with an earlier command", lock)


def recover_interrupted(paths: ProjectPaths) -> RecoveryReport:
    """Finish or undo the operation an earlier command left in the journal (cheap when there is none)."""
    journal = Journal(paths)
    if not journal.path.exists():
        return RecoveryReport(None, None, "none", "no interrupted operation")
    with state_lock(paths):
        record = journal.current()
        if record is None:
            return RecoveryReport(None, None, "none", "no interrupted operation")
        handler = _finisher_of(str(record["operation"]))
        if handler is None:
            raise MlvsError(
                f"an interrupted {record['operation']!r} is recorded in {journal.path} and this mlvs cannot "
                "finish it; run the mlvs version that started it, or inspect and delete the journal"
            )
        outcome = handler(paths, journal, record)
    log.info("recovered: %s", outcome.detail)
    return outcome
