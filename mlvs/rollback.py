"""Verified rollback to a snapshot, and the recovery of interrupted snapshots and rollbacks.

A rollback, under the state lock and journalled:
1. capture the current state and plan what differs from the target snapshot
   (per part: code, params, data, models, registry);
2. stage every data and model file to write in `.mlvs/staging/` (over a spare's
   blocks when one fits, see `mlvs.retired`): copied from the DVC cache and read
   back, its SHA-256 must be the one in the target's manifest (DVC itself never
   re-hashes its cache); a missing or corrupt cache object is
   fetched again from the DVC remote, and the cache repaired. Nothing visible has
   changed yet, so a failure here refuses cleanly;
3. save the automatic snapshot of the current state (`auto-<time>-before-<name>`):
   from here on the rollback can always be undone;
4. apply: rename staged files into place, delete what the target lacks (the files
   replaced or deleted become spares or are freed), restore git files (only those
   that differ), set the registry aliases;
5. verify: a written file must still be the very file whose bytes were read back
   (same inode, size and mtime); every other file of the restored parts is hashed
   (or vouched for by its unchanged stat), git files are compared blob by blob
   (when any was written), and the aliases are read back from the registry.

With `MLVS_FSYNC=0` data copies are not flushed to disk: a killed process still
leaves exactly the old or the new state, a power cut might not.

Recovery (`recover_interrupted`, run first by every state-changing command):
- an interrupted snapshot whose ref is missing is undone: the objects it added to
  the cache and remote are removed, so the state is exactly the old one;
- an interrupted rollback whose automatic snapshot is not saved yet is undone the
  same way (nothing visible had changed); once it is saved, the rollback is rolled
  forward (re-run: it is idempotent); if that cannot complete, the automatic
  snapshot is restored instead. Either way the state is exactly old or exactly new.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlvs import gitstate
from mlvs.dvcstore import (
    TEMP_SUFFIX,
    FileHash,
    HashCache,
    ObjectStore,
    copy_verified,
    durable_writes,
    dvc_outputs,
    is_regular_file,
    output_files,
)
from mlvs.errors import BadInputError, IntegrityError, MlvsError, storage_failure
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.registry import missing_versions, read_registry, set_aliases
from mlvs.retired import free_spares, retire, settle_retired, spare_budget, take_spare
from mlvs.snapshots import (
    MANIFEST_PATH,
    PARTS,
    Manifest,
    capture_state,
    failpoint,
    journal_recorder,
    lock_timeout,
    manifest_at,
    os_error,
    save_snapshot,
    show_snapshot,
    undo_unsaved_snapshot,
)
from mlvs.statelock import Journal, state_lock

log = get_logger("rollback")

STAGING = "staging"
GIT, CACHE, REMOTE, MISSING = "git", "cache", "remote", "missing"


@dataclass(frozen=True)
class FileChange:
    """One file a rollback writes or deletes, and where its bytes come from."""

    path: str
    part: str
    action: str  # "write" or "delete"
    source: str  # GIT, CACHE, REMOTE, MISSING, or "" for a deletion


@dataclass
class RollbackReport:
    """What a rollback changed (or, dry, would change) and what its verification found."""

    snapshot: str
    commit: str
    parts: list[str]
    dry_run: bool
    automatic_snapshot: str | None = None
    files: list[FileChange] = field(default_factory=list)
    model_name: str | None = None
    aliases: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    verified: bool = False
    checked_files: int = 0
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        document = asdict(self)
        document["aliases"] = {k: list(v) for k, v in sorted(self.aliases.items())}
        return document


class VerificationError(IntegrityError):
    """Raised when a rollback finished but its result does not match the snapshot."""

    def __init__(self, report: RollbackReport) -> None:
        self.report = report
        shown = "; ".join(report.findings[:5]) + ("; ..." if len(report.findings) > 5 else "")
        undo = f" (undo with `mlvs rollback {report.automatic_snapshot}`)" if report.automatic_snapshot else ""
        super().__init__(
            f"the rollback to {report.snapshot!r} could not be verified, {len(report.findings)} finding(s): "
            f"{shown}{undo}"
        )


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


# --- inputs ------------------------------------------------------------------


def parse_parts(only: str | Iterable[str] | None) -> set[str]:
    """The parts to restore: all when `only` is empty, else the named ones (comma-separated)."""
    if only is None:
        return set(PARTS)
    names = only.split(",") if isinstance(only, str) else list(only)
    wanted = {n.strip().lower() for n in names if n.strip()}
    unknown = sorted(wanted - set(PARTS))
    if unknown or not wanted:
        what = f"unknown part(s) {', '.join(repr(u) for u in unknown)}" if unknown else "no part given"
        raise BadInputError(f"{what}; choose from {','.join(PARTS)} (e.g. --only models,registry)")
    return wanted


def auto_snapshot_name(target: str, taken: set[str], now: datetime | None = None) -> str:
    """`auto-<UTC time>-before-<target>`, shortened to a valid name, made unique among `taken`."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    base = f"auto-{stamp}-before-{target}"
    folded = {t.casefold() for t in taken}
    for counter in range(1, 1000):
        suffix = "" if counter == 1 else f"-{counter}"
        name = base[: gitstate.MAX_NAME_LENGTH - len(suffix)].rstrip(".") + suffix
        while name.endswith(".lock") or name.endswith("."):
            name = name[:-1]
        if name.casefold() not in folded:
            return gitstate.validate_snapshot_name(name)
    raise MlvsError(f"could not find a free name for the automatic snapshot before {target!r}")


# --- planning ------------------------------------------------------------------


@dataclass
class _Plan:
    git: list[FileChange] = field(default_factory=list)
    writes: list[FileChange] = field(default_factory=list)
    deletes: list[FileChange] = field(default_factory=list)
    model_name: str | None = None
    aliases_now: dict[str, str] = field(default_factory=dict)
    aliases_wanted: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what makes the plan impossible

    @property
    def alias_changes(self) -> dict[str, tuple[str | None, str | None]]:
        if self.aliases_wanted is None:
            return {}
        names = set(self.aliases_now) | set(self.aliases_wanted)
        return {
            a: (self.aliases_now.get(a), self.aliases_wanted.get(a))
            for a in sorted(names)
            if self.aliases_now.get(a) != self.aliases_wanted.get(a)
        }

    @property
    def files(self) -> list[FileChange]:
        return sorted([*self.git, *self.writes, *self.deletes], key=lambda c: (c.path, c.action))


def _git_part(path: str, target: Manifest, current: Manifest) -> str:
    if path.startswith("params/"):
        return "params"
    return target.part_of(path) or current.part_of(path) or "code"


def _git_differences(paths: ProjectPaths, target: Manifest, current: Manifest, parts: set[str]) -> list[FileChange]:
    assert target.commit is not None
    wanted = gitstate.tree_files(paths.root, target.commit)
    present = gitstate.worktree_blob_hashes(paths.root)
    # The manifest lives only inside snapshot commits; a working-tree file of that name is the user's.
    wanted.pop(MANIFEST_PATH, None)
    present.pop(MANIFEST_PATH, None)
    changes = []
    for path in sorted(set(wanted) | set(present)):
        if wanted.get(path) == present.get(path):
            continue
        part = _git_part(path, target, current)
        if part in parts:
            changes.append(FileChange(path, part, "write" if path in wanted else "delete", GIT))
    return changes


def _plan(paths: ProjectPaths, target: Manifest, current: Manifest, parts: set[str], store: ObjectStore) -> _Plan:
    plan = _Plan()
    if parts & {"code", "params", "data", "models"}:
        plan.git = _git_differences(paths, target, current, parts)
    for path, info in sorted(target.files.items()):
        part = target.outputs[info["output"]]["part"]
        have = current.files.get(path)
        if part in parts and (have is None or have["sha256"] != info["sha256"]):
            source = CACHE if store.in_cache(info["md5"]) else (REMOTE if store.remote else MISSING)
            plan.writes.append(FileChange(path, part, "write", source))
    for path, info in sorted(current.files.items()):
        part = current.outputs[info["output"]]["part"]
        if part in parts and path not in target.files:
            plan.deletes.append(FileChange(path, part, "delete", ""))
    if "registry" in parts:
        _plan_registry(paths, target, current, plan)
    return plan


def _plan_registry(paths: ProjectPaths, target: Manifest, current: Manifest, plan: _Plan) -> None:
    recorded = target.registry
    if recorded.error is not None:
        plan.notes.append(f"snapshot {target.name!r} could not read the registry ({recorded.error}); registry left as it is")
        return
    if not recorded.model_name:
        plan.notes.append(f"snapshot {target.name!r} names no registered model; registry left as it is")
        return
    plan.model_name = recorded.model_name
    now = current.registry
    if now.model_name != recorded.model_name or now.error is not None:
        now = read_registry(paths, recorded.model_name, None)
        if now.error is not None:
            raise IntegrityError(
                f"the MLflow registry cannot be read ({now.error}), so its aliases cannot be restored; "
                "run `mlvs recover`, or roll back without the registry (--only code,params,data,models)"
            )
    plan.aliases_now = now.alias_versions()
    plan.aliases_wanted = recorded.alias_versions()
    needed = {new for new in (c[1] for c in plan.alias_changes.values()) if new is not None}
    for version in missing_versions(paths, recorded.model_name, needed):
        aliases = sorted(a for a, v in plan.aliases_wanted.items() if v == version)
        plan.problems.append(
            f"registry: version {version} of {recorded.model_name!r} (alias {', '.join(aliases)}) no longer exists"
        )


# --- staging and applying ---------------------------------------------------------


def _staging(paths: ProjectPaths) -> Path:
    return paths.state / STAGING


@dataclass(frozen=True)
class _Staged:
    """A verified copy waiting in the staging area, and the stat it was verified with."""

    temporary: Path
    identity: tuple[int, int, int]  # inode, size, mtime: unchanged means the verified bytes


def _identity(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _stage(
    paths: ProjectPaths, target: Manifest, plan: _Plan, store: ObjectStore
) -> tuple[dict[str, _Staged], list[FileChange]]:
    """Copy every file to write into the staging area, each one verified by reading it back."""
    staging = _staging(paths)
    staging.mkdir(parents=True, exist_ok=True)
    staged: dict[str, _Staged] = {}
    sources: list[FileChange] = []
    for change in plan.writes:
        info = target.files[change.path]
        temporary = staging / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"
        source = CACHE
        reuse = take_spare(paths, int(info.get("size") or 0), temporary)
        if not _copy_making_room(paths, store.cache_path(info["md5"]), temporary, info["sha256"], reuse):
            log.warning(
                "the DVC cache's copy of %s (object %s) is missing or corrupt; fetching it from the remote",
                change.path,
                info["md5"],
            )
            source = REMOTE
            if not (store.fetch_to_cache(info["md5"], info["sha256"]) and _copy_if_correct(
                store.cache_path(info["md5"]), temporary, info["sha256"]
            )):
                raise IntegrityError(
                    f"{change.path} of snapshot {target.name!r} (DVC object {info['md5']}) is missing or corrupt "
                    "in both the DVC cache and the DVC remote; nothing was changed. Restore the object "
                    "(e.g. `dvc fetch` from another remote) and try again"
                )
        staged[change.path] = _Staged(temporary, _identity(temporary))
        sources.append(FileChange(change.path, change.part, "write", source))
    return staged, sources


def _copy_making_room(paths: ProjectPaths, source: Path, destination: Path, sha256: str, overwrite: bool) -> bool:
    """`_copy_if_correct`, and on a full disk, free the spare blocks mlvs keeps and try once more."""
    try:
        return _copy_if_correct(source, destination, sha256, overwrite)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        freed = free_spares(paths)
        if not freed:
            raise
        log.warning("the disk is full: freed the %d bytes of spare blocks mlvs kept, and copying again", freed)
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
    paths: ProjectPaths, target: Manifest, parts: set[str], plan: _Plan, staged: dict[str, _Staged]
) -> None:
    """Put the staged files in place, delete what the target lacks, restore git files and aliases.

    Replaced and deleted files are retired, and freed once they are all out of the way.
    """
    root = paths.root
    keep = {root / o for o, info in target.outputs.items() if info.get("kind") == "dir" and info["part"] in parts}
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
        touched.add(destination.parent)
    for directory in keep:
        directory.mkdir(parents=True, exist_ok=True)  # an empty output directory is still an output
    if durable_writes():
        gitstate.fsync_directories({d for d in touched if d.is_dir()})
    failpoint("rollback:apply:data")
    shutil.rmtree(_staging(paths), ignore_errors=True)
    settle_retired(paths)
    if plan.git:
        assert target.commit is not None
        gitstate.restore_worktree(root, target.commit, [c.path for c in plan.git])
    failpoint("rollback:apply:git")
    if plan.model_name and plan.alias_changes:
        assert plan.aliases_wanted is not None
        set_aliases(paths, plan.model_name, plan.aliases_wanted)


# --- verifying ------------------------------------------------------------------------


def _verify(
    paths: ProjectPaths,
    target: Manifest,
    current: Manifest,
    parts: set[str],
    plan: _Plan,
    hashes: HashCache,
    staged: dict[str, _Staged],
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
    written: list[tuple[str, dict[str, Any], tuple[int, int, int]]] = []
    for path, info in sorted(target.files.items()):
        if target.outputs[info["output"]]["part"] not in parts:
            continue
        checked += 1
        location = root / path
        if not is_regular_file(location):
            findings.append(f"{path}: missing (expected SHA-256 {info['sha256'][:12]}…)")
            continue
        copy = staged.get(path)
        if copy is not None and _identity(location) == copy.identity:
            actual = info["sha256"]  # the staged copy's read-back hash was checked against it
            written.append((path, info, copy.identity))
        else:
            actual = hashes.file_hash(path, trust_cache=copy is None).sha256
        if actual != info["sha256"]:
            findings.append(f"{path}: SHA-256 is {actual[:12]}…, the snapshot recorded {info['sha256'][:12]}…")
    _remember_written(root, written, hashes)
    outputs = {o for o, i in target.outputs.items() if i.get("cache") and i["part"] in parts}
    outputs |= {o for o, i in current.outputs.items() if i.get("cache") and i["part"] in parts}
    for output in sorted(outputs):
        for path in output_files(root, output):
            if path not in target.files:
                findings.append(f"{path}: present, but snapshot {target.name!r} does not have it")
    # With no git file to write, the plan (made under the lock a moment ago) already
    # found the git files equal to the snapshot's, and nothing since has touched them.
    if plan.git:
        for change in _git_differences(paths, target, current, parts):
            findings.append(f"{change.path}: differs from snapshot {target.name!r} ({change.part})")
            checked += 1
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
    root: Path, written: list[tuple[str, dict[str, Any], tuple[int, int, int]]], hashes: HashCache
) -> None:
    """Put the hashes of the files just restored into the hash cache, so the next snapshot reads none."""
    hashes.remember_written([(path, FileHash(info["md5"], info["sha256"], info["size"]), identity)
                             for path, info, identity in written])


# --- the operation -----------------------------------------------------------------------


def _timed(timings: dict[str, float], step: str, started: float) -> float:
    now = time.perf_counter()
    timings[step] = round(now - started, 4)
    return now


def _restore(
    paths: ProjectPaths,
    target: Manifest,
    current: Manifest,
    parts: set[str],
    record: Callable[..., None],
    report: RollbackReport,
    before_apply: Callable[[], None] | None = None,
) -> None:
    """Plan, stage, (run `before_apply`), apply and verify a restore of `target`; fill `report`."""
    store = ObjectStore(paths)
    hashes = HashCache(paths)
    try:
        clock = time.perf_counter()
        plan = _plan(paths, target, current, parts, store)
        report.model_name = plan.model_name
        report.aliases = plan.alias_changes
        report.notes.extend(plan.notes)
        if plan.problems:
            raise IntegrityError(
                f"snapshot {target.name!r} cannot be restored, nothing was changed: {'; '.join(plan.problems)}; "
                "roll back without the registry (--only code,params,data,models) or register that model again"
            )
        record("planned")
        clock = _timed(report.timings, "plan", clock)
        try:
            staged, sources = _stage(paths, target, plan, store)
        except BaseException:
            shutil.rmtree(_staging(paths), ignore_errors=True)
            raise
        by_path = {c.path: c for c in sources}
        plan.writes = [by_path.get(c.path, c) for c in plan.writes]
        report.files = plan.files
        record("staged")
        clock = _timed(report.timings, "stage", clock)
        if before_apply is not None:
            before_apply()
            clock = _timed(report.timings, "automatic_snapshot", clock)
        record("applying")
        _apply(paths, target, parts, plan, staged)
        record("applied")
        clock = _timed(report.timings, "apply", clock)
        report.checked_files, report.findings = _verify(paths, target, current, parts, plan, hashes, staged)
        report.verified = not report.findings
        record("verified")
        _timed(report.timings, "verify", clock)
    finally:
        hashes.close()


def rollback(paths: ProjectPaths, name: str, only: set[str] | str | None = None, dry_run: bool = False) -> RollbackReport:
    """Restore snapshot `name` (all parts, or `only` some), verified; `dry_run` changes nothing.

    Raises UnknownSnapshotError for a name that does not exist, IntegrityError when
    a file cannot be obtained (nothing changed then), VerificationError when the
    result does not match the snapshot (the report, with its findings, is attached).
    """
    started = time.perf_counter()
    parts = parse_parts(sorted(only) if isinstance(only, set) and only else (only or None))
    spare_budget(paths)  # a bad MLVS_SPARE_BYTES is refused before anything changes
    target = show_snapshot(paths, name)
    assert target.commit is not None
    report = RollbackReport(snapshot=name, commit=target.commit, parts=sorted(parts), dry_run=dry_run)
    if dry_run:
        plan = _plan(paths, target, capture_state(paths), parts, ObjectStore(paths))
        report.files, report.aliases, report.model_name = plan.files, plan.alias_changes, plan.model_name
        report.notes.extend(plan.notes)
        report.findings.extend(plan.problems)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    with state_lock(paths, lock_timeout()):
        recover_interrupted(paths)
        target = show_snapshot(paths, name)  # it may have changed while we waited for the lock
        assert target.commit is not None
        auto_name = auto_snapshot_name(name, {n for n, _ in gitstate.list_snapshot_refs(paths.root)})
        journal = Journal(paths)
        journal.begin(
            "rollback",
            {"target": name, "target_commit": target.commit, "parts": sorted(parts), "auto_name": auto_name},
        )
        record = journal_recorder(journal, "rollback")
        record_auto = journal_recorder(journal, "rollback", "auto:", "auto_")
        try:
            clock = time.perf_counter()
            message = f"automatic snapshot before rolling back to {name}"
            current = capture_state(paths, auto_name, message, automatic=True)
            _timed(report.timings, "capture", clock)
            report.automatic_snapshot = auto_name
            _restore(paths, target, current, parts, record, report, lambda: save_snapshot(paths, current, record_auto))
        except Exception as error:
            if gitstate.snapshot_ref(paths.root, auto_name) is None:
                # Refused before the automatic snapshot existed: nothing visible changed.
                _undo_rollback(paths, journal.current() or {})
                journal.clear()
                report.automatic_snapshot = None
                if isinstance(error, OSError):
                    raise os_error(error, f"nothing was rolled back to {name!r}") from error
                raise
            raise _finish_after_failure(paths, journal, error) from error
        journal.clear()
    report.seconds = round(time.perf_counter() - started, 3)
    if not report.verified:
        raise VerificationError(report)
    return report


def _finish_after_failure(paths: ProjectPaths, journal: Journal, error: Exception) -> MlvsError:
    """After a failure past the automatic snapshot: complete or undo it now, as recovery would."""
    try:
        outcome = _recover_rollback(paths, journal, journal.current() or {})
    except MlvsError as failure:
        return failure
    return MlvsError(f"the rollback failed while changing the project; {outcome.detail}")


# --- recovery ------------------------------------------------------------------------------


def _remove_workspace_leftovers(paths: ProjectPaths) -> None:
    shutil.rmtree(_staging(paths), ignore_errors=True)
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
            for leftover in top.parent.glob(f".{top.name}.*{TEMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
    # restore_worktree's temporary files, beside git-tracked files (git ignores them).
    try:
        out = gitstate.run_git(paths.root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
    except MlvsError:
        return
    for relative in out.split("\0"):
        if relative.endswith(TEMP_SUFFIX):
            (paths.root / relative).unlink(missing_ok=True)


def _undo_rollback(paths: ProjectPaths, record: dict[str, Any]) -> None:
    data = record.get("data", {})
    auto = {k[len("auto_") :]: v for k, v in data.items() if k.startswith("auto_") and k != "auto_name"}
    if data.get("auto_name"):
        undo_unsaved_snapshot(paths, data["auto_name"], auto)
    _remove_workspace_leftovers(paths)


def _recover_rollback(paths: ProjectPaths, journal: Journal, record: dict[str, Any]) -> RecoveryReport:
    data = record.get("data", {})
    target_name = data.get("target")
    auto_name = data.get("auto_name")
    auto = {k[len("auto_") :]: v for k, v in data.items() if k.startswith("auto_") and k != "auto_name"}
    if not auto_name or not undo_unsaved_snapshot(paths, auto_name, auto):
        _remove_workspace_leftovers(paths)
        journal.clear()
        return RecoveryReport("rollback", target_name, "undone",
                              f"the rollback to {target_name!r} had changed nothing yet; it was undone")
    parts = set(data.get("parts") or PARTS)
    _remove_workspace_leftovers(paths)
    failure: Exception | None = None
    try:
        target = manifest_at(paths, data["target_commit"])
        report = RollbackReport(target_name or "", data["target_commit"], sorted(parts), dry_run=False)
        _restore(paths, target, capture_state(paths), parts, journal_recorder(journal, "recover", "forward:"), report)
        if report.verified:
            journal.clear()
            return RecoveryReport("rollback", target_name, "rolled forward",
                                  f"the interrupted rollback to {target_name!r} was completed and verified")
        failure = IntegrityError("; ".join(report.findings[:5]))
    except Exception as error:  # whatever stopped it, the old state is the way back
        failure = error
    log.warning("could not complete the rollback to %s (%s); restoring %s", target_name, failure, auto_name)
    old = manifest_at(paths, data["auto_commit"])
    back = RollbackReport(auto_name, data["auto_commit"], sorted(parts), dry_run=False)
    try:
        _restore(paths, old, capture_state(paths), parts, journal_recorder(journal, "recover", "back:"), back)
    except Exception as error:
        raise MlvsError(
            f"an interrupted rollback to {target_name!r} could neither be completed ({failure}) nor undone "
            f"({error}); the journal is kept in {journal.path}: fix the cause and run `mlvs recover` again"
        ) from error
    if not back.verified:
        raise MlvsError(
            f"an interrupted rollback to {target_name!r} could neither be completed ({failure}) nor undone "
            f"({'; '.join(back.findings[:3])}); fix the cause and run `mlvs recover` again"
        )
    # The project is the automatic snapshot again, verified: that snapshot records nothing new, so it goes
    # (with the objects it added), and the project is exactly as before the rollback began.
    gitstate.delete_snapshot_ref(paths.root, auto_name)
    store = ObjectStore(paths)
    store.remove_objects(auto.get("added_cache") or [])
    store.remove_objects(auto.get("added_remote") or [], from_remote=True)
    journal.clear()
    reason = storage_failure(failure) or str(failure)
    return RecoveryReport("rollback", target_name, "rolled back",
                          f"the rollback to {target_name!r} could not be completed ({reason}); "
                          "the state before it was restored and verified")


def _recover_snapshot(paths: ProjectPaths, journal: Journal, record: dict[str, Any]) -> RecoveryReport:
    data = record.get("data", {})
    name = data.get("name")
    saved = bool(name) and undo_unsaved_snapshot(paths, name, data)
    _remove_workspace_leftovers(paths)
    journal.clear()
    if saved:
        return RecoveryReport("snapshot", name, "completed", f"snapshot {name!r} had been saved; nothing to undo")
    return RecoveryReport("snapshot", name, "undone", f"the unfinished snapshot {name!r} was removed")


def _recover_pipeline(paths: ProjectPaths, journal: Journal, record: dict[str, Any]) -> RecoveryReport:
    if record.get("step") == "reproduced":
        journal.clear()  # the stages finished and dvc.lock records them; only the push was left
        return RecoveryReport("pipeline", None, "completed", "the interrupted pipeline had finished its stages")
    from mlvs.orchestrate import undo_pipeline

    undo_pipeline(paths, record.get("data", {}).get("kept") or {})
    _remove_workspace_leftovers(paths)
    journal.clear()
    return RecoveryReport("pipeline", None, "undone",
                          "the interrupted pipeline was undone: the last good outputs are back in place")


RECOVERY_HANDLERS: dict[str, Callable[[ProjectPaths, Journal, dict[str, Any]], RecoveryReport]] = {
    "snapshot": _recover_snapshot,
    "rollback": _recover_rollback,
    "pipeline": _recover_pipeline,
}


def recover_interrupted(paths: ProjectPaths) -> RecoveryReport:
    """Finish or undo the operation an earlier command left in the journal (cheap when there is none)."""
    journal = Journal(paths)
    if not journal.path.exists():
        return RecoveryReport(None, None, "none", "no interrupted operation")
    with state_lock(paths, lock_timeout()):
        record = journal.current()
        if record is None:
            return RecoveryReport(None, None, "none", "no interrupted operation")
        handler = RECOVERY_HANDLERS.get(record["operation"])
        if handler is None:
            raise MlvsError(
                f"an interrupted {record['operation']!r} is recorded in {journal.path} and this mlvs cannot "
                "finish it; run the mlvs version that started it, or inspect and delete the journal"
            )
        outcome = handler(paths, journal, record)
    log.info("recovered: %s", outcome.detail)
    return outcome


def report_text(report: RollbackReport) -> str:
    """A rollback report, for people."""
    verb = "Would change" if report.dry_run else "Changed"
    lines = []
    if report.files or report.aliases:
        width = max([len(c.path) for c in report.files] + [20])
        lines.append(f"{'PART':<9}{'ACTION':<8}{'PATH':<{width + 2}}SOURCE")
        lines += [f"{c.part:<9}{c.action:<8}{c.path:<{width + 2}}{c.source or '-'}" for c in report.files]
        lines += [
            f"{'registry':<9}{'alias':<8}{f'{alias} of {report.model_name}':<{width + 2}}{old or '-'} -> {new or '-'}"
            for alias, (old, new) in report.aliases.items()
        ]
    count = f"{len(report.files)} file(s), {len(report.aliases)} alias(es)"
    if report.dry_run:
        summary = f"Dry run: rolling back to {report.snapshot!r} ({', '.join(report.parts)}) would change {count}; nothing was changed."
        if not (report.files or report.aliases):
            summary = f"Dry run: the project already matches snapshot {report.snapshot!r} ({', '.join(report.parts)})."
    elif report.verified:
        summary = (
            f"Rolled back to {report.snapshot!r} ({', '.join(report.parts)}): {verb.lower()} {count}; "
            f"verified {report.checked_files} DVC-tracked file(s), git files and aliases in {report.seconds:.2f} s."
        )
    else:
        summary = f"Rolled back to {report.snapshot!r}, but verification found {len(report.findings)} problem(s):"
    lines.append(summary)
    lines += [f"  finding: {f}" for f in report.findings]
    lines += [f"  note: {n}" for n in report.notes]
    if report.automatic_snapshot:
        lines.append(f"Undo with: mlvs rollback {report.automatic_snapshot}")
    return "\n".join(lines)
