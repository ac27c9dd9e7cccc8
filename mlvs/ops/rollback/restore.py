"""Verified rollback to a snapshot, and the recovery of interrupted snapshots and rollbacks.

A rollback, under the state lock and journalled:
1. capture the current state and plan what differs from the target snapshot
   (per part: code, params, data, models, registry);
2. stage every data and model file to write in `.mlvs/staging/` (over a spare's
   blocks when one fits, see `mlvs.state.spares`): copied from the DVC cache and read
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

import shutil
import time
from collections.abc import Callable
from typing import Any

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import dvc_files
from mlvs.backends.git.refs import delete_snapshot_ref, list_snapshot_refs, snapshot_ref
from mlvs.backends.git.tree import uncommitted_files
from mlvs.backends.mlflow.history import MoveReason
from mlvs.errors import (
    ExternalToolError,
    IntegrityError,
    MlvsError,
    os_error,
    storage_failure,
)
from mlvs.logs import get_logger
from mlvs.ops.health import health_never_refusing
from mlvs.ops.rollback.apply import _apply, _stage, _verify
from mlvs.ops.rollback.plan import (
    RollbackReport,
    VerificationError,
    _plan,
    auto_snapshot_name,
    parse_parts,
)
from mlvs.ops.snapshot.capture import capture_state
from mlvs.ops.snapshot.create import save_snapshot, undo_unsaved_snapshot
from mlvs.ops.snapshot.manifest import MANIFEST_PATH, PARTS, Manifest
from mlvs.ops.snapshot.read import manifest_at, show_snapshot
from mlvs.paths import ProjectPaths
from mlvs.state.interrupted import (
    RecoveryReport,
    finisher,
    recover_interrupted,
    remove_workspace_leftovers,
    staging_directory,
)
from mlvs.state.journal import Journal, journal_recorder
from mlvs.state.lock import state_lock
from mlvs.state.spares import spare_budget

log = get_logger("rollback")


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
    why: MoveReason,
    before_apply: Callable[[], object] | None = None,
) -> None:
    """Plan, stage, (run `before_apply`), apply and verify a restore of `target`; fill `report`.

    `why` is what the alias history records for the aliases the restore moves.
    """
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
            staged, sources = _stage(paths, target, plan, store, hashes)
        except BaseException:
            shutil.rmtree(staging_directory(paths), ignore_errors=True)
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
        placed = _apply(paths, target, parts, plan, staged, why)
        record("applied")
        clock = _timed(report.timings, "apply", clock)
        report.checked_files, report.findings = _verify(
            paths, target, current, parts, plan, hashes, staged, placed
        )
        report.verified = not report.findings
        record("verified")
        _timed(report.timings, "verify", clock)
    finally:
        hashes.close()


def rollback(
    paths: ProjectPaths, name: str, only: set[str] | str | None = None, dry_run: bool = False
) -> RollbackReport:
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
    report = RollbackReport(
        snapshot=name, commit=target.commit, parts=sorted(parts), dry_run=dry_run
    )
    _name_unhealthy_target(target, report)
    if dry_run:
        plan = _plan(paths, target, capture_state(paths), parts, ObjectStore(paths))
        report.files, report.aliases, report.model_name = (
            plan.files,
            plan.alias_changes,
            plan.model_name,
        )
        report.notes.extend(plan.notes)
        report.findings.extend(plan.problems)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    with state_lock(paths):
        recover_interrupted(paths)
        refs = dict(list_snapshot_refs(paths.root))
        if refs.get(name) != target.commit:
            target = show_snapshot(paths, name)  # it moved while we waited for the lock
        assert target.commit is not None
        auto_name = auto_snapshot_name(name, set(refs))
        journal = Journal(paths)
        journal.begin(
            "rollback",
            {
                "target": name,
                "target_commit": target.commit,
                "parts": sorted(parts),
                "auto_name": auto_name,
            },
        )
        record = journal_recorder(journal, "rollback")
        record_auto = journal_recorder(journal, "rollback", "auto:", "auto_")
        try:
            clock = time.perf_counter()
            message = f"automatic snapshot before rolling back to {name}"
            hashes = HashCache(paths)
            try:
                # One listing of the `.dvc` files serves the state and its health check.
                tracking = dvc_files(paths.root)
                current = capture_state(
                    paths,
                    auto_name,
                    message,
                    automatic=True,
                    hashes=hashes,
                    tracking_files=tracking,
                )
                # Never refused: a rollback out of a sick state must stay possible; it is recorded instead.
                current.health = health_never_refusing(paths, hashes, tracking)
            finally:
                hashes.close()
            _timed(report.timings, "capture", clock)
            report.automatic_snapshot = auto_name
            _restore(
                paths,
                target,
                current,
                parts,
                record,
                report,
                MoveReason("rollback", f"rollback to snapshot {name}", auto_name),
                lambda: save_snapshot(paths, current, record_auto),
            )
            _name_saved_edits(paths, current, report)
        except Exception as error:
            if snapshot_ref(paths.root, auto_name) is None:
                # Refused before the automatic snapshot existed: nothing visible changed.
                _undo_rollback(paths, journal.current() or {})
                journal.clear()
                report.automatic_snapshot = None
                if isinstance(error, OSError):
                    raise os_error(error, f"nothing was rolled back to {name!r}") from error
                if isinstance(error, ExternalToolError):  # git or DVC failed (a full disk, say)
                    raise ExternalToolError(
                        f"{error}; nothing was rolled back to {name!r}"
                    ) from error
                raise
            raise _finish_after_failure(paths, journal, error) from error
        journal.clear()
    report.seconds = round(time.perf_counter() - started, 3)
    if not report.verified:
        raise VerificationError(report)
    return report


def _name_unhealthy_target(target: Manifest, report: RollbackReport) -> None:
    """Say that the snapshot was taken of an unhealthy state: it is restored as recorded, findings and all."""
    if target.health is None or target.health.healthy:
        return
    report.snapshot_findings = [str(f) for f in target.health.findings]
    shown = "; ".join(report.snapshot_findings[:3])
    more = (
        f" and {len(report.snapshot_findings) - 3} more"
        if len(report.snapshot_findings) > 3
        else ""
    )
    report.notes.append(
        f"snapshot {target.name!r} was taken unhealthy ({len(report.snapshot_findings)} finding(s): "
        f"{shown}{more}); it is restored as it was recorded, so `mlvs verify` may name them again"
    )


def _name_saved_edits(paths: ProjectPaths, saved: Manifest, report: RollbackReport) -> None:
    """Say which uncommitted files went into the automatic snapshot, and how to get them back."""
    if saved.commit is None:
        return
    edits = [p for p in uncommitted_files(paths.root, saved.commit) if p != MANIFEST_PATH]
    if edits:
        shown = ", ".join(edits[:10]) + (f" and {len(edits) - 10} more" if len(edits) > 10 else "")
        report.notes.append(
            f"uncommitted work saved in {saved.name}: {shown}; get it back with "
            f"`mlvs rollback {saved.name} --only code,params`"
        )


def _finish_after_failure(paths: ProjectPaths, journal: Journal, error: Exception) -> MlvsError:
    """After a failure past the automatic snapshot: complete or undo it now, as recovery would."""
    try:
        outcome = _recover_rollback(paths, journal, journal.current() or {})
    except MlvsError as failure:
        return failure
    return MlvsError(f"the rollback failed while changing the project; {outcome.detail}")


def _automatic_snapshot_data(data: dict[str, Any]) -> dict[str, Any]:
    """What the journal recorded of the automatic snapshot (its `auto_` keys, unprefixed)."""
    return {
        k[len("auto_") :]: v for k, v in data.items() if k.startswith("auto_") and k != "auto_name"
    }


def _undo_rollback(paths: ProjectPaths, record: dict[str, Any]) -> None:
    data = record.get("data", {})
    if data.get("auto_name"):
        undo_unsaved_snapshot(paths, data["auto_name"], _automatic_snapshot_data(data))
    remove_workspace_leftovers(paths)


@finisher("rollback")
def _recover_rollback(
    paths: ProjectPaths, journal: Journal, record: dict[str, Any]
) -> RecoveryReport:
    data = record.get("data", {})
    target_name = data.get("target")
    auto_name = data.get("auto_name")
    auto = _automatic_snapshot_data(data)
    if not auto_name or not undo_unsaved_snapshot(paths, auto_name, auto):
        remove_workspace_leftovers(paths)
        journal.clear()
        return RecoveryReport(
            "rollback",
            target_name,
            "undone",
            f"the rollback to {target_name!r} had changed nothing yet; it was undone",
        )
    parts = set(data.get("parts") or PARTS)
    remove_workspace_leftovers(paths)
    failure: Exception | None = None
    try:
        target = manifest_at(paths, data["target_commit"])
        report = RollbackReport(
            target_name or "", data["target_commit"], sorted(parts), dry_run=False
        )
        _restore(
            paths,
            target,
            capture_state(paths),
            parts,
            journal_recorder(journal, "recover", "forward:"),
            report,
            MoveReason(
                "recover",
                f"the interrupted rollback to snapshot {target_name} completed",
                auto_name,
            ),
        )
        if report.verified:
            journal.clear()
            return RecoveryReport(
                "rollback",
                target_name,
                "rolled forward",
                f"the interrupted rollback to {target_name!r} was completed and verified",
            )
        failure = IntegrityError("; ".join(report.findings[:5]))
    except Exception as error:  # whatever stopped it, the old state is the way back
        failure = error
    log.warning(
        "could not complete the rollback to %s (%s); restoring %s", target_name, failure, auto_name
    )
    old = manifest_at(paths, data["auto_commit"])
    back = RollbackReport(auto_name, data["auto_commit"], sorted(parts), dry_run=False)
    try:
        _restore(
            paths,
            old,
            capture_state(paths),
            parts,
            journal_recorder(journal, "recover", "back:"),
            back,
            MoveReason(
                "recover",
                f"the interrupted rollback to snapshot {target_name} undone: back to {auto_name}",
                auto_name,
            ),
        )
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
    delete_snapshot_ref(paths.root, auto_name)
    store = ObjectStore(paths)
    store.remove_objects(auto.get("added_cache") or [])
    store.remove_objects(auto.get("added_remote") or [], from_remote=True)
    journal.clear()
    reason = storage_failure(failure) or str(failure)
    return RecoveryReport(
        "rollback",
        target_name,
        "rolled back",
        f"the rollback to {target_name!r} could not be completed ({reason}); "
        "the state before it was restored and verified",
    )
