"""Room held in reserve, so that a pipeline that fails on a full disk can still be undone.

`dvc repro` deletes a stage's outputs before the stage runs. When the stage then
fails because the disk is full, putting the last good outputs back from the DVC
cache needs as much room as they take, and the failed stage has taken it (its
partial outputs are kept as evidence, its report and MLflow run by contract). So
before the pipeline starts, mlvs allocates that room in one file, `.mlvs/room`
(`posix_fallocate`: blocks are reserved, nothing is written), and frees it before
an undo. A disk without that room is refused before anything changes.

A file-size limit (`RLIMIT_FSIZE`) is not a full disk: the reservation is skipped
under one, and the undo's files are each smaller than the outputs together.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from mlvs.backends.dvc.outputs import dvc_outputs, output_files
from mlvs.errors import MlvsError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths

log = get_logger("room")

ROOM = "room"

# Beyond the outputs themselves, an undo writes dvc.lock, the metrics, the journal and
# pages of the hash cache, and makes the evidence folders.
MARGIN = 1 << 20

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


def room_path(paths: ProjectPaths) -> Path:
    return paths.state / ROOM


def room_needed(paths: ProjectPaths) -> int:
    """Bytes an undo of the pipeline may have to write: every output as it is now, and a margin."""
    total = MARGIN
    for output in dvc_outputs(paths):
        for relative in output_files(paths.root, output.path):
            try:
                total += (paths.root / relative).lstat().st_size
            except FileNotFoundError:
                continue  # removed while listed: nothing to put back
    return total


class Room:
    """The reservation; `release` gives its blocks back (idempotent)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def release(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def reserve_room(paths: ProjectPaths, needed: int | None = None) -> Room:
    """Allocate the room an undo of the pipeline needs; refuse in one line when the disk lacks it.

    Call under the state lock, before anything changes.
    """
    size = room_needed(paths) if needed is None else needed
    path = room_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a reservation a killed pipeline left behind
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        path.unlink(missing_ok=True)
        if error.errno in _NO_ROOM:
            raise MlvsError(
                f"the pipeline could not write its outputs: no space left on the device for the "
                f"{_mib(size)} it keeps in reserve to put the last good outputs back if a stage fails; "
                "nothing was changed: free disk space, then run it again"
            ) from None
        # A file-size limit, or a file system without allocation: run without the reserve.
        log.debug("no room reserved for the pipeline's undo: %s", error)
        return Room(None)
    finally:
        os.close(descriptor)
    return Room(path)


def release_room(paths: ProjectPaths) -> None:
    """Free a reservation an interrupted pipeline left behind (recovery calls this first)."""
    room_path(paths).unlink(missing_ok=True)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
