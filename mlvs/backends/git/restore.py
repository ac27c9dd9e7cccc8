"""Restoring files of the working tree from a commit, each write atomic."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from mlvs._io import fsync_directories, write_file
from mlvs.backends.git.run import _EXECUTABLE, _SYMLINK, Entry, run_git_bytes
from mlvs.backends.git.tree import (
    _behind_symlink,
    _is_safe_tree_path,
    _relative_path,
    _tree_entries,
    worktree_entries,
)
from mlvs.errors import IntegrityError

log = logging.getLogger(__name__)


def _read_blobs(root: Path, oids: set[str]) -> dict[str, bytes]:
    """Read many blobs through one `git cat-file --batch` process."""
    if not oids:
        return {}
    order = sorted(oids)
    out = run_git_bytes(
        root, "cat-file", "--batch", input="".join(f"{oid}\n" for oid in order).encode()
    )
    blobs: dict[str, bytes] = {}
    position = 0
    for oid in order:
        end = out.index(b"\n", position)
        header = out[position:end].decode().split(" ")
        if len(header) != 3 or header[1] != "blob":
            raise IntegrityError(
                f"git object {oid} is missing or not a file in the repository at {root}; "
                "the snapshot cannot be restored from git (run `git fsck` to inspect the damage)"
            )
        size = int(header[2])
        blobs[oid] = out[end + 1 : end + 1 + size]
        position = end + 1 + size + 1  # content is followed by a newline
    return blobs


def _in_scope(path: str, scope: list[str] | None) -> bool:
    if scope is None:
        return True
    return any(not s or path == s or path.startswith(s + "/") for s in scope)


def _remove_empty_parents(root: Path, path: Path) -> None:
    parent = path.parent
    while parent != root:
        try:
            parent.rmdir()
        except OSError:  # not empty (e.g. ignored files live there) or already gone
            return
        parent = parent.parent


def _temporary_sibling(destination: Path) -> Path:
    # Next to the destination so that os.replace stays on one file system.
    return destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.mlvs-tmp")


def _write_entry(destination: Path, mode: str, content: bytes) -> None:
    """Replace `destination` atomically with a file (or symlink) of git mode `mode`."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(destination)
    try:
        if mode == _SYMLINK:
            os.symlink(os.fsdecode(content), temporary)
        else:
            # Like git checkout: 0777 or 0666, less the umask.
            write_file(temporary, [content], 0o777 if mode == _EXECUTABLE else 0o666)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _set_executable(destination: Path, executable: bool) -> None:
    current = stat.S_IMODE(os.lstat(destination).st_mode)
    # Grant execute exactly where read is granted, as git's 0777-less-umask would.
    wanted = current | ((current & 0o444) >> 2) if executable else current & ~0o111
    os.chmod(destination, wanted)


def restore_worktree(
    root: Path,
    sha: str,
    paths: list[str] | None = None,
    current: Mapping[str, Entry] | None = None,
) -> list[str]:
    """Make the working tree's files equal to commit `sha`'s, for `paths` (all when None).

    A path names a file or a directory. Only files that differ are written (each
    one atomically); files that `commit_worktree` would include but the commit
    lacks are deleted. Ignored files are never touched, so a target file whose
    place an ignored file or directory occupies is skipped with a warning. HEAD,
    the branch and the index do not move. Returns the changed paths, sorted.
    `current` is `worktree_entries(root)` when the caller has just read it.
    """
    root = Path(root)
    scope = None if paths is None else [_relative_path(p) for p in paths]
    target = _tree_entries(root, sha)
    unsafe = sorted(p for p in target if not _is_safe_tree_path(p))
    if unsafe:
        raise IntegrityError(
            f"commit {sha} holds the unsafe path {unsafe[0]!r}; refusing to restore it into the working tree"
        )
    current = worktree_entries(root) if current is None else current

    to_delete = sorted(p for p in current if p not in target and _in_scope(p, scope))
    to_write = sorted(
        p for p, entry in target.items() if _in_scope(p, scope) and current.get(p) != entry
    )
    # Read every blob before changing anything: a missing object refuses the whole restore.
    blobs = _read_blobs(root, {target[p][1] for p in to_write})

    changed: list[str] = []
    touched: set[Path] = set()
    for path in to_delete:
        destination = root / path
        destination.unlink(missing_ok=True)
        _remove_empty_parents(root, destination)
        touched.add(destination.parent)
        changed.append(path)

    for path in to_write:
        mode, oid = target[path]
        destination = root / path
        existing = current.get(path)
        # Writing through a symlinked directory would change files outside the tree.
        if existing is None and (os.path.lexists(destination) or _behind_symlink(root, path)):
            log.warning("left %s alone: git ignores what is at its place in the working tree", path)
            continue
        if existing is not None and existing[1] == oid and _SYMLINK not in (mode, existing[0]):
            _set_executable(destination, mode == _EXECUTABLE)
        else:
            try:
                _write_entry(destination, mode, blobs[oid])
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                log.warning("left %s alone: an ignored file or directory is in its way", path)
                continue
        touched.add(destination.parent)
        changed.append(path)

    fsync_directories({d for d in touched if d.is_dir()})
    return sorted(changed)
