"""Staging every file a rollback writes, applying it, and verifying what landed."""

from __future__ import annotations

import errno
import importlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlvs._io import (
    FileHash,
    atomic_write_bytes,
    copy_verified,
    durable_writes,
    fsync_directories,
    is_regular_file,
)
from mlvs.backends.dvc.hashcache import HashCache, Identity, file_identity, landed_identity
from mlvs.backends.dvc.lockfile import LOCK_FILE
from mlvs.backends.dvc.objects import TEMP_SUFFIX, ObjectStore
from mlvs.backends.dvc.outputs import output_files
from mlvs.backends.git.refs import SNAPSHOT_REF_PREFIX
from mlvs.backends.git.restore import restore_worktree
from mlvs.backends.mlflow.history import MoveReason
from mlvs.backends.mlflow.registry import read_registry, set_aliases
from mlvs.errors import (
    AliasRaceError,
    BadInputError,
    ExternalToolError,
    IntegrityError,
    storage_failure,
)
from mlvs.logs import get_logger
from mlvs.ops.health import PassedChecks
from mlvs.ops.rollback.plan import CACHE, REMOTE, FileChange, _git_differences, _Plan
from mlvs.ops.snapshot.manifest import FileEntry, Manifest
from mlvs.paths import ProjectPaths
from mlvs.state.interrupted import staging_directory
from mlvs.state.spares import free_spares, retire, settle_retired, take_spare
from mlvs.testing.faults import fault_point

log = get_logger("rollback")


@dataclass(frozen=True)
class _Staged:
    """A verified copy waiting in the staging area, and the stat it was verified with."""

    temporary: Path
    verified: os.stat_result


def _stage(
    paths: ProjectPaths, target: Manifest, plan: _Plan, store: ObjectStore, hashes: HashCache
) -> tuple[dict[str, _Staged], list[FileChange]]:
    """Copy every file to write into the staging area, each one verified by reading it back."""
    passed = PassedChecks(paths, hashes)
    staging = staging_directory(paths)
    staging.mkdir(parents=True, exist_ok=True)
    staged: dict[str, _Staged] = {}
    sources: list[FileChange] = []
    for change in plan.writes:
        entry = target.files[change.path]
        temporary = staging / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"
        source = CACHE
        reuse = take_spare(paths, entry.size, temporary)
        if not _copy_making_room(
            paths, store.cache_path(entry.md5), temporary, entry.sha256, reuse
        ):
            log.warning(
                "the DVC cache's copy of %s (object %s) is missing or corrupt; fetching it from the remote",
                change.path,
                entry.md5,
            )
            source = REMOTE
            if not (
                store.fetch_to_cache(entry.md5, entry.sha256)
                and _copy_if_correct(store.cache_path(entry.md5), temporary, entry.sha256)
            ):
                raise IntegrityError(
                    f"{change.path} of snapshot {target.name!r} (DVC object {entry.md5}) is missing or corrupt "
                    "in both the DVC cache and the DVC remote; nothing was changed. Restore the object "
                    "(e.g. `dvc fetch` from another remote) and try again"
                )
        _refuse_unusable(paths, target, change.path, temporary, passed)
        staged[change.path] = _Staged(temporary, os.stat(temporary))
        sources.append(FileChange(change.path, change.part, "write", source))
    return staged, sources


_MODEL_FILES = "mlvs.ml.modelio"


def _refuse_unusable(
    paths: ProjectPaths, target: Manifest, path: str, staged: Path, passed: PassedChecks
) -> None:
    """Refuse a model card or golden file that `verify` could never accept, before anything lands.

    Its bytes match the manifest, but a fetched snapshot's manifest is anyone's: the
    content itself is checked field by field, so that "verified" is never said of a
    state that `verify` would call broken. The verdict depends on the bytes and the
    check code alone: bytes that passed this check before (the staged copy's SHA-256,
    read back, is the manifest's), with the same code, are not parsed again.
    """
    checks = {
        paths.model_card.relative_to(paths.root).as_posix(): "card_problem",
        paths.golden.relative_to(paths.root).as_posix(): "golden_problem",
    }
    check = checks.get(path)
    if check is None:
        return
    fingerprint = passed.content_fingerprint(check, target.files[path].sha256)
    if passed.passed(fingerprint):
        return
    # The checks' module brings pydantic and the model types (~0.1 s): it is imported
    # only by a rollback that stages one of these files, not by every rollback, and
    # not again for bytes that passed before.
    problem = getattr(importlib.import_module(_MODEL_FILES), check)(staged.read_bytes())
    if problem is not None:
        raise BadInputError(
            f"{path} of snapshot {target.name!r} {problem}; nothing was changed. Ask whoever made "
            f"the snapshot to take it again, or delete it (git update-ref -d {SNAPSHOT_REF_PREFIX}{target.name})"
        )
    passed.hashes.remember_passed(check, fingerprint)


def _copy_making_room(
    paths: ProjectPaths, source: Path, destination: Path, sha256: str, overwrite: bool
) -> bool:
    """`_copy_if_correct`, and on a full disk, free the spare blocks mlvs keeps and try once more."""
    try:
        return _copy_if_correct(source, destination, sha256, overwrite)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        freed = free_spares(paths)
        if not freed:
            raise
        log.warning(
            "the disk is full: freed the %d bytes of spare blocks mlvs kept, and copying again",
            freed,
        )
        return _copy_if_correct(source, destination, sha256)


def _copy_if_correct(source: Path, destination: Path, sha256: str, overwrite: bool = False) -> bool:
    """Copy `source` to `destination` if the copy, read back, has `sha256`; else leave nothing.

    `overwrite`: `destination` is a spare whose blocks the copy reuses.
    """
    if not is_regular_file(source):
        destination.unlink(missing_ok=True)
        return False
    try:
        if copy_verified(source, destination, overwrite=overwrite) == sha256:
            return True
    except OSError as error:
        if error.filename in (None, str(destination)) and storage_failure(error):
            # The destination refused the bytes (a full disk): another source would fare no better.
            destination.unlink(missing_ok=True)
            raise
        log.warning("could not copy %s: %s", source, error)
    destination.unlink(missing_ok=True)
    return False


def _clear_way(root: Path, destination: Path) -> None:
    """Remove what stands where a restored file must go: a directory there, a file as a parent."""
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    parent = destination.parent
    blockers = []
    while parent != root:
        # A file (or dangling link) where a directory must be; a link to a directory stays.
        if os.path.lexists(parent) and not parent.is_dir():
            blockers.append(parent)
        parent = parent.parent
    for blocker in blockers:
        blocker.unlink()


def _place(paths: ProjectPaths, temporary: Path, destination: Path) -> None:
    retire(paths, destination)
    if not durable_writes():
        # ext4 flushes a file that replaces another by rename (auto_da_alloc), which would
        # make the undurable mode slower than the durable one; the journal covers the gap.
        destination.unlink(missing_ok=True)
    try:
        os.replace(temporary, destination)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        # The staging area is on another file system: copy beside the destination, then rename.
        beside = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            shutil.copyfile(temporary, beside)
            with open(beside, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(beside, destination)
        finally:
            beside.unlink(missing_ok=True)
        temporary.unlink(missing_ok=True)


def _prune(root: Path, start: Path, stop_at: set[Path]) -> None:
    directory = start
    while directory != root and directory not in stop_at:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _apply(
    paths: ProjectPaths,
    target: Manifest,
    parts: set[str],
    plan: _Plan,
    staged: dict[str, _Staged],
    why: MoveReason,
) -> dict[str, Identity]:
    """Put the staged files in place, delete what the target lacks, restore git files and aliases.

    Replaced and deleted files are retired, and freed once they are all out of the way.
    Returns the identity of each file put in place that is still the staged copy that
    was verified (same inode, size and mtime), taken right after it landed.
    """
    root = paths.root
    keep = {
        root / o
        for o, entry in target.outputs.items()
        if entry.kind == "dir" and plan.part_of(o) in parts
    }
    placed: dict[str, Identity] = {}
    touched: set[Path] = set()
    for change in plan.deletes:
        location = root / change.path
        retire(paths, location)
        location.unlink(missing_ok=True)
        _prune(root, location.parent, keep)
        touched.add(location.parent)
    for path, copy in staged.items():
        destination = root / path
        _clear_way(root, destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        _place(paths, copy.temporary, destination)
        identity = landed_identity(destination, copy.verified)
        if identity is not None:
            placed[path] = identity
        touched.add(destination.parent)
    for directory in keep:
        directory.mkdir(parents=True, exist_ok=True)  # an empty output directory is still an output
    if durable_writes():
        fsync_directories({d for d in touched if d.is_dir()})
    fault_point("rollback:apply:data")
    shutil.rmtree(staging_directory(paths), ignore_errors=True)
    settle_retired(paths)
    if plan.git:
        assert target.commit is not None
        git_paths = [c.path for c in plan.git]
        # The planned listing holds unless the outputs just placed share a path with git's files.
        outputs_placed = {c.path for c in (*plan.writes, *plan.deletes)}
        listing = None if outputs_placed & set(git_paths) else plan.worktree
        restore_worktree(root, target.commit, git_paths, listing)
    if plan.lock is not None:
        # After the outputs it describes: a crash before this line is rolled forward by recovery.
        if plan.lock_bytes is None:
            (root / LOCK_FILE).unlink(missing_ok=True)
        else:
            atomic_write_bytes(root / LOCK_FILE, plan.lock_bytes)
    fault_point("rollback:apply:git")
    if plan.model_name and plan.alias_changes:
        assert plan.aliases_wanted is not None
        _restore_aliases(paths, plan.model_name, plan.aliases_wanted, plan.aliases_now, why)
    return placed


# A rollback is not a gate: the snapshot fixes where the aliases go, whatever moved them meanwhile.
_ALIAS_ATTEMPTS = 3


def _restore_aliases(
    paths: ProjectPaths,
    name: str,
    wanted: dict[str, str],
    planned_from: dict[str, str],
    why: MoveReason,
) -> None:
    """Set the snapshot's aliases; if another clone moved one since the plan read them, read again and set."""
    seen = planned_from
    for attempt in range(1, _ALIAS_ATTEMPTS + 1):
        try:
            set_aliases(paths, name, wanted, why, expected=seen)
            return
        except AliasRaceError as error:
            if attempt == _ALIAS_ATTEMPTS:
                raise
            # Recorded as a move from where the other clone left it: its move stays in the history.
            log.warning("%s; the snapshot's aliases are set over them", error)
        now = read_registry(paths, name, None)
        if now.error:
            raise ExternalToolError(
                f"the MLflow registry cannot be read ({now.error}), so its aliases were not restored"
            )
        seen = now.alias_versions()


def _verify(
    paths: ProjectPaths,
    target: Manifest,
    current: Manifest,
    parts: set[str],
    plan: _Plan,
    hashes: HashCache,
    staged: dict[str, _Staged],
    placed: dict[str, Identity],
) -> tuple[int, list[str]]:
    """Check the restored parts against the manifest; return (files checked, findings).

    A written file was hashed by reading it back while it was staged; if it is still
    that same inode, size and mtime, those are its bytes now. Any other file of the
    restored parts is hashed (or its unchanged stat vouches for its remembered hash).
    Git files are compared blob by blob when the rollback wrote any.
    """
    root = paths.root
    findings: list[str] = []
    checked = 0
    written: list[tuple[str, FileEntry, Identity]] = []
    for path, entry in sorted(target.files.items()):
        if plan.part_of(path) not in parts:
            continue
        checked += 1
        location = root / path
        if not is_regular_file(location):
            findings.append(f"{path}: missing (expected SHA-256 {entry.sha256[:12]}…)")
            continue
        copy = staged.get(path)
        landed = placed.get(path)
        if landed is not None and file_identity(location) == landed:
            # The staged copy's read-back hash was checked against the manifest, and all five
            # of size, mtime, ctime, inode and device say nothing has written to it since.
            actual = entry.sha256
            written.append((path, entry, landed))
        else:
            actual = hashes.file_hash(path, trust_cache=copy is None).sha256
        if actual != entry.sha256:
            findings.append(
                f"{path}: SHA-256 is {actual[:12]}…, the snapshot recorded {entry.sha256[:12]}…"
            )
    _remember_written(root, written, hashes)
    outputs = {o for o, e in target.outputs.items() if e.cache and plan.part_of(o) in parts}
    outputs |= {o for o, e in current.outputs.items() if e.cache and plan.part_of(o) in parts}
    for output in sorted(outputs):
        for path in output_files(root, output):
            if path not in target.files:
                findings.append(f"{path}: present, but snapshot {target.name!r} does not have it")
    # With no git file to write, the plan (made under the lock a moment ago) already
    # found the git files equal to the snapshot's, and nothing since has touched them.
    if plan.git:
        for change in _git_differences(paths, target, plan.part_of, parts):
            findings.append(f"{change.path}: differs from snapshot {target.name!r} ({change.part})")
            checked += 1
    if plan.lock is not None:
        location = root / LOCK_FILE
        lock_now = location.read_bytes() if location.is_file() else None
        checked += 1
        if lock_now != plan.lock_bytes:
            findings.append(f"{LOCK_FILE}: differs from the lock the restored stages need")
    if plan.model_name and plan.aliases_wanted is not None:
        now = read_registry(paths, plan.model_name, None)
        if now.error is not None:
            findings.append(f"registry: cannot be read ({now.error})")
        else:
            for alias in sorted(set(now.aliases) | set(plan.aliases_wanted)):
                want = target.registry.aliases.get(alias)
                have = now.aliases.get(alias)
                if want is None or have is None or want.version != have.version:
                    findings.append(
                        f"registry: alias {alias!r} of {plan.model_name!r} points at version "
                        f"{have.version if have else None}, the snapshot recorded {want.version if want else None}"
                    )
                elif want.run_id and have.run_id and want.run_id != have.run_id:
                    findings.append(
                        f"registry: version {have.version} of {plan.model_name!r} now comes from run {have.run_id}, "
                        f"the snapshot recorded run {want.run_id}"
                    )
    return checked, findings


def _remember_written(
    root: Path, written: list[tuple[str, FileEntry, Identity]], hashes: HashCache
) -> None:
    """Put the hashes of the files just restored into the hash cache, so the next snapshot reads none."""
    hashes.remember_written(
        [
            (path, FileHash(entry.md5, entry.sha256, entry.size), identity)
            for path, entry, identity in written
        ]
    )
