"""Replaced files: kept as spare blocks for the next restore, or freed off the user's wait.

A durable restore of a large file costs the file system more than the copy itself
(measured on ext4 with online discard, per GiB): a new file written and flushed
takes 2.2 s, and freeing the file it replaced another 0.7 s. Overwriting blocks
that are already allocated and flushed takes 1.5 s. So, as PostgreSQL recycles
its WAL segments:

- a rollback hard-links every file it replaces into `.mlvs/retired/` first, so
  the rename that replaces it frees nothing;
- once the new state is in place, large retired files (64 MiB and up) that
  nobody else holds become spares in `.mlvs/spare/`, within a disk budget
  (`MLVS_SPARE_BYTES`, default a tenth of the free space, at most 8 GiB;
  0 keeps none). The rest are freed: small ones at once, large ones by a
  detached process after the command has returned (as `git gc --auto` does);
- the next restore stages its copy into a spare, overwriting it in place
  (`take_spare`), and the atomic rename into the project is unchanged.

A spare is reused only while its only name is the spare's (so never a file also
linked from the DVC cache) and no process has it open (checked with a Linux
write lease, which the kernel grants only then). Spares and retired files are
garbage: nothing reads them, and losing them loses only disk space, which the
next state-changing command settles again.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from mlvs.backends.dvc.objects import TEMP_SUFFIX
from mlvs.errors import BadInputError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.settings import SPARE_BYTES

try:
    import fcntl
except ImportError:  # no leases to prove a file unshared: nothing is reused
    fcntl = None  # type: ignore[assignment]

log = get_logger("retired")


RETIRED = "retired"


SPARE = "spare"


# Below this a file is cheap to allocate and to free; not worth keeping, nor a process to free it.
SPARE_MIN = 64 << 20


DETACH_ABOVE = 64 << 20


DEFAULT_SPARE_CAP = 8 << 30


_UNLINK = """
import os, sys
for name in sys.argv[1:]:
    try:
        os.unlink(name)
    except OSError:
        pass
"""


def retired_directory(paths: ProjectPaths) -> Path:
    """Where replaced files wait to be settled."""
    return paths.state / RETIRED


def spare_directory(paths: ProjectPaths) -> Path:
    """Where spare blocks wait for the next restore."""
    return paths.state / SPARE


def spare_budget(paths: ProjectPaths) -> int:
    """Bytes of spares to keep: `MLVS_SPARE_BYTES`, else a tenth of the free space, at most 8 GiB."""
    budget = SPARE_BYTES.get()
    if budget is not None:
        return budget
    try:
        free = shutil.disk_usage(paths.state).free
    except OSError:
        return 0
    return min(DEFAULT_SPARE_CAP, free // 10)


def retire(paths: ProjectPaths, location: Path) -> None:
    """Keep the regular file at `location` alive in `.mlvs/retired/` (no copy: a hard link).

    On a file system without hard links nothing is kept, and the file's blocks are
    freed when it is replaced, as they would be without mlvs.
    """
    try:
        if location.is_file() and not location.is_symlink():
            directory = retired_directory(paths)
            directory.mkdir(parents=True, exist_ok=True)
            os.link(location, directory / f"{secrets.token_hex(8)}{TEMP_SUFFIX}")
    except OSError:
        pass


def _files(directory: Path) -> dict[str, os.stat_result]:
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(TEMP_SUFFIX)]
    except OSError:
        return {}
    found = {}
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # freed meanwhile by an earlier process
        if entry.is_file(follow_symlinks=False):
            found[entry.path] = info
    return found


def _held_elsewhere(name: str, info: os.stat_result) -> bool:
    """Whether a file's blocks may still be read through another name or an open descriptor."""
    if info.st_nlink != 1 or fcntl is None or not hasattr(fcntl, "F_SETLEASE"):
        return True  # e.g. a DVC cache object linked into the workspace
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return True
    try:
        # The kernel grants a write lease only when no other descriptor (or mapping) holds the file.
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError:
        return True  # held open, or no leases on this file system: reuse cannot be proven safe
    finally:
        os.close(fd)


def settle_retired(paths: ProjectPaths) -> None:
    """Keep large retired files as spares within the budget; free the rest (large ones in the background)."""
    retired = _files(retired_directory(paths))
    spares = _files(spare_directory(paths))
    try:
        budget = spare_budget(paths) if retired or spares else 0
    except BadInputError:
        budget = 0  # refused before the command changed anything; here, keep nothing
    kept = sum(info.st_size for info in spares.values())
    to_free = []
    # Over budget (it shrinks as the disk fills): free the largest spares first.
    for name, info in sorted(spares.items(), key=lambda item: -item[1].st_size):
        if kept > budget:
            to_free.append(name)
            kept -= info.st_size
    for name, info in sorted(retired.items(), key=lambda item: -item[1].st_size):
        if (
            info.st_size >= SPARE_MIN
            and kept + info.st_size <= budget
            and not _held_elsewhere(name, info)
        ):
            try:
                spare_directory(paths).mkdir(parents=True, exist_ok=True)
                os.replace(name, spare_directory(paths) / Path(name).name)
                kept += info.st_size
                continue
            except OSError as error:
                log.debug("could not keep %s as a spare: %s", name, error)
        to_free.append(name)
    sizes = {name: (retired.get(name) or spares[name]).st_size for name in to_free}
    _free(sizes)


def _free(sizes: dict[str, int]) -> None:
    if not sizes:
        return
    if sum(sizes.values()) >= DETACH_ABOVE:
        try:
            # A session of its own: a kill of this command's process group leaves it freeing.
            subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _UNLINK, *sizes],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
            return
        except OSError as error:
            log.debug(
                "could not free retired files in the background (%s); freeing them now", error
            )
    for name in sizes:
        _unlink_quietly(name)


def _unlink_quietly(name: str) -> bool:
    """Unlink `name`; False when it could not be (gone already, or not ours to remove)."""
    try:
        os.unlink(name)
        return True
    except OSError:
        return False


def free_spares(paths: ProjectPaths) -> int:
    """Free every spare now (the disk is full and needs the room); return the bytes freed."""
    return sum(
        info.st_size
        for name, info in _files(spare_directory(paths)).items()
        if _unlink_quietly(name)
    )


def take_spare(paths: ProjectPaths, size: int, destination: Path) -> bool:
    """Move a spare of about `size` bytes to `destination` (which must not exist), to be overwritten.

    The smallest spare that holds `size` is taken, else the largest (it grows).
    Returns False, and moves nothing, when no spare is fit for reuse.
    """
    if size < SPARE_MIN:
        return False
    spares = _files(spare_directory(paths))
    fitting = sorted((info.st_size, name) for name, info in spares.items() if info.st_size >= size)
    others = sorted(
        ((info.st_size, name) for name, info in spares.items() if info.st_size < size), reverse=True
    )
    for _, name in fitting + others:
        if not os.access(name, os.W_OK) or _held_elsewhere(name, spares[name]):
            continue
        try:
            os.rename(name, destination)
            return True
        except OSError as error:
            if error.errno != errno.ENOENT:
                log.debug("could not reuse spare %s: %s", name, error)
    return False
